"""Source distributions: where the flow starts (t = 0).

Every source offers ``sample(n, *, generator=None, dtype=None, device=None) -> (n, *shape)``,
``log_prob(x) -> (B,)``, a ``shape`` (the shape of one point) and a ``manifold`` (``None`` for
the Euclidean :class:`Gaussian`). Densities on a manifold are taken with respect to its
Riemannian volume (the area on ``S^2``, Lebesgue measure on ``[0, 2 pi)^d`` for the flat torus,
the bi-invariant measure of total mass ``8 pi^2`` on ``SO(3)``), the convention of
:func:`manifoldfm.solvers.log_likelihood`.

**Generator and device rule** (the sources on manifolds and :class:`Mixture`): random numbers are
drawn on the generator's device (on ``device`` when no generator is given) and the result is
then moved to ``device``, so a seeded CPU generator gives the same points on every device.
``dtype`` defaults to ``torch.get_default_dtype()``. Parameters given as tensors (``loc``) are
kept as tensors on the device they came on and moved to the requested or input dtype/device
at each call; the objects hold no device of their own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Protocol

import torch
from scipy import special
from torch import Tensor

from ._utils import check_positive, eps_for, value_checks_enabled
from .manifolds import SO3, Euclidean, FlatTorus, Manifold, Sphere
from .manifolds.base import atan_ratio, check_tol, norm, sinc_sq
from .manifolds.so3 import rotation_angle
from .manifolds.torus import wrap_angle, wrap_difference

__all__ = [
    "IGSO3",
    "CentredGaussian",
    "Gaussian",
    "Mixture",
    "Uniform",
    "VonMisesFisher",
    "WrappedNormal",
]

_TWO_PI = 2.0 * math.pi
_LOG_TWO_PI = math.log(_TWO_PI)


class Gaussian:
    """Isotropic Gaussian ``N(mean, std^2 I)`` on tensors of a fixed shape.

    Args:
        shape: the shape of one sample (an int ``d`` means ``(d,)``; ``()`` gives scalars).
        mean: the mean of every entry (a Python float).
        std: the standard deviation of every entry, ``> 0`` (a Python float).

    Example:
        >>> import torch
        >>> from manifoldfm.sources import Gaussian
        >>> src = Gaussian((3, 2))
        >>> x = src.sample(5, generator=torch.Generator().manual_seed(0))
        >>> x.shape, src.log_prob(x).shape
        (torch.Size([5, 3, 2]), torch.Size([5]))
        >>> round(float(Gaussian(1).log_prob(torch.zeros(1, 1))), 4)  # -log(2 pi) / 2
        -0.9189

    Attributes:
        manifold: ``None``: the Gaussian lives on the Euclidean space of its ``shape`` (whatever
            the shape, so no manifold object is attached).
    """

    manifold: None = None

    def __init__(self, shape: int | Sequence[int], mean: float = 0.0, std: float = 1.0) -> None:
        self._shape = _check_shape(shape)
        if isinstance(mean, bool) or not isinstance(mean, (int, float)):
            raise TypeError(f"mean must be a Python float, got {type(mean).__name__}")
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        self.mean = float(mean)
        self.std = check_positive(std, "std")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return self._shape

    @property
    def dim(self) -> int:
        """The number of entries of one sample."""
        return math.prod(self._shape)

    def __repr__(self) -> str:
        return f"Gaussian(shape={self._shape}, mean={self.mean}, std={self.std})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *shape)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator; its device is the default device.
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.sources import Gaussian
            >>> Gaussian(2, mean=1.0, std=0.5).sample(4, dtype=torch.float64).dtype
            torch.float64
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        x = torch.randn((n, *self._shape), generator=generator, dtype=dtype, device=device)
        if self.std != 1.0:
            x = x.mul_(self.std)
        if self.mean != 0.0:
            x = x.add_(self.mean)
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of each sample, shape ``(B,)``, for ``x`` of shape ``(B, *shape)``.

        Example:
            >>> import torch
            >>> from manifoldfm.sources import Gaussian
            >>> Gaussian(2).log_prob(torch.zeros(3, 2))
            tensor([-1.8379, -1.8379, -1.8379])
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim != len(self._shape) + 1 or tuple(x.shape[1:]) != self._shape:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self._shape))}) for this source, "
                f"got {tuple(x.shape)}"
            )
        z = x if self.mean == 0.0 else x - self.mean
        if self.std != 1.0:
            z = z / self.std
        const = self.dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return -0.5 * z.reshape(x.shape[0], self.dim).square().sum(dim=1) - const


def _check_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
        if s < 1:
            raise ValueError(f"shape entries must be >= 1, got {tuple(shape)}")
        out.append(int(s))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# shared helpers of the sources on manifolds
# ---------------------------------------------------------------------------------------------


class _SourceLike(Protocol):
    """What :class:`Mixture` needs of a component."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor: ...

    def log_prob(self, x: Tensor) -> Tensor: ...


def _sample_setup(
    n: int,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> tuple[torch.dtype, torch.device, torch.device]:
    """Validate ``sample``'s arguments; return the dtype, the drawing and the output devices."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    out = torch.device("cpu") if device is None else torch.device(device)
    if generator is not None:
        draw = generator.device
        if device is None:
            out = draw
    else:
        draw = out
    return dtype, draw, out


def _check_points(x: object, shape: tuple[int, ...], manifold: Manifold | None) -> Tensor:
    """Check that ``x`` is a floating ``(B, *shape)`` tensor (on the manifold when checks are on)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"x must have shape (B, {', '.join(map(str, shape))}) for this source, "
            f"got {tuple(x.shape)}"
        )
    if manifold is not None:
        manifold._require_point("x", x)
    return x


