"""Gaussian-process and white noise over a point set: the sources of functional flow matching.

A function is carried as its values at an ``(n, d)`` point set (``d`` in 1, 2, 3). Samples of
:class:`GPSource` and :class:`WhiteNoise` have the point layout ``(B, n_points)`` (one channel)
or ``(B, n_points, C)`` when ``channels=C`` (independent channels); on a regular grid,
``source.to_grid(x)`` gives the grid layout ``(B, *grid_shape)`` or ``(B, C, *grid_shape)``.

:class:`GPSource` samples exactly, with one of three methods:

* ``"cholesky"``: the Cholesky factor of ``K + jitter * mean(diag K) * I`` in float64, the jitter
  escalated by factors of 100 from ``jitter`` up to ``max(jitter, 1e-6)``; any point set.
* ``"fft"``: circulant embedding on a regular grid for a stationary kernel; the grid is embedded
  in a periodic grid of at least twice its size along each axis, doubled (at most
  three times, at most ``2**22`` embedding points) until the embedding's eigenvalues are
  non-negative: the negative eigenvalues, clipped to zero, may change no covariance entry by
  more than ``1e-8`` times the variance. Each FFT gives two independent samples (real and
  imaginary parts). When no embedding qualifies, the source falls back to ``"cholesky"``
  with a warning, and ``method`` records it.
* ``"kronecker"``: for a stationary kernel that is a product of one-dimensional kernels over
  the axes of a regular grid (``RBFKernel`` and ``PeriodicKernel`` with one length scale per
  axis, products of kernels acting on one axis each): one Cholesky factor per axis.

``method="auto"`` chooses ``"fft"`` for a stationary kernel on a regular grid and ``"cholesky"``
otherwise, and also on grids so small that a dense draw (``n^2`` operations per sample) is
cheaper than an FFT of the embedding (``M (log2 M + 4) >= n^2`` for an embedding of ``M``
points, e.g. 63 points with a long length scale). gpytorch's ``MultivariateNormal.sample`` is never used: above 800 points it
silently draws from a rank-100 Lanczos approximation whose variance falls well short of the
kernel's.

References:
    Dietrich, C. R. and Newsam, G. N., "Fast and exact simulation of stationary Gaussian
    processes through circulant embedding of the covariance matrix", SIAM J. Sci. Comput.
    18 (1997). Wood, A. T. A. and Chan, G., "Simulation of stationary Gaussian processes in
    [0, 1]^d", J. Comput. Graph. Stat. 3 (1994). Kerrigan, G., Migliorini, G. and Smyth, P.,
    "Functional Flow Matching", AISTATS 2024.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from ..sources import _sample_setup
from .grids import GridInfo, detect_grid

__all__ = ["MAX_DENSE_POINTS", "GPSource", "WhiteNoise"]

#: Largest point set for which a dense ``(n, n)`` kernel matrix is built (Cholesky sampling,
#: ``log_prob`` of FFT sources, eigenvalue diagnostics).
MAX_DENSE_POINTS = 20_000

_JITTER_CAP = 1e-6
_FFT_TOL = 1e-8
_FFT_MAX_DOUBLINGS = 3
_FFT_MAX_SIZE = 2**22
_STATIONARY_TOL = 1e-8
_LOG_2PI = math.log(2.0 * math.pi)
_METHODS = ("auto", "cholesky", "fft", "kronecker")

KernelFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# shared point-set handling
# ---------------------------------------------------------------------------------------------


def _check_points(points: object) -> Tensor:
    if not isinstance(points, Tensor):
        raise TypeError(
            f"points must be a torch.Tensor of shape (n, d), got {type(points).__name__}"
        )
    if not points.is_floating_point():
        raise TypeError(f"points must have a floating dtype, got {points.dtype}")
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] not in (1, 2, 3):
        raise ValueError(
            f"points must have shape (n, d) with n >= 1 and d in (1, 2, 3), "
            f"got {tuple(points.shape)}"
        )
    p = points.detach()
    if not bool(torch.isfinite(p).all()):
        raise ValueError("points must be finite")
    uniq, inverse, counts = torch.unique(p, dim=0, return_inverse=True, return_counts=True)
    if uniq.shape[0] < p.shape[0]:
        g = int(torch.argmax(counts))
        i, j = (int(v) for v in torch.nonzero(inverse == g).flatten()[:2])
        raise ValueError(
            f"points contain duplicates: points {i} and {j} are both {tuple(p[i].tolist())} "
            f"({p.shape[0] - uniq.shape[0]} duplicates in all); the covariance matrix would "
            "be singular, remove them"
        )
    return p


def _check_channels(channels: object) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be None or an int >= 1, got {channels!r}")
    return channels


class _OnPoints:
    """Point-set bookkeeping shared by the sources: shapes, grid and layout conversion."""

    manifold: None = None
    points: Tensor
    grid: GridInfo | None
    channels: int | None
    _mean: float | Tensor

    def _init_points(self, points: object, channels: object, mean: object) -> Tensor:
        p64 = _check_points(points)
        self.points = cast(Tensor, points).detach()
        self.channels = _check_channels(channels)
        self.grid = detect_grid(self.points)
        n = p64.shape[0]
        if isinstance(mean, Tensor):
            if not mean.is_floating_point() or mean.shape != (n,):
                raise ValueError(
                    f"mean must be a float or a floating tensor of shape ({n},), "
                    f"got {mean.dtype} {tuple(mean.shape)}"
                )
            if not bool(torch.isfinite(mean).all()):
                raise ValueError("mean must be finite")
            self._mean = mean.detach().to(torch.float64)
        elif isinstance(mean, (int, float)) and not isinstance(mean, bool):
            if not math.isfinite(mean):
                raise ValueError(f"mean must be finite, got {mean}")
            self._mean = float(mean)
        else:
            raise TypeError(f"mean must be a float or a tensor, got {type(mean).__name__}")
        return p64

    @property
    def n_points(self) -> int:
        """The number of points."""
        return int(self.points.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample: ``(n_points,)`` or ``(n_points, channels)``."""
        if self.channels is None:
            return (self.n_points,)
        return (self.n_points, self.channels)

    @property
    def grid_shape(self) -> tuple[int, ...] | None:
        """The shape of the recognised regular grid, ``None`` for scattered points."""
        return None if self.grid is None else self.grid.shape

    def to_grid(self, x: Tensor) -> Tensor:
        """Point layout ``(B, n)`` / ``(B, n, C)`` to grid layout ``(B, *grid)`` / ``(B, C, *grid)``.

        Raises ``ValueError`` when the points are not a regular grid.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import WhiteNoise, grid_points
            >>> src = WhiteNoise(grid_points((4, 6)), channels=2)
            >>> src.to_grid(src.sample(3)).shape
            torch.Size([3, 2, 4, 6])
        """
        return self._require_grid().to_grid(x)

    def from_grid(self, x: Tensor) -> Tensor:
        """Grid layout ``(B, *grid)`` / ``(B, C, *grid)`` to point layout ``(B, n)`` / ``(B, n, C)``.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import WhiteNoise, grid_points
            >>> src = WhiteNoise(grid_points((4, 6)).flip(0))
            >>> x = src.sample(3)
            >>> bool(torch.equal(src.from_grid(src.to_grid(x)), x))
            True
        """
        return self._require_grid().from_grid(x)

    def _require_grid(self) -> GridInfo:
        if self.grid is None:
            raise ValueError("the points of this source are not a regular grid")
        return self.grid

    def _mean_on(self, dtype: torch.dtype, device: torch.device) -> float | Tensor:
        m = self._mean
        return m if isinstance(m, float) else m.to(dtype=dtype, device=device)

    def _check_x(self, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            want = ", ".join(map(str, self.shape))
            raise ValueError(
                f"x must have shape (B, {want}) for this source (one value per point"
                f"{'' if self.channels is None else ' and channel'}), got {tuple(x.shape)}"
            )
        return x

    def _finish(self, x: Tensor, n: int, dtype: torch.dtype) -> Tensor:
        """``(n * C, n_points)`` draws -> the sample layout, plus the mean, in ``dtype``."""
        if self.channels is not None:
            x = x.reshape(n, self.channels, self.n_points).transpose(1, 2)
        m = self._mean
        if isinstance(m, Tensor):
            m = m.to(dtype=x.dtype, device=x.device)
            x = x + (m if self.channels is None else m[:, None])
        elif m != 0.0:
            x = x + m
        return x.to(dtype)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


def _gpytorch_kernel_type() -> type | None:
    try:
        import gpytorch
    except ImportError:  # pragma: no cover - gpytorch is a dependency
        return None
    return gpytorch.kernels.Kernel


def _known_stationary(kernel: Any) -> bool:
    import gpytorch.kernels as gk

    if isinstance(kernel, gk.ScaleKernel):
        return _known_stationary(kernel.base_kernel)
    if isinstance(kernel, (gk.AdditiveKernel, gk.ProductKernel)):
        return all(_known_stationary(k) for k in kernel.kernels)
    stationary = (
        gk.RBFKernel,
        gk.MaternKernel,
        gk.PeriodicKernel,
        gk.RQKernel,
        gk.SpectralMixtureKernel,
        gk.CosineKernel,
    )
    return isinstance(kernel, stationary)


def _kernel_function(kernel: object, device: torch.device) -> tuple[KernelFn, bool | None]:
    """A float64 evaluator ``(X, Y) -> K`` and whether the kernel is known stationary."""
    ktype = _gpytorch_kernel_type()
    if ktype is not None and isinstance(kernel, ktype):
        kcopy: Any = copy.deepcopy(kernel)
        kcopy = kcopy.to(device=device, dtype=torch.float64)
        known = _known_stationary(kernel)

        def evaluate(x: Tensor, y: Tensor) -> Tensor:
            with torch.no_grad():
                return kcopy(x, y).to_dense()

        return evaluate, known
    if not callable(kernel):
        raise TypeError(
            f"kernel must be a gpytorch kernel or a callable k(X, Y) -> matrix, "
            f"got {type(kernel).__name__}"
        )

    def evaluate_callable(x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            out = kernel(x, y)
        if hasattr(out, "to_dense") and not isinstance(out, Tensor):
            out = out.to_dense()
        if not isinstance(out, Tensor):
            raise TypeError(f"kernel(X, Y) must return a tensor, got {type(out).__name__}")
        if out.shape != (x.shape[0], y.shape[0]):
            raise ValueError(
                f"kernel(X, Y) must return shape ({x.shape[0]}, {y.shape[0]}) for X of shape "
                f"{tuple(x.shape)} and Y of shape {tuple(y.shape)}, got {tuple(out.shape)}"
            )
        return out.detach().to(torch.float64)

    return evaluate_callable, None


def _kernel_matrix(kfn: KernelFn, x: Tensor, y: Tensor) -> Tensor:
    k = kfn(x, y)
    if k.shape != (x.shape[0], y.shape[0]):
        raise ValueError(
            f"the kernel must give a ({x.shape[0]}, {y.shape[0]}) matrix for ({x.shape[0]}, "
            f"{x.shape[1]}) and ({y.shape[0]}, {y.shape[1]}) points, got {tuple(k.shape)} "
            "(batched kernels are not supported)"
        )
    if not bool(torch.isfinite(k).all()):
        raise ValueError("the kernel returned non-finite values on these points")
    return k


def _cholesky(k: Tensor, jitter: float, what: str) -> tuple[Tensor, float]:
    """Cholesky factor of ``k + j * mean(diag k) * I`` with escalating ``j``; float64."""
    scale = float(k.diagonal().mean())
    if not scale > 0.0:
        raise ValueError(
            f"the {what} is not positive definite: its mean diagonal is {scale:.3g} (<= 0)"
        )
    asym = float((k - k.mT).abs_().max())
    if asym > 1e-10 * scale:
        raise ValueError(f"the {what} is not symmetric: max |K - K^T| = {asym:.3g}")
    k = (k + k.mT).mul_(0.5)
    cap = max(jitter, _JITTER_CAP)
    tries = [jitter]
    nxt = jitter * 100.0 if jitter > 0.0 else 1e-10
    while nxt <= cap * (1.0 + 1e-9):
        tries.append(nxt)
        nxt *= 100.0
    if tries[-1] < cap:
        tries.append(cap)
    for j in tries:
        work = k.clone()
        if j > 0.0:
            work.diagonal().add_(j * scale)
        factor, info = torch.linalg.cholesky_ex(work)
        del work
        if int(info) == 0 and bool(torch.isfinite(factor).all()):
            return factor, j
        del factor
    lam = float(torch.linalg.eigvalsh(k).min())
    raise ValueError(
        f"the {what} is not positive definite: smallest eigenvalue {lam:.3g} "
        f"({lam / scale:.3g} times the mean diagonal {scale:.3g}); a jitter of up to "
        f"{cap:g} times the mean diagonal did not make it factorisable. Check the kernel, "
        "or raise `jitter` for a nearly singular kernel (e.g. long length scales)"
    )


def _next_smooth(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (fast FFT sizes)."""
    v = max(int(n), 1)
    while True:
        r = v
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return v
        v += 1


# ---------------------------------------------------------------------------------------------
# structured methods on regular grids
# ---------------------------------------------------------------------------------------------


def _lattice(grid: GridInfo, m: tuple[int, ...], device: torch.device) -> Tensor:
    """Points ``start + s * step`` for the signed offsets ``s`` of an ``m``-periodic lattice."""
    axes = []
    for mk, start, step in zip(m, grid.start, grid.step, strict=True):
        j = torch.arange(mk, dtype=torch.float64, device=device)
        s = torch.where(j <= mk // 2, j, j - mk)
        axes.append(start + s * step)
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, len(m))


def _origin(grid: GridInfo, device: torch.device) -> Tensor:
    return torch.tensor([grid.start], dtype=torch.float64, device=device)


def _first_row(kfn: KernelFn, grid: GridInfo, m: tuple[int, ...], device: torch.device) -> Tensor:
    """``c[s] = k(x0, x0 + s * step)`` on the ``m``-lattice, shape ``m``."""
    pts = _lattice(grid, m, device)
    return _kernel_matrix(kfn, _origin(grid, device), pts).reshape(m)


def _is_stationary(kfn: KernelFn, grid: GridInfo, c: Tensor) -> bool:
    """Rows of the kernel at a few grid points are translates of ``c`` (the row at the origin)."""
    shape = grid.shape
    m = c.shape
    device = c.device
    # the ideal grid (start + i * step), in grid order: the structured methods treat the
    # points as exactly regular, within the tolerance of detect_grid
    axes = [
        start + step * torch.arange(s, dtype=torch.float64, device=device)
        for s, start, step in zip(shape, grid.start, grid.step, strict=True)
    ]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    idx = [torch.arange(s, device=device) for s in shape]
    k0 = float(c.reshape(-1)[0])
    anchors = {tuple(0 for _ in shape), tuple(s - 1 for s in shape), tuple(s // 2 for s in shape)}
    for a in anchors:
        flat = 0
        for ak, s in zip(a, shape, strict=True):
            flat = flat * s + ak
        row = _kernel_matrix(kfn, pts[flat : flat + 1], pts).reshape(shape)
        sub = torch.meshgrid(
            *[(i - ak) % mk for i, ak, mk in zip(idx, a, m, strict=True)], indexing="ij"
        )
        expect = c[sub]
        if float((row - expect).abs().max()) > _STATIONARY_TOL * max(abs(k0), 1e-300):
            return False
    return True


def _axis_slices(c: Tensor) -> list[Tensor]:
    d = c.ndim
    return [c[tuple(slice(None) if j == k else 0 for j in range(d))] for k in range(d)]


def _is_separable(c: Tensor) -> bool:
    d = c.ndim
    k0 = float(c.reshape(-1)[0])
    if d == 1:
        return True
    if not k0 > 0.0:
        return False
    prod = torch.ones((), dtype=c.dtype, device=c.device)
    for k, sl in enumerate(_axis_slices(c)):
        shape = [1] * d
        shape[k] = -1
        prod = prod * sl.reshape(shape)
    prod = prod / k0 ** (d - 1)
    return float((prod - c).abs().max()) <= _STATIONARY_TOL * k0


def _fft_pays(n: int, m: tuple[int, ...]) -> bool:
    """Whether one FFT draw (cost ~ M log M per two samples) beats a dense draw (n^2 each)."""
    big = math.prod(m)
    return n > MAX_DENSE_POINTS or big * (math.log2(max(big, 2)) + 4.0) < n * n


def _embedding_sqrt(
    kfn: KernelFn, grid: GridInfo, c0: Tensor, m0: tuple[int, ...], device: torch.device
) -> tuple[Tensor, tuple[int, ...]] | None:
    """``sqrt(eigenvalues / M)`` of the smallest acceptable circulant embedding, or ``None``."""
    m, c = m0, c0
    for attempt in range(_FFT_MAX_DOUBLINGS + 1):
        if attempt > 0:
            m = tuple(
                _next_smooth(2 * mk) if s > 1 else 1 for mk, s in zip(m, grid.shape, strict=True)
            )
            if math.prod(m) > _FFT_MAX_SIZE:
                return None
            c = _first_row(kfn, grid, m, device)
        dims = tuple(range(c.ndim))
        # c[-s] must equal c[s]; it does except at the ambiguous offset m/2 of even sizes
        flipped = torch.roll(torch.flip(c, dims), shifts=(1,) * c.ndim, dims=dims)
        cs = 0.5 * (c + flipped)
        lam = torch.fft.fftn(cs).real
        big = math.prod(m)
        k0 = float(cs.reshape(-1)[0])
        neg = float(lam.clamp(max=0.0).sum().neg()) / big
        if neg <= _FFT_TOL * abs(k0):
            return (lam.clamp(min=0.0) / big).sqrt(), m
    return None


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------


class GPSource(_OnPoints):
    """Gaussian-process noise at a fixed point set: ``f ~ GP(mean, k)`` evaluated at ``points``.

    The kernel is evaluated once, in float64, when the source is built (later changes to a
    gpytorch kernel's parameters do not affect the source; build a new one). Factors are
    computed in float64 and cast once per (dtype, device), then cached.

    Args:
        kernel: a gpytorch kernel (``RBFKernel``, ``MaternKernel`` with ``nu`` 1/2, 3/2 or 5/2,
            ``PeriodicKernel``, ``ScaleKernel``, sums and products) or a callable
            ``k(X, Y) -> (n_X, n_Y)`` matrix for float64 ``X`` and ``Y`` of shape ``(., d)``.
            A callable counts as stationary when its rows at three grid points (two corners and
            the centre) are translates of one another.
        points: ``(n, d)`` locations, ``d`` in 1, 2, 3, without duplicates; a regular grid in
            any order is recognised (``grid``).
        mean: the mean, a float or an ``(n,)`` tensor of values at the points.
        jitter: the first relative jitter: ``jitter * mean(diag K)`` is added to the diagonal
            before the Cholesky factorisation, escalated by factors of 100 up to
            ``max(jitter, 1e-6)``; the jitter used is ``jitter_used``.
        method: ``"auto"``, ``"cholesky"``, ``"fft"`` or ``"kronecker"`` (see the module notes).
        channels: ``None`` for samples ``(B, n)``; an int ``C`` for ``(B, n, C)``, ``C``
            independent channels.

    Attributes:
        method: the method in use (``"fft"`` may have fallen back to ``"cholesky"``).
        grid: the :class:`GridInfo` of a regular grid, else ``None``; ``grid_shape`` its shape.
        embedding_shape: the periodic grid of the FFT method, else ``None``.
        jitter_used: the relative jitter of the Cholesky factor(s), ``None`` before any.

    ``log_prob`` is exact: the Cholesky factor for ``"cholesky"``, the per-axis factors for
    ``"kronecker"``, and for ``"fft"`` a dense Cholesky factor built on first use (the density of
    the circulant embedding is not that of the grid's marginal); at most ``MAX_DENSE_POINTS``.

    Example:
        >>> import torch, gpytorch
        >>> from manifoldfm.functional import GPSource, grid_points
        >>> k = gpytorch.kernels.RBFKernel()
        >>> k.lengthscale = 0.1
        >>> src = GPSource(k, grid_points((32, 32)))
        >>> src.method, src.grid_shape
        ('fft', (32, 32))
        >>> x = src.sample(8, generator=torch.Generator().manual_seed(0))
        >>> x.shape, src.to_grid(x).shape
        (torch.Size([8, 1024]), torch.Size([8, 32, 32]))
        >>> GPSource(k, torch.rand(50, 1)).log_prob(torch.zeros(2, 50)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        kernel: object,
        points: Tensor,
        *,
        mean: float | Tensor = 0.0,
        jitter: float = 1e-10,
        method: str = "auto",
        channels: int | None = None,
    ) -> None:
        p64 = self._init_points(points, channels, mean)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise TypeError(f"jitter must be a float, got {type(jitter).__name__}")
        if not (math.isfinite(jitter) and jitter >= 0.0):
            raise ValueError(f"jitter must be finite and >= 0, got {jitter}")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self.jitter = float(jitter)
        self._p64 = p64
        device = p64.device
        self._kfn, known = _kernel_function(kernel, device)
        self.kernel = kernel
        self.embedding_shape: tuple[int, ...] | None = None
        self.jitter_used: float | None = None
        self._dense: Tensor | None = None
        self._axes: list[Tensor] | None = None
        self._kron_scale = 1.0
        self._sqrt_eig: Tensor | None = None
        self._cache: dict[tuple[str, int, torch.dtype, torch.device], Tensor] = {}
        self._grid_ordered = self.grid is not None and bool(
            torch.equal(self.grid.order, torch.arange(self.n_points, device=self.grid.order.device))
        )

        chosen = "cholesky" if method == "auto" else method
        if method != "cholesky" and self.grid is not None and known is not False:
            grid = self.grid
            m0 = tuple(_next_smooth(2 * s) if s > 1 else 1 for s in grid.shape)
            c0 = _first_row(self._kfn, grid, m0, device)
            stationary = _is_stationary(self._kfn, grid, c0)
            if stationary and method in ("auto", "fft"):
                found = _embedding_sqrt(self._kfn, grid, c0, m0, device)
                if found is None:
                    warnings.warn(
                        "GPSource: no non-negative circulant embedding of the kernel on this "
                        f"grid of shape {grid.shape} (up to {_FFT_MAX_DOUBLINGS} doublings); "
                        "sampling by dense Cholesky instead",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    chosen = "cholesky"
                elif method == "auto" and not _fft_pays(grid.size, found[1]):
                    chosen = "cholesky"  # a small grid: a dense draw is cheaper
                else:
                    self._sqrt_eig, self.embedding_shape = found
                    chosen = "fft"
            elif stationary and method == "kronecker":
                if not _is_separable(c0):
                    raise ValueError(
                        "method='kronecker' needs a kernel that is a product of one-dimensional "
                        "kernels over the grid axes (e.g. RBFKernel or a ProductKernel of kernels "
                        "with one active dimension each); this kernel is not separable on the grid"
                    )
                self._build_kronecker(c0)
            elif method in ("fft", "kronecker"):
                raise ValueError(f"method={method!r} needs a stationary kernel; this one is not")
        elif method in ("fft", "kronecker"):
            why = (
                "the points are not a regular grid"
                if self.grid is None
                else "the kernel is not stationary"
            )
            raise ValueError(
                f"method={method!r} needs a stationary kernel on a regular grid; {why}"
            )
        self.method = chosen
        if chosen == "cholesky":
            self._dense_factor()

    def __repr__(self) -> str:
        grid = "" if self.grid is None else f", grid={self.grid.shape}"
        return f"GPSource(n_points={self.n_points}, d={self.points.shape[1]}{grid}, method={self.method!r})"

    # -- factors ------------------------------------------------------------------------------

    def _dense_factor(self) -> Tensor:
        if self._dense is None:
            n = self.n_points
            if n > MAX_DENSE_POINTS:
                raise ValueError(
                    f"a dense covariance matrix of {n} points exceeds MAX_DENSE_POINTS = "
                    f"{MAX_DENSE_POINTS}; use a regular grid with a stationary kernel"
                    + (" and method='kronecker' for log_prob" if self.grid is not None else "")
                )
            k = _kernel_matrix(self._kfn, self._p64, self._p64)
            self._dense, j = _cholesky(k, self.jitter, "kernel matrix")
            self.jitter_used = j if self.jitter_used is None else max(self.jitter_used, j)
        return self._dense

    def _build_kronecker(self, c: Tensor) -> None:
        assert self.grid is not None
        k0 = float(c.reshape(-1)[0])
        factors = []
        used = 0.0
        for k, sl in enumerate(_axis_slices(c)):
            nk = self.grid.shape[k]
            i = torch.arange(nk, device=c.device)
            kk = sl[(i[None, :] - i[:, None]) % sl.shape[0]]
            lk, j = _cholesky(kk, self.jitter, f"kernel matrix along axis {k}")
            used = max(used, j)
            factors.append(lk)
        self._axes = factors
        self._kron_scale = k0 ** (-(c.ndim - 1) / 2.0)
        self.jitter_used = used

    def _cached(
        self, name: str, k: int, t: Tensor, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        key = (name, k, dtype, device)
        out = self._cache.get(key)
        if out is None:
            out = t.to(device=device, dtype=dtype)
            self._cache[key] = out
        return out

    # -- sampling -----------------------------------------------------------------------------

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` functions, shape ``(n, n_points)`` or ``(n, n_points, channels)``.

        Random numbers are drawn on the generator's device (on ``device`` without one) and
        moved to ``device``. Float64 samples are computed in float64, others in float32.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator; its device is the default device.
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the device (default: the generator's, else the CPU).

        Example:
            >>> import torch, gpytorch
            >>> from manifoldfm.functional import GPSource
            >>> src = GPSource(gpytorch.kernels.MaternKernel(nu=1.5), torch.rand(20, 2), channels=3)
            >>> src.sample(4, dtype=torch.float64).shape
            torch.Size([4, 20, 3])
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        work = torch.float64 if dtype == torch.float64 else torch.float32
        count = n * (self.channels or 1)
        npts = self.n_points
        if count == 0:
            return self._finish(torch.zeros(0, npts, dtype=work, device=out), n, dtype)
        if self.method == "fft":
            x = self._sample_fft(count, generator, work, draw, out)
        elif self.method == "kronecker":
            x = self._sample_kronecker(count, generator, work, draw, out)
        else:
            lower = self._cached("dense", 0, self._dense_factor(), work, out)
            z = torch.randn(count, npts, generator=generator, dtype=work, device=draw).to(out)
            x = z @ lower.mT
        return self._finish(x, n, dtype)

    def _sample_fft(
        self,
        count: int,
        generator: torch.Generator | None,
        work: torch.dtype,
        draw: torch.device,
        out: torch.device,
    ) -> Tensor:
        assert self.grid is not None and self._sqrt_eig is not None and self.embedding_shape
        m = self.embedding_shape
        d = len(m)
        w = self._cached("fft", 0, self._sqrt_eig[..., None], work, out)
        pairs = (count + 1) // 2
        # (real, imaginary) pairs last: a complex view without a copy
        z = torch.randn(pairs, *m, 2, generator=generator, dtype=work, device=draw).to(out)
        y = torch.view_as_complex(z.mul_(w))
        # one axis at a time, keeping only the grid's part of each transformed axis
        for k in reversed(range(d)):
            y = torch.fft.fft(y, dim=k + 1).narrow(k + 1, 0, self.grid.shape[k])
        x = torch.view_as_real(y).movedim(-1, 1).reshape(2 * pairs, -1)[:count]
        return self._to_point_order(x, out)

    def _sample_kronecker(
        self,
        count: int,
        generator: torch.Generator | None,
        work: torch.dtype,
        draw: torch.device,
        out: torch.device,
    ) -> Tensor:
        assert self.grid is not None and self._axes is not None
        shape = self.grid.shape
        x = torch.randn(count, *shape, generator=generator, dtype=work, device=draw).to(out)
        for k, lk in enumerate(self._axes):
            lk = self._cached("kron", k, lk, work, out)
            x = torch.movedim(torch.movedim(x, k + 1, -1) @ lk.mT, -1, k + 1)
        x = x.reshape(count, -1)
        if self._kron_scale != 1.0:
            x = x * self._kron_scale
        return self._to_point_order(x, out)

    def _to_point_order(self, x: Tensor, device: torch.device) -> Tensor:
        """Grid-order columns to the order of the points (no gather when they agree)."""
        if self._grid_ordered:
            return x
        return x[:, self._cached_index(device)]

    def _cached_index(self, device: torch.device) -> Tensor:
        assert self.grid is not None
        key = ("index", 0, torch.long, device)
        out = self._cache.get(key)
        if out is None:
            out = self.grid.index.to(device)
            self._cache[key] = out
        return out

    # -- density ------------------------------------------------------------------------------

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact Gaussian log-density of each function, shape ``(B,)``, in ``x``'s dtype.

        ``x`` has the sample layout ``(B, n_points)`` (or ``(B, n_points, channels)``: the
        channels' log-densities are summed). The computation runs in float64.

        Example:
            >>> import torch, gpytorch
            >>> from manifoldfm.functional import GPSource
            >>> pts = torch.linspace(0, 1, 10)[:, None]
            >>> src = GPSource(gpytorch.kernels.RBFKernel(), pts, method="cholesky")
            >>> x = src.sample(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            >>> src.log_prob(x).shape
            torch.Size([3])
        """
        x = self._check_x(x)
        b = x.shape[0]
        npts = self.n_points
        r = x.to(torch.float64)
        mean = self._mean_on(torch.float64, x.device)
        if isinstance(mean, Tensor):
            r = r - (mean if self.channels is None else mean[:, None])
        elif mean != 0.0:
            r = r - mean
        if self.channels is not None:
            r = r.transpose(1, 2).reshape(-1, npts)
        if self.method == "kronecker":
            quad, logdet = self._kron_quad_logdet(r)
        else:
            lower = self._cached("dense", 0, self._dense_factor(), torch.float64, x.device)
            z = torch.linalg.solve_triangular(lower, r.mT, upper=False)
            quad = z.square().sum(0)
            logdet = 2.0 * lower.diagonal().log().sum()
        lp = -0.5 * (quad + logdet + npts * _LOG_2PI)
        if self.channels is not None:
            lp = lp.reshape(b, self.channels).sum(1)
        return lp.to(x.dtype)

    def _kron_quad_logdet(self, r: Tensor) -> tuple[Tensor, Tensor]:
        assert self.grid is not None and self._axes is not None
        shape = self.grid.shape
        npts = self.n_points
        order = self._cached_order(r.device)
        v = r[:, order].reshape(r.shape[0], *shape) / self._kron_scale
        logdet = torch.zeros((), dtype=torch.float64, device=r.device)
        for k, lk in enumerate(self._axes):
            lk = self._cached("kron", k, lk, torch.float64, r.device)
            vk = torch.movedim(v, k + 1, -1)
            sol = torch.linalg.solve_triangular(
                lk.mT, vk.reshape(-1, shape[k]), upper=True, left=False
            )
            v = torch.movedim(sol.reshape(vk.shape), -1, k + 1)
            logdet = logdet + (npts // shape[k]) * 2.0 * lk.diagonal().log().sum()
        logdet = logdet + npts * 2.0 * math.log(self._kron_scale)
        return v.reshape(r.shape[0], -1).square().sum(1), logdet

    def _cached_order(self, device: torch.device) -> Tensor:
        assert self.grid is not None
        key = ("order", 0, torch.long, device)
        out = self._cache.get(key)
        if out is None:
            out = self.grid.order.to(device)
            self._cache[key] = out
        return out

    def covariance(self) -> Tensor:
        """The kernel matrix at the points, ``(n, n)`` float64 (no jitter), for checks.

        Example:
            >>> import torch, gpytorch
            >>> from manifoldfm.functional import GPSource
            >>> GPSource(gpytorch.kernels.RBFKernel(), torch.rand(5, 1)).covariance().shape
            torch.Size([5, 5])
        """
        return _kernel_matrix(self._kfn, self._p64, self._p64)


class WhiteNoise(_OnPoints):
    """White noise at a point set: independent ``N(mean, std^2)`` values at every point.

    The comparison source of functional flow matching; same API as :class:`GPSource`.

    Args:
        points: ``(n, d)`` locations, ``d`` in 1, 2, 3, without duplicates.
        std: the standard deviation, ``> 0``.
        mean: a float or an ``(n,)`` tensor.
        channels: ``None`` for samples ``(B, n)``, an int ``C`` for ``(B, n, C)``.

    Example:
        >>> import torch
        >>> from manifoldfm.functional import WhiteNoise, grid_points
        >>> src = WhiteNoise(grid_points((4, 4)), std=0.5)
        >>> x = src.sample(3, generator=torch.Generator().manual_seed(0))
        >>> x.shape, src.grid_shape, src.log_prob(x).shape
        (torch.Size([3, 16]), (4, 4), torch.Size([3]))
    """

    method = "white"

    def __init__(
        self,
        points: Tensor,
        *,
        std: float = 1.0,
        mean: float | Tensor = 0.0,
        channels: int | None = None,
    ) -> None:
        self._init_points(points, channels, mean)
        if isinstance(std, bool) or not isinstance(std, (int, float)):
            raise TypeError(f"std must be a float, got {type(std).__name__}")
        if not (math.isfinite(std) and std > 0.0):
            raise ValueError(f"std must be finite and > 0, got {std}")
        self.std = float(std)

    def __repr__(self) -> str:
        return f"WhiteNoise(n_points={self.n_points}, std={self.std})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` functions, shape ``(n, n_points)`` or ``(n, n_points, channels)``.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import WhiteNoise
            >>> WhiteNoise(torch.rand(7, 1)).sample(2, dtype=torch.float64).dtype
            torch.float64
        """
        dtype, draw, out = _sample_setup(n, generator, dtype, device)
        count = n * (self.channels or 1)
        x = torch.randn(count, self.n_points, generator=generator, dtype=dtype, device=draw).to(out)
        if self.std != 1.0:
            x = x * self.std
        return self._finish(x, n, dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of each function, shape ``(B,)``.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import WhiteNoise
            >>> round(float(WhiteNoise(torch.rand(1, 1)).log_prob(torch.zeros(1, 1))), 4)
            -0.9189
        """
        x = self._check_x(x)
        mean = self._mean_on(x.dtype, x.device)
        r = x - (mean[:, None] if isinstance(mean, Tensor) and self.channels else mean)
        z = r.reshape(x.shape[0], -1) / self.std
        dim = z.shape[1]
        return -0.5 * z.square().sum(1) - dim * (math.log(self.std) + 0.5 * _LOG_2PI)
