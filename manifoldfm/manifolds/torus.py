"""The flat torus T^d = R^d / (2 pi Z)^d, points as angles in [0, 2 pi)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Manifold, norm

__all__ = ["FlatTorus"]

_TWO_PI = 2.0 * math.pi


def wrap_angle(x: Tensor) -> Tensor:
    """Wrap angles to ``[0, 2 pi)`` (gradient 1 everywhere).

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds.torus import wrap_angle
        >>> wrap_angle(torch.tensor([-0.5, 2 * math.pi, 7.0], dtype=torch.float64))
        tensor([5.7832, 0.0000, 0.7168], dtype=torch.float64)
    """
    # remainder is fmod (exact) plus 2 pi for negative inputs; that sum can round up to 2 pi
    # itself (e.g. for -1e-9 in float32), which is 0 on the circle. Never below 0.
    r = torch.remainder(x, _TWO_PI)
    return torch.where(r >= _TWO_PI, r - _TWO_PI, r)


def wrap_difference(d: Tensor, x: Tensor | None = None) -> Tensor:
    """Wrap angle differences to ``[-pi, pi)``: ``+pi`` and ``-pi`` both give ``-pi``.

    With one argument, ``d`` is the difference. With two, the difference ``d - x`` of the
    angles ``d`` and ``x`` in ``[0, 2 pi)`` is wrapped without forming ``d - x`` first: the
    period is taken off whichever angle sits above ``pi``, exactly, so a short difference
    across the seam ``0 = 2 pi`` is as accurate as one away from it (in float32, forming
    ``d - x`` first rounds it to a multiple of about ``5e-7``).

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds.torus import wrap_difference
        >>> wrap_difference(torch.tensor([math.pi, -math.pi, 4.0], dtype=torch.float64))
        tensor([-3.1416, -3.1416, -2.2832], dtype=torch.float64)
        >>> y, x = torch.tensor([6.2831]), torch.tensor([1e-4])  # float32, across the seam
        >>> exact = float(y.double() - 2 * math.pi - x.double())
        >>> abs(float(wrap_difference(y, x)) - exact) < 1e-10  # float32 rounding of the result
        True
    """
    # 2 pi = hi + lo, hi rounded to the dtype. Subtracting k lo keeps the relative accuracy of
    # short differences across the seam; it is skipped from a quarter turn on, where it is
    # below an ulp's worth, so that the half-turn convention holds in every dtype.
    hi, lo = _two_pi_parts(d.dtype)
    diff = d if x is None else d - x
    k = torch.floor((diff + math.pi) / _TWO_PI)
    if x is None:
        r = d - k * hi
    else:
        # y - hi is exact for y in [pi, 2 pi] (Sterbenz), and so is x - hi
        r = torch.where(k > 0, d - k * hi, d) - torch.where(k < 0, x + k * hi, x)
    r = torch.where(r.abs() < 0.5 * math.pi, r - k * lo, r)
    r = torch.where(r >= math.pi, r - _TWO_PI, r)
    return torch.where(r < -math.pi, r + _TWO_PI, r)


_TWO_PI_PARTS: dict[torch.dtype, tuple[float, float]] = {}


def _two_pi_parts(dtype: torch.dtype) -> tuple[float, float]:
    """``2 pi = hi + lo`` with ``hi`` the value of ``2 pi`` rounded to ``dtype``."""
    parts = _TWO_PI_PARTS.get(dtype)
    if parts is None:
        hi = float(torch.tensor(_TWO_PI, dtype=dtype))
        parts = _TWO_PI_PARTS[dtype] = (hi, _TWO_PI - hi)
    return parts


_BELOW_TWO_PI: dict[torch.dtype, float] = {}


def _below_two_pi(dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` below ``2 pi`` rounded to ``dtype``."""
    out = _BELOW_TWO_PI.get(dtype)
    if out is None:
        hi = torch.tensor(_TWO_PI, dtype=dtype)
        out = _BELOW_TWO_PI[dtype] = float(torch.nextafter(hi, torch.zeros_like(hi)))
    return out


