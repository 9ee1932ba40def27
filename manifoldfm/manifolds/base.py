"""The manifold base class: geoopt-compatible, validated, batched.

Every manifold of the library subclasses :class:`Manifold`, itself a subclass of the abstract
``geoopt.Manifold``, so ``geoopt.ManifoldParameter`` and ``geoopt.optim.RiemannianAdam`` work on
it. The public methods (``projx, proju, egrad2rgrad, inner, norm, expmap, retr, logmap, dist,
transp, random_uniform``) validate their inputs and call short private implementations
(``_projx, _expmap, ...``) that subclasses provide.

Conventions shared by all manifolds:

* **Shapes.** A point is a tensor whose trailing dimensions are ``point_shape``; any number of
  leading (batch) dimensions is allowed, including none, and leading dimensions of two arguments
  broadcast. Tangent vectors have the shape of the points they are attached to and live in the
  ambient space (geoopt's convention). Per-point quantities (``inner``, ``dist``) have the
  leading shape; with ``keepdim=True`` the point dimensions are kept with size 1.
* **Validation.** Shape and dtype checks always run (``ValueError``/``TypeError`` naming the
  shapes). Whether points lie on the manifold and vectors are tangent is checked only when
  ``manifoldfm.checks(manifold=True)`` is on (the test-suite turns it on); a violation raises
  ``ValueError`` naming the deviation.
* **Numerics.** Angles by ``atan2``; small-angle Taylor branches and safe denominators keyed
  by dtype, so that values are accurate and gradients finite at ``x = y``, at ``u = 0`` and on
  the cut locus, where each manifold documents a deterministic convention.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import geoopt
import torch
from torch import Tensor

from .._utils import manifold_checks_enabled, safe_div, safe_sqrt

__all__ = ["Manifold"]

#: Largest tolerated deviation from the manifold / tangent space when manifold checks are on.
_CHECK_TOL: dict[torch.dtype, float] = {
    torch.float64: 1e-6,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def check_tol(dtype: torch.dtype) -> float:
    """Deviation tolerated by the on-manifold checks for ``dtype`` (float32's if unknown).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.base import check_tol
        >>> check_tol(torch.float64), check_tol(torch.float32)
        (1e-06, 0.0001)
    """
    return _CHECK_TOL.get(dtype, 1e-4)


# ---------------------------------------------------------------------------------------------
# numerical helpers (private to the manifolds package)
# ---------------------------------------------------------------------------------------------


def _tiny_root(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype).tiny)


def _taylor_threshold(dtype: torch.dtype) -> float:
    """Below this magnitude the helpers switch to Taylor series (about 5e-3 f64, 0.14 f32).

    The series are accurate far beyond it; the switch point balances the cancellation of the
    closed forms' derivatives against the truncation of the series' derivatives.
    """
    return 2.0 * torch.finfo(dtype).eps ** (1.0 / 6.0)


def norm(v: Tensor, dims: int | tuple[int, ...] = -1, *, keepdim: bool = False) -> Tensor:
    """Euclidean norm over ``dims``, zero gradient at 0, exact while the squares stay normal.

    ``torch.linalg.vector_norm``: its gradient is zero (finite) at ``v = 0`` and, unlike a
    dtype-``eps`` floor, it keeps tiny norms exact (needed for small-angle accuracy in
    float32): down to about 1e-19 in float32 and 1e-154 in float64, where the squared norm
    leaves the normal range.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.base import norm
        >>> v = torch.zeros(3, requires_grad=True)
        >>> norm(v).backward()
        >>> v.grad
        tensor([0., 0., 0.])
        >>> norm(torch.tensor([3e-18, 4e-18]))
        tensor(5.0000e-18)
    """
    # one fused kernel; its backward is masked to zero where the norm is zero
    return torch.linalg.vector_norm(v, dim=dims, keepdim=keepdim)


def sinc_sq(t2: Tensor) -> Tensor:
    """``sin(t) / t`` as a function of ``t2 = t**2`` (smooth, exact gradient at 0).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.base import sinc_sq
        >>> sinc_sq(torch.tensor([0.0, 1e-6, 2.25], dtype=torch.float64))
        tensor([1.0000, 1.0000, 0.6650], dtype=torch.float64)
    """
    thr = _taylor_threshold(t2.dtype)
    small = t2 < thr * thr
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    series = 1.0 - t2 / 6.0 * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0))
    return torch.where(small, series, torch.sin(t) / t)


def cos_sq(t2: Tensor) -> Tensor:
    """``cos(t)`` as a function of ``t2 = t**2`` (smooth, exact gradient at 0).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.base import cos_sq
        >>> cos_sq(torch.tensor([0.0, 2.25], dtype=torch.float64))
        tensor([1.0000, 0.0707], dtype=torch.float64)
    """
    thr = _taylor_threshold(t2.dtype)
    small = t2 < thr * thr
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    series = 1.0 - t2 / 2.0 * (1.0 - t2 / 12.0 * (1.0 - t2 / 30.0 * (1.0 - t2 / 56.0)))
    return torch.where(small, series, torch.cos(t))


def versine_sq(t2: Tensor) -> Tensor:
    """``(1 - cos t) / t**2 = sinc(t/2)**2 / 2`` as a function of ``t2`` (no cancellation).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.base import versine_sq
        >>> versine_sq(torch.tensor([0.0, 1e-10], dtype=torch.float32))
        tensor([0.5000, 0.5000])
    """
    s = sinc_sq(t2 / 4.0)
    return 0.5 * s * s


def atan_ratio(s: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``theta = atan2(s, c)`` and ``theta / s`` for ``s >= 0``, accurate as ``s -> 0``.

    Where ``c > 0`` and ``s / c`` is small, ``theta / s = atan(z) / (z c)`` with ``z = s / c`` is
    evaluated by its series, so both the value and its gradient stay exact at ``s = 0``.
    Elsewhere ``theta / s`` uses a denominator kept above ``eps_for(dtype)`` so that gradients
    stay finite: where ``c <= 0`` and ``s <= eps_for(dtype)`` (next to the antipode, where the
    ratio blows up) the value is finite but meaningless and callers select another branch.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds.base import atan_ratio
        >>> theta, ratio = atan_ratio(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
        >>> theta, ratio
        (tensor([0.0000, 1.5708]), tensor([1.0000, 1.5708]))
    """
    theta = torch.atan2(s, c)
    thr = _taylor_threshold(s.dtype)
    small = (c > 0) & (s < thr * c)
    c_safe = torch.where(small, c, torch.ones_like(c))
    z = torch.where(small, s, torch.zeros_like(s)) / c_safe
    z2 = z * z
    series = (1.0 - z2 * (1.0 / 3.0 - z2 * (1.0 / 5.0 - z2 * (1.0 / 7.0 - z2 / 9.0)))) / c_safe
    return theta, torch.where(small, series, safe_div(theta, s))


def _parse_size(size: tuple[int | Sequence[int], ...]) -> tuple[int, ...]:
    """Turn ``random_uniform(*size)`` arguments (ints, or one tuple) into a batch shape."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    out = []
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"size entries must be ints, got {size!r}")
        if s < 0:
            raise ValueError(f"size entries must be >= 0, got {size!r}")
        out.append(int(s))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------


class Manifold(geoopt.Manifold):
    """Base class of the library's manifolds (an abstract ``geoopt.Manifold``).

    Subclasses set ``point_shape``, ``dim``, ``volume`` and ``injectivity_radius`` and implement
    the private methods ``_projx, _proju, _inner, _expmap, _logmap, _transp, _random_uniform,
    _point_deviation, _tangent_deviation`` (and optionally ``_dist, _egrad2rgrad, _random,
    _origin``). The public methods add validation and geoopt's keyword arguments.

    Attributes:
        point_shape: trailing shape of one point (a tuple of ints).
        dim: intrinsic dimension.
        volume: total Riemannian volume (``math.inf`` when not compact).
        injectivity_radius: ``logmap(x, expmap(x, u)) = u`` whenever ``|u|_x`` is below it.
        parallel_transport: whether ``transp`` is the exact (isometric) parallel transport along
            the minimising geodesic; otherwise it is a projection-based vector transport.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import Sphere
        >>> s = Sphere(2)
        >>> x = s.origin(4, dtype=torch.float64)
        >>> u = s.proju(x, torch.ones(4, 3, dtype=torch.float64))
        >>> y = s.expmap(x, u)
        >>> torch.allclose(s.logmap(x, y), u)
        True
    """

    name = "Manifold"
    reversible = True
    point_shape: tuple[int, ...] = ()
    dim: int = 0
    volume: float = math.inf
    injectivity_radius: float = math.inf
    parallel_transport: bool = True
    #: Whether ``_expmap`` returns points on the manifold to rounding whatever the drift of its
    #: input (the solvers then skip the projection after each exponential-map step).
    _expmap_projects: bool = False
    #: Short description of the quantity ``_point_deviation`` measures (for error messages).
    _deviation_name: str = "deviation"

    def __init__(self) -> None:
        super().__init__()

    def _set_shape(self, point_shape: tuple[int, ...], dim: int) -> None:
        self.point_shape = tuple(int(s) for s in point_shape)
        self.ndim = len(self.point_shape)
        self.dim = int(dim)

    # ----------------------------------------------------------------- validation helpers

    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        k = len(self.point_shape)
        if len(shape) < k or tuple(shape[len(shape) - k :]) != self.point_shape:
            return False, (
                f"{name} must have shape (..., {', '.join(map(str, self.point_shape))}) "
                f"on {self!r}, got {tuple(shape)}"
            )
        return True, None

    def _lead(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape[: x.ndim - len(self.point_shape)])

    def _point_dims(self) -> tuple[int, ...]:
        return tuple(range(-len(self.point_shape), 0))

    def _validate(self, name: str, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        ok, reason = self._check_shape(tuple(x.shape), name)
        if not ok:
            raise ValueError(reason)
        return x

    def _validate_same(self, **tensors: Tensor) -> None:
        names = list(tensors)
        first = tensors[names[0]]
        for n in names:
            self._validate(n, tensors[n])
        for n in names[1:]:
            if tensors[n].dtype != first.dtype:
                raise TypeError(
                    f"{names[0]} and {n} must share a dtype, got {first.dtype} and {tensors[n].dtype}"
                )
        try:
            torch.broadcast_shapes(*(self._lead(t) for t in tensors.values()))
        except RuntimeError:
            desc = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items())
            raise ValueError(f"leading (batch) shapes do not broadcast ({desc})") from None

    def _require_point(self, name: str, x: Tensor) -> None:
        if not manifold_checks_enabled() or x.numel() == 0:
            return
        dev = float(self._point_deviation(x.detach()).max())
        tol = check_tol(x.dtype)
        if not dev <= tol:
            raise ValueError(
                f"{name} of shape {tuple(x.shape)} is not on {self!r}: "
                f"{self._deviation_name} = {dev:.3g} exceeds {tol:.1g}"
            )

    def _require_tangent(self, name: str, x: Tensor, u: Tensor) -> None:
        if not manifold_checks_enabled() or u.numel() == 0:
            return
        dev = float(self._tangent_deviation(x.detach(), u.detach()).max())
        tol = check_tol(u.dtype)
        if not dev <= tol:
            raise ValueError(
                f"{name} of shape {tuple(u.shape)} is not tangent to {self!r} at the given "
                f"points: normal component (relative) = {dev:.3g} exceeds {tol:.1g}"
            )

    # ------------------------------------------------------------------ geoopt hooks

    def _check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        dev = float(self._point_deviation(x.detach()).max()) if x.numel() else 0.0
        if dev <= atol + rtol:
            return True, None
        return False, f"{self._deviation_name} = {dev:.3g} exceeds atol + rtol = {atol + rtol:.1g}"

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        dev = float(self._tangent_deviation(x.detach(), u.detach()).max()) if u.numel() else 0.0
        if dev <= atol + rtol:
            return True, None
        return False, f"normal component (relative) = {dev:.3g} exceeds {atol + rtol:.1g}"

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{self.name}({self.extra_repr()})"

    # ------------------------------------------------------------------ public API

    def projx(self, x: Tensor) -> Tensor:
        """Project ambient points onto the manifold (nearest point; documented fallback at 0).

        Args:
            x: ambient points, shape ``(..., *point_shape)``.

        Returns:
            Points on the manifold, same shape.
        """
        self._validate("x", x)
        return self._projx(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Orthogonal projection of ambient vectors ``u`` onto the tangent space at ``x``."""
        self._validate_same(x=x, u=u)
        self._require_point("x", x)
        return self._proju(x, u)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """Turn a Euclidean (autograd) gradient at ``x`` into the Riemannian gradient."""
        self._validate_same(x=x, u=u)
        self._require_point("x", x)
        return self._egrad2rgrad(x, u)

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """Riemannian inner product ``<u, v>_x`` (``<u, u>_x`` when ``v`` is None).

        Returns:
            Shape ``(...)`` (the broadcast leading shape), or with ``keepdim=True`` the point
            dimensions kept with size 1.
        """
        v = u if v is None else v
        self._validate_same(x=x, u=u, v=v)
        self._require_point("x", x)
        self._require_tangent("u", x, u)
        if v is not u:
            self._require_tangent("v", x, v)
        out = self._inner(x, u, v)
        return self._keep(out) if keepdim else out

    def norm(self, x: Tensor, u: Tensor, *, keepdim: bool = False) -> Tensor:
        """Riemannian norm ``|u|_x`` (finite gradient at ``u = 0``)."""
        sq = self.inner(x, u, keepdim=keepdim)
        return safe_sqrt(sq, eps=_tiny_root(sq.dtype))

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """Exponential map ``exp_x(u)``: follow the geodesic from ``x`` with velocity ``u``."""
        self._validate_same(x=x, u=u)
        self._require_point("x", x)
        self._require_tangent("u", x, u)
        return self._expmap(x, u)

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        """Retraction used by geoopt's optimisers: the exact exponential map."""
        return self.expmap(x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """Logarithm map ``log_x(y)``: the tangent vector at ``x`` whose geodesic reaches ``y``.

        Minimising; on the cut locus the class's documented convention applies.
        """
        self._validate_same(x=x, y=y)
        self._require_point("x", x)
        self._require_point("y", y)
        return self._logmap(x, y)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Geodesic distance, shape ``(...)`` (or kept point dims with ``keepdim=True``)."""
        self._validate_same(x=x, y=y)
        self._require_point("x", x)
        self._require_point("y", y)
        out = self._dist(x, y)
        return self._keep(out) if keepdim else out

    def dist2(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Squared geodesic distance."""
        return self.dist(x, y, keepdim=keepdim) ** 2

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Transport a tangent vector ``v`` at ``x`` to the tangent space at ``y``.

        Parallel transport along the minimising geodesic where ``parallel_transport`` is true.
        """
        self._validate_same(x=x, y=y, v=v)
        self._require_point("x", x)
        self._require_point("y", y)
        self._require_tangent("v", x, v)
        return self._transp(x, y, v)

    def expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Exponential map and transport of ``v`` along the same geodesic, in one pass.

        Returns ``y = exp_x(u)`` and the parallel transport of ``v`` along the geodesic
        ``s -> exp_x(s u)``, ``s`` from 0 to 1 (geoopt's ``expmap_transp``). Unlike
        ``transp(x, expmap(x, u), v)`` it follows the geodesic of ``u`` itself, also when
        ``|u|_x`` exceeds the injectivity radius, and shares the work of both maps. In
        particular ``expmap_transp(x, u, u)[1]`` is the velocity ``d/ds exp_x(s u)`` at ``s = 1``.

        Every library manifold has a closed form. The default (for subclasses without one) is
        ``expmap`` followed by ``transp``: exact while ``|u|_x`` stays below the injectivity
        radius where ``parallel_transport`` is true, the manifold's vector transport otherwise.

        Args:
            x: points, shape ``(..., *point_shape)``.
            u: tangent vectors at ``x`` (the geodesic's initial velocity); leading shapes
                broadcast.
            v: tangent vectors at ``x`` to transport.

        Returns:
            ``(y, v_y)``: the end points and the transported vectors (tangent at ``y``), both
            of the broadcast shape.

        Example:
            >>> import math, torch
            >>> from manifoldfm.manifolds import Sphere
            >>> s2 = Sphere(2)
            >>> x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
            >>> u = torch.tensor([0.0, math.pi / 2, 0.0], dtype=torch.float64)
            >>> y, vel = s2.expmap_transp(x, u, u)  # quarter great circle: x -> e_1
            >>> y.round(decimals=6), vel.round(decimals=6)
            (tensor([0., 1., 0.], dtype=torch.float64), tensor([-1.5708,  0.0000,  0.0000], dtype=torch.float64))
        """
        self._validate_same(x=x, u=u, v=v)
        self._require_point("x", x)
        self._require_tangent("u", x, u)
        self._require_tangent("v", x, v)
        return self._expmap_transp(x, u, v)

    def random_uniform(
        self,
        *size: int | Sequence[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw points uniformly w.r.t. the Riemannian volume.

        Args:
            *size: the batch shape (ints, or one tuple); the result has shape
                ``(*size, *point_shape)``. No arguments draw one point.
            generator: random generator (``None``: torch's default generator).
            dtype: floating dtype (default: torch's default dtype).
            device: device (default: the generator's device, else CPU).

        Raises:
            ValueError: on a manifold of infinite volume.
        """
        if not math.isfinite(self.volume):
            raise ValueError(
                f"{self!r} has infinite volume: there is no uniform distribution on it; "
                "use random() for a standard draw"
            )
        shape = _parse_size(size)
        dtype, device = self._factory(generator, dtype, device)
        return self._random_uniform(shape, generator, dtype, device)

    def random(
        self,
        *size: int | Sequence[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw some random points: uniform on compact manifolds, standard normal on R^d.

        Same arguments as :meth:`random_uniform` (``size`` is the batch shape).
        """
        shape = _parse_size(size)
        dtype, device = self._factory(generator, dtype, device)
        return self._random(shape, generator, dtype, device)

    def random_tangent(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Standard Gaussian tangent vectors at ``x`` w.r.t. the Riemannian metric.

        In any orthonormal basis of the tangent space at ``x`` the coordinates are independent
        standard normals, so ``E[<z, a>_x <z, b>_x] = <a, b>_x`` and ``E[|z|_x^2] = dim``: the
        increment of a Brownian motion over unit time, as used by the geodesic random walk of
        :func:`~manifoldfm.solvers.solve_sde`. The default draws an ambient standard normal
        and projects it with ``proju`` (exact for submanifolds with the induced metric:
        spheres, tori, Euclidean space); manifolds with another metric (``SO3``) and products
        provide their own.

        Args:
            x: points, shape ``(..., *point_shape)``.
            generator: random generator (on ``x``'s device; ``None``: torch's default).

        Returns:
            Tangent vectors at ``x``, same shape, dtype and device.

        Example:
            >>> import torch
            >>> from manifoldfm.manifolds import Sphere
            >>> s2 = Sphere(2)
            >>> x = s2.origin(1000, dtype=torch.float64)
            >>> z = s2.random_tangent(x, generator=torch.Generator().manual_seed(0))
            >>> bool((x * z).sum(-1).abs().max() < 1e-12)  # tangent: orthogonal to x
            True
            >>> round(float(s2.inner(x, z).mean()), 1)  # E|z|^2 = dim = 2
            2.0
        """
        self._validate("x", x)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self._require_point("x", x)
        return self._random_tangent(x, generator)

    def origin(
        self,
        *size: int | Sequence[int],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """A fixed reference point (north pole, identity, zero) repeated over the batch ``size``.

        ``seed`` is accepted for geoopt compatibility and ignored.
        """
        shape = _parse_size(size)
        dtype, device = self._factory(None, dtype, device)
        return self._origin(shape, dtype, device)

    # ------------------------------------------------------------------ helpers

    def _keep(self, out: Tensor) -> Tensor:
        return out.reshape(out.shape + (1,) * len(self.point_shape))

    @staticmethod
    def _factory(
        generator: torch.Generator | None,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> tuple[torch.dtype, torch.device]:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        return dtype, torch.device(device)

    # ------------------------------------------------------------------ implementations

    @abc.abstractmethod
    def _projx(self, x: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _proju(self, x: Tensor, u: Tensor) -> Tensor: ...

    def _egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self._proju(x, u)

    @abc.abstractmethod
    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _expmap(self, x: Tensor, u: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _logmap(self, x: Tensor, y: Tensor) -> Tensor: ...

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        """``D log_x(y)[u]``: the differential of ``_logmap`` in ``y`` along ``u`` (tangent at y).

        Default: forward-mode ``torch.func.jvp``; flat, spherical and rotation manifolds have
        closed forms. Meaningless on the cut locus of ``x``, where ``log_x`` is not smooth.
        """

        def log_x(p: Tensor) -> Tensor:
            return self._logmap(x, p)

        out: Tensor = torch.func.jvp(log_x, (y,), (u,))[1]
        return out

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        u = self._logmap(x, y)
        sq = self._inner(x, u, u)
        return safe_sqrt(sq, eps=_tiny_root(sq.dtype))

    @abc.abstractmethod
    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor: ...

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(exp_x(u), transport of v along s -> exp_x(s u))``; default: expmap, then transp."""
        y = self._expmap(x, u)
        return y, self._transp(x, y, v)

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Point ``exp_x(s u)`` and velocity ``d/ds exp_x(s u)`` of the geodesic at ``s``.

        ``s`` has a leading shape (no point dimensions) that broadcasts against ``x``'s. The
        velocity is the transport of ``u`` along the geodesic, so manifolds with an exact
        transport (``parallel_transport`` or their own ``_expmap_transp``) use it; the others
        differentiate the exponential map with ``torch.func.jvp``.
        """
        sb = s.reshape(s.shape + (1,) * len(self.point_shape))
        exact = type(self)._expmap_transp is not Manifold._expmap_transp
        if exact or self.parallel_transport:
            return self._expmap_transp(x, sb * u, u)

        def point(r: Tensor) -> Tensor:
            return self._expmap(x, r * u)

        out = torch.func.jvp(point, (sb,), (torch.ones_like(sb),))
        return out[0], out[1]

    @abc.abstractmethod
    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor: ...

    def _random(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        return self._random_uniform(size, generator, dtype, device)

    def _random_tangent(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Ambient standard normal projected on the tangent space (induced metrics only)."""
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return self._proju(x, z)

    @abc.abstractmethod
    def _origin(
        self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> Tensor: ...

    @abc.abstractmethod
    def _point_deviation(self, x: Tensor) -> Tensor:
        """How far each point is from the manifold, shape ``(...)`` (inf where not finite)."""

    @abc.abstractmethod
    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        """Relative normal component of each vector, shape ``(...)``."""
