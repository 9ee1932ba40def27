r"""Minibatch OT costs between sets of rigid frames (proteins, poses) on SO(3)^N x R^{3N}."""

from __future__ import annotations

import roma
import torch
from torch import Tensor

from .._utils import check_positive, checks, value_checks_enabled
from ..manifolds.se3 import SE3

__all__ = ["FrameCost", "kabsch"]


def _check_mask(mask: Tensor | None, shape: tuple[int, ...], name: str) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    if mask.numel() and not bool((torch.isfinite(mask) & (mask >= 0)).all()):  # one host read
        raise ValueError(
            f"{name} must hold finite weights >= 0 (1 present, 0 padded), got a minimum of "
            f"{float(mask.min()):.6g} and a maximum of {float(mask.max()):.6g}"
        )
    return mask


def _weights(mask: Tensor | None, shape: tuple[int, ...], like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.float64, device=like.device)
    return mask.to(dtype=torch.float64, device=like.device)


def _centre(t: Tensor, w: Tensor) -> Tensor:
    """Translations ``(..., N, 3)`` minus their ``w``-weighted mean (plain mean if ``w`` sums to 0)."""
    total = w.sum(-1, keepdim=True)[..., None]
    mean = (w[..., None] * t).sum(-2, keepdim=True) / total.clamp_min(torch.finfo(t.dtype).tiny)
    return t - mean


def _proper_rotation(m: Tensor) -> tuple[Tensor, Tensor]:
    """For ``m = sum_k w_k a_k b_k^T`` (moving ``a``, target ``b``), the rotation ``Q``
    maximising ``tr(Q m)`` (so ``Q a_k`` best matches ``b_k``) and that maximum."""
    u, s, vh = torch.linalg.svd(m)
    v = vh.mT
    sign = torch.where(torch.linalg.det(v @ u.mT) < 0, -1.0, 1.0).to(m.dtype)
    d = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], dim=-1)
    rot = (v * d[..., None, :]) @ u.mT
    return rot, (s * d).sum(-1)


