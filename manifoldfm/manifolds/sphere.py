"""The unit sphere S^d embedded in R^{d+1}."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._utils import eps_for, safe_div
from .base import (
    Manifold,
    _taylor_threshold,
    _tiny_root,
    atan_ratio,
    cos_sq,
    norm,
    sinc_sq,
    versine_sq,
)

__all__ = ["Sphere"]


def _exact_cpu_matmul(dtype: torch.dtype) -> bool:
    """Whether a CPU matrix product of ``dtype`` runs in full precision (float64 always;
    float32 unless a bf16/tf32 setting of ``torch.backends`` applies to CPU matmuls)."""
    if dtype == torch.float64:
        return True
    if dtype != torch.float32:
        return False
    try:
        get = torch._C._get_fp32_precision_getter
        # "none" inherits from the next, more general setting
        for backend, op in (("mkldnn", "matmul"), ("mkldnn", "all"), ("generic", "all")):
            p = get(backend, op)
            if p != "none":
                return bool(p == "ieee")
    except (AttributeError, RuntimeError):  # a torch without these settings: do not assume
        return False
    return True


class _FastAux(NamedTuple):
    """What the untracked fast operations of a solve need, made once per solve."""

    #: column of ones for :func:`_rowdot` (CPU, full-precision matmul), else ``None``
    ones: Tensor | None
    #: ``sqrt(tiny) e_0``, added before normalising (see ``Sphere._projx_inplace``)
    nudge: Tensor
    #: normalise by one norm kernel and one division (accelerators, where each kernel launch
    #: costs more than its work at solver batch sizes) instead of a row sum, ``rsqrt`` and a
    #: product (the CPU, where the row sum is one BLAS call)
    norm_kernel: bool = False


# (column of ones, nudge) on the CPU by (dtype, ambient dimension); read-only.
_CPU_AUX: dict[tuple[torch.dtype, int], tuple[Tensor, Tensor]] = {}


def _rowdot(a: Tensor, b: Tensor, ones: Tensor | None) -> Tensor:
    """``<a, b>`` over the last dimension, keepdim: ``(a * b) @ ones`` when given a column of
    ones (see ``Sphere._fast_aux``), a sum otherwise."""
    ab = a * b
    return ab @ ones if ones is not None else ab.sum(-1, keepdim=True)


class Sphere(Manifold):
    r"""The unit sphere ``S^d = {x in R^{d+1} : |x| = 1}`` with the induced (round) metric.

    Points have shape ``(..., d + 1)``; tangent vectors at ``x`` are ambient vectors orthogonal
    to ``x``. The inner product is the Euclidean one, so ``dist`` is the great-circle angle.

    * ``expmap(x, u) = cos|u| x + sin|u| u / |u|`` (series for small ``|u|``; renormalised).
    * ``dist(x, y) = atan2(|y_perp|, <x, y>)`` with ``y_perp = (y - x) - <y - x, x> x`` the
      component of ``y`` orthogonal to ``x``, computed from the difference ``y - x`` so that
      small angles keep full relative precision in float32 (no clamped ``acos``).
    * ``logmap(x, y) = dist(x, y) y_perp / |y_perp|``.
    * ``transp`` is the exact parallel transport along the minimising great circle;
      ``expmap_transp(x, u, v)`` transports along the great circle of ``u`` itself, by the same
      formula with ``log_x y`` replaced by ``u`` (no log map).
    * ``projx(x) = x / |x|``; the zero vector, which has no nearest point, maps to ``e_0``.
    * ``random_uniform`` normalises standard Gaussian vectors (uniform w.r.t. the area).
    * ``volume = 2 pi^{(d+1)/2} / Gamma((d+1)/2)`` (``4 pi`` for ``S^2``) and its logarithm
      ``log_volume``, finite where the volume underflows (``d`` past about 450);
      ``injectivity_radius = pi``.

    **Cut locus.** The cut locus of ``x`` is its antipode ``-x``. When ``<x, y> < 0`` and
    ``|y_perp|`` is below ``eps_for(dtype)`` (``1e-12`` in float64, ``1e-6`` in float32), the
    minimising geodesic is not unique (or not resolvable in that precision), and
    ``logmap(x, y)`` returns the vector of length ``dist(x, y)`` (``pi`` at the antipode) in the
    fixed direction of the component of ``e_0`` orthogonal to ``x`` (``e_1`` instead when
    ``x_0^2 > 1/2``), normalised. It is deterministic, tangent, finite, and its exponential is
    ``y``. ``transp`` uses the same geodesic.

    Args:
        d: intrinsic dimension (``d >= 1``); points live in ``R^{d+1}``.

    References:
        P.-A. Absil, R. Mahony, R. Sepulchre, *Optimization Algorithms on Matrix Manifolds*,
        Princeton University Press, 2008 (sphere geometry, Ch. 3 and 5).

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import Sphere
        >>> s2 = Sphere(2)
        >>> x = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
        >>> y = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
        >>> s2.dist(x, y) / math.pi
        tensor([0.5000], dtype=torch.float64)
        >>> s2.logmap(x, -x)  # antipode: length pi along e_1 (x is e_0)
        tensor([[0.0000, 3.1416, 0.0000]], dtype=torch.float64)
        >>> s2.volume / math.pi
        4.0
    """

    name = "Sphere"
    _expmap_projects = True
    injectivity_radius = math.pi
    _deviation_name = "max | |x| - 1 |"

    def __init__(self, d: int) -> None:
        super().__init__()
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"Sphere dimension d must be an int >= 1, got {d!r}")
        self._set_shape((d + 1,), d)
        half = 0.5 * (d + 1)
        if half < 170.0:
            self.volume = 2.0 * math.pi**half / math.gamma(half)
            self.log_volume = math.log(self.volume)
        else:  # through logarithms: Gamma((d + 1) / 2) overflows a float from d = 342 on
            self.log_volume = math.log(2.0) + half * math.log(math.pi) - math.lgamma(half)
            self.volume = math.exp(self.log_volume)  # 0.0 past d of about 450

    def extra_repr(self) -> str:
        return str(self.dim)

    # -------------------------------------------------------------------- helpers

    @staticmethod
    def _dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(-1, keepdim=True)

    def _perp(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``y_perp`` (from ``y - x``), its norm ``s`` and ``c = <x, y>``, keepdim."""
        d = y - x
        p = d - self._dot(d, x) * x
        return p, norm(p, keepdim=True), self._dot(x, y)

    def _antipodal_direction(self, x: Tensor) -> Tensor:
        """Unit tangent at ``x``: component of ``e_0`` (or ``e_1`` if ``x_0^2 > 1/2``) orthogonal to x."""
        use0 = x[..., :1] * x[..., :1] <= 0.5
        xk = torch.where(use0, x[..., :1], x[..., 1:2])
        a = torch.cat([use0.to(x.dtype), (~use0).to(x.dtype), torch.zeros_like(x[..., 2:])], dim=-1)
        v = a - xk * x
        return v / norm(v, keepdim=True).clamp_min(0.5)

    def _log_and_angle(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        p, s, c = self._perp(x, y)
        theta, ratio = atan_ratio(s, c)
        regular = p * ratio
        cut = (c < 0) & (s <= eps_for(x.dtype))
        log = torch.where(cut, theta * self._antipodal_direction(x), regular)
        return log, theta

    # -------------------------------------------------------------------- implementations

    def _projx(self, x: Tensor) -> Tensor:
        n = norm(x, keepdim=True)
        # x / max(n, tiny) is 0 (with a zero gradient) where n = 0; e0 is put there by adding
        # 1 to the first coordinate (cheaper than a full-size torch.where)
        out = x / n.clamp_min(torch.finfo(x.dtype).tiny)
        out[..., :1] += (n == 0).to(out.dtype)
        return out

    def _proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u - self._dot(x, u) * x

    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        out = (u * v).sum(-1)
        return out.expand(torch.broadcast_shapes(x.shape[:-1], out.shape))

    def _expmap(self, x: Tensor, u: Tensor) -> Tensor:
        t2 = self._dot(u, u)
        y = cos_sq(t2) * x + sinc_sq(t2) * u
        return y / norm(y, keepdim=True)

    def _logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._log_and_angle(x, y)[0]

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        _, s, c = self._perp(x, y)
        return torch.atan2(s, c)[..., 0]

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        # log_x y = r p with p = y - <x, y> x, r = theta / sin theta. Along u (tangent at y),
        # d theta = -<x, u> / sin theta, so D log_x(y)[u] = r (u - <x, u> x) - q <x, u> p with
        # q = (sin theta - theta cos theta) / sin^3 theta (a series near theta = 0).
        p, s, c = self._perp(x, y)
        theta, r = atan_ratio(s, c)
        t2 = theta * theta
        series = 1 / 3 + t2 * (2 / 15 + t2 * (2 / 63 + t2 * (4 / 675 + t2 * (2 / 2079))))
        q = torch.where(
            theta < _taylor_threshold(x.dtype), series, safe_div(s - theta * c, s * s * s)
        )
        xu = self._dot(x, u)
        return r * (u - xu * x) - (q * xu) * p

    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        # Along exp_x(t w), w = log_x(y), |w| = theta: the component of v along w rotates in the
        # plane (x, w), the rest is unchanged:
        # v + <w, v> ((cos theta - 1) w / theta^2 - sin theta / theta x).
        w, _ = self._log_and_angle(x, y)
        t2 = self._dot(w, w)
        return v - self._dot(w, v) * (versine_sq(t2) * w + sinc_sq(t2) * x)

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # The transport formula of _transp with w = u: no logmap needed.
        t2 = self._dot(u, u)
        sc = sinc_sq(t2)
        y = cos_sq(t2) * x + sc * u
        vt = v - self._dot(u, v) * (versine_sq(t2) * u + sc * x)
        return y / norm(y, keepdim=True), vt

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        # exp_x(s u) = cos(s n) x + sin(s n)/n u, n = |u|; d/ds = cos(s n) u - n sin(s n) x.
        # cos of the (floored) root is exact with exact gradients except below the floor, where
        # t2's own gradient vanishes; only sinc needs its series. No renormalisation: |y| = 1
        # up to a few ulp (cos^2 + sin^2), as the geodesic paths need.
        sb = s[..., None]
        n2 = self._dot(u, u)
        t2 = sb * sb * n2
        c = torch.cos(torch.sqrt(t2.clamp_min(_tiny_root(t2.dtype) ** 2)))
        sc = sinc_sq(t2)
        y = torch.addcmul(c * x, sc * sb, u)
        vel = torch.addcmul(c * u, sb * n2 * sc, x, value=-1.0)
        return y, vel

    # ------------------------------------------- untracked fast paths (the solvers' loops)
    # The solvers call these where autograd records nothing (``torch.no_grad`` sampling, or no
    # input requiring grad). They skip the small-angle series that exist for exact gradients,
    # take row sums of the last dimension as a matrix product with a column of ones (one GEMV,
    # several times cheaper on the CPU than a reduction over a last dimension of 3), and may
    # overwrite the temporaries they are documented to consume. Same values as ``_projx``,
    # ``_proju`` and ``_expmap`` to rounding.

    def _fast_aux(self, x: Tensor) -> _FastAux:
        n = x.shape[-1]
        if x.device.type != "cpu":  # filled on the device: no host-to-device copy
            nudge = x.new_zeros(n)
            nudge.narrow(0, 0, 1).fill_(_tiny_root(x.dtype))
            return _FastAux(None, nudge, norm_kernel=True)
        parts = _CPU_AUX.get((x.dtype, n))
        if parts is None:
            nudge = torch.zeros(n, dtype=x.dtype)
            nudge[0] = _tiny_root(x.dtype)
            parts = _CPU_AUX[(x.dtype, n)] = (torch.ones(n, 1, dtype=x.dtype), nudge)
        return _FastAux(parts[0] if _exact_cpu_matmul(x.dtype) else None, parts[1])

    def _proju_fast(self, x: Tensor, u: Tensor, aux: _FastAux) -> Tensor:
        return torch.addcmul(u, _rowdot(x, u, aux.ones), x, value=-1.0)

    def _projx_inplace(self, y: Tensor, aux: _FastAux) -> Tensor:
        """``y / |y|`` written into ``y`` (a temporary the caller owns).

        ``y_0`` is first nudged by ``sqrt(tiny)`` (``1.1e-19`` in float32, ``1.5e-154`` in
        float64), whose square is still a normal number: the zero vector becomes ``e_0`` (as
        in ``_projx``) without a mask and a select, which would cost more than the projection
        itself on the CPU, and any ``y`` longer than about ``1e-12`` (float32; ``1e-138`` in
        float64) is normalised to rounding, the nudge being below half an ulp of its
        largest coordinate. Where the squared norm overflows (``|y|`` above about ``1e19``
        in float32) the row comes out 0, as ``_projx``'s does. Off the CPU the division by
        ``torch.linalg.vector_norm`` does the same in two kernels instead of four.
        """
        y.add_(aux.nudge)
        if aux.norm_kernel:
            return y.div_(torch.linalg.vector_norm(y, dim=-1, keepdim=True))
        return y.mul_(_rowdot(y, y, aux.ones).rsqrt_())

    def _expmap_fast(self, x: Tensor, u: Tensor, aux: _FastAux) -> Tensor:
        """``exp_x(u)`` by plain ``cos`` and ``sin(|u|) / |u|`` of ``|u|`` floored at
        ``tiny`` (where ``sin(tiny) / tiny = 1`` and ``cos(tiny) = 1`` exactly), renormalised
        like ``_expmap``; ``u`` is not modified."""
        n = _rowdot(u, u, aux.ones).sqrt_().clamp_min_(torch.finfo(u.dtype).tiny)
        sc = torch.sin(n).div_(n)
        return self._projx_inplace(torch.addcmul(torch.cos(n) * x, sc, u), aux)

    def _dlogmap_fast(self, x: Tensor, y: Tensor, u: Tensor, aux: _FastAux) -> Tensor:
        """``_dlogmap`` with row sums as matrix products and ``theta / s`` by a floored
        ``s`` (exact as ``s -> 0``); ``q`` keeps its series, which is there for the value:
        the closed form cancels for small angles."""
        ones = aux.ones
        d = y - x
        p = torch.addcmul(d, _rowdot(d, x, ones), x, value=-1.0)
        s = _rowdot(p, p, ones).sqrt_()
        c = _rowdot(x, y, ones)
        sf = s.clamp_min(_tiny_root(s.dtype))
        theta = torch.atan2(sf, c)
        r = theta / sf
        t2 = theta * theta
        series = 1 / 3 + t2 * (2 / 15 + t2 * (2 / 63 + t2 * (4 / 675 + t2 * (2 / 2079))))
        closed = (sf - theta * c).div_(sf * sf * sf)
        q = torch.where(theta < _taylor_threshold(x.dtype), series, closed)
        xu = _rowdot(x, u, ones)
        out = torch.addcmul(u, xu, x, value=-1.0).mul_(r)
        return out.sub_(p.mul_(q.mul_(xu)))

    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        g = torch.randn(size + self.point_shape, generator=generator, dtype=dtype, device=device)
        return self._projx(g)

    def _origin(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        x = torch.zeros(size + self.point_shape, dtype=dtype, device=device)
        x[..., 0] = 1.0
        return x

    def _point_deviation(self, x: Tensor) -> Tensor:
        dev = (norm(x) - 1.0).abs()
        return torch.where(torch.isfinite(dev), dev, math.inf)

    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        dev = self._dot(x, u)[..., 0].abs() / (1.0 + norm(u))
        return torch.where(torch.isfinite(dev), dev, math.inf)
