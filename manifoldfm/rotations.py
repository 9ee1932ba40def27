"""Rotation and rigid-pose conversions: quaternions, homogeneous matrices, pytorch3d's conventions.

Everything is pure torch, batched over leading dimensions, and takes dtype and device from its
inputs. Our conventions (those of :class:`~manifoldfm.manifolds.SO3` and the SE(3) manifold):

* a rotation matrix ``R`` acts on **column** vectors, ``x' = R x``;
* a pose is the 4x4 homogeneous matrix ``T = [[R, t], [0, 0, 0, 1]]``, ``x' = R x + t``;
* a rotation vector is axis times angle (``rotvec_to_rotmat`` / ``rotmat_to_rotvec`` of
  :mod:`manifoldfm.manifolds.so3`, re-exported here);
* quaternions are Hamilton unit quaternions, in **either** order. Every quaternion function
  takes a required keyword ``scalar_first``: ``True`` for ``(w, x, y, z)`` (pytorch3d, Eigen's
  constructor, ROS 2 ``tf_transformations``... many others), ``False`` for ``(x, y, z, w)``
  (roma, scipy, the TUM RGB-D trajectory format). Both orders are common and a quaternion
  read in the wrong one is a valid but wrong rotation, so the order is never defaulted.

**Canonical quaternions.** ``q`` and ``-q`` are the same rotation. With ``canonical=True`` the
scalar part is made non-negative; when it is exactly zero (angle ``pi``) the sign is chosen so
that the vector part's largest-magnitude component is positive (the first one on ties), the
axis convention of :func:`~manifoldfm.manifolds.so3.rotmat_to_rotvec`.

**Validation.** While value checks are on (the default; see :func:`manifoldfm.checks`) inputs are
checked, at the cost of one host-device sync per call: quaternions must be finite with unit norm
(within ``check_tol(dtype)``, 1e-4 in float32, 1e-6 in float64) unless ``normalize=True``;
rotation matrices must be finite, orthonormal and of determinant ``+1`` (a reflection is named as
such); homogeneous matrices must have the bottom row ``(0, 0, 0, 1)``. Failures raise
``ValueError`` naming the problem. Shapes are always checked. The functions re-exported from
:mod:`manifoldfm.manifolds.so3` (``hat``, ``vee``, ``rotvec_to_rotmat``, ``rotmat_to_rotvec``,
``rotation_angle``) are the manifold's hot-path primitives and check only shapes and floating
dtypes: give them rotation matrices (``rotmat_to_quat`` checks one first).

**pytorch3d.** ``pytorch3d`` is never imported. Its ``Transform3d`` and ``se3_exp_map`` matrices
act on row vectors, ``x' = x M``, so they are the transpose of ours (translation in the last
row); its quaternions are scalar-first; its ``se3_exp_map(log_transform)`` takes
``[log_translation, log_rotation]`` where ``log_translation = V(w)^-1 t`` is the screw-motion
logarithm, not the translation. :func:`to_pytorch3d_matrix`, :func:`from_pytorch3d_matrix`,
:func:`se3_exp_map_pytorch3d` and :func:`se3_log_map_pytorch3d` convert exactly.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

from ._utils import value_checks_enabled
from .manifolds.base import check_tol, cos_sq, norm, sinc_sq, versine_sq
from .manifolds.so3 import (
    _check_last,
    _quat_to_rotvec,
    hat,
    rotation_angle,
    rotmat_to_rotvec,
    rotvec_to_rotmat,
    vee,
)

__all__ = [
    "canonical_quat",
    "from_pytorch3d_matrix",
    "from_pytorch3d_quaternion",
    "hat",
    "matrix_to_rt",
    "pose_from_quat_trans",
    "pose_from_tum",
    "pose_to_quat_trans",
    "pose_to_tum",
    "quat_to_rotmat",
    "quat_to_rotvec",
    "rotation_angle",
    "rotmat_to_quat",
    "rotmat_to_rotvec",
    "rotvec_to_quat",
    "rotvec_to_rotmat",
    "rt_to_matrix",
    "screw_exp",
    "screw_log",
    "se3_exp_map_pytorch3d",
    "se3_log_map_pytorch3d",
    "so3_left_jacobian",
    "so3_left_jacobian_inv",
    "to_pytorch3d_matrix",
    "to_pytorch3d_quaternion",
    "vee",
]


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------


def _check_float(x: Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_flag(scalar_first: object) -> bool:
    if not isinstance(scalar_first, bool):
        raise TypeError(
            f"scalar_first must be True (w, x, y, z) or False (x, y, z, w), got {scalar_first!r}"
        )
    return scalar_first


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _check_rotation(r: Tensor, name: str) -> None:
    """Finite, orthonormal, det +1 (value checks only; one sync)."""
    if not value_checks_enabled() or r.numel() == 0:
        return
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    orth = (r.mT @ r - eye).abs().amax((-2, -1))
    det = (torch.linalg.cross(r[..., 0, :], r[..., 1, :]) * r[..., 2, :]).sum(-1)
    stats = torch.stack(
        [
            (~torch.isfinite(r)).sum().to(r.dtype),
            torch.nan_to_num(orth, nan=0.0, posinf=0.0).amax(),
            torch.nan_to_num(det, nan=1.0, posinf=1.0, neginf=1.0).amin(),
            torch.nan_to_num(det, nan=1.0, posinf=1.0, neginf=1.0).amax(),
        ]
    ).tolist()
    bad, orth_max, det_min, det_max = stats
    tol = check_tol(r.dtype)
    shape = tuple(r.shape)
    if bad > 0:
        raise ValueError(f"{name} of shape {shape} holds {int(bad)} non-finite value(s)")
    if det_min < 0 and orth_max <= tol:
        raise ValueError(
            f"{name} holds a reflection (determinant {_fmt(det_min)}), not a rotation: "
            "rotation matrices must have determinant +1"
        )
    if orth_max > tol:
        raise ValueError(
            f"{name} is not orthonormal: largest |R^T R - I| is {_fmt(orth_max)} "
            f"(tolerance {_fmt(tol)} for {r.dtype})"
        )
    if max(abs(det_min - 1.0), abs(det_max - 1.0)) > tol:
        raise ValueError(f"{name} has determinant {_fmt(det_min)}, expected +1")


def _check_bottom_row(m: Tensor, name: str) -> None:
    if not value_checks_enabled() or m.numel() == 0:
        return
    want = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype, device=m.device)
    dev = torch.nan_to_num((m[..., 3, :] - want).abs(), nan=torch.inf).amax().item()
    if dev > check_tol(m.dtype):
        raise ValueError(
            f"{name} must have the bottom row (0, 0, 0, 1) of a homogeneous transform acting on "
            f"column vectors, largest deviation {_fmt(dev)}; a matrix with the translation in "
            "its last row is in the row-vector convention (use from_pytorch3d_matrix)"
        )


def _check_pose(m: Tensor, name: str) -> None:
    _check_last(m, (4, 4), name)
    _check_float(m, name)
    if value_checks_enabled() and m.numel() > 0 and not bool(torch.isfinite(m).all()):
        bad = int((~torch.isfinite(m)).sum())
        raise ValueError(f"{name} of shape {tuple(m.shape)} holds {bad} non-finite value(s)")
    _check_bottom_row(m, name)
    _check_rotation(m[..., :3, :3], f"the rotation block of {name}")


def _unit_xyzw(q: Tensor, scalar_first: bool, normalize: bool, name: str = "q") -> Tensor:
    """Validated quaternions, reordered to XYZW and divided by their norm."""
    _check_last(q, (4,), name)
    _check_float(q, name)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    xyzw = torch.cat([q[..., 1:], q[..., :1]], -1) if _check_flag(scalar_first) else q
    n = norm(xyzw, keepdim=True)
    if value_checks_enabled() and q.numel() > 0:
        bad, lo, hi = torch.stack(
            [
                (~torch.isfinite(q)).sum().to(q.dtype),
                torch.nan_to_num(n, nan=1.0).amin(),
                torch.nan_to_num(n, nan=1.0, posinf=1.0).amax(),
            ]
        ).tolist()
        if bad > 0:
            raise ValueError(
                f"{name} of shape {tuple(q.shape)} holds {int(bad)} non-finite value(s)"
            )
        if normalize and lo == 0.0:
            raise ValueError(f"{name} holds a zero quaternion, which is no rotation")
        dev = max(abs(lo - 1.0), abs(hi - 1.0))
        if not normalize and dev > check_tol(q.dtype):
            raise ValueError(
                f"{name} must hold unit quaternions: norms range over [{_fmt(lo)}, {_fmt(hi)}] "
                f"(tolerance {_fmt(check_tol(q.dtype))} for {q.dtype}); pass normalize=True "
                "to normalise them"
            )
    return xyzw / torch.where(n > 0, n, torch.ones_like(n))


def _from_xyzw(q: Tensor, scalar_first: bool) -> Tensor:
    return torch.cat([q[..., 3:], q[..., :3]], -1) if scalar_first else q


def _canonical_xyzw(q: Tensor) -> Tensor:
    v, w = q[..., :3], q[..., 3:]
    lead = torch.gather(v, -1, v.abs().argmax(-1, keepdim=True))
    flip = (w < 0) | ((w == 0) & (lead < 0))
    return torch.where(flip, -q, q) + 0.0  # + 0.0 turns negative zeros positive


# ---------------------------------------------------------------------------------------------
# quaternions
# ---------------------------------------------------------------------------------------------


def canonical_quat(q: Tensor, *, scalar_first: bool) -> Tensor:
    """The canonical sign of quaternions: scalar part ``>= 0``, fixed axis sign at angle ``pi``.

    ``q`` and ``-q`` are the same rotation; this returns the one with a positive scalar part,
    and where the scalar part is exactly zero the one whose vector part's largest-magnitude
    component is positive (the first one on ties). No normalisation or validation is done.

    Args:
        q: quaternions, shape ``(..., 4)``.
        scalar_first: ``True`` for ``(w, x, y, z)``, ``False`` for ``(x, y, z, w)``.

    Returns:
        Quaternions in the same order, shape ``(..., 4)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import canonical_quat
        >>> canonical_quat(torch.tensor([-0.5, 0.5, -0.5, 0.5]), scalar_first=True)
        tensor([ 0.5000, -0.5000,  0.5000, -0.5000])
        >>> canonical_quat(torch.tensor([0.0, 0.0, -1.0, 0.0]), scalar_first=False)
        tensor([0., 0., 1., 0.])
    """
    _check_last(q, (4,), "q")
    first = _check_flag(scalar_first)
    xyzw = torch.cat([q[..., 1:], q[..., :1]], -1) if first else q
    return _from_xyzw(_canonical_xyzw(xyzw), first)


def quat_to_rotmat(q: Tensor, *, scalar_first: bool, normalize: bool = False) -> Tensor:
    """Rotation matrices (column-vector convention) of unit quaternions.

    The quaternion is divided by its norm (a no-op up to rounding for unit quaternions) and
    mapped by roma's ``unitquat_to_rotmat``; ``q`` and ``-q`` give the same matrix.

    Args:
        q: quaternions, shape ``(..., 4)``.
        scalar_first: ``True`` for ``(w, x, y, z)`` (pytorch3d), ``False`` for
            ``(x, y, z, w)`` (roma, scipy, TUM). Required: both orders are common.
        normalize: accept quaternions of any non-zero norm. With ``False`` (the default) and
            value checks on, a norm off by more than ``check_tol(dtype)`` raises ``ValueError``.

    Returns:
        Rotation matrices, shape ``(..., 3, 3)``.

    Raises:
        ValueError: non-unit (without ``normalize``), zero or non-finite quaternions.

    Example:
        >>> import math, torch
        >>> from manifoldfm.rotations import quat_to_rotmat
        >>> c = math.cos(math.pi / 4)
        >>> quat_to_rotmat(torch.tensor([c, 0.0, 0.0, c]), scalar_first=True).round(decimals=4)
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]])
        >>> quat_to_rotmat(torch.tensor([0.0, 0.0, 2.0, 2.0]), scalar_first=False, normalize=True).round(decimals=4)
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]])
    """
    return roma.unitquat_to_rotmat(_unit_xyzw(q, scalar_first, normalize))


def rotmat_to_quat(r: Tensor, *, scalar_first: bool, canonical: bool = True) -> Tensor:
    """Unit quaternions of rotation matrices (Markley's method, via roma).

    Args:
        r: rotation matrices (column-vector convention), shape ``(..., 3, 3)``.
        scalar_first: ``True`` for ``(w, x, y, z)``, ``False`` for ``(x, y, z, w)``.
        canonical: return the canonical sign (see :func:`canonical_quat`); with ``False`` the
            sign is roma's (whichever is best conditioned).

    Returns:
        Unit quaternions, shape ``(..., 4)``.

    Raises:
        ValueError: (value checks on) non-finite, non-orthonormal or reflection matrices.

    References:
        F. L. Markley, "Unit quaternion from rotation matrix", Journal of Guidance, Control,
        and Dynamics 31(2), 2008.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import rotmat_to_quat
        >>> r = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
        >>> rotmat_to_quat(r, scalar_first=True)
        tensor([0., 1., 0., 0.])
        >>> rotmat_to_quat(torch.eye(3), scalar_first=False)
        tensor([0., 0., 0., 1.])
    """
    _check_last(r, (3, 3), "r")
    _check_float(r, "r")
    first = _check_flag(scalar_first)
    _check_rotation(r, "r")
    q = roma.rotmat_to_unitquat(r)
    if canonical:
        q = _canonical_xyzw(q)
    return _from_xyzw(q, first)


def quat_to_rotvec(q: Tensor, *, scalar_first: bool, normalize: bool = False) -> Tensor:
    """Rotation vectors (axis times angle, angle in ``[0, pi]``) of unit quaternions.

    The angle is ``2 atan2(|v|, |w|)`` with a series for small angles (exact value and
    gradient at the identity); at angle ``pi`` the axis follows the convention of
    :func:`~manifoldfm.manifolds.so3.rotmat_to_rotvec` (largest component positive), so
    ``quat_to_rotvec(rotmat_to_quat(r, ...), ...)`` equals ``rotmat_to_rotvec(r)``.

    Args:
        q: quaternions, shape ``(..., 4)``.
        scalar_first: ``True`` for ``(w, x, y, z)``, ``False`` for ``(x, y, z, w)``.
        normalize: accept quaternions of any non-zero norm (see :func:`quat_to_rotmat`).

    Returns:
        Rotation vectors, shape ``(..., 3)``.

    Example:
        >>> import math, torch
        >>> from manifoldfm.rotations import quat_to_rotvec
        >>> q = torch.tensor([-0.5, -0.5, -0.5, -0.5], dtype=torch.float64)  # -q is the same
        >>> quat_to_rotvec(q, scalar_first=False)  # 2 pi / 3 about (1, 1, 1) / sqrt(3)
        tensor([1.2092, 1.2092, 1.2092], dtype=torch.float64)
    """
    return _quat_to_rotvec(_unit_xyzw(q, scalar_first, normalize))[0]


def rotvec_to_quat(omega: Tensor, *, scalar_first: bool, canonical: bool = True) -> Tensor:
    """Unit quaternions ``(cos(t/2), sin(t/2) n)`` of rotation vectors ``omega = t n``.

    Both coefficients are smooth functions of ``t^2`` (series near 0), so small rotations keep
    full relative precision and the gradient is exact at 0.

    Args:
        omega: rotation vectors, shape ``(..., 3)``; any length (angles beyond ``pi`` wrap).
        scalar_first: ``True`` for ``(w, x, y, z)``, ``False`` for ``(x, y, z, w)``.
        canonical: return the canonical sign (see :func:`canonical_quat`); with ``False`` the
            quaternion is the smooth map above (scalar part negative for angles in
            ``(pi, 3 pi)``).

    Returns:
        Unit quaternions, shape ``(..., 4)``.

    Example:
        >>> import math, torch
        >>> from manifoldfm.rotations import rotvec_to_quat
        >>> rotvec_to_quat(torch.tensor([0.0, 0.0, math.pi / 2]), scalar_first=True)
        tensor([0.7071, 0.0000, 0.0000, 0.7071])
        >>> rotvec_to_quat(torch.tensor([1e-8, 0.0, 0.0]), scalar_first=False)
        tensor([5.0000e-09, 0.0000e+00, 0.0000e+00, 1.0000e+00])
    """
    _check_last(omega, (3,), "omega")
    _check_float(omega, "omega")
    first = _check_flag(scalar_first)
    q4 = 0.25 * (omega * omega).sum(-1, keepdim=True)  # (t / 2)^2
    q = torch.cat([0.5 * sinc_sq(q4) * omega, cos_sq(q4)], -1)
    if canonical:
        q = _canonical_xyzw(q)
    return _from_xyzw(q, first)


# ---------------------------------------------------------------------------------------------
# homogeneous matrices
# ---------------------------------------------------------------------------------------------


def rt_to_matrix(r: Tensor, t: Tensor) -> Tensor:
    """Homogeneous matrices ``[[R, t], [0, 0, 0, 1]]`` (acting on column vectors).

    Args:
        r: rotation matrices, shape ``(..., 3, 3)``.
        t: translations, shape ``(..., 3)``; leading dimensions broadcast against ``r``'s.

    Returns:
        Poses, shape ``(..., 4, 4)``, with ``T @ [x, 1] = [R x + t, 1]``.

    Raises:
        ValueError: mismatched shapes or dtypes; (value checks on) a rotation block that is
            non-finite, not orthonormal or a reflection; non-finite translations.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import rt_to_matrix
        >>> rt_to_matrix(torch.eye(3), torch.tensor([1.0, 2.0, 3.0]))
        tensor([[1., 0., 0., 1.],
                [0., 1., 0., 2.],
                [0., 0., 1., 3.],
                [0., 0., 0., 1.]])
    """
    _check_last(r, (3, 3), "r")
    _check_last(t, (3,), "t")
    _check_float(r, "r")
    if t.dtype != r.dtype or t.device != r.device:
        raise ValueError(
            f"r and t must share dtype and device, got {r.dtype} on {r.device} and "
            f"{t.dtype} on {t.device}"
        )
    try:
        batch = torch.broadcast_shapes(r.shape[:-2], t.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"r of shape {tuple(r.shape)} and t of shape {tuple(t.shape)} have leading "
            "dimensions that do not broadcast"
        ) from None
    _check_rotation(r, "r")
    if value_checks_enabled() and t.numel() > 0 and not bool(torch.isfinite(t).all()):
        raise ValueError(f"t of shape {tuple(t.shape)} holds non-finite values")
    top = torch.cat([r.expand(*batch, 3, 3), t.expand(*batch, 3)[..., None]], -1)
    bottom = torch.zeros(4, dtype=r.dtype, device=r.device)
    bottom[3] = 1.0
    return torch.cat([top, bottom.expand(*batch, 1, 4)], -2)


def matrix_to_rt(m: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation and translation of homogeneous matrices ``[[R, t], [0, 0, 0, 1]]``.

    Args:
        m: poses acting on column vectors, shape ``(..., 4, 4)``.

    Returns:
        ``(R, t)``: views of the blocks, shapes ``(..., 3, 3)`` and ``(..., 3)``.

    Raises:
        ValueError: (value checks on) non-finite entries, a bottom row other than
            ``(0, 0, 0, 1)`` (for instance a row-vector matrix), a rotation block that is not
            orthonormal or is a reflection.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import matrix_to_rt, rt_to_matrix
        >>> r, t = matrix_to_rt(rt_to_matrix(torch.eye(3), torch.tensor([1.0, 2.0, 3.0])))
        >>> t
        tensor([1., 2., 3.])
    """
    _check_pose(m, "m")
    return m[..., :3, :3], m[..., :3, 3]


def pose_from_quat_trans(
    q: Tensor, t: Tensor, *, scalar_first: bool, normalize: bool = False
) -> Tensor:
    """Homogeneous matrices of poses given as a unit quaternion and a translation.

    Args:
        q: rotations as quaternions, shape ``(..., 4)``.
        t: translations, shape ``(..., 3)`` (leading dimensions broadcast against ``q``'s).
        scalar_first: quaternion order, ``True`` for ``(w, x, y, z)``, ``False`` for
            ``(x, y, z, w)``.
        normalize: accept quaternions of any non-zero norm (see :func:`quat_to_rotmat`).

    Returns:
        Poses ``[[R(q), t], [0, 0, 0, 1]]``, shape ``(..., 4, 4)``.

    Example:
        >>> import math, torch
        >>> from manifoldfm.rotations import pose_from_quat_trans
        >>> c = math.cos(math.pi / 4)
        >>> q = torch.tensor([c, 0.0, 0.0, c])
        >>> pose_from_quat_trans(q, torch.tensor([1.0, 0.0, 0.0]), scalar_first=True).round(decimals=4)
        tensor([[ 0., -1.,  0.,  1.],
                [ 1.,  0.,  0.,  0.],
                [ 0.,  0.,  1.,  0.],
                [ 0.,  0.,  0.,  1.]])
    """
    r = quat_to_rotmat(q, scalar_first=scalar_first, normalize=normalize)
    return rt_to_matrix(r, t)


def pose_to_quat_trans(
    m: Tensor, *, scalar_first: bool, canonical: bool = True
) -> tuple[Tensor, Tensor]:
    """Quaternion and translation of homogeneous matrices (inverse of :func:`pose_from_quat_trans`).

    Args:
        m: poses, shape ``(..., 4, 4)``.
        scalar_first: quaternion order, ``True`` for ``(w, x, y, z)``, ``False`` for
            ``(x, y, z, w)``.
        canonical: canonical quaternion sign (see :func:`canonical_quat`).

    Returns:
        ``(q, t)``, shapes ``(..., 4)`` and ``(..., 3)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import pose_to_quat_trans, rt_to_matrix
        >>> q, t = pose_to_quat_trans(rt_to_matrix(torch.eye(3), torch.ones(3)), scalar_first=True)
        >>> q, t
        (tensor([1., 0., 0., 0.]), tensor([1., 1., 1.]))
    """
    first = _check_flag(scalar_first)
    r, t = matrix_to_rt(m)  # validates the rotation block
    q = roma.rotmat_to_unitquat(r)
    if canonical:
        q = _canonical_xyzw(q)
    return _from_xyzw(q, first), t.clone()


def pose_from_tum(x: Tensor, *, normalize: bool = False) -> Tensor:
    """Homogeneous matrices of TUM RGB-D trajectory rows ``tx ty tz qx qy qz qw``.

    The TUM format (also used by ``evo``) stores each pose as a translation followed by a
    scalar-last quaternion; the pose maps the sensor frame to the world frame,
    ``x_world = R x_sensor + t``. Drop the timestamp column first.

    Args:
        x: rows ``(tx, ty, tz, qx, qy, qz, qw)``, shape ``(..., 7)``.
        normalize: accept quaternions of any non-zero norm (files often store 4-6 digits).

    Returns:
        Poses, shape ``(..., 4, 4)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import pose_from_tum
        >>> pose_from_tum(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0]))[:3, 3]
        tensor([1., 2., 3.])
    """
    _check_last(x, (7,), "x")
    return pose_from_quat_trans(x[..., 3:], x[..., :3], scalar_first=False, normalize=normalize)


def pose_to_tum(m: Tensor) -> Tensor:
    """TUM trajectory rows ``tx ty tz qx qy qz qw`` of poses (canonical quaternions).

    Args:
        m: poses, shape ``(..., 4, 4)``.

    Returns:
        Rows, shape ``(..., 7)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import pose_to_tum, rt_to_matrix
        >>> pose_to_tum(rt_to_matrix(torch.eye(3), torch.tensor([1.0, 2.0, 3.0])))
        tensor([1., 2., 3., 0., 0., 0., 1.])
    """
    q, t = pose_to_quat_trans(m, scalar_first=False)
    return torch.cat([t, q], -1)


# ---------------------------------------------------------------------------------------------
# screw motions (the group exponential of SE(3))
# ---------------------------------------------------------------------------------------------


def _series_mask(t2: Tensor) -> tuple[Tensor, Tensor]:
    # The series below are float64-exact for t < 0.2 and float32-exact for t < 1, where the
    # closed forms have lost at most a few digits to cancellation.
    limit = 0.04 if t2.dtype == torch.float64 else 1.0
    small = t2 < limit
    return small, torch.where(small, torch.ones_like(t2), t2)


def _v_coefficients(t2: Tensor) -> tuple[Tensor, Tensor]:
    """``(1 - cos t) / t^2`` and ``(t - sin t) / t^3`` as smooth functions of ``t^2``."""
    small, safe = _series_mask(t2)
    t = torch.sqrt(safe)
    series = 1 / 6 - t2 * (1 / 120 - t2 * (1 / 5040 - t2 * (1 / 362880 - t2 / 39916800)))
    closed = (t - torch.sin(t)) / (safe * t)
    return versine_sq(t2), torch.where(small, series, closed)


def _v_inv_coefficient(t2: Tensor) -> Tensor:
    """``(1 - (t/2) cot(t/2)) / t^2`` as a smooth function of ``t^2`` (valid for t < 2 pi)."""
    small, safe = _series_mask(t2)
    half = 0.5 * torch.sqrt(safe)
    series = 1 / 12 + t2 * (1 / 720 + t2 * (1 / 30240 + t2 * (1 / 1209600 + t2 / 47900160)))
    closed = (1.0 - half * torch.cos(half) / torch.sin(half)) / safe
    return torch.where(small, series, closed)


def so3_left_jacobian(omega: Tensor) -> Tensor:
    """Left Jacobian of SO(3), the ``V`` matrix of the SE(3) exponential.

    ``V(w) = I + (1 - cos t)/t^2 hat(w) + (t - sin t)/t^3 hat(w)^2`` with ``t = |w|``, equal to
    ``integral_0^1 exp(s hat(w)) ds``; both coefficients use series near 0.

    Args:
        omega: rotation vectors, shape ``(..., 3)``.

    Returns:
        Matrices, shape ``(..., 3, 3)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import so3_left_jacobian
        >>> so3_left_jacobian(torch.zeros(3))
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    _check_last(omega, (3,), "omega")
    _check_float(omega, "omega")
    t2 = (omega * omega).sum(-1)[..., None, None]
    a, b = _v_coefficients(t2)
    k = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a * k + b * (k @ k)


def so3_left_jacobian_inv(omega: Tensor) -> Tensor:
    """Inverse of :func:`so3_left_jacobian`: ``I - hat(w)/2 + (1 - (t/2) cot(t/2))/t^2 hat(w)^2``.

    Valid for angles ``t = |w| < 2 pi`` (``V`` is singular at ``2 pi``); series near 0.

    Args:
        omega: rotation vectors, shape ``(..., 3)``.

    Returns:
        Matrices, shape ``(..., 3, 3)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import so3_left_jacobian, so3_left_jacobian_inv
        >>> w = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
        >>> torch.allclose(so3_left_jacobian_inv(w) @ so3_left_jacobian(w), torch.eye(3, dtype=torch.float64))
        True
    """
    _check_last(omega, (3,), "omega")
    _check_float(omega, "omega")
    t2 = (omega * omega).sum(-1)[..., None, None]
    k = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye - 0.5 * k + _v_inv_coefficient(t2) * (k @ k)


def _screw_exp(omega: Tensor, v: Tensor) -> Tensor:
    t2 = (omega * omega).sum(-1, keepdim=True)
    a, b = _v_coefficients(t2)
    wv = torch.linalg.cross(omega, v)
    t = v + a * wv + b * torch.linalg.cross(omega, wv)
    top = torch.cat([rotvec_to_rotmat(omega), t[..., None]], -1)
    bottom = torch.zeros(4, dtype=omega.dtype, device=omega.device)
    bottom[3] = 1.0
    return torch.cat([top, bottom.expand(*top.shape[:-2], 1, 4)], -2)


def _screw_log(m: Tensor) -> tuple[Tensor, Tensor]:
    omega = rotmat_to_rotvec(m[..., :3, :3])
    t = m[..., :3, 3]
    c = _v_inv_coefficient((omega * omega).sum(-1, keepdim=True))
    wt = torch.linalg.cross(omega, t)
    return omega, t - 0.5 * wt + c * torch.linalg.cross(omega, wt)


def screw_exp(omega: Tensor, v: Tensor) -> Tensor:
    """Group exponential of SE(3): ``exp([[hat(omega), v], [0, 0]])`` as a homogeneous matrix.

    The result is ``[[R, t], [0, 0, 0, 1]]`` with ``R = exp(hat(omega))`` and
    ``t = V(omega) v`` (:func:`so3_left_jacobian`): the screw motion that rotates at constant
    body rate while translating. This is the exponential of pytorch3d's ``se3_exp_map``, in
    our column-vector convention, with the two parts passed by name. (The SE(3) manifold of
    this library uses the product metric of SO(3) x R^3 instead, whose geodesics are not
    screw motions.)

    Args:
        omega: rotation parts, shape ``(..., 3)``.
        v: translation parts (not the translations), shape ``(..., 3)``; leading dimensions
            broadcast against ``omega``'s.

    Returns:
        Poses, shape ``(..., 4, 4)``.

    Example:
        >>> import math, torch
        >>> from manifoldfm.rotations import screw_exp
        >>> m = screw_exp(torch.tensor([0.0, 0.0, math.pi]), torch.tensor([1.0, 0.0, 0.0]))
        >>> m[:3, 3].round(decimals=4)  # half a turn while moving along x: lands at 2/pi on y
        tensor([0.0000, 0.6366, 0.0000])
    """
    _check_last(omega, (3,), "omega")
    _check_last(v, (3,), "v")
    _check_float(omega, "omega")
    if v.dtype != omega.dtype or v.device != omega.device:
        raise ValueError(
            f"omega and v must share dtype and device, got {omega.dtype} on {omega.device} "
            f"and {v.dtype} on {v.device}"
        )
    try:
        batch = torch.broadcast_shapes(omega.shape[:-1], v.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"omega of shape {tuple(omega.shape)} and v of shape {tuple(v.shape)} have "
            "leading dimensions that do not broadcast"
        ) from None
    return _screw_exp(omega.expand(*batch, 3), v.expand(*batch, 3))


def screw_log(m: Tensor) -> tuple[Tensor, Tensor]:
    """Group logarithm of SE(3), the inverse of :func:`screw_exp`.

    ``omega = log(R)`` with angle in ``[0, pi]`` (the axis convention of
    :func:`~manifoldfm.manifolds.so3.rotmat_to_rotvec` at ``pi``) and
    ``v = V(omega)^-1 t`` (:func:`so3_left_jacobian_inv`, in closed form: no linear solve).

    Args:
        m: poses, shape ``(..., 4, 4)``.

    Returns:
        ``(omega, v)``, each of shape ``(..., 3)``.

    Raises:
        ValueError: (value checks on) invalid poses, as for :func:`matrix_to_rt`.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import screw_exp, screw_log
        >>> w, v = torch.tensor([0.1, -0.4, 0.9]), torch.tensor([1.0, 2.0, -0.5])
        >>> w2, v2 = screw_log(screw_exp(w, v))
        >>> torch.allclose(w2, w, atol=1e-6), torch.allclose(v2, v, atol=1e-6)
        (True, True)
    """
    _check_pose(m, "m")
    return _screw_log(m)


# ---------------------------------------------------------------------------------------------
# pytorch3d adapter (pytorch3d is never imported)
# ---------------------------------------------------------------------------------------------


def to_pytorch3d_matrix(m: Tensor) -> Tensor:
    """Our column-vector poses as pytorch3d's row-vector matrices (the transpose).

    pytorch3d's ``Transform3d.get_matrix()`` and ``se3_exp_map`` return ``M`` with points as
    row vectors, ``[x', 1] = [x, 1] M``: ``M = [[R^T, 0], [t^T, 1]]``, translation in the last
    row. ``Transform3d(matrix=to_pytorch3d_matrix(T))`` applies ``x -> R x + t``.

    Args:
        m: poses ``[[R, t], [0, 0, 0, 1]]``, shape ``(..., 4, 4)``.

    Returns:
        Row-vector matrices, shape ``(..., 4, 4)`` (a contiguous copy).

    Raises:
        ValueError: (value checks on) invalid poses, as for :func:`matrix_to_rt`.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import rt_to_matrix, to_pytorch3d_matrix
        >>> to_pytorch3d_matrix(rt_to_matrix(torch.eye(3), torch.tensor([1.0, 2.0, 3.0])))
        tensor([[1., 0., 0., 0.],
                [0., 1., 0., 0.],
                [0., 0., 1., 0.],
                [1., 2., 3., 1.]])
    """
    _check_pose(m, "m")
    return m.mT.contiguous()


def _check_pytorch3d_matrix(m: Tensor, name: str) -> None:
    _check_last(m, (4, 4), name)
    _check_float(m, name)
    if not value_checks_enabled() or m.numel() == 0:
        return
    want = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype, device=m.device)
    dev = torch.nan_to_num((m[..., :, 3] - want).abs(), nan=0.0).amax().item()
    if dev > check_tol(m.dtype):
        raise ValueError(
            f"{name} must have the last column (0, 0, 0, 1) of pytorch3d's row-vector "
            f"convention (translation in the last row), largest deviation {_fmt(dev)}; a "
            "matrix with the translation in its last column is already in the column-vector "
            "convention (use it directly)"
        )
    _check_pose(m.mT, name + " (transposed)")


def from_pytorch3d_matrix(m: Tensor) -> Tensor:
    """pytorch3d's row-vector matrices as our column-vector poses (the transpose).

    Args:
        m: row-vector matrices ``[[R^T, 0], [t^T, 1]]`` (``Transform3d.get_matrix()``,
            ``se3_exp_map``), shape ``(..., 4, 4)``.

    Returns:
        Poses ``[[R, t], [0, 0, 0, 1]]``, shape ``(..., 4, 4)`` (a contiguous copy).

    Raises:
        ValueError: (value checks on) a last column other than ``(0, 0, 0, 1)`` (for instance
            a column-vector matrix), non-finite entries, a rotation block that is not
            orthonormal or is a reflection.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import from_pytorch3d_matrix
        >>> m = torch.eye(4)
        >>> m[3, :3] = torch.tensor([1.0, 2.0, 3.0])
        >>> from_pytorch3d_matrix(m)[:3, 3]
        tensor([1., 2., 3.])
    """
    _check_pytorch3d_matrix(m, "m")
    return m.mT.contiguous()


def to_pytorch3d_quaternion(r: Tensor) -> Tensor:
    """pytorch3d quaternions (scalar first, non-negative scalar part) of our rotation matrices.

    pytorch3d's ``quaternion_to_matrix`` / ``matrix_to_quaternion`` use the column-vector
    rotation matrices of this library (only its 4x4 transforms are transposed), so no
    transposition happens here. The sign is canonical (:func:`canonical_quat`), which agrees
    with pytorch3d's ``standardize_quaternion`` except at angle exactly ``pi``.

    Args:
        r: rotation matrices, shape ``(..., 3, 3)``.

    Returns:
        Quaternions ``(w, x, y, z)``, shape ``(..., 4)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import to_pytorch3d_quaternion
        >>> to_pytorch3d_quaternion(torch.eye(3))
        tensor([1., 0., 0., 0.])
    """
    return rotmat_to_quat(r, scalar_first=True, canonical=True)


def from_pytorch3d_quaternion(q: Tensor, *, normalize: bool = True) -> Tensor:
    """Rotation matrices of pytorch3d quaternions (scalar first).

    Like pytorch3d's ``quaternion_to_matrix``, quaternions of any non-zero norm are accepted
    by default (they are normalised); ``normalize=False`` rejects non-unit ones.

    Args:
        q: quaternions ``(w, x, y, z)``, shape ``(..., 4)``.
        normalize: accept quaternions of any non-zero norm.

    Returns:
        Rotation matrices (column-vector convention), shape ``(..., 3, 3)``.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import from_pytorch3d_quaternion
        >>> from_pytorch3d_quaternion(torch.tensor([0.0, 0.0, 0.0, 3.0]))
        tensor([[-1.,  0.,  0.],
                [ 0., -1.,  0.],
                [ 0.,  0.,  1.]])
    """
    return quat_to_rotmat(q, scalar_first=True, normalize=normalize)


def se3_exp_map_pytorch3d(log_transform: Tensor) -> Tensor:
    """pytorch3d's ``se3_exp_map``: twists ``[log_translation, log_rotation]`` to row-vector matrices.

    With ``log_transform = [v, w]`` (translation part first) the result is
    ``M = [[R^T, 0], [t^T, 1]]`` where ``R = exp(hat(w))`` and ``t = V(w) v``
    (:func:`screw_exp`, transposed). Unlike pytorch3d (which clamps the squared angle at
    ``eps = 1e-4``), the coefficients use series near 0, so small twists are exact; any
    leading dimensions are accepted, not only ``(N, 6)``.

    Args:
        log_transform: twists, shape ``(..., 6)``.

    Returns:
        Row-vector matrices, shape ``(..., 4, 4)``; :func:`from_pytorch3d_matrix` turns them
        into our poses.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import se3_exp_map_pytorch3d
        >>> se3_exp_map_pytorch3d(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0]))
        tensor([[1., 0., 0., 0.],
                [0., 1., 0., 0.],
                [0., 0., 1., 0.],
                [1., 2., 3., 1.]])
    """
    _check_last(log_transform, (6,), "log_transform")
    _check_float(log_transform, "log_transform")
    return _screw_exp(log_transform[..., 3:], log_transform[..., :3]).mT.contiguous()


def se3_log_map_pytorch3d(m: Tensor) -> Tensor:
    """pytorch3d's ``se3_log_map``: row-vector matrices to twists ``[log_translation, log_rotation]``.

    The inverse of :func:`se3_exp_map_pytorch3d`: ``w = log(R)`` with angle in ``[0, pi]``
    (deterministic axis sign at ``pi``, see :func:`screw_log`) and ``v = V(w)^-1 t``.

    Args:
        m: row-vector matrices ``[[R^T, 0], [t^T, 1]]``, shape ``(..., 4, 4)``.

    Returns:
        Twists ``[v, w]``, shape ``(..., 6)``.

    Raises:
        ValueError: (value checks on) invalid matrices, as for :func:`from_pytorch3d_matrix`.

    Example:
        >>> import torch
        >>> from manifoldfm.rotations import se3_exp_map_pytorch3d, se3_log_map_pytorch3d
        >>> x = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.2, -0.1], dtype=torch.float64)
        >>> torch.allclose(se3_log_map_pytorch3d(se3_exp_map_pytorch3d(x)), x)
        True
    """
    _check_pytorch3d_matrix(m, "m")
    omega, v = _screw_log(m.mT)
    return torch.cat([v, omega], -1)