def _as_loc(loc: object, shape: tuple[int, ...], where: str) -> Tensor:
    """Validate a user's location (finite, of ``shape``); return it as a detached tensor."""
    if isinstance(loc, Tensor):
        if not loc.is_floating_point():
            raise TypeError(f"loc must have a floating dtype, got {loc.dtype}")
        t = loc.detach()
    elif isinstance(loc, Sequence) and not isinstance(loc, str):
        try:
            t = torch.tensor(loc, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"loc must be a tensor or a sequence of numbers, got {loc!r}") from None
    else:
        raise TypeError(f"loc must be a torch.Tensor, got {type(loc).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(
            f"loc must have shape ({', '.join(map(str, shape))}) {where}, got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"loc must be finite, got {t.tolist()}")
    return t


def _unit_loc(t: Tensor, where: str) -> Tensor:
    """Check that ``t`` has unit norm (to its dtype's tolerance); return it normalised in float64."""
    r = float(torch.linalg.vector_norm(t.to(torch.float64)))
    tol = check_tol(t.dtype)
    if not abs(r - 1.0) <= tol:
        raise ValueError(
            f"loc must be a unit vector {where}: |loc| = {r:.6g} differs from 1 by more than {tol:g}"
        )
    t64 = t.to(torch.float64)
    return t64 / torch.linalg.vector_norm(t64)


def _fmt(t: Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in t.tolist()) + "]"


# ---------------------------------------------------------------------------------------------
# Uniform
# ---------------------------------------------------------------------------------------------


class Uniform:
    """The uniform distribution on a compact manifold (w.r.t. its Riemannian volume).

    Samples come from ``manifold.random_uniform``; the log-density is the constant
    ``-log(manifold.volume)``: ``-log(4 pi)`` on ``S^2``, ``-d log(2 pi)`` on ``FlatTorus(d)``,
    ``-log(8 pi^2)`` on ``SO3()``, and the sum of the factors' values on a ``Product``.

    Args:
        manifold: a library :class:`~manifoldfm.manifolds.Manifold` of finite volume.

    Raises:
        TypeError: ``manifold`` is not a library manifold.
        ValueError: the manifold has infinite volume (``Euclidean``, products with a Euclidean
            factor): there is no uniform probability distribution on it.

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import SO3, Sphere
        >>> from manifoldfm.sources import Uniform
        >>> src = Uniform(Sphere(2))
        >>> x = src.sample(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x.shape, src.log_prob(x)  # -log(4 pi)
        (torch.Size([3, 3]), tensor([-2.5310, -2.5310, -2.5310], dtype=torch.float64))
        >>> round(Uniform(SO3()).log_density, 4) == round(-math.log(8 * math.pi**2), 4)
        True
    """

    def __init__(self, manifold: Manifold) -> None:
        if not isinstance(manifold, Manifold):
            raise TypeError(
                f"manifold must be a manifoldfm Manifold, got {type(manifold).__name__}"
            )
        vol = float(manifold.volume)
        log_vol = getattr(manifold, "log_volume", None)  # finite where the volume underflows
        if log_vol is None:
            if not (math.isfinite(vol) and vol > 0):
                raise ValueError(
                    f"Uniform needs a manifold of finite volume; {manifold!r} has volume {vol}"
                )
            log_vol = math.log(vol)
        self.manifold = manifold
        self._log_density = -float(log_vol)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one point (the manifold's ``point_shape``)."""
        return tuple(self.manifold.point_shape)

    @property
    def log_density(self) -> float:
        """The constant log-density ``-log(volume)``."""
        return self._log_density

    def __repr__(self) -> str:
        return f"Uniform({self.manifold!r})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` uniform points, shape ``(n, *shape)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator (points are drawn on its device, then moved).
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the output device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import FlatTorus
            >>> from manifoldfm.sources import Uniform
            >>> Uniform(FlatTorus(2)).sample(4, dtype=torch.float64).shape
            torch.Size([4, 2])
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        x = self.manifold.random_uniform(n, generator=generator, dtype=dtype, device=draw)
        return x.to(out)

    def log_prob(self, x: Tensor) -> Tensor:
        """The constant ``-log(volume)`` for each point, shape ``(B,)``, for ``x`` ``(B, *shape)``.

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import FlatTorus
            >>> from manifoldfm.sources import Uniform
            >>> Uniform(FlatTorus(1)).log_prob(torch.zeros(2, 1))  # -log(2 pi)
            tensor([-1.8379, -1.8379])
        """
        x = _check_points(x, self.shape, self.manifold)
        return x.new_full((x.shape[0],), self._log_density)


# ---------------------------------------------------------------------------------------------
# WrappedNormal
# ---------------------------------------------------------------------------------------------

#: Per-dimension scales up to this use the sum over wraps on the torus; larger ones the
#: (Poisson-summation) Fourier series, which needs fewer terms there.
_WRAP_MAX_SCALE = 2.0


@functools.lru_cache(maxsize=512)
def _torus_wraps(scale: float, eps: float) -> int:
    """Wraps ``K`` (terms ``k = -K..K``) with relative truncation error below ``eps``.

    For ``|delta| <= pi`` the omitted terms ``|k| > K`` are at most
    ``4 exp(-2 pi^2 K (K + 1) / scale^2)`` times the ``k = 0`` term (``scale <= 2``), so
    ``K (K + 1) >= scale^2 log(4 / eps) / (2 pi^2)`` suffices; ``K >= 1`` always, since the
    ``k = +-1`` terms equal the ``k = 0`` term at ``delta = +-pi``.
    """
    need = scale * scale * math.log(4.0 / eps) / (2.0 * math.pi**2)
    k = max(1, math.ceil((math.sqrt(1.0 + 4.0 * need) - 1.0) / 2.0))
    while k * (k + 1) < need:  # guard against rounding of the square root
        k += 1
    return k


@functools.lru_cache(maxsize=512)
def _torus_fourier_terms(scale: float, eps: float) -> int:
    """Harmonics ``N`` of the Fourier series with relative truncation error below ``eps``.

    With ``q = exp(-scale^2 / 2) <= e^-2`` the series ``1 + 2 sum q^{n^2} cos(n delta)`` stays
    above ``0.72`` and its tail after ``N`` terms below ``3.2 q^{(N+1)^2}``.
    """
    return max(1, math.ceil(math.sqrt(2.0 * math.log(4.0 / eps)) / scale) - 1)


@functools.lru_cache(maxsize=512)
def _sphere_wraps(d: int, scale: float, eps: float) -> tuple[int, int]:
    """Range ``(k_min, k_max)`` of the preimage terms ``t_k = r + 2 pi k`` of the sphere's density.

    The terms ``|t|^(d-1) exp(-t^2 / (2 scale^2))`` (the common factor ``sin(r)^(1-d)`` aside)
    fall on the shells ``m pi <= |t| <= (m + 1) pi``, one per shell: ``m = 2k`` for
    ``k >= 0`` and ``m = -2k - 1`` for ``k < 0``. Keeping the shells ``m < M`` with ``M``
    beyond the maximum of the terms (at ``|t| = scale sqrt(d - 1)``) bounds the omitted ones
    by ``sum_{m >= M} ((m + 1) pi)^(d-1) exp(-(m pi)^2 / (2 scale^2))``; the kept sum is at
    least the shell-1 term, ``>= pi^(d-1) exp(-2 pi^2 / scale^2)``, for every ``r`` in
    ``[0, pi]``. ``M`` is the smallest with a ratio below ``eps``: a relative error below
    ``eps`` at every point.
    """
    inv = 0.5 / (scale * scale)
    log_floor = (d - 1) * math.log(math.pi) - 4.0 * math.pi**2 * inv + math.log(eps)
    peak = scale * math.sqrt(d - 1)
    shells = max(2, math.ceil(peak / math.pi) + 1)
    while True:
        logs = [
            (d - 1) * math.log((m + 1) * math.pi) - (m * math.pi) ** 2 * inv
            for m in range(shells, shells + 64)
        ]
        top = max(logs)
        if top + math.log(math.fsum(math.exp(v - top) for v in logs)) <= log_floor:
            break
        shells += 1
    return -(shells // 2), (shells - 1) // 2


def _per_dim(values: list[float], like: Tensor, *, inverse: bool) -> Tensor | float:
    """``values`` (or their inverses) shaped ``(k, 1)`` against ``like``; a float if all equal."""
    vals = [1.0 / v for v in values] if inverse else values
    if len(set(vals)) == 1:
        return vals[0]
    return torch.tensor(vals, dtype=like.dtype, device=like.device)[:, None]


class WrappedNormal:
    r"""Wrapped normal distribution on a flat torus or a sphere.

    A Gaussian ``N(0, scale^2 I)`` in the tangent space at ``loc`` pushed forward by the
    exponential map: ``x = exp_loc(u)``. ``log_prob`` is exact (w.r.t. the Riemannian volume),
    summing over every preimage of ``x``; series are truncated once the dropped terms fall
    below the dtype's machine epsilon.

    * **FlatTorus(d)**: ``loc`` holds ``d`` angles and ``scale`` is a float or one float per
      angle. The density factorises over angles; with ``delta = wrap(x - loc)`` in
      ``[-pi, pi)`` each factor is the sum over wraps
      ``sum_k N(delta + 2 pi k; 0, scale^2)``, ``|k| <= K`` with ``K`` chosen from ``scale``
      (in float64 ``K = 1`` up to ``scale ~ 1``, ``K = 3`` at ``scale = 2``). For
      ``scale > 2`` the same function is evaluated by its Fourier series
      ``(1 + 2 sum_n exp(-n^2 scale^2 / 2) cos(n delta)) / (2 pi)`` (the Poisson summation of
      the wraps), which needs fewer terms there (4 at ``scale = 2``, 1 from ``scale ~ 4.4``).
    * **Sphere(d)**: ``loc`` is a unit vector of length ``d + 1`` and ``scale`` a float (the
      tangent Gaussian is isotropic). With ``r = dist(loc, x)`` the preimages are
      ``|u| = |r + 2 pi k|``, ``k`` in ``Z`` (``u`` along ``log_loc(x)`` for ``k >= 0``, opposite
      for ``k < 0``), and the Jacobian of ``exp`` is ``(sin|u| / |u|)^(d - 1)``:
      ``p(x) = (2 pi scale^2)^(-d/2) sum_k |r + 2 pi k|^(d-1) / sin(r)^(d-1)
      exp(-(r + 2 pi k)^2 / (2 scale^2))``, truncated with a relative error below ``eps`` at
      every point (more terms as ``scale`` grows: 3 below ``scale ~ 0.6``, about
      ``scale sqrt(2 log(1/eps)) / pi`` for large scales). For ``d >= 2`` the density is infinite at ``-loc`` and (through the
      terms ``k != 0``) at ``loc``; there ``sin r`` is floored at ``eps_for(dtype)``, so the
      value is large but finite, with finite gradients.

    Args:
        manifold: a :class:`~manifoldfm.manifolds.FlatTorus` or a
            :class:`~manifoldfm.manifolds.Sphere`.
        loc: the location, a tensor of shape ``manifold.point_shape`` (any real angles on the
            torus, wrapped to ``[0, 2 pi)``; a unit vector on the sphere, to the tolerance of
            its dtype, then renormalised). Stored detached in float64 on its device.
        scale: the standard deviation of the tangent Gaussian, ``> 0``: a float, or on the
            torus a sequence (or 1-D tensor) of one float per angle.

    Raises:
        TypeError: an unsupported manifold, or a per-angle scale on a sphere.
        ValueError: ``loc`` of the wrong shape, not finite or off the sphere; a scale that is
            not positive and finite, or of the wrong length.

    References:
        K. V. Mardia, P. E. Jupp, *Directional Statistics*, Wiley, 2000 (wrapped normal,
        Sec. 3.5.7). E. Mathieu, M. Nickel, Riemannian Continuous Normalizing Flows, NeurIPS
        2020 (wrapped normal on manifolds).

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import FlatTorus, Sphere
        >>> from manifoldfm.sources import WrappedNormal
        >>> src = WrappedNormal(FlatTorus(2), torch.tensor([0.0, math.pi]), scale=[0.3, 1.0])
        >>> x = src.sample(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x.shape, src.log_prob(x).shape
        (torch.Size([5, 2]), torch.Size([5]))
        >>> s2 = WrappedNormal(Sphere(2), torch.tensor([0.0, 0.0, 1.0]), scale=0.5)
        >>> y = s2.sample(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        >>> bool(torch.allclose(y.norm(dim=-1), torch.ones(3, dtype=torch.float64)))
        True
    """

    def __init__(
        self, manifold: Manifold, loc: Tensor, scale: float | Sequence[float] | Tensor
    ) -> None:
        if isinstance(manifold, FlatTorus):
            self._kind = "torus"
        elif isinstance(manifold, Sphere):
            self._kind = "sphere"
        else:
            raise TypeError(
                "WrappedNormal supports FlatTorus and Sphere manifolds, "
                f"got {type(manifold).__name__}"
            )
        self.manifold: Manifold = manifold
        shape = tuple(manifold.point_shape)
        where = f"on {manifold!r}"
        loc_t = _as_loc(loc, shape, where)
        d = manifold.dim
        if self._kind == "sphere":
            self.loc = _unit_loc(loc_t, where)
        else:
            self.loc = wrap_angle(loc_t.to(torch.float64))
        if isinstance(scale, Tensor):
            if scale.ndim > 1:
                raise ValueError(f"scale must be a float or 1-D, got shape {tuple(scale.shape)}")
            scale = scale.item() if scale.ndim == 0 else [float(v) for v in scale.tolist()]
        if isinstance(scale, Sequence) and not isinstance(scale, str):
            if self._kind == "sphere":
                raise TypeError(
                    "scale on a Sphere must be a float (the tangent Gaussian is isotropic), "
                    f"got {scale!r}"
                )
            if len(scale) != d:
                raise ValueError(f"scale must hold {d} values {where}, got {len(scale)}")
            scales = tuple(check_positive(v, "scale") for v in scale)
            self.scale: float | tuple[float, ...] = scales
        else:
            s = check_positive(scale, "scale")  # type: ignore[arg-type]
            scales = (s,) * d
            self.scale = s
        self._scales = scales

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one point (the manifold's ``point_shape``)."""
        return tuple(self.manifold.point_shape)

    def __repr__(self) -> str:
        scale = self.scale if isinstance(self.scale, float) else list(self.scale)
        return f"WrappedNormal({self.manifold!r}, loc={_fmt(self.loc)}, scale={scale})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` points, shape ``(n, *shape)``: ``exp_loc(u)`` with ``u`` tangent Gaussian.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator (points are drawn on its device, then moved).
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the output device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import FlatTorus
            >>> from manifoldfm.sources import WrappedNormal
            >>> src = WrappedNormal(FlatTorus(1), torch.tensor([6.0]), scale=0.1)
            >>> x = src.sample(1000, generator=torch.Generator().manual_seed(0))
            >>> bool(((x >= 0) & (x < 6.2832)).all())
            True
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        mu = self.loc.to(dtype=dtype, device=draw)
        d = self.manifold.dim
        if self._kind == "torus":
            eps = torch.randn((n, d), generator=generator, dtype=dtype, device=draw)
            sig = torch.tensor(self._scales, dtype=dtype, device=draw)
            x = wrap_angle(torch.addcmul(mu, eps, sig))
        else:
            g = torch.randn((n, d + 1), generator=generator, dtype=dtype, device=draw)
            u = self._scales[0] * (g - (g @ mu)[:, None] * mu)
            x = self.manifold.expmap(mu, u)
        return x.to(out)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of each point, shape ``(B,)``, for ``x`` of shape ``(B, *shape)``.

        Example:
            >>> import math, torch
            >>> from manifoldfm.manifolds import FlatTorus
            >>> from manifoldfm.sources import WrappedNormal
            >>> src = WrappedNormal(FlatTorus(1), torch.tensor([0.0]), scale=100.0)
            >>> src.log_prob(torch.tensor([[0.0], [3.0]], dtype=torch.float64))  # ~ -log(2 pi)
            tensor([-1.8379, -1.8379], dtype=torch.float64)
        """
        x = _check_points(x, self.shape, self.manifold)
        mu = self.loc.to(dtype=x.dtype, device=x.device)
        eps = torch.finfo(x.dtype).eps
        if self._kind == "torus":
            return self._torus_log_prob(wrap_difference(x - mu), eps)
        return self._sphere_log_prob(x, mu, eps)

    def _torus_log_prob(self, delta: Tensor, eps: float) -> Tensor:
        scales = self._scales
        d = len(scales)
        dt, dev = delta.dtype, delta.device
        out = delta.new_zeros(delta.shape[0])
        wrap_dims = [i for i in range(d) if scales[i] <= _WRAP_MAX_SCALE]
        if wrap_dims:
            sig_w = [scales[i] for i in wrap_dims]
            k = _torus_wraps(max(sig_w), eps)
            shifts = torch.arange(-k, k + 1, dtype=dt, device=dev) * _TWO_PI
            dl = delta if len(wrap_dims) == d else delta[:, wrap_dims]
            z = (dl[..., None] + shifts) * _per_dim(sig_w, dl, inverse=True)
            const = math.fsum(math.log(s) for s in sig_w) + 0.5 * len(sig_w) * _LOG_TWO_PI
            out = out + torch.logsumexp(-0.5 * z * z, dim=-1).sum(dim=-1) - const
        four_dims = [i for i in range(d) if scales[i] > _WRAP_MAX_SCALE]
        if four_dims:
            sig_f = [scales[i] for i in four_dims]
            m = _torus_fourier_terms(min(sig_f), eps)
            harm = torch.arange(1, m + 1, dtype=dt, device=dev)
            dl = delta if len(four_dims) == d else delta[:, four_dims]
            hs = harm * _per_dim(sig_f, dl, inverse=False)  # (k, m) or (m,)
            coef = 2.0 * torch.exp(-0.5 * hs * hs)
            series = (coef * torch.cos(dl[..., None] * harm)).sum(dim=-1)
            out = out + torch.log1p(series).sum(dim=-1) - len(sig_f) * _LOG_TWO_PI
        return out

    def _sphere_log_prob(self, x: Tensor, mu: Tensor, eps: float) -> Tensor:
        d = self.manifold.dim
        sigma = self._scales[0]
        diff = x - mu
        perp = diff - (diff @ mu)[:, None] * mu
        s = norm(perp)  # sin r
        c = x @ mu  # cos r
        theta, ratio = atan_ratio(s, c)  # r and r / sin r (sin r floored at eps_for(dtype))
        k_min, k_max = _sphere_wraps(d, sigma, eps)
        dt, dev = x.dtype, x.device
        inv2 = 0.5 / (sigma * sigma)
        term0 = -inv2 * theta * theta + (d - 1) * torch.log(ratio)  # k = 0
        # k = k_min..k_max without 0 (at least k = -1: _sphere_wraps keeps two shells or more)
        ks = torch.arange(k_min, k_max, dtype=dt, device=dev)
        t = theta[:, None] + (ks + (ks >= 0).to(dt)) * _TWO_PI  # |t| >= pi
        terms = -inv2 * t * t
        if d > 1:
            log_s = torch.log(s.clamp_min(eps_for(dt)))
            terms = terms + (d - 1) * (torch.log(t.abs()) - log_s[:, None])
        lse = torch.logsumexp(torch.cat([term0[:, None], terms], dim=1), dim=1)
        return lse - 0.5 * d * (_LOG_TWO_PI + 2.0 * math.log(sigma))


# ---------------------------------------------------------------------------------------------
# von Mises-Fisher
# ---------------------------------------------------------------------------------------------


def _log_sphere_area(d: int) -> float:
    """``log`` of the area of ``S^d``: ``log(2 pi^((d+1)/2) / Gamma((d+1)/2))``."""
    p = 0.5 * (d + 1)
    return math.log(2.0) + p * math.log(math.pi) - math.lgamma(p)


def _vmf_log_norm(d: int, kappa: float) -> float:
    """``log C_{d+1}(kappa) + kappa``: the vMF log-density is this plus ``kappa (<mu, x> - 1)``.

    ``C_p(kappa) = kappa^nu / ((2 pi)^(p/2) I_nu(kappa))`` with ``p = d + 1``, ``nu = p/2 - 1``.
    ``S^2``: ``log kappa - log 2 pi - log(1 - exp(-2 kappa))`` (no overflow for large kappa).
    Otherwise ``log I_nu(kappa) = log ive(nu, kappa) + kappa`` (scipy, float64), and where
    scipy under- or overflows the power series of ``I_nu`` (small kappa, high spheres) or its
    large-argument expansion (kappa far above ``nu^2``).
    """
    if kappa == 0.0:
        return -_log_sphere_area(d)
    if d == 2:
        return math.log(kappa) - _LOG_TWO_PI - math.log(-math.expm1(-2.0 * kappa))
    p = 0.5 * (d + 1)
    nu = p - 1.0
    log_ive = None if kappa < 1e-3 else _log_ive_scipy(nu, kappa)
    if log_ive is None and 0.25 * kappa * kappa <= 10.0 * (nu + 1.0):
        log_ive = _log_ive_series(nu, kappa)
    if log_ive is None and kappa >= 10.0 * (nu * nu + 1.0):
        log_ive = _log_ive_large(nu, kappa)
    if log_ive is None:
        raise ValueError(
            f"cannot evaluate the vMF normaliser on S^{d} at concentration {kappa} "
            f"(scipy.special.ive under- or overflows there, outside the series' ranges)"
        )
    return nu * math.log(kappa) - p * _LOG_TWO_PI - log_ive


def _log_ive_scipy(nu: float, kappa: float) -> float | None:
    """``log(I_nu(kappa) exp(-kappa))`` by scipy, or ``None`` where it under- or overflows."""
    ive = float(special.ive(nu, kappa))
    return math.log(ive) if ive > 0 and math.isfinite(ive) else None


def _log_ive_series(nu: float, kappa: float) -> float:
    """``log ive(nu, kappa)`` from the power series ``I_nu(k) = (k/2)^nu / Gamma(nu + 1)
    sum_m (k^2/4)^m / (m! (nu + 1)_m)`` (positive terms, summed until they stop counting):
    for small ``kappa`` next to ``sqrt(nu)``, where scipy's ``ive`` underflows on high spheres."""
    q = 0.25 * kappa * kappa
    series, term = 1.0, 1.0
    for m in range(1, 400):
        term *= q / (m * (nu + m))
        series += term
        if term < 1e-17 * series:
            break
    return nu * math.log(0.5 * kappa) - math.lgamma(nu + 1.0) + math.log(series) - kappa


def _log_ive_large(nu: float, kappa: float) -> float:
    """``log ive(nu, kappa)`` from the large-argument expansion ``I_nu(k) e^-k ~ (2 pi k)^-1/2
    (1 - (mu - 1) / (8 k) + (mu - 1)(mu - 9) / (2! (8 k)^2) - ...)``, ``mu = 4 nu^2``: for
    ``kappa`` far above ``nu^2``, where scipy's ``ive`` returns NaN (from about 1e10)."""
    mu = 4.0 * nu * nu
    total, term = 1.0, 1.0
    for j in range(1, 6):
        term *= -(mu - (2 * j - 1) ** 2) / (j * 8.0 * kappa)
        total += term
    return -0.5 * math.log(2.0 * math.pi * kappa) + math.log(total)


def _wood_one_minus_w(
    n: int, d: int, kappa: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Draw ``1 - W`` (``W = <mu, x>``) of the vMF on ``S^d``, float64, shape ``(n,)``.

    ``S^2``: the exact inverse CDF ``1 - W = -log1p((1 - U) expm1(-2 kappa)) / kappa``.
    Otherwise Wood's rejection sampler written in ``1 - W`` and ``1 - x0`` (no cancellation at
    large kappa), vectorised: each round draws a block of candidates for every row still
    unaccepted and keeps the first accepted one.
    """
    dt, dev = torch.float64, device
    if d == 2:
        u = torch.rand(n, generator=generator, dtype=dt, device=dev)
        w1 = -torch.log1p((1.0 - u) * math.expm1(-2.0 * kappa)) / kappa
        return w1.clamp(0.0, 2.0)
    dm = float(d)  # p - 1 with p = d + 1 the ambient dimension
    b = dm / (2.0 * kappa + math.sqrt(4.0 * kappa * kappa + dm * dm))
    d0 = 2.0 * b / (1.0 + b)  # 1 - x0
    log_norm0 = math.log(d0) + math.log(2.0 - d0)  # log(1 - x0^2)
    alpha = torch.full((1,), 0.5 * dm, dtype=dt, device=dev)
    out = torch.empty(n, dtype=dt, device=dev)
    todo = torch.arange(n, device=device)
    block = 2
    while todo.numel() > 0:
        r = todo.numel()
        g = torch._standard_gamma(alpha.expand(r, block, 2).contiguous(), generator=generator)
        z = g[..., 0] / (g[..., 0] + g[..., 1])  # Beta(d/2, d/2)
        w1 = 2.0 * b * z / (1.0 - (1.0 - b) * z)  # 1 - W
        log_u = torch.log(torch.rand((r, block), generator=generator, dtype=dt, device=dev))
        crit = kappa * (d0 - w1) + dm * (torch.log(d0 + w1 - d0 * w1) - log_norm0)
        acc = log_u <= crit
        first = acc.to(torch.int8).argmax(dim=1, keepdim=True)
        chosen = w1.gather(1, first)[:, 0]
        ok = acc.any(dim=1)
        out[todo[ok]] = chosen[ok]
        todo = todo[~ok]
    return out.clamp(0.0, 2.0)


class VonMisesFisher:
    r"""The von Mises-Fisher distribution on the sphere ``S^d`` (points in ``R^{d+1}``).

    Density w.r.t. the area: ``C_{d+1}(kappa) exp(kappa <loc, x>)`` with
    ``C_p(kappa) = kappa^(p/2-1) / ((2 pi)^(p/2) I_(p/2-1)(kappa))``. ``log_prob`` evaluates
    ``log C + kappa`` once, as a Python float in float64 (closed form
    ``log kappa - log 2 pi - log(1 - e^{-2 kappa})`` on ``S^2``, scipy's exponentially scaled
    Bessel function ``ive`` otherwise, the power series for tiny kappa), and adds
    ``kappa (<loc, x> - 1) = -kappa |x - loc|^2 / 2``: no overflow at any concentration, finite
    in float32 at ``kappa = 1e4`` and beyond. ``concentration = 0`` is the uniform law.

    Sampling draws ``W = <loc, x>`` exactly by the inverse CDF on ``S^2`` and by Wood's rejection
    algorithm otherwise (vectorised: blocks of candidates for the rows still unaccepted), in
    float64 and in terms of ``1 - W`` so that large concentrations keep full precision; then
    ``x = W loc + sqrt(1 - W^2) v`` with ``v`` uniform among unit vectors orthogonal to
    ``loc``. The result is cast to the requested dtype, so float32 and float64 draws from the
    same seed agree to float32 rounding.

    Args:
        loc: the mean direction, a unit vector of shape ``(d + 1,)`` with ``d >= 1`` (to the
            tolerance of its dtype; renormalised, stored detached in float64 on its device).
        concentration: ``kappa >= 0`` (a Python float).

    Attributes:
        manifold: ``Sphere(d)``.
        loc: the mean direction (float64).
        concentration: ``kappa``.

    References:
        A. T. A. Wood, Simulation of the von Mises Fisher distribution, Communications in
        Statistics - Simulation and Computation 23(1), 1994. K. V. Mardia, P. E. Jupp,
        *Directional Statistics*, Wiley, 2000 (Sec. 9.3).

    Example:
        >>> import torch
        >>> from manifoldfm.sources import VonMisesFisher
        >>> src = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), concentration=50.0)
        >>> x = src.sample(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> round(float(x[:, 2].mean()), 2)  # coth(50) - 1/50
        0.98
        >>> src.log_prob(torch.tensor([[0.0, 0.0, 1.0]]))  # log(50 / (2 pi (1 - e^-100)))
        tensor([2.0741])
    """

    def __init__(self, loc: Tensor, concentration: float) -> None:
        if isinstance(loc, Tensor):
            if loc.ndim != 1:
                raise ValueError(
                    f"loc must be a 1-D unit vector of shape (d + 1,), got {tuple(loc.shape)}"
                )
            n = loc.shape[0]
        elif isinstance(loc, Sequence) and not isinstance(loc, str):
            n = len(loc)
        else:
            raise TypeError(f"loc must be a torch.Tensor, got {type(loc).__name__}")
        if n < 2:
            raise ValueError(f"loc must have length d + 1 >= 2 (a point of S^d, d >= 1), got {n}")
        where = f"on Sphere({n - 1})"
        self.loc = _unit_loc(_as_loc(loc, (n,), where), where)
        self.concentration = check_positive(concentration, "concentration", allow_zero=True)
        self.manifold = Sphere(n - 1)
        self._log_norm = _vmf_log_norm(n - 1, self.concentration)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one point, ``(d + 1,)``."""
        return tuple(self.manifold.point_shape)

    @property
    def log_normalizer(self) -> float:
        """``log C_{d+1}(kappa)``: ``log_prob(x) = log_normalizer + kappa <loc, x>``."""
        return self._log_norm - self.concentration

    def __repr__(self) -> str:
        return f"VonMisesFisher(loc={_fmt(self.loc)}, concentration={self.concentration})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` unit vectors, shape ``(n, d + 1)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator (points are drawn on its device, then moved).
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the output device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.sources import VonMisesFisher
            >>> src = VonMisesFisher(torch.tensor([1.0, 0.0]), concentration=1e4)
            >>> x = src.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
            >>> bool((x[:, 0] > 0.99).all())
            True
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        d = self.manifold.dim
        dt, dev = torch.float64, draw
        mu = self.loc.to(dtype=dt, device=dev)
        if self.concentration == 0.0:
            x = self.manifold.random_uniform(n, generator=generator, dtype=dt, device=dev)
            return x.to(dtype=dtype, device=out)
        w1 = _wood_one_minus_w(n, d, self.concentration, generator, draw)
        v = torch.randn((n, d + 1), generator=generator, dtype=dt, device=dev)
        v = v - (v @ mu)[:, None] * mu
        v = v / norm(v, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        x = (1.0 - w1)[:, None] * mu + torch.sqrt(w1 * (2.0 - w1))[:, None] * v
        x = x / norm(x, keepdim=True)
        return x.to(dtype=dtype, device=out)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the area of ``S^d``, shape ``(B,)``, for ``x`` of shape ``(B, d + 1)``.

        Example:
            >>> import math, torch
            >>> from manifoldfm.sources import VonMisesFisher
            >>> src = VonMisesFisher(torch.tensor([0.0, 1.0]), concentration=0.0)
            >>> bool(torch.allclose(src.log_prob(torch.eye(2)), torch.tensor(-math.log(2 * math.pi))))
            True
        """
        x = _check_points(x, self.shape, self.manifold)
        if self.concentration == 0.0:
            return x.new_full((x.shape[0],), self._log_norm)
        mu = self.loc.to(dtype=x.dtype, device=x.device)
        diff = x - mu
        return self._log_norm - (0.5 * self.concentration) * (diff * diff).sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Mixture
# ---------------------------------------------------------------------------------------------


def _space_key(src: object) -> str | None:
    manifold = getattr(src, "manifold", None)
    if manifold is None or isinstance(manifold, Euclidean):
        return None
    return repr(manifold)


class Mixture:
    r"""A finite mixture ``sum_c w_c p_c`` of sources with the same point shape.

    Sampling draws the component of every point from the weights (one categorical draw with
    the generator), then ``count_c`` points from each component (a loop over components, not
    over the batch) and scatters them to their positions. ``log_prob`` is
    ``logsumexp_c (log w_c + log p_c(x))``.

    Args:
        components: a non-empty sequence of sources (anything with ``shape``, ``sample`` and
            ``log_prob``, such as :class:`Gaussian`, :class:`Uniform`, :class:`WrappedNormal`,
            :class:`VonMisesFisher` or another :class:`Mixture`) with the same ``shape`` and
            the same manifold (``None`` and ``Euclidean`` count as the same space).
        weights: positive finite weights, one per component, normalised to sum to 1
            (default: equal weights).

    Attributes:
        components: the components (a tuple).
        weights: the normalised weights (a tuple of floats).
        manifold: the components' manifold (the first component's; ``None`` for Gaussians).

    Raises:
        TypeError: a component lacks ``shape``, ``sample`` or ``log_prob``.
        ValueError: no components, shapes or manifolds that differ, bad weights.

    Example:
        >>> import torch
        >>> from manifoldfm.sources import Mixture, VonMisesFisher
        >>> north, south = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0])
        >>> mix = Mixture([VonMisesFisher(north, 20.0), VonMisesFisher(south, 20.0)], [3.0, 1.0])
        >>> mix.weights
        (0.75, 0.25)
        >>> x = mix.sample(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x.shape, round(float((x[:, 2] > 0).double().mean()), 1)
        (torch.Size([1000, 3]), 0.8)
    """

    def __init__(
        self, components: Sequence[_SourceLike], weights: Sequence[float] | None = None
    ) -> None:
        if isinstance(components, (str, bytes)) or not isinstance(components, Sequence):
            raise TypeError(
                f"components must be a sequence of sources, got {type(components).__name__}"
            )
        comps = tuple(components)
        if not comps:
            raise ValueError("Mixture needs at least one component")
        for i, c in enumerate(comps):
            for attr in ("shape", "sample", "log_prob"):
                if not hasattr(c, attr):
                    raise TypeError(f"component {i} ({type(c).__name__}) has no {attr!r}")
        shapes = [tuple(c.shape) for c in comps]
        if len(set(shapes)) > 1:
            raise ValueError(f"components must share their point shape, got shapes {shapes}")
        spaces = [_space_key(c) for c in comps]
        if len(set(spaces)) > 1:
            names = [s if s is not None else "Euclidean" for s in spaces]
            raise ValueError(f"components must live on the same manifold, got {names}")
        if weights is None:
            w = [1.0] * len(comps)
        else:
            if isinstance(weights, Tensor):
                weights = [float(v) for v in weights.reshape(-1).tolist()]
            if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
                raise TypeError(f"weights must be a sequence of floats, got {weights!r}")
            if len(weights) != len(comps):
                raise ValueError(
                    f"weights must hold one value per component ({len(comps)}), got {len(weights)}"
                )
            w = [check_positive(v, "weights entries") for v in weights]
        total = math.fsum(w)
        self.components = comps
        self.weights = tuple(v / total for v in w)
        self._log_weights = tuple(math.log(v) for v in self.weights)
        self._shape = shapes[0]
        self.manifold = getattr(comps[0], "manifold", None)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one point."""
        return self._shape

    def __repr__(self) -> str:
        comps = ", ".join(repr(c) for c in self.components)
        weights = ", ".join(f"{v:.4g}" for v in self.weights)
        return f"Mixture([{comps}], weights=[{weights}])"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` points, shape ``(n, *shape)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator (points are drawn on its device, then moved).
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the output device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.sources import Gaussian, Mixture
            >>> mix = Mixture([Gaussian(2, mean=-3.0), Gaussian(2, mean=3.0)])
            >>> mix.sample(5, generator=torch.Generator().manual_seed(0)).shape
            torch.Size([5, 2])
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        if n == 0:
            return torch.empty((0, *self._shape), dtype=dtype, device=out)
        probs = torch.tensor(self.weights, dtype=torch.float64, device=draw)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        counts = torch.bincount(idx, minlength=len(self.components)).tolist()
        parts = [
            c.sample(k, generator=generator, dtype=dtype, device=draw).to(draw)
            for c, k in zip(self.components, counts, strict=True)
            if k > 0
        ]
        drawn = torch.cat(parts, dim=0)  # grouped by component, in component order
        order = torch.argsort(idx, stable=True)
        x = torch.empty_like(drawn)
        x[order] = drawn
        return x.to(out)

    def log_prob(self, x: Tensor) -> Tensor:
        """``logsumexp_c (log w_c + log p_c(x))``, shape ``(B,)``, for ``x`` of shape ``(B, *shape)``.

        Example:
            >>> import math, torch
            >>> from manifoldfm.manifolds import Sphere
            >>> from manifoldfm.sources import Mixture, Uniform
            >>> mix = Mixture([Uniform(Sphere(2)), Uniform(Sphere(2))], weights=[1.0, 2.0])
            >>> bool(torch.allclose(mix.log_prob(torch.eye(3)), torch.tensor(-math.log(4 * math.pi))))
            True
        """
        x = _check_points(x, self._shape, None)
        lps = [c.log_prob(x) + lw for c, lw in zip(self.components, self._log_weights, strict=True)]
        return torch.logsumexp(torch.stack(lps, dim=-1), dim=-1)


# ---------------------------------------------------------------------------------------------
# IGSO3
# ---------------------------------------------------------------------------------------------

#: Up to this ``sigma`` the heat kernel on SO(3) is evaluated by its Poisson-summation form
#: (a few wrapped Gaussians, all positive), above it by the character series (few terms).
_IGSO3_SERIES_MIN_SIGMA = 1.5
#: Cells of the inverse-CDF table of the angle, and Gauss-Legendre nodes per cell.
_IGSO3_CELLS = 2048
_IGSO3_NODES = 8
#: The table covers ``[0, min(pi, _IGSO3_REACH * sigma)]``; beyond, the mass is below 1e-30.
_IGSO3_REACH = 12.0
_LOG_8PI2 = math.log(8.0 * math.pi**2)


@functools.lru_cache(maxsize=256)
def _igso3_pairs(sigma: float, eps: float) -> int:
    """Wrap pairs ``N`` of the Poisson form with an omitted relative mass below ``eps``.

    Relative to the ``n = 0`` term, the pair ``+-n`` is at most
    ``exp(-2 pi^2 n (n - 1) / sigma^2) (2 + 8 pi^2 n^2 / sigma^2)`` on ``[0, pi]``, and the
    whole sum is at least the ``n = 0`` term; ``N`` is the last pair above ``eps / 4``.
    """
    n = 2
    while (
        math.exp(-2.0 * math.pi**2 * n * (n - 1) / sigma**2)
        * (2.0 + 8.0 * math.pi**2 * n * n / sigma**2)
        >= 0.25 * eps
    ):
        n += 1
    return n - 1


@functools.lru_cache(maxsize=256)
def _igso3_degree(sigma: float, eps: float) -> int:
    """Degree ``L`` of the character series with an omitted relative mass below ``eps``.

    The terms beyond ``L`` are at most ``sum_{l > L} (2l + 1)^2 exp(-l (l + 1) sigma^2 / 2)``
    and the density is at least its value at ``pi``, ``>= 1 - 3 exp(-sigma^2)`` (an
    alternating series of decreasing terms) for ``sigma >= 1.5``.
    """
    floor = 0.5 * eps * (1.0 - 3.0 * math.exp(-(sigma**2)))
    big = 1
    while (2 * big + 1) ** 2 * math.exp(-big * (big + 1) * sigma**2 / 2) > 1e-300 * floor:
        big += 1
    terms = [(2 * k + 1) ** 2 * math.exp(-k * (k + 1) * sigma**2 / 2) for k in range(big + 1)]
    tail = 0.0
    for k in range(big, -1, -1):  # tail = sum of terms beyond k - 1
        if tail + terms[k] > floor:
            return k
        tail += terms[k]
    return 0


def _igso3_log_wraps(theta: Tensor, s2: Tensor | float, pairs: int) -> Tensor:
    """``log S``: the Poisson form's wrap pairs ``n = 1..pairs`` relative to the ``n = 0`` term.

    With ``a = 2 pi n`` the pair ``+-n`` divided by the ``n = 0`` term is
    ``(-1)^n exp(-a (a - 2 theta) / (2 s2)) (1 + e^{-x} - (2 a^2 / s2) (1 - e^{-x}) / x)``,
    ``x = 2 a theta / s2``: no overflow, no 0/0 at ``theta = 0``.
    """
    total = torch.zeros_like(theta)
    for n in range(1, pairs + 1):
        a = 2.0 * math.pi * n
        x = (2.0 * a) * theta / s2
        small = x < 1e-3
        xs = torch.where(small, torch.ones_like(x), x)
        phi = torch.where(small, 1.0 - x * (0.5 - x / 6.0), -torch.expm1(-xs) / xs)
        r = torch.exp(-a * (a - 2.0 * theta) / (2.0 * s2)) * (
            1.0 + torch.exp(-x) - (2.0 * a * a) / s2 * phi
        )
        total = total - r if n % 2 else total + r
    return torch.log1p(total)


def _igso3_log_lead(theta: Tensor, sigma: Tensor | float) -> Tensor:
    """Log of the ``n = 0`` term ``e^{s^2/8} sqrt(2 pi) / s^3 (theta / sin(theta/2)) e^{-theta^2/(2 s^2)}``."""
    s2 = sigma * sigma
    log_s = torch.log(sigma) if isinstance(sigma, Tensor) else math.log(sigma)
    t2 = theta * theta
    return (
        s2 / 8.0
        + (0.5 * _LOG_TWO_PI + math.log(2.0))
        - 3.0 * log_s
        - torch.log(sinc_sq(0.25 * t2))
        - t2 / (2.0 * s2)
    )


def _igso3_log_series(theta: Tensor, sigma: Tensor | float, degree: int) -> Tensor:
    """``log sum_l (2l + 1) exp(-l (l + 1) sigma^2 / 2) chi_l(theta)`` as a cosine series."""
    ell = torch.arange(degree + 1, dtype=theta.dtype, device=theta.device)
    sig = sigma[..., None] if isinstance(sigma, Tensor) else sigma
    d = (2.0 * ell + 1.0) * torch.exp(-(ell * (ell + 1.0)) * (0.5 * sig * sig))
    # chi_l = 1 + 2 sum_{k <= l} cos(k theta): coefficient of cos(k theta) is 2 sum_{l >= k} d_l.
    w = 2.0 * torch.flip(torch.cumsum(torch.flip(d, (-1,)), -1), (-1,))
    w = torch.cat([0.5 * w[..., :1], w[..., 1:]], dim=-1)
    return torch.log((w * torch.cos(theta[..., None] * ell)).sum(-1))


def _igso3_log_f(theta: Tensor, sigma: float) -> Tensor:
    """Log-density of IGSO(3) w.r.t. the Haar probability measure at rotation angles ``theta``."""
    eps = torch.finfo(theta.dtype).eps
    if sigma <= _IGSO3_SERIES_MIN_SIGMA:
        pairs = _igso3_pairs(sigma, eps)
        return _igso3_log_lead(theta, sigma) + _igso3_log_wraps(theta, sigma * sigma, pairs)
    return _igso3_log_series(theta, sigma, _igso3_degree(sigma, eps))


def _igso3_angle_pdf(theta: Tensor, sigma: float) -> Tensor:
    """Density of the rotation angle on ``[0, pi]``: ``(1 - cos theta) / pi * f(theta)``."""
    s = torch.sin(0.5 * theta)
    return (2.0 / math.pi) * s * s * torch.exp(_igso3_log_f(theta, sigma))


@functools.lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on ``[-1, 1]`` (float64, CPU)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(_IGSO3_NODES)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def _igso3_mass(lo: Tensor, hi: Tensor, sigma: float) -> Tensor:
    """Unnormalised angle mass of ``[lo, hi]`` by Gauss-Legendre (float64, elementwise)."""
    nodes, weights = _gauss_legendre()
    h = hi - lo
    pts = lo[..., None] + (0.5 * (nodes + 1.0)) * h[..., None]
    return (_igso3_angle_pdf(pts, sigma) * weights).sum(-1) * (0.5 * h)


@functools.lru_cache(maxsize=64)
def _igso3_table_cpu(
    sigma: float, cells: int = _IGSO3_CELLS
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, float]:
    """Angle grid, CDF, density, cell masses and survival function (float64, CPU).

    The CDF and the survival function are both kept: each is accurate relative to itself,
    so the quantiles near ``u = 1`` come from the survival function without cancellation.
    Returns ``(grid, cdf, pdf, cell, sf, total)``, all but ``total`` normalised.
    """
    top = min(math.pi, _IGSO3_REACH * sigma)
    grid = torch.linspace(0.0, top, cells + 1, dtype=torch.float64)
    grid[-1] = top
    cell = _igso3_mass(grid[:-1], grid[1:], sigma)
    total = float(cell.sum())
    cell = cell / total
    zero = torch.zeros(1, dtype=torch.float64)
    cdf = torch.cat([zero, torch.cumsum(cell, 0)])
    sf = torch.cat([torch.flip(torch.cumsum(torch.flip(cell, (0,)), 0), (0,)), zero])
    return grid, cdf, _igso3_angle_pdf(grid, sigma) / total, cell, sf, total


_IGSO3_TABLES: dict[tuple[float, torch.device], tuple[Tensor, Tensor, Tensor]] = {}
_IGSO3_TABLES_MAX = 16


def _igso3_table(sigma: float, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The CPU table moved to ``device``; a small cache keyed by ``(sigma, device)``."""
    key = (sigma, device)
    found = _IGSO3_TABLES.pop(key, None)
    if found is None:
        grid, cdf, pdf = _igso3_table_cpu(sigma)[:3]
        found = (grid.to(device), cdf.to(device), pdf.to(device))
        while len(_IGSO3_TABLES) >= _IGSO3_TABLES_MAX:
            _IGSO3_TABLES.pop(next(iter(_IGSO3_TABLES)))
    _IGSO3_TABLES[key] = found  # most recently used last
    return found


def _hermite_cell(
    x: Tensor, grid: Tensor, cdf: Tensor, pdf: Tensor, *, by_cdf: bool
) -> tuple[Tensor, ...]:
    """Cell of ``x`` (an angle, or a CDF value when ``by_cdf``) and its Hermite data."""
    m = grid.shape[0] - 1
    i = (torch.searchsorted(cdf if by_cdf else grid, x, right=True) - 1).clamp(0, m - 1)
    lo = grid[i]
    h = grid[i + 1] - lo
    return lo, h, cdf[i], cdf[i + 1], pdf[i] * h, pdf[i + 1] * h


def _hermite(s: Tensor, f0: Tensor, f1: Tensor, p0: Tensor, p1: Tensor) -> tuple[Tensor, Tensor]:
    """Cubic Hermite interpolant on ``[0, 1]`` and its derivative at ``s``."""
    s2 = s * s
    s3 = s2 * s
    val = (
        f0 * (2 * s3 - 3 * s2 + 1)
        + p0 * (s3 - 2 * s2 + s)
        + f1 * (3 * s2 - 2 * s3)
        + p1 * (s3 - s2)
    )
    der = (f1 - f0) * (6 * s - 6 * s2) + p0 * (3 * s2 - 4 * s + 1) + p1 * (3 * s2 - 2 * s)
    return val, der


# The samplers invert the angle's CDF ``F`` in the variable ``z = logit(u)``: the quantile
# ``theta(z) = F^{-1}(1 / (1 + e^{-z}))`` is smooth in ``z`` over the whole line (it grows
# as ``e^{z/3}`` at the lower end, where ``F ~ theta^3``; like ``sigma sqrt(2 z)`` or
# ``pi - c e^{-z}`` at the upper end), so a cubic Hermite interpolant on a uniform ``z``
# grid (values and slopes ``d theta / d z = u (1 - u) / p(theta)``) is accurate everywhere,
# tails included, and the cell of a draw is found by arithmetic (no search).

#: ``|logit(u)| < 36.9`` for the float64 uniforms (multiples of ``2^-53``; ``u = 0`` is
#: moved to ``1e-16``): the quantile grid covers ``z`` in ``[-37, 37]``.
_IGSO3_Z_MAX = 37.0
_IGSO3_LOGIT_EPS = 1e-16
#: Cells of the fixed-``sigma`` quantile table (angle error below 1e-9 relative).
_IGSO3_Z_CELLS = 2048
#: The per-row table: ``z`` cells, the spacing of its ``sigma`` rows, and the ``sigma`` from
#: which the law is the Haar law of the angle to float64 precision (``3 e^{-sigma^2} < 1e-17``).
_IGSO3_ROW_Z_CELLS = 512
#: Cells of the CDF tables behind the per-row knots (the knots are exact whatever the cells).
_IGSO3_ROW_CELLS = 512
_IGSO3_ROW_STEP = 1.0 / 80.0
_IGSO3_HAAR_SIGMA = 6.4
#: Newton steps of the quantile knots (from a guess inside the right cell of the CDF table).
_IGSO3_NEWTON = 5


def _igso3_knots(
    sigma: float, z: Tensor, cells: int = _IGSO3_CELLS, *, cached: bool = True
) -> tuple[Tensor, Tensor]:
    """Quantiles ``theta(z)`` with ``F(theta) = 1 / (1 + e^{-z})`` and ``d theta / d z``.

    Float64 on the CPU, to about float64's precision: the cell of the CDF table (the CDF for
    ``z <= 0``, the survival function above, so that ``1 - u`` is never formed), then Newton
    steps on the exact mass ``int_lo^theta p`` (Gauss-Legendre on ``[lo, theta]``).
    ``cached=False`` builds the CDF table without keeping it (the per-row table's hundreds
    of ``sigma`` would evict the tables of :class:`IGSO3` sources).
    """
    build = _igso3_table_cpu if cached else _igso3_table_cpu.__wrapped__
    grid, cdf, _, cell, sf, total = build(sigma, cells)
    u, q = torch.sigmoid(z), torch.sigmoid(-z)
    low = z <= 0
    i_low = torch.searchsorted(cdf, u, right=True) - 1
    i_up = torch.searchsorted(-sf, -q, right=True) - 1  # sf[i] >= q > sf[i + 1]
    i = torch.where(low, i_low, i_up).clamp(0, cells - 1)
    mass = cell[i]
    r = torch.minimum(torch.where(low, u - cdf[i], sf[i] - q).clamp_min(0.0), mass)
    lo, hi = grid[i], grid[i + 1]
    frac = (r / mass.clamp_min(1e-300)).clamp(0.0, 1.0)
    frac = torch.where(i == 0, frac.pow(1.0 / 3.0), frac)  # F ~ theta^3 in the first cell
    theta = lo + frac * (hi - lo)
    for _ in range(_IGSO3_NEWTON):
        dens = _igso3_angle_pdf(theta, sigma) / total
        resid = _igso3_mass(lo, theta, sigma) / total - r
        step = torch.where(dens > 0, resid / dens.clamp_min(1e-300), 0.0)
        theta = torch.minimum(torch.maximum(theta - step, lo), hi)
    dens = _igso3_angle_pdf(theta, sigma) / total
    slope = torch.where(dens > 0, u * q / dens.clamp_min(1e-300), 0.0)
    return theta, slope


def _hermite_coefficients(theta: Tensor, slope: Tensor, step: float) -> Tensor:
    """Per-cell cubic ``c0 + c1 s + c2 s^2 + c3 s^3`` (``s`` in ``[0, 1]``) through the knots
    ``theta`` with slopes ``slope`` (per unit of the knot variable, spaced ``step``).

    Returns ``(4, ..., cells)`` for knots ``(..., cells + 1)``.
    """
    f0, f1 = theta[..., :-1], theta[..., 1:]
    p0, p1 = step * slope[..., :-1], step * slope[..., 1:]
    df = f1 - f0
    return torch.stack([f0, p0, 3.0 * df - 2.0 * p0 - p1, p0 + p1 - 2.0 * df])


def _igso3_z_grid(cells: int) -> Tensor:
    return torch.linspace(-_IGSO3_Z_MAX, _IGSO3_Z_MAX, cells + 1, dtype=torch.float64)


@functools.lru_cache(maxsize=_IGSO3_TABLES_MAX)
def _igso3_sampling_table(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The fixed-``sigma`` sampler's table, ``(4, cells)`` in ``dtype`` on ``device``.

    The cubic coefficients of the half angle ``theta / 2`` in each ``z`` cell; cached per
    ``(sigma, device, dtype)`` (at most 16 tables of 64 KiB in float64).
    """
    z = _igso3_z_grid(_IGSO3_Z_CELLS)
    theta, slope = _igso3_knots(sigma, z)
    step = 2.0 * _IGSO3_Z_MAX / _IGSO3_Z_CELLS
    coef = _hermite_coefficients(0.5 * theta, 0.5 * slope, step)
    return coef.to(device=device, dtype=dtype).contiguous()


@functools.lru_cache(maxsize=16)
def _igso3_z_map(cells: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(offset, scale)`` (float64 scalars on ``device``) of ``z -> (z + 37) cells / 74``."""
    scale = cells / (2.0 * _IGSO3_Z_MAX)
    one = torch.ones((), dtype=torch.float64, device=device)
    return one * (_IGSO3_Z_MAX * scale), one * scale


def _igso3_z_cell(u: Tensor, cells: int) -> tuple[Tensor, Tensor]:
    """The ``z`` cell (int64) of float64 uniforms ``u`` and the position in it (float64)."""
    offset, scale = _igso3_z_map(cells, u.device)
    z = torch.special.logit(u, eps=_IGSO3_LOGIT_EPS)  # in (-36.9, 36.8): inside the grid
    pos = torch.addcmul(offset, z, scale)
    return pos.long(), torch.frac(pos)  # pos > 0: truncation is the floor


def _horner(coef: Tensor, s: Tensor) -> Tensor:
    """``c0 + s (c1 + s (c2 + s c3))`` for ``coef = (c0, c1, c2, c3)`` stacked on dim 0."""
    c0, c1, c2, c3 = coef.unbind(0)
    return torch.addcmul(c0, s, torch.addcmul(c1, s, torch.addcmul(c2, s, c3)))


def _igso3_half_angle(u: Tensor, sigma: float, dtype: torch.dtype) -> Tensor:
    """Half rotation angles ``theta / 2`` in ``dtype`` for float64 uniforms ``u`` (inverse CDF).

    The cubic of the ``z = logit(u)`` cell: a fixed handful of elementwise operations, no
    search. The angle's CDF is reproduced to within 1e-9 (float64 table; float32 tables round
    the angle to float32's precision).
    """
    coef = _igso3_sampling_table(sigma, u.device, dtype)
    j, s = _igso3_z_cell(u, _IGSO3_Z_CELLS)
    return _horner(coef.index_select(1, j), s.to(dtype))


@functools.lru_cache(maxsize=1024)
def _igso3_row_knots(k: int) -> tuple[Tensor, Tensor]:
    """Quantile knots of the per-row table's row ``k`` (``sigma = k * _IGSO3_ROW_STEP``)."""
    z = _igso3_z_grid(_IGSO3_ROW_Z_CELLS)
    if k == 0:  # sigma = 0: the angle is 0
        return torch.zeros_like(z), torch.zeros_like(z)
    return _igso3_knots(k * _IGSO3_ROW_STEP, z, cells=_IGSO3_ROW_CELLS, cached=False)


def _igso3_row_intervals(sigma_max: float) -> int:
    """Number of ``sigma`` intervals of the per-row table that covers ``[0, sigma_max]``."""
    top = round(_IGSO3_HAAR_SIGMA / _IGSO3_ROW_STEP)
    if not sigma_max < _IGSO3_HAAR_SIGMA:
        return top
    need = max(1, math.ceil(sigma_max / _IGSO3_ROW_STEP - 1e-9))
    return min(top, 16 * math.ceil(need / 16))  # a few sizes only: fewer cached tables


@functools.lru_cache(maxsize=8)
def _igso3_row_table(intervals: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The per-row table: ``(4, intervals + 3, z cells)`` half-angle cubics, flattened to
    ``(4, rows * cells)``; row ``r`` is ``sigma = (r - 1) * _IGSO3_ROW_STEP``.

    Row 0 (``sigma = -step``) continues the quantiles as an odd function of ``sigma``
    (``theta = sigma Q(z) (1 + O(sigma^2))`` for small ``sigma``), so the cubic interpolation
    in ``sigma`` is as accurate on the first interval as elsewhere.
    """
    rows = [_igso3_row_knots(k) for k in range(intervals + 2)]
    theta = torch.stack([-rows[1][0]] + [t for t, _ in rows])
    slope = torch.stack([-rows[1][1]] + [d for _, d in rows])
    step = 2.0 * _IGSO3_Z_MAX / _IGSO3_ROW_Z_CELLS
    coef = _hermite_coefficients(0.5 * theta, 0.5 * slope, step)  # (4, rows, cells)
    return coef.reshape(4, -1).to(device=device, dtype=dtype).contiguous()


def _igso3_half_angle_rows(
    sigma: Tensor, u: Tensor, dtype: torch.dtype, sigma_max: float = math.inf
) -> Tensor:
    """Half rotation angles in ``dtype``, one IGSO3(``sigma_i``) draw per entry (inverse CDF).

    Sync-free and of fixed cost: the ``z = logit(u)`` cell as for :func:`_igso3_half_angle`,
    the four ``sigma`` rows around ``sigma_i`` of a table of quantile cubics (rows every
    ``1/80``, ``z`` cells of ``74 / 512``), combined by cubic Lagrange interpolation in
    ``sigma``. The angle's CDF is reproduced to within 2e-7 with a float64 table (1e-6 in
    float32; measured against exact quantiles, for ``sigma`` off the rows and ``u`` down to
    ``2^-53`` from either end); ``sigma = 0`` gives the angle 0 and ``sigma >= 6.4`` the
    Haar law. ``sigma_max`` (a Python bound) sizes the table: it covers ``[0, sigma_max]``
    rounded up to the table's block of sigma rows, and entries beyond the covered range are
    treated as its upper end (give a bound no smaller than the largest ``sigma``).
    Differentiable in ``sigma`` (the quantile's slope at fixed ``u``).
    """
    intervals = _igso3_row_intervals(sigma_max)
    table = _igso3_row_table(intervals, u.device, dtype)
    cells = _IGSO3_ROW_Z_CELLS
    j, s = _igso3_z_cell(u, cells)
    pos = (sigma.to(dtype) * (1.0 / _IGSO3_ROW_STEP)).clamp_(0.0, float(intervals))
    # a NaN sigma reads row 0 and gives a NaN angle (through x), never an invalid index
    k = pos.nan_to_num(0.0).long().clamp_(max=intervals - 1)
    x = pos - k  # in [0, 1]: the rows k - 1, k, k + 1, k + 2 at -1, 0, 1, 2
    base = k * cells + j
    idx = base + torch.arange(0, 4 * cells, cells, device=u.device)[:, None]
    coef = table.index_select(1, idx.reshape(-1)).view(4, 4, -1)
    a, c, d = x + 1.0, x - 1.0, x - 2.0
    xc, ad = x * c, a * d
    w = torch.stack([xc * d * (-1.0 / 6.0), ad * c * 0.5, ad * x * -0.5, xc * a * (1.0 / 6.0)])
    return _horner((coef * w).sum(1), s.to(dtype)).clamp_(0.0, 0.5 * math.pi)


def _quaternion_terms() -> tuple[list[int], list[int], list[float], list[float]]:
    """Each entry of a row-major 3x3 rotation as ``delta + c1 P[i1] + c2 P[i2]``.

    ``P = vec(q q^T)`` for ``q = (w, x / 2, y / 2, z / 2)``, ``(w, x, y, z)`` a unit
    quaternion (the vector part halved, which the power-of-two coefficients undo exactly):
    ``R = I + 2 w hat(v) + 2 hat(v)^2``, e.g. ``R00 = 1 - 2 y^2 - 2 z^2``,
    ``R01 = 2 x y - 2 w z``.
    """
    w, x, y, z = 0, 1, 2, 3
    terms = [
        (-2, y, y, -2, z, z),
        (2, x, y, -2, w, z),
        (2, x, z, 2, w, y),
        (2, x, y, 2, w, z),
        (-2, x, x, -2, z, z),
        (2, y, z, -2, w, x),
        (2, x, z, -2, w, y),
        (2, y, z, 2, w, x),
        (-2, x, x, -2, y, y),
    ]

    def coefficient(c: int, a: int, b: int) -> float:
        return c * (2.0 if a else 1.0) * (2.0 if b else 1.0)

    return (
        [4 * a + b for _, a, b, _, _, _ in terms],
        [4 * a + b for _, _, _, _, a, b in terms],
        [coefficient(c, a, b) for c, a, b, _, _, _ in terms],
        [coefficient(c, a, b) for _, _, _, c, a, b in terms],
    )


@functools.lru_cache(maxsize=16)
def _rotmat_constants(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Cached index and coefficient tensors of :func:`_igso3_rotmat` on ``device``."""
    i1, i2, c1, c2 = _quaternion_terms()
    return (
        torch.tensor(i1, device=device),
        torch.tensor(i2, device=device),
        torch.tensor(c1, device=device, dtype=dtype)[:, None],
        torch.tensor(c2, device=device, dtype=dtype)[:, None],
        torch.eye(3, device=device, dtype=dtype).reshape(9, 1),
        torch.tensor([[0.5 * math.pi], [0.0]], device=device, dtype=torch.float64),
    )


def _igso3_rotmat(half: Tensor, axis: Tensor) -> Tensor:
    """``exp(theta hat(a))``, shape ``(n, 3, 3)`` in ``half``'s dtype, for half angles ``half``
    ``(n,)`` and the unit axis ``a`` of height ``2 t - 1`` and azimuth ``2 pi p``, where
    ``(t, p) = axis`` (float64, shape ``(2, n)``; uniform ``t, p`` give a uniform axis).

    From the unit quaternion ``(cos(theta / 2), sin(theta / 2) a)``: a dozen operations on
    contiguous ``(k, n)`` blocks (few operations matter for small ``n``), the last one
    writing the ``(n, 9)`` result through its transpose. The axis is computed in float64
    (``sqrt(t (1 - t))`` without cancellation at the poles, ``cos p = sin(p + pi / 2)``)
    and rounded once, so it has unit norm to the working precision.
    """
    n = half.shape[0]
    i1, i2, c1, c2, eye, shift = _rotmat_constants(half.device, half.dtype)
    t, p = axis.unbind(0)  # (methods, not indexing: fewer microseconds for small n)
    rxy = torch.rsub(t, 1.0).mul_(t).sqrt_()  # sqrt(1 - z^2) / 2 for the height z = 2 t - 1
    cs_phi = torch.sin(torch.add(shift, p, alpha=2.0 * math.pi))  # (cos phi, sin phi)
    b = torch.cat((cs_phi.mul_(rxy), torch.sub(t, 0.5).unsqueeze(0))).to(half.dtype)  # a / 2
    q = torch.cat((torch.cos(half).unsqueeze(0), b.mul_(torch.sin(half))))
    pq = torch.mul(q.unsqueeze(1), q.unsqueeze(0)).view(16, n)
    r = torch.addcmul(eye, c1, pq.index_select(0, i1))
    if half.requires_grad:  # out= has no autograd: the same sum, then a transposing copy
        return torch.addcmul(r, c2, pq.index_select(0, i2)).t().contiguous().view(n, 3, 3)
    out = half.new_empty((n, 9))
    torch.addcmul(r, c2, pq.index_select(0, i2), out=out.t())
    return out.view(n, 3, 3)


def _igso3_rotmat_rows(
    sigma: Tensor,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    *,
    sigma_max: float = math.inf,
) -> Tensor:
    """Rotations ``(n, 3, 3)`` in ``dtype``, one IGSO3(``sigma_i``) draw per entry of ``sigma``.

    Sync-free (no ``.item()``, no boolean indexing, no data-dependent loop): one float64
    draw of ``(3, n)`` uniforms on ``sigma``'s device (angle, axis height, axis azimuth),
    the angle by :func:`_igso3_half_angle_rows`, the rotation by :func:`_igso3_rotmat`
    (float32 work for float32 and narrower dtypes).
    """
    work = torch.float32 if dtype.itemsize <= 4 else torch.float64
    u = torch.rand(
        (3, sigma.shape[0]), generator=generator, dtype=torch.float64, device=sigma.device
    )
    half = _igso3_half_angle_rows(sigma, u.select(0, 0), work, sigma_max)
    return _igso3_rotmat(half, u.narrow(0, 1, 2)).to(dtype)


def _igso3_rotvec_rows(
    sigma: Tensor, generator: torch.Generator | None, *, sigma_max: float = math.inf
) -> Tensor:
    """Rotation vectors ``(n, 3)`` (``sigma``'s dtype) with ``exp(hat(w)) ~ IGSO3(sigma_i)``.

    The same draws as :func:`_igso3_rotmat_rows` (angle times the uniform axis).
    """
    dt = sigma.dtype if sigma.dtype.itemsize > 4 else torch.float32
    u = torch.rand(
        (3, sigma.shape[0]), generator=generator, dtype=torch.float64, device=sigma.device
    )
    theta = 2.0 * _igso3_half_angle_rows(sigma, u[0], dt, sigma_max)
    t, p = u[1], u[2] * (2.0 * math.pi)
    rxy = 2.0 * torch.sqrt(t * (1.0 - t))
    axis = torch.stack((rxy * torch.cos(p), rxy * torch.sin(p), 2.0 * t - 1.0), dim=-1).to(dt)
    return (theta[:, None] * axis).to(sigma.dtype)


def _as_rotation(loc: object) -> Tensor:
    """Validate a mean rotation (a 3x3 rotation matrix); return it in float64, re-orthonormalised."""
    t = _as_loc(loc, (3, 3), "(a 3x3 rotation matrix)")
    t64 = t.to(torch.float64)
    dev = float(SO3()._point_deviation(t64))
    tol = check_tol(t.dtype)
    if not dev <= tol:
        raise ValueError(
            f"loc must be a rotation matrix: max(|loc^T loc - I|, |det loc - 1|) = {dev:.3g} "
            f"exceeds {tol:g}"
        )
    return SO3()._projx(t64)


class IGSO3:
    r"""The isotropic Gaussian on ``SO(3)``: the law of Brownian motion at time ``sigma^2``.

    ``IGSO3(sigma)`` is the law of ``R_T`` for the Brownian motion ``R`` on ``SO(3)`` started
    at ``loc`` (the identity by default) whose generator is half the Laplace-Beltrami operator
    of :class:`~manifoldfm.manifolds.SO3`'s metric ``<u, v> = tr(u^T v) / 2`` (the metric with
    ``dist = rotation angle``), run for the time ``T = sigma^2``: for small ``sigma`` the
    rotation vector of ``loc^T R`` is close to ``N(0, sigma^2 I_3)``, so ``sigma`` is the
    standard deviation of each component of the rotation vector, in radians. Equivalently,
    with ``chi_l(w) = sin((l + 1/2) w) / sin(w / 2)`` the characters of ``SO(3)`` (eigenvalue
    ``-l (l + 1)`` of the Laplacian of this metric), its density w.r.t. the Haar probability
    measure at a rotation of angle ``w = dist(loc, R)`` is

    ``f(w) = sum_{l >= 0} (2l + 1) exp(-l (l + 1) sigma^2 / 2) chi_l(w)``,

    the convention of Leach et al. (2022), FrameDiff (Yim et al., 2023) and FoldFlow (Bose et
    al., 2024), where ``eps = sigma^2 / 2`` is sometimes used instead of ``sigma``. The angle
    has density ``(1 - cos w) / pi * f(w)`` on ``[0, pi]`` (the Haar angle density times
    ``f``), the axis is uniform, and ``log_prob`` is taken w.r.t. the Riemannian volume of
    ``SO3()`` (total ``8 pi^2``, the library's convention): ``log f(w) - log(8 pi^2)``, which
    tends to ``Uniform(SO3()).log_prob = -log(8 pi^2)`` as ``sigma`` grows.

    **Evaluation.** Two exact forms of ``f``, each truncated once the omitted terms fall below
    the dtype's machine epsilon relative to ``f`` (at every angle):

    * ``sigma <= 1.5``: the Poisson-summation (wrapped Gaussian) form
      ``f(w) = e^{sigma^2/8} sqrt(2 pi) / sigma^3 * sum_n (w - 2 pi n) / sin((w - 2 pi n) / 2)
      exp(-(w - 2 pi n)^2 / (2 sigma^2))``, whose ``n = 0`` term is the small-``sigma``
      Gaussian with the correction ``(w / 2) / sin(w / 2)``; evaluated in log space as that
      term times ``1 + sum_{n >= 1}`` of the wrap pairs ``+-n`` relative to it (written
      without 0/0 at ``w = 0`` and without overflow), so ``log_prob`` is finite and accurate
      at ``w = pi`` even for ``sigma = 0.01`` (where ``f(pi)`` underflows). One or two pairs
      suffice (two in float64 near ``sigma = 1.5``).
    * ``sigma > 1.5``: the character series above, as a cosine series of degree ``L``
      (``L = 5`` in float64 at ``sigma = 1.5``, 2 at ``sigma = 3``, 0 once
      ``exp(-sigma^2)`` is below ``eps``).

    The two agree to about ``1e-15`` (float64) where both converge (``sigma`` between 1 and 3).

    **Sampling.** The angle by inverse CDF in the variable ``z = logit(u)``, in which the
    quantile function is smooth over the whole line (tails included): a table of exact
    quantiles at ``2049`` values of ``z`` in ``[-37, 37]`` (Newton steps on the CDF, each
    mass by Gauss-Legendre quadrature, in float64) with their slopes, one cubic per ``z``
    cell; a draw takes the cubic of its cell (found by arithmetic, no search). The sampled
    angle's CDF is within ``5e-10`` of the exact one (float64; float32 rounds the angle to
    its precision). The axis is uniform; ``R = loc @ exp(hat(w axis))``, built from the unit
    quaternion. The uniforms are drawn in float64 on the generator's device whatever the
    dtype (the same generator state gives the same rotations, up to rounding, in every
    dtype); the rest runs in float32 for float32 and narrower dtypes. Tables are built on
    first use (about 10 ms) and cached per ``(sigma, device, dtype)`` (at most 16).

    Args:
        sigma: the scale ``> 0`` (radians; a Python float).
        loc: the mean rotation, a 3x3 rotation matrix (to its dtype's tolerance; stored
            detached in float64 on its device), or ``None`` for the identity.

    Attributes:
        manifold: ``SO3()``.
        sigma: the scale.
        loc: the mean rotation (float64) or ``None``.

    Raises:
        TypeError: ``sigma`` is not a number, ``loc`` is not a tensor.
        ValueError: ``sigma`` not positive and finite; ``loc`` of the wrong shape or not a
            rotation.

    References:
        A. Leach, S. M. Schmon, M. T. Degiacomi, C. G. Willcocks, Denoising Diffusion
        Probabilistic Models on SO(3) for Rotational Alignment, ICLR 2022 workshop.
        D. I. Nikolayev, T. I. Savyolova, Normal distribution on the rotation group SO(3),
        Textures and Microstructures 29, 1997. J. Yim et al., SE(3) diffusion model with
        application to protein backbone generation, ICML 2023. A. J. Bose et al., SE(3)-Stochastic
        Flow Matching for Protein Backbone Generation, ICLR 2024.

    Example:
        >>> import math, torch
        >>> from manifoldfm.sources import IGSO3
        >>> src = IGSO3(0.2)
        >>> x = src.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x.shape, src.log_prob(x).shape
        (torch.Size([4, 3, 3]), torch.Size([4]))
        >>> eye = torch.eye(3, dtype=torch.float64)[None]
        >>> round(float(IGSO3(50.0).log_prob(eye)), 6) == round(-math.log(8 * math.pi**2), 6)
        True
    """

    def __init__(self, sigma: float, loc: Tensor | None = None) -> None:
        self.sigma = check_positive(sigma, "sigma")
        self.loc = None if loc is None else _as_rotation(loc)
        self.manifold = SO3()

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one point, ``(3, 3)``."""
        return (3, 3)

    def __repr__(self) -> str:
        if self.loc is None:
            return f"IGSO3(sigma={self.sigma})"
        return f"IGSO3(sigma={self.sigma}, loc={self.loc.tolist()})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` rotations, shape ``(n, 3, 3)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator (points are drawn on its device, then moved).
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the output device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds.so3 import rotation_angle
            >>> from manifoldfm.sources import IGSO3
            >>> x = IGSO3(0.01).sample(1000, generator=torch.Generator().manual_seed(0))
            >>> bool((rotation_angle(x) < 0.1).all())
            True
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        # One float64 draw for the angle's uniform and the axis (the same rotations, up to
        # rounding, whatever the dtype); the rest in float32 for float32 and narrower dtypes.
        work = torch.float32 if dtype.itemsize <= 4 else torch.float64
        u = torch.rand((3, n), generator=generator, dtype=torch.float64, device=draw)
        r = _igso3_rotmat(_igso3_half_angle(u.select(0, 0), self.sigma, work), u.narrow(0, 1, 2))
        if self.loc is not None:
            r = self.loc.to(device=draw, dtype=r.dtype) @ r
        if r.dtype != dtype or r.device != out:
            r = r.to(dtype=dtype, device=out)
        return r

    def _angle(self, x: Tensor) -> Tensor:
        if self.loc is None:
            return rotation_angle(x)
        loc = self.loc.to(dtype=x.dtype, device=x.device)
        return self.manifold._dist(loc, x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the Riemannian volume of ``SO3()``, shape ``(B,)``, for ``(B, 3, 3)``.

        Example:
            >>> import math, torch
            >>> from manifoldfm.manifolds.so3 import rotvec_to_rotmat
            >>> from manifoldfm.sources import IGSO3
            >>> x = rotvec_to_rotmat(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.pi]], dtype=torch.float64))
            >>> tuple(round(v, 3) for v in IGSO3(0.1).log_prob(x).tolist())  # finite at angle pi
            (4.152, -488.183)
        """
        x = _check_points(x, (3, 3), self.manifold)
        return _igso3_log_f(self._angle(x), self.sigma) - _LOG_8PI2

    def angle_log_prob(self, omega: Tensor) -> Tensor:
        """Log-density of the rotation angle ``omega`` in ``[0, pi]`` (w.r.t. Lebesgue measure).

        ``log((1 - cos omega) / pi) + log f(omega)``: ``-inf`` at ``omega = 0``, where the
        angle density vanishes.

        Args:
            omega: angles in ``[0, pi]``, any shape, a floating tensor.

        Example:
            >>> import torch
            >>> from manifoldfm.sources import IGSO3
            >>> w = torch.linspace(0, 3.14159, 20001, dtype=torch.float64)
            >>> p = IGSO3(0.5).angle_log_prob(w).exp()
            >>> round(float(torch.trapezoid(p, w)), 6)
            1.0
        """
        if not isinstance(omega, Tensor) or not omega.is_floating_point():
            raise TypeError(f"omega must be a floating torch.Tensor, got {omega!r}")
        half = torch.sin(0.5 * omega)
        log_haar = math.log(2.0 / math.pi) + 2.0 * torch.log(half)
        return log_haar + _igso3_log_f(omega, self.sigma)

    def angle_cdf(self, omega: Tensor) -> Tensor:
        """CDF of the rotation angle at ``omega`` (a cached CDF table, Hermite cells), same shape.

        Accurate to about ``1e-10``; the sampler's quantiles are built from the same table.

        Example:
            >>> import math, torch
            >>> from manifoldfm.sources import IGSO3
            >>> IGSO3(1.0).angle_cdf(torch.tensor([0.0, math.pi], dtype=torch.float64))
            tensor([0., 1.], dtype=torch.float64)
        """
        if not isinstance(omega, Tensor) or not omega.is_floating_point():
            raise TypeError(f"omega must be a floating torch.Tensor, got {omega!r}")
        w = omega.detach().to(torch.float64).clamp(0.0, math.pi).reshape(-1)
        grid, cdf, pdf = _igso3_table(self.sigma, w.device)
        lo, h, f0, f1, p0, p1 = _hermite_cell(w, grid, cdf, pdf, by_cdf=False)
        s = ((w - lo) / h).clamp(0.0, 1.0)
        val = _hermite(s, f0, f1, p0, p1)[0].clamp(0.0, 1.0)
        return val.reshape(omega.shape).to(omega.dtype)


# ---------------------------------------------------------------------------------------------
# CentredGaussian
# ---------------------------------------------------------------------------------------------


class CentredGaussian:
    r"""Gaussian positions of ``n`` points with their centre of mass at the origin.

    The law of ``x - mean_i(x_i)`` for ``x`` with i.i.d. ``N(0, std^2)`` entries, shape
    ``(n, dim)``: the standard Gaussian (scaled by ``std``) on the ``(n - 1) dim``-dimensional
    subspace ``V = {x : sum_i x_i = 0}``, as used for the translations of protein frames
    (FrameDiff, FrameFlow, FoldFlow) so that the generated structure has no global
    translation. Each point's coordinates have covariance ``std^2 (1 - 1/n) I`` and two
    different points' ``-std^2 / n I``: over the points, ``std^2 (I - 1 1^T / n)``.

    ``log_prob`` is the density **w.r.t. the Lebesgue measure of V** (the
    ``(n - 1) dim``-dimensional volume induced by the Euclidean metric of
    ``R^{n x dim}``): ``-|x|^2 / (2 std^2) - (n - 1) dim log(std sqrt(2 pi))``, where ``|x|``
    is the Frobenius norm of ``x``. It is not a density on ``R^{n x dim}`` (the law is
    singular there); for likelihoods of flows that keep the centre at zero, the divergence
    must be taken within ``V`` too.

    Args:
        n: the number of points (``>= 2``).
        dim: the dimension of each point (default 3).
        std: the standard deviation ``> 0`` of the uncentred entries (a Python float).

    Attributes:
        manifold: ``None`` (a Euclidean subspace).

    Raises:
        TypeError: ``n`` or ``dim`` not an int, ``std`` not a number.
        ValueError: ``n < 2``, ``dim < 1``, ``std`` not positive and finite; in ``log_prob``
            (with value checks on, see :func:`manifoldfm.checks`) points whose mean over the
            ``n`` points is not zero to the dtype's tolerance.

    Example:
        >>> import torch
        >>> from manifoldfm.sources import CentredGaussian
        >>> src = CentredGaussian(5, std=2.0)
        >>> x = src.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x.shape, bool(x.mean(dim=1).abs().max() < 1e-12)
        (torch.Size([4, 5, 3]), True)
        >>> src.log_prob(torch.zeros(1, 5, 3))  # -(5 - 1) 3 log(2 sqrt(2 pi))
        tensor([-19.3450])
    """

    manifold: None = None

    def __init__(self, n: int, dim: int = 3, std: float = 1.0) -> None:
        for name, v, least in (("n", n, 2), ("dim", dim, 1)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < least:
                raise ValueError(f"{name} must be >= {least}, got {v}")
        self.n = int(n)
        self.dim = int(dim)
        self.std = check_positive(std, "std")
        k = (self.n - 1) * self.dim
        self._log_norm = -k * (math.log(self.std) + 0.5 * _LOG_TWO_PI)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample, ``(n, dim)``."""
        return (self.n, self.dim)

    @property
    def subspace_dim(self) -> int:
        """``(n - 1) dim``: the dimension of the zero-mean subspace."""
        return (self.n - 1) * self.dim

    def __repr__(self) -> str:
        return f"CentredGaussian(n={self.n}, dim={self.dim}, std={self.std})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Draw ``n`` centred point sets, shape ``(n, self.n, dim)``.

        With a ``mask`` (variable-length sets padded to ``self.n`` points, e.g. proteins of
        different lengths), each set is centred over its present points only and its absent
        points are zero: the present points of a set of ``k`` follow ``CentredGaussian(k)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator (drawn on its device, then moved).
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the output device (default: the generator's, else the CPU).
            mask: optional boolean ``(n, self.n)`` or ``(self.n,)`` mask of present points
                (at least one per set), on the output device.

        Example:
            >>> import torch
            >>> from manifoldfm.sources import CentredGaussian
            >>> CentredGaussian(10).sample(2, dtype=torch.float64).shape
            torch.Size([2, 10, 3])
            >>> mask = torch.arange(10) < torch.tensor([[4], [10]])  # lengths 4 and 10
            >>> x = CentredGaussian(10).sample(2, dtype=torch.float64, mask=mask)
            >>> bool(x[0, 4:].eq(0).all()), bool(x[0, :4].mean(0).abs().max() < 1e-12)
            (True, True)
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        m = None if mask is None else self._check_mask(mask, n, out)
        x = torch.randn((n, self.n, self.dim), generator=generator, dtype=dtype, device=draw)
        x = x.to(out)
        if m is None:
            x = x - x.mean(dim=1, keepdim=True)
        else:
            w = m.to(dtype)[..., None].expand(n, self.n, 1)
            # an empty set (only possible with value checks off) comes back as zeros
            mean = (x * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
            x = (x - mean) * w
        if self.std != 1.0:
            x = x.mul_(self.std)
        return x

    def _check_mask(self, mask: Tensor, n: int, device: torch.device) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if tuple(mask.shape) not in ((n, self.n), (self.n,)):
            raise ValueError(
                f"mask must have shape ({n}, {self.n}) or ({self.n},), got {tuple(mask.shape)}"
            )
        if mask.device != device:
            raise ValueError(f"mask is on {mask.device} but the samples go to {device}")
        m = mask if mask.dtype == torch.bool else mask != 0
        if value_checks_enabled() and m.numel() > 0 and not bool(m.any(dim=-1).all()):
            raise ValueError("every point set needs at least one present point in mask")
        return m

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the Lebesgue measure of the zero-mean subspace, shape ``(B,)``.

        Args:
            x: centred point sets, shape ``(B, n, dim)``.

        Example:
            >>> import torch
            >>> from manifoldfm.sources import CentredGaussian
            >>> x = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
            >>> CentredGaussian(2, dim=2).log_prob(x)  # -|x|^2 / 2 - 2 log(2 pi) / 2
            tensor([-2.8379])
        """
        x = _check_points(x, self.shape, None)
        if value_checks_enabled() and x.numel() > 0:
            mean = x.detach().mean(dim=1).abs().amax()
            scale = 1.0 + float(x.detach().abs().amax())
            dev = float(mean) / scale
            tol = check_tol(x.dtype)
            if not dev <= tol:
                raise ValueError(
                    f"x of shape {tuple(x.shape)} must have zero mean over its {self.n} points "
                    f"(the support of CentredGaussian): max |mean| / (1 + max |x|) = {dev:.3g} "
                    f"exceeds {tol:g}"
                )
        sq = x.reshape(x.shape[0], -1).square().sum(dim=1)
        return self._log_norm - sq / (2.0 * self.std * self.std)