class FlatTorus(Manifold):
    r"""The flat torus ``T^d = R^d / (2 pi Z)^d``: ``d`` angles, each in ``[0, 2 pi)``.

    The metric is the Euclidean one of ``R^d`` (the product of ``d`` unit circles). Tangent
    vectors are arbitrary vectors of ``R^d`` (``proju``, ``transp`` and the transport of
    ``expmap_transp`` are identities: the exact parallel transport of a flat space).

    * ``projx`` and ``expmap`` wrap to ``[0, 2 pi)``: ``expmap(x, u) = wrap(x + u)``.
    * ``logmap(x, y)`` wraps each difference ``y - x`` to ``[-pi, pi)``; ``dist`` is its norm.
    * ``random_uniform`` draws uniform angles; ``volume = (2 pi)^d``;
      ``injectivity_radius = pi``.

    **Cut locus.** The cut locus of ``x`` is the set of points where some coordinate differs by
    exactly ``pi``. There ``logmap`` returns ``-pi`` for that coordinate (the half-open
    interval ``[-pi, pi)``): deterministic, finite, and ``expmap(x, logmap(x, y)) = y`` still
    holds (``x - pi`` and ``x + pi`` are the same angle).

    With manifold checks on, points must be finite and lie in ``[0, 2 pi]`` (up to the dtype's
    tolerance); ``projx`` wraps arbitrary real angles into range.

    Args:
        d: number of angles (``d >= 1``).

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import FlatTorus
        >>> t2 = FlatTorus(2)
        >>> x = torch.tensor([[0.1, 3.0]], dtype=torch.float64)
        >>> y = torch.tensor([[6.2, 3.0 + math.pi]], dtype=torch.float64)
        >>> t2.logmap(x, y)  # wraps through 0; a difference of exactly pi gives -pi
        tensor([[-0.1832, -3.1416]], dtype=torch.float64)
        >>> t2.expmap(x, t2.logmap(x, y))
        tensor([[6.2000, 6.1416]], dtype=torch.float64)
    """

    name = "FlatTorus"
    _expmap_projects = True
    injectivity_radius = math.pi
    _deviation_name = "distance outside [0, 2 pi]"

    def __init__(self, d: int) -> None:
        super().__init__()
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"FlatTorus dimension d must be an int >= 1, got {d!r}")
        self._set_shape((d,), d)
        self.volume = _TWO_PI**d

    def extra_repr(self) -> str:
        return str(self.dim)

    def _projx(self, x: Tensor) -> Tensor:
        return wrap_angle(x)

    def _proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u if u.shape == x.shape else u.expand(torch.broadcast_shapes(x.shape, u.shape))

    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        out = (u * v).sum(-1)
        return out.expand(torch.broadcast_shapes(x.shape[:-1], out.shape))

    def _expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return wrap_angle(x + u)

    def _logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap_difference(y, x)

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        return norm(wrap_difference(y, x))

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        return u.expand(torch.broadcast_shapes(x.shape, y.shape, u.shape))

    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return v.expand(torch.broadcast_shapes(x.shape, y.shape, v.shape))

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        y = wrap_angle(x + u)
        return y, v.expand(torch.broadcast_shapes(y.shape, v.shape))

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        y = wrap_angle(torch.addcmul(x, s[..., None], u))
        return y, u.expand(y.shape)

    # ------------------------------------------- untracked fast paths (the solvers' loops)
    # Called by the solvers where autograd records nothing; same values as ``_projx``,
    # ``_proju`` and ``_expmap``, with fewer temporaries.

    def _fast_aux(self, x: Tensor) -> None:
        return None

    def _proju_fast(self, x: Tensor, u: Tensor, aux: None) -> Tensor:
        return u

    def _projx_inplace(self, y: Tensor, aux: None) -> Tensor:
        """Wrap ``y`` (a temporary the caller owns) into ``[0, 2 pi)`` in place.

        From 2048 entries on, ``y - 2 pi floor(y / 2 pi)`` clamped to ``[0, 2 pi)``: four
        cheap elementwise operations, where ``torch.remainder`` costs several times more
        per element on the CPU; below that and off the CPU, ``torch.remainder`` and the
        clamp. Both replace ``wrap_angle``'s select by a clamp and equal ``wrap_angle(y)`` to
        rounding: for
        ``y`` within a period of the range (the solvers' steps) the subtraction is exact,
        and only an angle within an ulp of a multiple of ``2 pi`` may come out at the other
        end of the range (just below ``2 pi`` instead of 0 or the reverse), the same point
        of the circle to an ulp.
        """
        below = _below_two_pi(y.dtype)
        if y.numel() < 2048 or not y.is_cpu:
            # the one remainder kernel is the cheaper below this size, and on accelerators,
            # where a kernel launch costs more than the work
            return torch.remainder(y, _TWO_PI, out=y).clamp_max_(below)
        two_pi = _two_pi_parts(y.dtype)[0]
        y.add_(torch.mul(y, 1.0 / two_pi).floor_(), alpha=-two_pi)
        return y.clamp_(0.0, below)

    def _expmap_fast(self, x: Tensor, u: Tensor, aux: None) -> Tensor:
        """``wrap_angle(x + u)``, written into ``u`` (a temporary the caller owns)."""
        return self._projx_inplace(u.add_(x), aux)

    def _dlogmap_fast(self, x: Tensor, y: Tensor, u: Tensor, aux: None) -> Tensor:
        return u

    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        u = torch.rand(size + self.point_shape, generator=generator, dtype=dtype, device=device)
        return wrap_angle(_TWO_PI * u)

    def _origin(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.zeros(size + self.point_shape, dtype=dtype, device=device)

    def _point_deviation(self, x: Tensor) -> Tensor:
        out = (torch.relu(-x) + torch.relu(x - _TWO_PI)).amax(-1)
        return torch.where(torch.isfinite(x).all(-1), out, math.inf)

    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        out = torch.zeros_like(u[..., 0])
        return torch.where(torch.isfinite(u).all(-1), out, math.inf)