def kabsch(points: Tensor, target: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Rigid motion ``(Q, s)`` that best superimposes point sets: ``Q p_k + s ~ y_k``.

    Minimises ``sum_k w_k |Q p_k + s - y_k|^2`` over proper rotations ``Q`` (``det Q = +1``)
    and translations ``s``: the weighted centroids are matched and ``Q`` comes from the SVD
    of the weighted cross-covariance, its last singular direction flipped when needed so that
    ``Q`` is never a reflection. Batched over leading dimensions; computed in the inputs'
    dtype. When the points are degenerate (fewer than three non-collinear) ``Q`` is one of
    the optimal rotations.

    Args:
        points: moving points, shape ``(..., N, 3)``.
        target: target points, same shape (leading shapes broadcast).
        weights: optional non-negative weights ``(..., N)`` (e.g. a residue mask).

    Returns:
        ``(Q, s)``: rotations ``(..., 3, 3)`` and translations ``(..., 3)``.

    References:
        W. Kabsch. A solution for the best rotation to relate two sets of vectors. Acta
        Crystallographica A32, 1976.

    Example:
        >>> import torch
        >>> from manifoldfm.couplings import kabsch
        >>> from manifoldfm.manifolds.so3 import rotvec_to_rotmat
        >>> p = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> q = rotvec_to_rotmat(torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64))
        >>> rot, shift = kabsch(p, p @ q.mT + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> bool(torch.allclose(rot, q)), tuple(round(v, 6) for v in shift.tolist())
        (True, (1.0, 2.0, 3.0))
    """
    for name, x in (("points", points), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        if x.ndim < 2 or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (..., N, 3), got {tuple(x.shape)}")
    if points.shape[-2] != target.shape[-2]:
        raise ValueError(
            f"points and target must hold the same number of points, got {tuple(points.shape)} "
            f"and {tuple(target.shape)}"
        )
    p, y = torch.broadcast_tensors(points, target)
    w = torch.ones(p.shape[:-1], dtype=p.dtype, device=p.device) if weights is None else weights
    if not isinstance(w, Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(w).__name__}")
    if tuple(w.shape[-1:]) != p.shape[-2:-1]:
        raise ValueError(f"weights must have shape (..., {p.shape[-2]}), got {tuple(w.shape)}")
    w = w.to(p.dtype).expand(p.shape[:-1])
    if value_checks_enabled():  # one host sync, at the boundary
        ok = torch.isfinite(p).all() & torch.isfinite(y).all() & (w >= 0).all()
        if not bool(ok & (w.sum(-1) > 0).all()):
            raise ValueError(
                "kabsch needs finite points and targets and non-negative weights with a positive "
                f"sum per set (points {tuple(points.shape)}, weights {tuple(w.shape)})"
            )
    total = w.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    cp = (w[..., None] * p).sum(-2) / total
    cy = (w[..., None] * y).sum(-2) / total
    a, b = p - cp[..., None, :], y - cy[..., None, :]
    rot, _ = _proper_rotation((w[..., None] * a).mT @ b)
    return rot, cy - (rot @ cp[..., None])[..., 0]


def _left_matrix(p: Tensor) -> Tensor:
    """4x4 matrices ``L(p)`` with ``L(p) q = p * q`` (Hamilton product, XYZW quaternions)."""
    x, y, z, w = p.unbind(-1)
    rows = [
        torch.stack([w, -z, y, x], dim=-1),
        torch.stack([z, w, -x, y], dim=-1),
        torch.stack([-y, x, w, z], dim=-1),
        torch.stack([-x, -y, -z, w], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def _angle_sq(d: Tensor) -> Tensor:
    """Squared rotation angles ``(2 atan2(|v|, |d|))^2`` from ``d = <q, q'>`` of unit
    quaternions, computed in place in ``d`` (a fresh buffer) and one more buffer."""
    c = d.abs_().clamp_max_(1.0)
    s = torch.mul(c, c).neg_().add_(1.0).clamp_min_(0.0).sqrt_()
    return s.atan2_(c).mul_(2.0).square_()


def _weighted_sum(angle_sq: Tensor, w0: Tensor | None, w1: Tensor | None) -> Tensor:
    """``sum_k w0[a, k] w1[b, k] angle_sq[k, a, b]`` for ``angle_sq`` of shape ``(N, B0, B1)``."""
    if w0 is not None:
        angle_sq.mul_(w0.T[:, :, None])
    if w1 is not None:
        angle_sq.mul_(w1.T[:, None, :])
    return angle_sq.sum(0)


class FrameCost:
    r"""Squared SE(3)^N distance between sets of frames, for all pairs of two batches.

    For frames ``x0[a] = (R0[a, k], t0[a, k])`` and ``x1[b]`` (``k`` over the ``N`` residues),
    the cost of pairing ``a`` with ``b`` is the squared geodesic distance of
    ``SE3(rotation_weight, translation_weight)`` summed over the frames:

    ``C[a, b] = sum_k m_k ( rotation_weight angle(R0[a, k]^T R1[b, k])^2 + translation_weight |t0[a, k] - t1[b, k]|^2 )``

    with ``m_k = mask0[a, k] mask1[b, k]`` (1 without masks). Pass it to
    ``ExactOT(cost=FrameCost())`` or ``SinkhornOT(reg, cost=FrameCost())``: the coupling
    returns the **original** ``x1`` rows in the optimal order (``pair.x1 = x1[pair.j]``).

    **Alignment** (``align=True``). Before measuring, every candidate ``x1[b]`` is moved as a
    rigid body onto each ``x0[a]``: ``g_ab = (Q_ab, s_ab)`` is the Kabsch superposition of
    ``x1[b]``'s translations on ``x0[a]``'s (weighted by ``m_k``: centroids matched, ``Q_ab``
    a proper rotation; see :func:`kabsch`), and ``C[a, b]`` is the cost above between
    ``x0[a]`` and ``g_ab x1[b]`` (translations ``Q_ab t1 + s_ab`` and orientations
    ``Q_ab R1``). The cost is then invariant under rigid motions of either batch, as suits
    data known only up to a global pose. The coupling still returns the unaligned ``x1``;
    :meth:`align` gives the moved copies of the chosen partners
    (``cost.align(pair.x1, pair.x0)``).

    All ``B0 * B1`` pairs are evaluated at once in float64 (batched matrix products; with
    ``align`` a batched 3x3 SVD per pair and an intermediate of ``4 B0 B1 N`` numbers); the
    result is detached (no gradient), float64, on the inputs' device. Rotation angles come
    from quaternion inner products by ``atan2`` (no clamped ``acos``). While value checks are
    on (the default, see :func:`manifoldfm.checks`) both batches are checked to be rigid
    motions (finite, rotation blocks orthonormal with determinant +1): one pass over the frames
    and one host sync per call.

    Args:
        rotation_weight: weight of the squared rotation angles (> 0).
        translation_weight: weight of the squared translation distances (> 0).
        align: superimpose each ``x1`` on each ``x0`` first (see above).

    Example:
        >>> import torch
        >>> from manifoldfm.couplings import ExactOT, FrameCost
        >>> from manifoldfm.manifolds import SE3
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = SE3().random(6, 10, generator=g, dtype=torch.float64)
        >>> perm = torch.tensor([3, 0, 5, 1, 4, 2])
        >>> pair = ExactOT(cost=FrameCost())(x0, x0[perm])
        >>> bool(torch.equal(pair.x1, x0)), pair.j.tolist()  # undoes the shuffle
        (True, [1, 3, 5, 0, 4, 2])
        >>> cost = FrameCost(align=True)
        >>> moved = SE3().random(generator=g, dtype=torch.float64) @ x0  # rigid motion of all
        >>> float(cost(x0, moved).diagonal().abs().max()) < 1e-12
        True
    """

    def __init__(
        self, rotation_weight: float = 1.0, translation_weight: float = 1.0, *, align: bool = False
    ) -> None:
        self.rotation_weight = check_positive(rotation_weight, "rotation_weight")
        self.translation_weight = check_positive(translation_weight, "translation_weight")
        if not isinstance(align, bool):
            raise TypeError(f"align must be a bool, got {type(align).__name__}")
        self._align = align
        self._se3 = SE3(self.rotation_weight, self.translation_weight)

    @property
    def aligned(self) -> bool:
        """Whether each ``x1`` is superimposed on each ``x0`` before measuring."""
        return self._align

    def __repr__(self) -> str:
        return (
            f"FrameCost(rotation_weight={self.rotation_weight!r}, "
            f"translation_weight={self.translation_weight!r}, align={self._align!r})"
        )

    # ------------------------------------------------------------------ validation

    def _check(
        self, x0: Tensor, x1: Tensor, m0: Tensor | None = None, m1: Tensor | None = None
    ) -> None:
        """Shapes, then the present frames (``m > 0``; all without a mask) as rigid motions."""
        self._check_shapes(x0, x1)
        self._check_frames(x0, x1, m0, m1)

    def _check_shapes(self, x0: Tensor, x1: Tensor) -> None:
        se3 = self._se3
        for name, x in (("x0", x0), ("x1", x1)):
            se3._validate(name, x)
            if x.ndim != 4:
                raise ValueError(
                    f"{name} must have shape (B, N, 4, 4) (a batch of N frames each), got "
                    f"{tuple(x.shape)}"
                )
        if x0.shape[1] != x1.shape[1]:
            raise ValueError(
                f"x0 and x1 must hold the same number of frames, got x0: {tuple(x0.shape)} and "
                f"x1: {tuple(x1.shape)}"
            )
        if x0.device != x1.device:
            raise ValueError(
                f"x0 and x1 must be on the same device, got {x0.device} and {x1.device}"
            )

    def _check_frames(self, x0: Tensor, x1: Tensor, m0: Tensor | None, m1: Tensor | None) -> None:
        # once per batch at the boundary: a reflection or a NaN frame would otherwise get a
        # meaningless quaternion and a pairing; on with the value checks (the default)
        se3 = self._se3
        with checks(manifold=True if value_checks_enabled() else None):
            for name, x, m in (("x0", x0, m0), ("x1", x1, m1)):
                if m is not None:
                    # padded frames (zero weight) need not be rigid motions, only finite
                    xd = x.detach()
                    keep = (m != 0).to(x.device)[..., None, None]
                    keep = keep | ~torch.isfinite(xd).all(-1, keepdim=True).all(-2, keepdim=True)
                    x = torch.where(keep, xd, torch.eye(4, dtype=x.dtype, device=x.device))
                se3._require_point(name, x)

    # ------------------------------------------------------------------ cost

    def __call__(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Cost matrix ``(B0, B1)`` between two batches of frames (see the class).

        Args:
            x0: frames ``(B0, N, 4, 4)``.
            x1: frames ``(B1, N, 4, 4)``.

        Returns:
            float64 tensor ``(B0, B1)``.
        """
        return self.pairwise(x0, x1)

    def pairwise(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        mask0: Tensor | None = None,
        mask1: Tensor | None = None,
    ) -> Tensor:
        """Cost matrix with optional residue masks (padded batches).

        Frame ``k`` counts for the pair ``(a, b)`` with weight ``mask0[a, k] * mask1[b, k]``,
        in the rotation and translation terms and in the alignment. To use masks in a
        coupling, close over them:
        ``ExactOT(cost=lambda a, b: fc.pairwise(a, b, mask0=m0, mask1=m1))`` (the masks of
        the paired ``x1`` are then ``m1[pair.j]``).

        Args:
            x0: frames ``(B0, N, 4, 4)``.
            x1: frames ``(B1, N, 4, 4)``.
            mask0: optional weights ``(B0, N)`` (bool or float, >= 0).
            mask1: optional weights ``(B1, N)``.

        Returns:
            float64 tensor ``(B0, B1)``, detached.

        Example:
            >>> import torch
            >>> from manifoldfm.couplings import FrameCost
            >>> from manifoldfm.manifolds import SE3
            >>> x0, x1 = SE3().origin(1, 3), SE3().origin(2, 3)
            >>> x1[1, 2, :3, 3] = 5.0  # only the last frame of x1[1] differs: masked out
            >>> FrameCost().pairwise(x0, x1, mask1=torch.tensor([[1, 1, 1], [1, 1, 0]]))
            tensor([[0., 0.]], dtype=torch.float64)
        """
        self._check_shapes(x0, x1)
        b0, n = x0.shape[:2]
        b1 = x1.shape[0]
        m0 = _check_mask(mask0, (b0, n), "mask0")
        m1 = _check_mask(mask1, (b1, n), "mask1")
        self._check_frames(x0, x1, m0, m1)
        w0, w1 = _weights(m0, (b0, n), x0), _weights(m1, (b1, n), x1)
        # the per-frame weights of the rotation term, None where no mask was given
        r0 = None if m0 is None else w0
        r1 = None if m1 is None else w1
        a = x0.detach().to(torch.float64)
        b = x1.detach().to(torch.float64)
        q0 = roma.rotmat_to_unitquat(a[..., :3, :3])  # (B0, N, 4)
        q1 = roma.rotmat_to_unitquat(b[..., :3, :3])
        t0, t1 = a[..., :3, 3], b[..., :3, 3]
        if self._align:
            rot_cost, trans_cost = self._aligned_terms(q0, q1, t0, t1, w0, w1, r0, r1)
        else:
            rot_cost, trans_cost = self._plain_terms(q0, q1, t0, t1, w0, w1, r0, r1)
        return self.rotation_weight * rot_cost + self.translation_weight * trans_cost

    @staticmethod
    def _plain_terms(
        q0: Tensor,
        q1: Tensor,
        t0: Tensor,
        t1: Tensor,
        w0: Tensor,
        w1: Tensor,
        r0: Tensor | None,
        r1: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        # rotations: <q0[a, k], q1[b, k]> for all pairs, one batched product over the frames
        d = torch.bmm(q0.transpose(0, 1), q1.permute(1, 2, 0))  # (N, B0, B1)
        rot = _weighted_sum(_angle_sq(d), r0, r1)
        # translations: sum_k w |t0 - t1|^2 by products, after a common shift (no distance
        # changes) that keeps the expansion free of cancellation; padded frames (weight 0)
        # count for nothing, neither in the shift nor through their values
        t0 = torch.where(w0[..., None] > 0, t0, 0.0)
        t1 = torch.where(w1[..., None] > 0, t1, 0.0)
        tiny = torch.finfo(t0.dtype).tiny
        mean0 = (w0[..., None] * t0).sum((0, 1)) / w0.sum().clamp_min(tiny)
        mean1 = (w1[..., None] * t1).sum((0, 1)) / w1.sum().clamp_min(tiny)
        shift = 0.5 * (mean0 + mean1)
        t0 = torch.where(w0[..., None] > 0, t0 - shift, 0.0)
        t1 = torch.where(w1[..., None] > 0, t1 - shift, 0.0)
        sq0 = (w0 * t0.square().sum(-1)) @ w1.T
        sq1 = w0 @ (w1 * t1.square().sum(-1)).T
        cross = (w0[..., None] * t0).flatten(1) @ (w1[..., None] * t1).flatten(1).T
        return rot, (sq0 + sq1 - 2.0 * cross).clamp_min(0.0)

    @staticmethod
    def _aligned_terms(
        q0: Tensor,
        q1: Tensor,
        t0: Tensor,
        t1: Tensor,
        w0: Tensor,
        w1: Tensor,
        r0: Tensor | None,
        r1: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        b0, n = t0.shape[:2]
        b1 = t1.shape[0]
        # centre each set on its own centroid first (the alignment ignores it; it keeps the
        # moment expansions below free of cancellation)
        t0, t1 = _centre(t0, w0), _centre(t1, w1)
        p0, p1 = w0[..., None] * t0, w1[..., None] * t1  # (B, N, 3)
        weight = (w0 @ w1.T).clamp_min(torch.finfo(t0.dtype).tiny)  # (B0, B1)
        s0 = (w1 @ p0.transpose(0, 1).reshape(n, b0 * 3)).reshape(b1, b0, 3).transpose(0, 1)
        s1 = (w0 @ p1.transpose(0, 1).reshape(n, b1 * 3)).reshape(b0, b1, 3)
        # cross-covariance of the moving x1 with the target x0 about the pair's centroids:
        # m[a, b, i, j] = sum_k w t1[b, k, i] t0[a, k, j] - s1 s0^T / weight, one product
        m = p1.permute(0, 2, 1).reshape(b1 * 3, n) @ p0.permute(1, 0, 2).reshape(n, b0 * 3)
        m = m.reshape(b1, 3, b0, 3).permute(2, 0, 1, 3)
        m = m - s1[..., :, None] * s0[..., None, :] / weight[..., None, None]
        e0 = (w0 * t0.square().sum(-1)) @ w1.T - s0.square().sum(-1) / weight
        e1 = w0 @ (w1 * t1.square().sum(-1)).T - s1.square().sum(-1) / weight
        rot_q, best = _proper_rotation(m)  # (B0, B1, 3, 3), max tr(Q m)
        trans = (e0 + e1 - 2.0 * best).clamp_min(0.0)
        # orientations of g_ab x1[b] are Q_ab R1[b, k]: quaternions L(q(Q_ab)) q1[b, k];
        # batched over b: (B0 * 4, 4) @ (4, N) per b, then the inner products with q0[a, k]
        left = _left_matrix(roma.rotmat_to_unitquat(rot_q))  # (B0, B1, 4, 4)
        moved = torch.bmm(left.transpose(0, 1).reshape(b1, b0 * 4, 4), q1.transpose(1, 2))
        moved = moved.view(b1, b0, 4, n).mul_(q0.transpose(1, 2))  # q0 as (B0, 4, N)
        d = moved.sum(2).permute(2, 1, 0)  # (N, B0, B1)
        rot = _weighted_sum(_angle_sq(d), r0, r1)
        return rot, trans

    # ------------------------------------------------------------------ alignment

    def align(self, x: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """Move each frame set ``x[i]`` rigidly onto ``target[i]`` (Kabsch on translations).

        The motion ``g = (Q, s)`` superimposing ``x[i]``'s translations on ``target[i]``'s
        (:func:`kabsch`, weighted by ``mask``) is applied to the whole set:
        ``(R, t) -> (Q R, Q t + s)``. With ``align=True`` this is the motion under which the
        cost of the pair was measured; after a coupling, ``cost.align(pair.x1, pair.x0)``.

        Args:
            x: frames ``(B, N, 4, 4)`` to move.
            target: frames ``(B, N, 4, 4)``.
            mask: optional weights ``(B, N)``.

        Returns:
            The moved frames, shape, dtype and device of ``x``.

        Example:
            >>> import torch
            >>> from manifoldfm.couplings import FrameCost
            >>> from manifoldfm.manifolds import SE3
            >>> g = torch.Generator().manual_seed(1)
            >>> x = SE3().random(2, 8, generator=g, dtype=torch.float64)
            >>> motion = SE3().random(2, 1, generator=g, dtype=torch.float64)
            >>> bool(torch.allclose(FrameCost().align(motion @ x, x), x))
            True
        """
        self._check(x, target)
        if x.shape[0] != target.shape[0]:
            raise ValueError(
                f"x and target must pair up row by row, got {tuple(x.shape)} and "
                f"{tuple(target.shape)}"
            )
        w = _check_mask(mask, tuple(x.shape[:2]), "mask")
        weights = None if w is None else w.to(x.dtype)
        rot, shift = kabsch(x[..., :3, 3], target[..., :3, 3], weights)
        motion = self._se3._join([rot, shift])[:, None]  # (B, 1, 4, 4)
        return motion @ x
