"""The rotation group SO(3) and a thin layer of rotation helpers over roma.

Helpers (all batched over leading dimensions, dtype/device of the input):

* :func:`hat` / :func:`vee`: ``R^3 <-> so(3)`` (skew-symmetric matrices), ``hat(w) v = w x v``;
* :func:`rotvec_to_rotmat`: Rodrigues' formula with series for small angles (exact in float64
  down to the smallest angles, exact Jacobian at 0);
* :func:`rotmat_to_rotvec`: logarithm through roma's Markley quaternion (robust everywhere)
  and ``atan2``, with a deterministic axis at angle ``pi``;
* :func:`rotation_angle`: the angle of a rotation, by ``atan2``.
"""

from __future__ import annotations

import math

import roma
import torch
from torch import Tensor

from .._utils import eps_for
from .base import Manifold, _taylor_threshold, atan_ratio, norm

__all__ = ["SO3", "hat", "rotation_angle", "rotmat_to_rotvec", "rotvec_to_rotmat", "vee"]


def _check_last(x: Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[x.ndim - len(shape) :]) != shape or x.ndim < len(shape):
        want = ", ".join(map(str, shape))
        raise ValueError(f"{name} must have shape (..., {want}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def hat(omega: Tensor) -> Tensor:
    """Skew-symmetric matrix of a vector: ``hat(w) @ v = cross(w, v)``.

    Args:
        omega: vectors, shape ``(..., 3)``.

    Returns:
        Skew-symmetric matrices, shape ``(..., 3, 3)``.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.so3 import hat
        >>> hat(torch.tensor([1.0, 2.0, 3.0]))
        tensor([[ 0., -3.,  2.],
                [ 3.,  0., -1.],
                [-2.,  1.,  0.]])
    """
    _check_last(omega, (3,), "omega")
    x, y, z = omega.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).unflatten(-1, (3, 3))


def vee(a: Tensor) -> Tensor:
    """Inverse of :func:`hat` applied to the skew-symmetric part of ``a``.

    Args:
        a: matrices, shape ``(..., 3, 3)``.

    Returns:
        Vectors ``w`` with ``hat(w) = (a - a^T) / 2``, shape ``(..., 3)``.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.so3 import hat, vee
        >>> vee(hat(torch.tensor([1.0, 2.0, 3.0])))
        tensor([1., 2., 3.])
    """
    _check_last(a, (3, 3), "a")
    return 0.5 * torch.stack(
        [a[..., 2, 1] - a[..., 1, 2], a[..., 0, 2] - a[..., 2, 0], a[..., 1, 0] - a[..., 0, 1]],
        dim=-1,
    )


def _rodrigues(omega: Tensor) -> Tensor:
    # exp(K) = I + a K + b K^2 with K^2 = w w^T - t^2 I, a = sinc(t), b = (1 - cos t) / t^2,
    # assembled entry by entry from (x, y, z): few full-size temporaries and no reduction over
    # the size-3 last dim. Both coefficients share one branch: sin(t) / t and
    # b = sinc(t / 2)^2 / 2 (no cancellation) above the switch, below it their Taylor series
    # in t^2 (exact values and gradients at 0; the switch is twice the helpers' threshold on
    # t, where the truncated series are still exact to the dtype).
    x, y, z = omega.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    t2 = xx + yy + zz
    thr = 2.0 * _taylor_threshold(omega.dtype)
    small = t2 < thr * thr
    t = torch.sqrt(torch.where(small, 1.0, t2))
    h = 0.5 * t
    sinc_h = torch.sin(h) / h
    a_series = 1.0 - t2 / 6.0 * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0))
    b_series = 0.5 - t2 / 24.0 * (1.0 - t2 / 30.0 * (1.0 - t2 / 56.0))
    a = torch.where(small, a_series, torch.sin(t) / t)
    b = torch.where(small, b_series, 0.5 * sinc_h * sinc_h)
    c = 1.0 - b * t2  # cos t
    bxy, bxz, byz = b * (x * y), b * (x * z), b * (y * z)
    mul_add = torch.addcmul  # p + q * r (value=-1.0: p - q * r) in one pass
    entries = [
        mul_add(c, b, xx), mul_add(bxy, a, z, value=-1.0), mul_add(bxz, a, y),
        mul_add(bxy, a, z), mul_add(c, b, yy), mul_add(byz, a, x, value=-1.0),
        mul_add(bxz, a, y, value=-1.0), mul_add(byz, a, x), mul_add(c, b, zz),
    ]  # fmt: skip
    return torch.stack(entries, dim=-1).unflatten(-1, (3, 3))


