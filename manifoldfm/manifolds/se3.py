r"""Rigid motions SE(3) as 4x4 homogeneous matrices, with the product metric of SO(3) x R^3.

This is the geometry of pose and protein-backbone flow matching (FrameFlow, FoldFlow): the
rotation and the translation of a frame move independently, the rotation along the
bi-invariant geodesic of SO(3) and the translation along a straight line. It is **not** the
left-invariant geometry of screw motions (the group exponential of a twist), whose geodesics
couple the two parts; see :class:`SE3` for the formulas and the frames in which velocities are
expressed (:meth:`SE3.tangent_to_twist`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._utils import check_choice, check_positive, manifold_checks_enabled, safe_sqrt
from .base import Manifold, _tiny_root, check_tol
from .euclidean import Euclidean
from .so3 import SO3, _rodrigues, hat, vee

__all__ = ["SE3"]

#: Frames in which :meth:`SE3.tangent_to_twist` expresses a velocity.
TWIST_FRAMES = ("body", "space", "mixed")


def _cross(a: Tensor, b: Tensor) -> Tensor:
    a, b = torch.broadcast_tensors(a, b)
    return torch.linalg.cross(a, b)


def _matvec(m: Tensor, v: Tensor) -> Tensor:
    return (m @ v[..., None])[..., 0]


class SE3(Manifold):
    r"""Rigid motions ``SE(3)``: 4x4 homogeneous matrices with the product metric SO(3) x R^3.

    **Points** are matrices ``x = [[R, t], [0 0 0 1]]`` of shape ``(..., 4, 4)`` with ``R`` a
    rotation and ``t`` a translation; any leading dimensions are batch dimensions (a protein
    of ``N`` residues is ``(B, N, 4, 4)``). :meth:`split` returns ``(R, t)`` and :meth:`join`
    builds the matrix. **Tangent vectors** at ``x`` are ambient 4x4 matrices
    ``u = [[dR, dt], [0 0 0 0]]`` with ``dR = R hat(w)`` tangent to SO(3) at ``R``
    (``w`` the body angular velocity) and ``dt`` any vector of R^3: the velocity
    ``d/ds x(s)`` of a curve of frames, entry by entry.

    **Metric.** The product of SO(3)'s bi-invariant metric and R^3's, weighted:

    ``<u, v>_x = rotation_weight * tr(dR_u^T dR_v) / 2 + translation_weight * <dt_u, dt_v>``

    (``= rotation_weight <w_u, w_v> + translation_weight <dt_u, dt_v>``), so
    ``dist(x, y)^2 = rotation_weight * angle(R_x^T R_y)^2 + translation_weight * |t_y - t_x|^2``.
    The geodesics are those of the product, whatever the weights:

    * ``expmap(x, u) = [[R exp(hat(w)), t + dt], [0, 1]]`` (Rodrigues with small-angle series);
    * ``logmap(x, y) = [[R_x hat(w), t_y - t_x], [0, 0]]`` with ``w`` the rotation vector of
      ``R_x^T R_y`` (SO3's :meth:`~manifoldfm.manifolds.SO3.logmap`, including its
      convention at angle ``pi``: the axis signed so that its largest component is positive);
    * ``transp``/``expmap_transp``: SO(3)'s exact parallel transport on the rotation block,
      the identity on the translation (exact parallel transport of the product);
    * ``projx``: nearest rotation (``roma.special_procrustes``), translation kept, bottom row
      reset to ``[0, 0, 0, 1]``; ``proju``: SO(3)'s projection of ``dR``, ``dt`` kept, bottom
      row zeroed; ``egrad2rgrad`` divides each block by its weight (``2 / rotation_weight``
      for the rotation, as on SO(3));
    * ``injectivity_radius = pi * sqrt(rotation_weight)`` (the translation never cuts);
      ``volume = inf``.

    This is the geometry of FrameFlow and FoldFlow, **not** the left-invariant metric whose
    geodesics are screw motions (``x exp(hat(xi))`` with the group exponential): here a
    frame's origin moves on a straight line while its axes turn. The metric is invariant
    under rigid motions applied on the **left**, ``x -> g x`` with ``g = (Q, s)``, i.e.
    ``(R, t) -> (Q R, Q t + s)``; geodesics map to geodesics and velocities to ``g u``
    (``dR -> Q dR``, ``dt -> Q dt``). It is not invariant under right multiplication (a
    change of the body frame moves the origin by ``R r``).

    **Random points.** R^3 has no uniform law, so :meth:`random_uniform` raises;
    :meth:`random` draws a Haar-uniform rotation and a standard normal translation
    (rotation first, from the same generator). ``random_tangent`` draws standard normal
    coordinates in the orthonormal basis ``R hat(e_k) / sqrt(rotation_weight)``,
    ``e_k / sqrt(translation_weight)``.

    **Twists** (6-vectors, angular part first; see :meth:`tangent_to_twist`): ``"body"``
    ``(w, R^T dt) = vee4(x^{-1} u)``, ``"space"`` ``(R w, dt - (R w) x t) = vee4(u x^{-1})``
    (the standard body and spatial twists of rigid-body kinematics, related by
    :meth:`adjoint`) and ``"mixed"`` ``(R w, dt)`` (angular velocity in world axes and the
    world velocity of the frame's origin). In body and mixed coordinates the metric is
    ``rotation_weight |w|^2 + translation_weight |v|^2``.

    **Validation.** With ``manifoldfm.checks(manifold=True)`` a point must have an orthonormal
    rotation block of determinant +1, finite entries and the bottom row ``[0, 0, 0, 1]``; the
    error names which of these fails (reflections with ``det R = -1`` by name).

    Args:
        rotation_weight: weight of the rotation block in the metric (> 0).
        translation_weight: weight of the translation in the metric (> 0).

    Attributes:
        factors: ``(SO3(), Euclidean(3))`` (an ``nn.ModuleList``), so that
            :class:`~manifoldfm.paths.ProductPath` can move the rotation and the translation
            with different paths.

    References:
        F. C. Park, "Distance metrics on the rigid-body motions with applications to mechanism
        design", Journal of Mechanical Design 117(1), 1995.
        J. Yim et al. Fast protein backbone generation with SE(3) flow matching (FrameFlow).
        arXiv:2310.05297, 2023.
        A. J. Bose et al. SE(3)-stochastic flow matching for protein backbone generation
        (FoldFlow). ICLR 2024.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import SE3
        >>> from manifoldfm.manifolds.so3 import rotvec_to_rotmat
        >>> se3 = SE3(translation_weight=0.25)
        >>> rot = rotvec_to_rotmat(torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64))
        >>> x = se3.origin(dtype=torch.float64)
        >>> y = se3.join(rot, torch.tensor([0.0, 0.0, 0.8], dtype=torch.float64))
        >>> round(float(se3.dist2(x, y)), 6)  # 0.3^2 + 0.25 * 0.8^2
        0.25
        >>> u = se3.logmap(x, y)
        >>> tuple(round(v, 6) for v in se3.tangent_to_twist(x, u).tolist())
        (0.0, 0.0, 0.3, 0.0, 0.0, 0.8)
        >>> bool(torch.allclose(se3.expmap(x, u), y))
        True
    """

    name = "SE3"
    volume = math.inf
    parallel_transport = True
    _deviation_name = "max(|R^T R - I|, |det R - 1|, |bottom row - (0, 0, 0, 1)|)"

    def __init__(self, rotation_weight: float = 1.0, translation_weight: float = 1.0) -> None:
        super().__init__()
        self.rotation_weight = check_positive(rotation_weight, "rotation_weight")
        self.translation_weight = check_positive(translation_weight, "translation_weight")
        self._set_shape((4, 4), 6)
        self.factors = nn.ModuleList([SO3(), Euclidean(3)])
        self.injectivity_radius = math.pi * math.sqrt(self.rotation_weight)

    def extra_repr(self) -> str:
        return (
            f"rotation_weight={self.rotation_weight!r}, "
            f"translation_weight={self.translation_weight!r}"
        )

    @property
    def _ms(self) -> tuple[Manifold, ...]:
        return tuple(self.factors)  # type: ignore[arg-type]

    @property
    def _so3(self) -> SO3:
        return self.factors[0]  # type: ignore[return-value]

    @property
    def _r3(self) -> Euclidean:
        return self.factors[1]  # type: ignore[return-value]

    # -------------------------------------------------------------------- layout

    @staticmethod
    def _split(x: Tensor) -> list[Tensor]:
        return [x[..., :3, :3], x[..., :3, 3]]

    @staticmethod
    def _assemble(rot: Tensor, trans: Tensor, corner: float) -> Tensor:
        lead = torch.broadcast_shapes(rot.shape[:-2], trans.shape[:-1])
        top = torch.cat([rot.expand((*lead, 3, 3)), trans.expand((*lead, 3))[..., None]], dim=-1)
        bottom = torch.eye(4, dtype=top.dtype, device=top.device)[3] * corner
        return torch.cat([top, bottom.expand((*lead, 1, 4))], dim=-2)

    def _join(self, parts: Sequence[Tensor]) -> Tensor:
        """Points ``[[R, t], [0, 1]]`` from ``(R, t)`` (unvalidated)."""
        return self._assemble(parts[0], parts[1], 1.0)

    def _join_tangent(self, parts: Sequence[Tensor]) -> Tensor:
        """Tangent vectors ``[[dR, dt], [0, 0]]`` from ``(dR, dt)`` (unvalidated)."""
        return self._assemble(parts[0], parts[1], 0.0)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Rotation and translation blocks of points (or tangent vectors).

        Args:
            x: shape ``(..., 4, 4)``.

        Returns:
            ``(R, t)``: views of shape ``(..., 3, 3)`` and ``(..., 3)`` (no copy).

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import SE3
            >>> rot, trans = SE3().split(torch.eye(4).expand(5, 7, 4, 4))
            >>> rot.shape, trans.shape
            (torch.Size([5, 7, 3, 3]), torch.Size([5, 7, 3]))
        """
        self._validate("x", x)
        rot, trans = self._split(x)
        return rot, trans

    def join(self, rot: Tensor, trans: Tensor, *, tangent: bool = False) -> Tensor:
        """Homogeneous matrices from rotation and translation blocks.

        Args:
            rot: rotations ``R`` (or, with ``tangent=True``, their velocities ``dR``), shape
                ``(..., 3, 3)``.
            trans: translations, shape ``(..., 3)``; leading shapes broadcast with ``rot``'s.
            tangent: build tangent vectors (bottom row ``[0, 0, 0, 0]``) instead of points
                (bottom row ``[0, 0, 0, 1]``).

        Returns:
            Shape ``(..., 4, 4)`` (the broadcast leading shape).

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import SE3
            >>> SE3().join(torch.eye(3), torch.tensor([1.0, 2.0, 3.0]))
            tensor([[1., 0., 0., 1.],
                    [0., 1., 0., 2.],
                    [0., 0., 1., 3.],
                    [0., 0., 0., 1.]])
        """
        self._so3._validate("rot", rot)
        self._r3._validate("trans", trans)
        if rot.dtype != trans.dtype:
            raise TypeError(f"rot and trans must share a dtype, got {rot.dtype} and {trans.dtype}")
        try:
            torch.broadcast_shapes(rot.shape[:-2], trans.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"leading shapes of rot {tuple(rot.shape)} and trans {tuple(trans.shape)} "
                "do not broadcast"
            ) from None
        return self._assemble(rot, trans, 0.0 if tangent else 1.0)

    # -------------------------------------------------------------------- twists

    def _check_frame(self, frame: str) -> str:
        return check_choice(frame, "frame", TWIST_FRAMES)

    def tangent_to_twist(self, x: Tensor, u: Tensor, frame: str = "body") -> Tensor:
        r"""Coordinates ``(angular, linear)`` of tangent vectors in a chosen frame.

        With ``x = (R, t)``, ``u = [[dR, dt], [0, 0]]`` and ``w = vee(R^T dR)``:

        * ``"body"``: ``(w, R^T dt)``, the body twist ``x^{-1} u`` (velocities in the
          moving frame's axes);
        * ``"space"``: ``(R w, dt - (R w) x t)``, the spatial twist ``u x^{-1}``: the
          velocity field of the rigid motion, read at the world origin;
        * ``"mixed"``: ``(R w, dt)``: the angular velocity in world axes and the world
          velocity of the frame's origin (the translation part of the product geometry).

        ``space = adjoint(x) @ body``; the metric is ``rotation_weight |w|^2 +
        translation_weight |v|^2`` in body and mixed coordinates (not in space ones).

        Args:
            x: points, shape ``(..., 4, 4)``.
            u: tangent vectors at ``x``, shape ``(..., 4, 4)`` (leading shapes broadcast).
            frame: ``"body"``, ``"space"`` or ``"mixed"``.

        Returns:
            Twists ``(wx, wy, wz, vx, vy, vz)``, shape ``(..., 6)``.

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import SE3
            >>> se3 = SE3()
            >>> x = se3.join(torch.eye(3), torch.tensor([1.0, 0.0, 0.0]))
            >>> u = se3.twist_to_tangent(x, torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
            >>> se3.tangent_to_twist(x, u, frame="space")  # spinning about z through (1, 0, 0)
            tensor([ 0.,  0.,  1.,  0., -1.,  0.])
        """
        self._check_frame(frame)
        self._validate_same(x=x, u=u)
        self._require_point("x", x)
        self._require_tangent("u", x, u)
        rot, trans = self._split(x)
        d_rot, d_trans = self._split(u)
        w = vee(rot.mT @ d_rot)
        if frame == "body":
            v = _matvec(rot.mT, d_trans)
            w, v = torch.broadcast_tensors(w, v)
            return torch.cat([w, v], dim=-1)
        ws = _matvec(rot, w)
        v = d_trans if frame == "mixed" else d_trans - _cross(ws, trans)
        ws, v = torch.broadcast_tensors(ws, v)
        return torch.cat([ws, v], dim=-1)

    def twist_to_tangent(self, x: Tensor, xi: Tensor, frame: str = "body") -> Tensor:
        """Tangent vectors at ``x`` from twists: the inverse of :meth:`tangent_to_twist`.

        Args:
            x: points, shape ``(..., 4, 4)``.
            xi: twists ``(angular, linear)``, shape ``(..., 6)`` (leading shapes broadcast).
            frame: ``"body"``, ``"space"`` or ``"mixed"`` (see :meth:`tangent_to_twist`).

        Returns:
            Tangent vectors ``[[dR, dt], [0, 0]]``, shape ``(..., 4, 4)``.

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import SE3
            >>> se3 = SE3()
            >>> x = se3.origin(dtype=torch.float64)
            >>> u = se3.twist_to_tangent(x, torch.tensor([0.0, 0.0, 1.0, 2.0, 0.0, 0.0], dtype=torch.float64))
            >>> u
            tensor([[ 0., -1.,  0.,  2.],
                    [ 1.,  0.,  0.,  0.],
                    [ 0.,  0.,  0.,  0.],
                    [ 0.,  0.,  0.,  0.]], dtype=torch.float64)
        """
        self._check_frame(frame)
        self._validate("x", x)
        if not isinstance(xi, Tensor):
            raise TypeError(f"xi must be a torch.Tensor, got {type(xi).__name__}")
        if xi.ndim < 1 or xi.shape[-1] != 6:
            raise ValueError(f"xi must have shape (..., 6), got {tuple(xi.shape)}")
        if xi.dtype != x.dtype:
            raise TypeError(f"x and xi must share a dtype, got {x.dtype} and {xi.dtype}")
        try:
            torch.broadcast_shapes(self._lead(x), xi.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"leading shapes of x {tuple(x.shape)} and xi {tuple(xi.shape)} do not broadcast"
            ) from None
        self._require_point("x", x)
        rot, trans = self._split(x)
        w, v = xi[..., :3], xi[..., 3:]
        if frame == "body":
            return self._join_tangent([rot @ hat(w), _matvec(rot, v)])
        d_rot = hat(w) @ rot
        d_trans = v if frame == "mixed" else v + _cross(w, trans)
        return self._join_tangent([d_rot, d_trans])

    def adjoint(self, x: Tensor) -> Tensor:
        """Adjoint matrices ``[[R, 0], [hat(t) R, R]]`` mapping body twists to space twists.

        Args:
            x: points, shape ``(..., 4, 4)``.

        Returns:
            Shape ``(..., 6, 6)`` acting on ``(angular, linear)`` twists.

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import SE3
            >>> se3 = SE3()
            >>> x = se3.join(torch.eye(3), torch.tensor([1.0, 0.0, 0.0]))
            >>> se3.adjoint(x) @ torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
            tensor([ 0.,  0.,  1.,  0., -1.,  0.])
        """
        self._validate("x", x)
        self._require_point("x", x)
        rot, trans = self._split(x)
        top = torch.cat([rot, torch.zeros_like(rot)], dim=-1)
        low = torch.cat([hat(trans) @ rot, rot], dim=-1)
        return torch.cat([top, low], dim=-2)

    # -------------------------------------------------------------------- validation

    def _require_point(self, name: str, x: Tensor) -> None:
        if not manifold_checks_enabled() or x.numel() == 0:
            return
        xd = x.detach()
        dev = float(self._point_deviation(xd).max())
        tol = check_tol(x.dtype)
        if dev <= tol:
            return
        rot = xd[..., :3, :3]
        reasons = []
        if not bool(torch.isfinite(xd).all()):
            reasons.append(f"{int((~torch.isfinite(xd)).sum())} non-finite entries")
        else:
            det = (torch.linalg.cross(rot[..., 0, :], rot[..., 1, :]) * rot[..., 2, :]).sum(-1)
            if bool((det < 0).any()):
                reasons.append(
                    f"{int((det < 0).sum())} rotation block(s) are reflections (det R = -1)"
                )
            eye3 = torch.eye(3, dtype=xd.dtype, device=xd.device)
            orth = float((rot.mT @ rot - eye3).abs().max())
            if orth > tol:
                reasons.append(f"rotation block not orthonormal (|R^T R - I| = {orth:.3g})")
            eye = torch.eye(4, dtype=xd.dtype, device=xd.device)[3]
            bottom = float((xd[..., 3, :] - eye).abs().max())
            if bottom > tol:
                reasons.append(f"bottom row is not [0, 0, 0, 1] (off by {bottom:.3g})")
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} is not on {self!r}: {'; '.join(reasons)} "
            f"(tolerance {tol:.1g})"
        )

    # -------------------------------------------------------------------- implementations

    def _projx(self, x: Tensor) -> Tensor:
        rot, trans = self._split(x)
        return self._join([self._so3._projx(rot), trans])

    def _proju(self, x: Tensor, u: Tensor) -> Tensor:
        rot, _ = self._split(x)
        d_rot, d_trans = self._split(u)
        return self._join_tangent([self._so3._proju(rot, d_rot), d_trans])

    def _egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        rot, _ = self._split(x)
        d_rot, d_trans = self._split(u)
        g_rot = self._so3._proju(rot, d_rot) * (2.0 / self.rotation_weight)
        return self._join_tangent([g_rot, d_trans / self.translation_weight])

    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        rot_part = (u[..., :3, :3] * v[..., :3, :3]).sum((-2, -1))
        trans_part = (u[..., :3, 3] * v[..., :3, 3]).sum(-1)
        out = (0.5 * self.rotation_weight) * rot_part + self.translation_weight * trans_part
        return out.expand(torch.broadcast_shapes(self._lead(x), out.shape))

    def _expmap(self, x: Tensor, u: Tensor) -> Tensor:
        rot, trans = self._split(x)
        d_rot, d_trans = self._split(u)
        return self._join([self._so3._expmap(rot, d_rot), trans + d_trans])

    def _logmap(self, x: Tensor, y: Tensor) -> Tensor:
        rx, tx = self._split(x)
        ry, ty = self._split(y)
        return self._join_tangent([self._so3._logmap(rx, ry), ty - tx])

    def _dist2(self, x: Tensor, y: Tensor) -> Tensor:
        rx, tx = self._split(x)
        ry, ty = self._split(y)
        angle = self._so3._dist(rx, ry)
        diff = ty - tx
        return self.rotation_weight * angle * angle + self.translation_weight * (diff * diff).sum(
            -1
        )

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        sq = self._dist2(x, y)
        return safe_sqrt(sq, eps=_tiny_root(sq.dtype))

    def dist2(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Squared geodesic distance ``w_R angle^2 + w_t |t_y - t_x|^2`` (no square root).

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import SE3
            >>> se3 = SE3()
            >>> y = se3.join(torch.eye(3), torch.tensor([3.0, 4.0, 0.0]))
            >>> se3.dist2(se3.origin(), y)
            tensor(25.)
        """
        self._validate_same(x=x, y=y)
        self._require_point("x", x)
        self._require_point("y", y)
        out = self._dist2(x, y)
        return self._keep(out) if keepdim else out

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        rx, tx = self._split(x)
        ry, ty = self._split(y)
        d_rot, d_trans = self._split(u)
        lead = torch.broadcast_shapes(tx.shape, ty.shape, d_trans.shape)
        return self._join_tangent([self._so3._dlogmap(rx, ry, d_rot), d_trans.expand(lead)])

    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        rx, tx = self._split(x)
        ry, ty = self._split(y)
        d_rot, d_trans = self._split(v)
        lead = torch.broadcast_shapes(tx.shape, ty.shape, d_trans.shape)
        return self._join_tangent([self._so3._transp(rx, ry, d_rot), d_trans.expand(lead)])

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        rot, trans = self._split(x)
        u_rot, u_trans = self._split(u)
        v_rot, v_trans = self._split(v)
        ry, r_vel = self._so3._expmap_transp(rot, u_rot, v_rot)
        ty = trans + u_trans
        return self._join([ry, ty]), self._join_tangent(
            [r_vel, v_trans.expand(torch.broadcast_shapes(ty.shape, v_trans.shape))]
        )

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        rot, trans = self._split(x)
        u_rot, u_trans = self._split(u)
        # the rotation's body velocity is constant along its geodesic (see SO3)
        w = vee(rot.mT @ u_rot)
        ry = rot @ _rodrigues(s[..., None] * w)
        ty = torch.addcmul(trans, s[..., None], u_trans)
        return self._join([ry, ty]), self._join_tangent([ry @ hat(w), u_trans.expand(ty.shape)])

    def _random_tangent(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        # orthonormal basis R hat(e_k) / sqrt(w_R), e_k / sqrt(w_t): standard normal coordinates
        z = torch.randn((*self._lead(x), 6), generator=generator, dtype=x.dtype, device=x.device)
        w = z[..., :3] * (1.0 / math.sqrt(self.rotation_weight))
        v = z[..., 3:] * (1.0 / math.sqrt(self.translation_weight))
        return self._join_tangent([x[..., :3, :3] @ hat(w), v])

    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:  # pragma: no cover - random_uniform raises before reaching this
        raise ValueError(f"{self!r} has no uniform distribution")

    def _random(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        rot = self._so3._random_uniform(size, generator, dtype, device)
        trans = torch.randn((*size, 3), generator=generator, dtype=dtype, device=device)
        return self._join([rot, trans])

    def _origin(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.eye(4, dtype=dtype, device=device).expand((*size, 4, 4)).clone()

    def _point_deviation(self, x: Tensor) -> Tensor:
        rot = self._so3._point_deviation(x[..., :3, :3])
        eye = torch.eye(4, dtype=x.dtype, device=x.device)[3]
        bottom = (x[..., 3, :] - eye).abs().amax(-1)
        finite = torch.isfinite(x).flatten(start_dim=-2).all(-1)
        dev = torch.maximum(rot, bottom)
        return torch.where(finite & torch.isfinite(dev), dev, math.inf)

    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        rot = self._so3._tangent_deviation(x[..., :3, :3], u[..., :3, :3])
        bottom = u[..., 3, :].abs().amax(-1) / (1.0 + u.abs().amax((-2, -1)))
        finite = torch.isfinite(u).flatten(start_dim=-2).all(-1)
        dev = torch.maximum(rot, bottom)
        dev = torch.where(finite & torch.isfinite(dev), dev, math.inf)
        return dev.expand(torch.broadcast_shapes(self._lead(x), dev.shape))