def rotvec_to_rotmat(omega: Tensor) -> Tensor:
    """Rotation matrix ``exp(hat(omega))`` of rotation vectors (axis times angle).

    Rodrigues' formula ``I + sinc(t) K + (1 - cos t)/t^2 K^2`` with both coefficients
    evaluated as smooth functions of ``t^2`` (series near 0, ``(1 - cos t)/t^2`` as
    ``sinc(t/2)^2 / 2``: no cancellation), so small rotations are exact and the Jacobian at 0
    is exact.

    Args:
        omega: rotation vectors, shape ``(..., 3)``.

    Returns:
        Rotation matrices, shape ``(..., 3, 3)``.

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds.so3 import rotvec_to_rotmat
        >>> rotvec_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)).round(decimals=6)
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]], dtype=torch.float64)
    """
    _check_last(omega, (3,), "omega")
    return _rodrigues(omega)


def _quat_to_rotvec(q: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation vectors and angles of unit quaternions (XYZW), shortest arc, canonical at pi."""
    v, w = q[..., :3], q[..., 3:]
    neg = w < 0
    v = torch.where(neg, -v, v)
    w = torch.where(neg, -w, w)
    # Angle pi (w = 0 up to eps_for(dtype)): q and -q are the same rotation, with rotation
    # vectors theta n and -(2 pi - theta) n; there the one whose largest-magnitude component
    # is positive is taken (the second has length 2 pi - theta, just above pi: the rotation
    # stays exact, which flipping n alone would not).
    band = w <= eps_for(q.dtype)
    lead = torch.gather(v, -1, v.abs().argmax(-1, keepdim=True))
    flip = band & (lead < 0)
    n = norm(v, keepdim=True)
    half, ratio = atan_ratio(n, w)
    n_safe = torch.where(flip, n, torch.ones_like(n))  # no 1 / 0 in the unused branch
    # 2 pi - theta = 2 atan2(n, -w), without the cancellation of subtracting from 2 pi
    scale = torch.where(flip, -2.0 * torch.atan2(n, -w) / n_safe, 2.0 * ratio)
    return scale * v, 2.0 * half[..., 0]


def rotmat_to_rotvec(r: Tensor) -> Tensor:
    """Rotation vector (axis times angle, angle in ``[0, pi]``) of rotation matrices.

    The unit quaternion comes from roma's Markley method (robust at all angles); the angle is
    ``2 atan2(|q_xyz|, |q_w|)`` and the scale uses a series for small angles, so the gradient
    is finite and exact at the identity.

    **Angle pi.** When ``|q_w| <= eps_for(dtype)`` (angle within about ``2 eps`` of ``pi``)
    the two representatives ``theta n`` and ``-(2 pi - theta) n`` of the rotation are about
    equally short; the one whose largest-magnitude component is positive is returned (the
    first such component on ties), so its length may exceed ``pi`` by up to ``4 eps``.

    Args:
        r: rotation matrices, shape ``(..., 3, 3)``.

    Returns:
        Rotation vectors, shape ``(..., 3)``.

    References:
        F. L. Markley, "Unit quaternion from rotation matrix", Journal of Guidance, Control,
        and Dynamics 31(2), 2008.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.so3 import rotmat_to_rotvec
        >>> rotmat_to_rotvec(torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)))
        tensor([0.0000, 3.1416, 0.0000], dtype=torch.float64)
    """
    _check_last(r, (3, 3), "r")
    return _quat_to_rotvec(roma.rotmat_to_unitquat(r))[0]


def rotation_angle(r: Tensor) -> Tensor:
    """Rotation angle in ``[0, pi]`` of rotation matrices, by ``atan2`` (no clamped ``acos``).

    Args:
        r: rotation matrices, shape ``(..., 3, 3)``.

    Returns:
        Angles, shape ``(...)``.

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds.so3 import rotation_angle, rotvec_to_rotmat
        >>> rotation_angle(rotvec_to_rotmat(torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)))
        tensor(2., dtype=torch.float64)
    """
    _check_last(r, (3, 3), "r")
    q = roma.rotmat_to_unitquat(r)
    return 2.0 * torch.atan2(norm(q[..., :3]), q[..., 3].abs())


class SO3(Manifold):
    r"""The rotation group ``SO(3)``: 3x3 rotation matrices with the bi-invariant metric.

    **Representation.** Points are rotation matrices, shape ``(..., 3, 3)``. A tangent vector
    at ``x`` is an ambient 3x3 matrix ``u = x @ hat(w)`` (geoopt's convention of ambient
    tangent vectors), ``w`` being the body-frame angular velocity; ``vee(x.mT @ u)`` recovers it.

    **Metric.** ``<u, v>_x = tr(u^T v) / 2 = <w_u, w_v>``, so ``|x hat(w)|_x = |w|`` and
    ``dist(x, y)`` is the angle of the relative rotation ``x^T y`` (in ``[0, pi]``). With this
    metric the total volume is ``8 pi^2`` and the Haar (uniform) law of the rotation angle has
    density ``(1 - cos t) / pi`` on ``[0, pi]``. The Riemannian gradient is twice the tangent
    projection of the Euclidean one (``egrad2rgrad``).

    * ``expmap(x, u) = x @ exp(hat(vee(x^T u)))`` (Rodrigues with series for small angles).
    * ``logmap(x, y) = x @ hat(w)`` with ``w`` the rotation vector of ``I + x^T (y - x)``
      (equal to ``x^T y``, but formed from the difference so small angles keep their relative
      precision in float32), via roma's quaternion and ``atan2``.
    * ``transp`` is the exact parallel transport of the bi-invariant metric along the
      minimising geodesic: ``x hat(b) -> y hat(exp(-hat(w)/2) b)`` with ``w = vee(x^T log_x y)``;
      ``expmap_transp(x, u, v)`` uses ``w = vee(x^T u)`` (no log map), so the geodesic's own
      velocity is ``y hat(w)``.
    * ``projx`` is the nearest rotation in Frobenius norm (``roma.special_procrustes``).
    * ``random_uniform``: Haar measure, from uniform unit quaternions (``roma.random_unitquat``).
    * ``random_tangent(x)``: ``x @ hat(w)`` with ``w`` standard normal (identity covariance in
      the orthonormal basis ``x hat(e_k)`` of this metric).
    * ``injectivity_radius = pi``.

    **Cut locus.** The cut locus of ``x`` is the set of ``y`` whose relative rotation has angle
    ``pi``. There (``|q_w| <= eps_for(dtype)`` for the relative quaternion) ``logmap`` returns
    ``x @ hat(pi n)`` with the rotation axis ``n`` signed so that its largest-magnitude
    component is positive (see :func:`rotmat_to_rotvec`): deterministic, finite, and
    ``expmap(x, logmap(x, y)) = y``.

    References:
        F. C. Park, "Distance metrics on the rigid-body motions with applications to mechanism
        design", Journal of Mechanical Design 117(1), 1995.

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import SO3
        >>> from manifoldfm.manifolds.so3 import hat, rotvec_to_rotmat
        >>> so3 = SO3()
        >>> x = so3.origin(1, dtype=torch.float64)
        >>> y = rotvec_to_rotmat(torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64))
        >>> so3.dist(x, y)
        tensor([0.5000], dtype=torch.float64)
        >>> torch.allclose(so3.logmap(x, y), hat(torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64)))
        True
        >>> so3.volume == 8 * math.pi**2
        True
    """

    name = "SO3"
    injectivity_radius = math.pi
    _deviation_name = "max(|x^T x - I|, |det x - 1|)"

    def __init__(self) -> None:
        super().__init__()
        self._set_shape((3, 3), 3)
        self.volume = 8.0 * math.pi**2

    # -------------------------------------------------------------------- helpers

    @staticmethod
    def _rel_quat(x: Tensor, y: Tensor) -> Tensor:
        rel = x.mT @ (y - x)
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        return roma.rotmat_to_unitquat(rel + eye)

    def _rel_rotvec(self, x: Tensor, y: Tensor) -> Tensor:
        return _quat_to_rotvec(self._rel_quat(x, y))[0]

    # -------------------------------------------------------------------- implementations

    def _projx(self, x: Tensor) -> Tensor:
        return roma.special_procrustes(x)

    def _proju(self, x: Tensor, u: Tensor) -> Tensor:
        a = x.mT @ u
        return x @ (0.5 * (a - a.mT))

    def _egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return 2.0 * self._proju(x, u)

    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        out = 0.5 * (u * v).sum((-2, -1))
        return out.expand(torch.broadcast_shapes(x.shape[:-2], out.shape))

    def _expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x @ _rodrigues(vee(x.mT @ u))

    def _logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ hat(self._rel_rotvec(x, y))

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        q = self._rel_quat(x, y)
        return 2.0 * torch.atan2(norm(q[..., :3]), q[..., 3].abs())

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        # log_x y = x hat(w); along u = y hat(b) the rotation vector moves by J_r^{-1}(w) b, the
        # inverse right Jacobian I + hat(w) / 2 + g hat(w)^2, g = (1 - (t/2) cot(t/2)) / t^2.
        w = self._rel_rotvec(x, y)
        b = vee(y.mT @ u)
        t2 = (w * w).sum(-1, keepdim=True)
        small = t2 < _taylor_threshold(x.dtype) ** 2
        half = 0.5 * torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
        closed = (1.0 - half * torch.cos(half) / torch.sin(half)) / torch.where(small, 1.0, t2)
        series = 1 / 12 + t2 * (1 / 720 + t2 * (1 / 30240 + t2 / 1209600))
        g = torch.where(small, series, closed)
        wb = torch.linalg.cross(w, b)
        return x @ hat(b + 0.5 * wb + g * torch.linalg.cross(w, wb))

    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        w = self._rel_rotvec(x, y)
        b = vee(x.mT @ v)
        b_new = (_rodrigues(-0.5 * w) @ b[..., None])[..., 0]
        return y @ hat(b_new)

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # Body-frame coordinates obey b' = -w x b / 2 along s -> x exp(s hat(w)).
        w, b = vee(x.mT @ u), vee(x.mT @ v)
        y = x @ _rodrigues(w)
        b_new = (_rodrigues(-0.5 * w) @ b[..., None])[..., 0]
        return y, y @ hat(b_new)

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        # The geodesic's own body-frame velocity w is constant: d/ds x exp(s hat(w)) = y hat(w).
        w = vee(x.mT @ u)
        y = x @ _rodrigues(s[..., None] * w)
        return y, y @ hat(w)

    def _random_tangent(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        # x hat(e_k) is an orthonormal basis for tr(u^T v) / 2: standard normal body velocity.
        w = torch.randn(x.shape[:-1], generator=generator, dtype=x.dtype, device=x.device)
        return x @ hat(w)

    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        q = roma.random_unitquat(size, dtype=dtype, device=device, generator=generator)
        return roma.unitquat_to_rotmat(q)

    def _origin(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        eye = torch.eye(3, dtype=dtype, device=device)
        return eye.expand((*size, 3, 3)).clone()

    def _point_deviation(self, x: Tensor) -> Tensor:
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        orth = (x.mT @ x - eye).abs().amax((-2, -1))
        det = (torch.linalg.cross(x[..., 0, :], x[..., 1, :]) * x[..., 2, :]).sum(-1)
        det = (det - 1.0).abs()
        dev = torch.maximum(orth, det)
        return torch.where(torch.isfinite(dev), dev, math.inf)

    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        a = x.mT @ u
        sym = (a + a.mT).abs().amax((-2, -1))
        dev = sym / (1.0 + u.abs().amax((-2, -1)))
        return torch.where(torch.isfinite(dev), dev, math.inf)
