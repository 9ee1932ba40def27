"""Public contract checkers for manifolds, schedulers, paths and couplings: run them in your tests.

Each checker raises ``AssertionError`` with a message naming the failed property, so it plugs
into pytest directly. They are the same checks the library runs over its built-in objects.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ._utils import checks
from .couplings.base import Cost, CouplingResult, pairwise_cost
from .manifolds.base import Manifold
from .paths.base import PathSample, ProbPath
from .paths.schedulers import ScheduleOutput, Scheduler

__all__ = ["check_coupling", "check_manifold", "check_path", "check_scheduler"]


def _close(a: Tensor, b: Tensor, what: str, atol: float, rtol: float) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        err = (a - b).abs().max().item()
        raise AssertionError(f"{what}: max abs error {err:.3e} (atol={atol}, rtol={rtol})")


def _interior_times(n: int, singular: tuple[float, ...], dtype: torch.dtype) -> Tensor:
    lo = 0.05 if 0.0 in singular else 0.0
    hi = 0.95 if 1.0 in singular else 1.0
    return torch.linspace(lo, hi, n, dtype=dtype)


def check_scheduler(scheduler: Scheduler, *, dtype: torch.dtype = torch.float64) -> None:
    """Check a scheduler's contract: shapes, dtype, endpoints and derivatives.

    * every field of the output has the shape and dtype of ``t``;
    * with ``exact_endpoints``: ``alpha_0 = 0, sigma_0 = 1, alpha_1 = 1, sigma_1 = 0``;
    * ``d_alpha`` and ``d_sigma`` match central finite differences away from ``singular_times``;
    * ``alpha`` and ``sigma`` are finite at both endpoints.

    Args:
        scheduler: the scheduler to check.
        dtype: floating dtype to evaluate in (float64 gives tight finite differences).

    Raises:
        AssertionError: naming the first property that fails.

    Example:
        >>> from manifoldfm import CondOT
        >>> from manifoldfm.testing import check_scheduler
        >>> check_scheduler(CondOT(sigma_min=0.05))
    """
    t = _interior_times(33, tuple(getattr(scheduler, "singular_times", ())), dtype)
    out = scheduler(t)
    if not isinstance(out, ScheduleOutput):
        raise AssertionError(f"scheduler returned {type(out).__name__}, not ScheduleOutput")
    for name in ("alpha", "sigma", "d_alpha", "d_sigma"):
        v = getattr(out, name)
        if v.shape != t.shape or v.dtype != t.dtype:
            raise AssertionError(
                f"{name} has shape/dtype {tuple(v.shape)}/{v.dtype}, t has {tuple(t.shape)}/{t.dtype}"
            )
    ends = scheduler(torch.tensor([0.0, 1.0], dtype=dtype))
    if not (torch.isfinite(ends.alpha).all() and torch.isfinite(ends.sigma).all()):
        raise AssertionError("alpha or sigma is not finite at t = 0 or t = 1")
    if getattr(scheduler, "exact_endpoints", False):
        _close(ends.alpha, torch.tensor([0.0, 1.0], dtype=dtype), "alpha at (0, 1)", 1e-12, 0)
        _close(ends.sigma, torch.tensor([1.0, 0.0], dtype=dtype), "sigma at (0, 1)", 1e-12, 0)
    h = 1e-6 if dtype == torch.float64 else 1e-2
    tc = t.clamp(h, 1 - h)
    up, dn = scheduler(tc + h), scheduler(tc - h)
    mid = scheduler(tc)
    tol = 1e-5 if dtype == torch.float64 else 5e-2
    _close(mid.d_alpha, (up.alpha - dn.alpha) / (2 * h), "d_alpha vs finite difference", tol, tol)
    _close(mid.d_sigma, (up.sigma - dn.sigma) / (2 * h), "d_sigma vs finite difference", tol, tol)


def check_path(
    path: ProbPath,
    x0: Tensor,
    x1: Tensor,
    *,
    manifold: Any = None,
    exact_endpoints: bool = True,
    t: Tensor | None = None,
    atol: float | None = None,
) -> None:
    """Check a deterministic path's contract on given endpoints.

    * ``sample`` returns a :class:`~manifoldfm.PathSample` whose tensors keep the input's shape,
      dtype and device;
    * with ``exact_endpoints``: ``x_0 = x0`` and ``x_1 = x1``, compared by ``manifold.dist``
      when a manifold is given (so angles that wrap on a torus count as equal), entrywise
      otherwise;
    * with a manifold: ``xt`` lies on it and ``ut`` is tangent at ``xt`` (geoopt's
      ``check_point_on_manifold`` / ``check_vector_on_tangent``, where the manifold has them);
    * ``ut`` is the time derivative of ``xt``: forward-mode ``torch.func.jvp`` of
      ``t -> xt`` in the ambient coordinates, at interior times.

    The derivative is taken in ambient coordinates on every manifold. On embedded manifolds
    (spheres, SO(3)) ``t -> xt`` is a smooth ambient curve whose derivative is the tangent
    velocity itself. On a torus ``xt`` jumps where an angle wraps into ``[0, 2 pi)``, but the
    wrap is a piecewise translation whose autograd derivative is 1 everywhere (``floor``,
    ``remainder`` have derivative 0), so the jvp is the derivative of the unwrapped angle,
    which is what ``ut`` must be. (Differentiating ``logmap(xt(t_ref), xt(t))`` instead would
    also remove the wrap, but it trusts the manifold's ``logmap`` to be differentiable at its
    base point, which the clamped ``acos`` of some implementations is not.)

    Only for paths that draw no noise (``AffinePath``, geodesic paths); bridges are checked
    statistically in the library's own tests.

    Args:
        path: the path to check.
        x0: source points ``(B, *shape)``.
        x1: data points ``(B, *shape)``.
        manifold: the manifold the path lives on (a library manifold or one with geoopt's
            ``dist``); ``None`` for Euclidean paths.
        exact_endpoints: whether the path must hit ``x0`` at ``t = 0`` and ``x1`` at ``t = 1``.
        t: interior times ``(B,)`` to check at; defaults to ``B`` evenly spaced times in
            ``[0.1, 0.9]`` (away from the schedules' singular times).
        atol: tolerance; defaults to 1e-8 (float64) or 1e-4 (float32).

    Raises:
        AssertionError: naming the first property that fails.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, Cosine, FlatTorus
        >>> from manifoldfm.paths import GeodesicPath
        >>> from manifoldfm.testing import check_path
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
        >>> check_path(AffinePath(Cosine()), x0, torch.randn(4, 3, generator=g, dtype=torch.float64))
        >>> torus = FlatTorus(2)
        >>> a, b = torus.random(4, generator=g, dtype=torch.float64), torus.random(4, generator=g, dtype=torch.float64)
        >>> check_path(GeodesicPath(torus, Cosine()), a, b, manifold=torus)
    """
    tol = atol if atol is not None else (1e-8 if x0.dtype == torch.float64 else 1e-4)
    b = x0.shape[0]
    if t is None:
        t = torch.linspace(0.1, 0.9, b, dtype=x0.dtype, device=x0.device)
    s = path.sample(x0, x1, t)
    if not isinstance(s, PathSample):
        raise AssertionError(f"sample returned {type(s).__name__}, not PathSample")
    for name in ("xt", "ut"):
        v = getattr(s, name)
        if v.shape != x0.shape or v.dtype != x0.dtype or v.device != x0.device:
            raise AssertionError(
                f"{name} has shape/dtype/device {tuple(v.shape)}/{v.dtype}/{v.device}, "
                f"x0 has {tuple(x0.shape)}/{x0.dtype}/{x0.device}"
            )
    if exact_endpoints:
        at0, at1 = path.sample(x0, x1, 0.0).xt, path.sample(x0, x1, 1.0).xt
        if manifold is None:
            _close(at0, x0, "xt at t = 0 vs x0", tol, 0)
            _close(at1, x1, "xt at t = 1 vs x1", tol, 0)
        else:
            for what, a, ref in (("xt at t = 0 vs x0", at0, x0), ("xt at t = 1 vs x1", at1, x1)):
                d = manifold.dist(a, ref)
                _close(d, torch.zeros_like(d), f"{what} (manifold distance)", tol, 0)
    if manifold is not None:
        on = getattr(manifold, "check_point_on_manifold", None)
        if callable(on):
            ok, reason = on(s.xt, explain=True, atol=tol, rtol=0.0)
            if not ok:
                raise AssertionError(f"xt not on the manifold: {reason}")
        tan = getattr(manifold, "check_vector_on_tangent", None)
        if callable(tan):
            ok, reason = tan(s.xt, s.ut, explain=True, atol=tol, rtol=0.0)
            if not ok:
                raise AssertionError(f"ut not tangent at xt: {reason}")

    def xt_of(tt: Tensor) -> Tensor:
        return path.sample(x0, x1, tt).xt

    dxdt = torch.func.jvp(xt_of, (t,), (torch.ones_like(t),))[1]
    _close(s.ut, dxdt, "ut vs d xt / dt", tol * 10, tol * 10)


# ---------------------------------------------------------------------------------------------
# manifolds
# ---------------------------------------------------------------------------------------------

_MANIFOLD_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def _finite(t: Tensor | None, what: str) -> None:
    if t is None:
        raise AssertionError(f"{what}: no gradient")
    if not bool(torch.isfinite(t).all()):
        raise AssertionError(f"{what}: {int((~torch.isfinite(t)).sum())} non-finite entries")


def _like(a: Tensor, ref: Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(a.shape) != shape or a.dtype != ref.dtype or a.device != ref.device:
        raise AssertionError(
            f"{what}: shape/dtype/device {tuple(a.shape)}/{a.dtype}/{a.device}, "
            f"expected {shape}/{ref.dtype}/{ref.device}"
        )


def check_manifold(
    manifold: Manifold,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> None:
    """Check a manifold's contract on random points (with on-manifold checks switched on).

    * attributes: ``point_shape`` (tuple), ``dim``, ``volume > 0``, ``injectivity_radius > 0``;
    * ``random`` (and ``random_uniform`` when the volume is finite) give points on the
      manifold with the requested shape, dtype and device, reproducible from a seeded generator;
    * ``projx`` fixes points and is idempotent; ``proju`` is tangent and idempotent;
    * ``inner`` is symmetric and positive with shape ``(B,)`` (``keepdim`` keeps point dims),
      ``norm**2 = inner``, and ``egrad2rgrad`` is the Riemannian gradient:
      ``inner(x, egrad2rgrad(x, g), v) = <g, v>`` for tangent ``v``;
    * ``logmap(x, expmap(x, u)) = u`` and ``dist(x, expmap(x, u)) = |u|_x`` for
      ``|u|_x`` below the injectivity radius (also for tiny ``u``); ``expmap(x, logmap(x, y))
      = y`` off the cut locus; ``|logmap(x, y)|_x = dist(x, y)``;
    * ``dist`` is symmetric, zero on the diagonal and satisfies the triangle inequality;
    * ``transp`` lands in the tangent space at ``y``, is the identity for ``y = x`` and, where
      ``parallel_transport`` is set, preserves inner products and maps ``log_x y`` to
      ``-log_y x``;
    * gradients of ``dist`` and ``logmap`` at ``x = y`` and of ``expmap`` at ``u = 0`` are
      finite, and ``d/dt expmap(x, t v)`` at ``t = 0`` is ``v``;
    * a point of the wrong shape raises ``ValueError``.

    Args:
        manifold: the manifold (a :class:`manifoldfm.manifolds.Manifold`).
        dtype: floating dtype (float64: tolerance 1e-9; float32: 1e-4).
        seed: seed of the generator that draws all test tensors.
        batch_size: number of points per draw.
        device: device (default CPU).

    Raises:
        AssertionError: naming the first property that fails.

    Example:
        >>> from manifoldfm.manifolds import SO3, Sphere, Product, Euclidean
        >>> from manifoldfm.testing import check_manifold
        >>> check_manifold(Sphere(2))
        >>> check_manifold(Product(SO3(), Euclidean(3)), seed=1)
    """
    with checks(manifold=True):
        _check_manifold(manifold, dtype, seed, batch_size, torch.device(device or "cpu"))


def _check_manifold(
    m: Manifold, dtype: torch.dtype, seed: int, b: int, device: torch.device
) -> None:
    tol = _MANIFOLD_TOL.get(dtype, 1e-4)
    ps = m.point_shape
    if not isinstance(ps, tuple) or not all(isinstance(s, int) for s in ps):
        raise AssertionError(f"point_shape must be a tuple of ints, got {ps!r}")
    if not isinstance(m.dim, int) or m.dim < 0:
        raise AssertionError(f"dim must be an int >= 0, got {m.dim!r}")
    if not m.volume > 0 or not m.injectivity_radius > 0:
        raise AssertionError(
            f"volume and injectivity_radius must be > 0, got {m.volume}, {m.injectivity_radius}"
        )
    pd = tuple(range(-len(ps), 0))
    full = (b, *ps)
    g = torch.Generator(device).manual_seed(seed)

    def on_manifold(x: Tensor, what: str) -> None:
        ok, reason = m.check_point_on_manifold(x, explain=True, atol=tol, rtol=0.0)
        if not ok:
            raise AssertionError(f"{what} not on the manifold: {reason}")

    def tangent(x: Tensor, u: Tensor, what: str) -> None:
        ok, reason = m.check_vector_on_tangent(x, u, explain=True, atol=tol, rtol=0.0)
        if not ok:
            raise AssertionError(f"{what} not tangent: {reason}")

    def ambient() -> Tensor:
        return torch.randn(full, generator=g, dtype=dtype, device=device)

    def eucl(a: Tensor, c: Tensor) -> Tensor:
        return (a * c).sum(dim=pd)

    # --- random draws
    x = m.random(b, generator=g, dtype=dtype, device=device)
    ref = torch.empty(0, dtype=dtype, device=device)
    _like(x, ref, full, "random")
    on_manifold(x, "random points")
    g2 = torch.Generator(device).manual_seed(seed)
    if not torch.equal(m.random(b, generator=g2, dtype=dtype, device=device), x):
        raise AssertionError("random: not reproducible from a seeded generator")
    if math.isfinite(m.volume):
        gu = torch.Generator(device).manual_seed(seed + 1)
        xu = m.random_uniform(b, generator=gu, dtype=dtype, device=device)
        _like(xu, ref, full, "random_uniform")
        on_manifold(xu, "random_uniform points")
        gu.manual_seed(seed + 1)
        if not torch.equal(m.random_uniform(b, generator=gu, dtype=dtype, device=device), xu):
            raise AssertionError("random_uniform: not reproducible from a seeded generator")
    y = m.random(b, generator=g, dtype=dtype, device=device)

    # --- projections
    _close(m.projx(x), x, "projx of points on the manifold", tol, tol)
    p = m.projx(x + 0.1 * ambient())
    on_manifold(p, "projx output")
    _close(m.projx(p), p, "projx idempotent", tol, tol)
    u = m.proju(x, ambient())
    _like(u, x, full, "proju")
    tangent(x, u, "proju output")
    _close(m.proju(x, u), u, "proju idempotent", tol, tol)
    v = m.proju(x, ambient())

    # --- inner product
    uv, vu = m.inner(x, u, v), m.inner(x, v, u)
    _like(uv, x, (b,), "inner")
    _like(m.inner(x, u, v, keepdim=True), x, (b,) + (1,) * len(ps), "inner keepdim")
    _close(uv, vu, "inner symmetric", tol, tol)
    uu = m.inner(x, u)
    if not bool((uu > 0).all()):
        raise AssertionError("inner positive: <u, u>_x <= 0 for a nonzero tangent u")
    _close(m.norm(x, u) ** 2, uu, "norm**2 = inner", tol, tol)
    egrad = ambient()
    rgrad = m.egrad2rgrad(x, egrad)
    tangent(x, rgrad, "egrad2rgrad output")
    _close(m.inner(x, rgrad, v), eucl(egrad, v), "egrad2rgrad is the Riemannian gradient", tol, tol)

    # --- exp / log / dist
    r_max = 0.9 * m.injectivity_radius if math.isfinite(m.injectivity_radius) else 3.0
    lengths = r_max * torch.rand(b, generator=g, dtype=dtype, device=device)
    lengths[0] = 1e-3 * r_max
    unit = u / m.norm(x, u, keepdim=True)
    us = unit * lengths.reshape((b,) + (1,) * len(ps))
    ys = m.expmap(x, us)
    _like(ys, x, full, "expmap")
    on_manifold(ys, "expmap output")
    _close(m.norm(x, us), lengths, "|u|_x of the test vectors", tol, tol)
    _close(m.logmap(x, ys), us, "logmap(x, expmap(x, u)) = u", tol, tol)
    _close(m.dist(x, ys), lengths, "dist(x, expmap(x, u)) = |u|_x", tol, tol)
    _close(m.dist(ys, x), lengths, "dist symmetric (along geodesics)", tol, tol)
    tiny = 1e-6 if dtype == torch.float64 else 1e-3
    _close(
        m.dist(x, m.expmap(x, tiny * unit)),
        torch.full_like(lengths, tiny),
        "dist(x, expmap(x, u)) = |u|_x for tiny u",
        0.0,
        10 * tol,
    )

    lxy = m.logmap(x, y)
    _like(lxy, x, full, "logmap")
    tangent(x, lxy, "logmap output")
    dxy = m.dist(x, y)
    _like(dxy, x, (b,), "dist")
    _close(m.norm(x, lxy), dxy, "|logmap(x, y)|_x = dist(x, y)", tol, tol)
    _close(m.dist(y, x), dxy, "dist symmetric", tol, tol)
    if not bool((dxy >= 0).all()):
        raise AssertionError("dist non-negative")
    off_cut = dxy < 0.99 * m.injectivity_radius
    back = m.dist(m.expmap(x, lxy), y)
    _close(back[off_cut], torch.zeros_like(back[off_cut]), "expmap(x, logmap(x, y)) = y", tol, tol)
    _close(m.dist(x, x), torch.zeros_like(dxy), "dist(x, x) = 0", tol, 0.0)
    _close(m.logmap(x, x), torch.zeros_like(x), "logmap(x, x) = 0", tol, 0.0)
    z = m.random(b, generator=g, dtype=dtype, device=device)
    if not bool((m.dist(x, z) <= dxy + m.dist(y, z) + tol).all()):
        raise AssertionError("dist triangle inequality")

    # --- transport
    tv = m.transp(x, ys, v)
    _like(tv, x, full, "transp")
    tangent(ys, tv, "transp output")
    _close(m.transp(x, x, v), v, "transp(x, x, v) = v", tol, tol)
    if m.parallel_transport:
        tu = m.transp(x, ys, us)
        _close(m.inner(ys, tu, tv), m.inner(x, us, v), "transp preserves inner products", tol, tol)
        _close(tu, -m.logmap(ys, x), "transp(x, y, log_x y) = -log_y x", tol, tol)

    # --- gradients at the singular points of the formulas
    w = ambient()
    xr, yr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    gx, gy = torch.autograd.grad(m.dist(xr, yr).sum(), (xr, yr), allow_unused=True)
    _finite(gx if gx is not None else torch.zeros(1), "gradient of dist at x = y (x)")
    _finite(gy if gy is not None else torch.zeros(1), "gradient of dist at x = y (y)")
    yr = x.clone().requires_grad_(True)
    (gl,) = torch.autograd.grad((m.logmap(x, yr) * w).sum(), (yr,))
    _finite(gl, "gradient of logmap at x = y")
    u0 = torch.zeros_like(x).requires_grad_(True)
    (ge,) = torch.autograd.grad((m.expmap(x, u0) * w).sum(), (u0,))
    _finite(ge, "gradient of expmap at u = 0")
    t = torch.zeros(b, dtype=dtype, device=device, requires_grad=True)
    (gt,) = torch.autograd.grad((m.expmap(x, t.reshape((b,) + (1,) * len(ps)) * v) * w).sum(), (t,))
    _close(gt, eucl(v, w), "d/dt expmap(x, t v) at t = 0 = v", tol, tol)
    yr = y.clone().requires_grad_(True)
    (gd,) = torch.autograd.grad(m.dist(x, yr).sum(), (yr,))
    _finite(gd, "gradient of dist at random pairs")

    # --- validation (shape checks only: on-manifold checks off so they cannot stand in)
    bad = torch.zeros((b, *ps[:-1], ps[-1] + 1), dtype=dtype, device=device)
    with checks(manifold=False):
        try:
            m.dist(x, bad)
        except ValueError:
            pass
        except Exception as exc:
            raise AssertionError(
                f"dist on a point of shape {tuple(bad.shape)} raised {type(exc).__name__}, "
                "not ValueError"
            ) from exc
        else:
            raise AssertionError(
                f"dist accepted a point of shape {tuple(bad.shape)}: no ValueError"
            )


def check_coupling(
    coupling: Any,
    x0: Tensor,
    x1: Tensor,
    *,
    seed: int = 0,
    permutation: bool = False,
    optimal: bool = False,
    cost: Cost = None,
) -> CouplingResult:
    """Check a coupling's contract on given batches; returns the checked result.

    * ``coupling(x0, x1, generator=g)`` returns a :class:`~manifoldfm.CouplingResult` with
      int64 index tensors ``i, j`` of shape ``(B0,)`` on the inputs' device, in range;
    * ``result.x0 = x0[i]`` and ``result.x1 = x1[j]`` exactly, with the inputs' dtype and device;
    * ``i`` covers every row of ``x0`` once (every source sample is paired);
    * two calls with generators of the same seed give the same pairs (``.coupling`` and
      calling the object agree);
    * with ``permutation`` (equal batch sizes): ``j`` uses every row of ``x1`` exactly once;
    * with ``optimal`` (exact OT with a permutation): the total ``cost`` of the pairs is no
      higher than that of the identity pairing, nor of 16 random permutations.

    Args:
        coupling: the coupling (see :class:`~manifoldfm.couplings.Coupling`).
        x0: source batch ``(B0, ...)``.
        x1: target batch ``(B1, ...)``.
        seed: seed of the generators given to the coupling (on the inputs' device).
        permutation: require a one-to-one pairing (needs ``B0 = B1``).
        optimal: require that no permutation tried pairs at a lower total cost (implies
            ``permutation``).
        cost: the cost the optimality is measured in (as for ``ExactOT(cost=...)``: ``None``
            is the squared Euclidean distance, a manifold its squared geodesic distance).

    Raises:
        AssertionError: naming the first property that fails.

    Example:
        >>> import torch
        >>> from manifoldfm import ExactOT, Sphere
        >>> from manifoldfm.testing import check_coupling
        >>> s2 = Sphere(2)
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = s2.random_uniform(32, generator=g, dtype=torch.float64)
        >>> x1 = s2.random_uniform(32, generator=g, dtype=torch.float64)
        >>> res = check_coupling(ExactOT(cost=s2), x0, x1, optimal=True, cost=s2)
        >>> sorted(res.j.tolist()) == list(range(32))
        True
    """
    if optimal:
        permutation = True
    b0, b1 = x0.shape[0], x1.shape[0]
    if permutation and b0 != b1:
        raise ValueError(f"permutation=True needs batches of equal size, got {b0} and {b1}")

    def run(call: Any) -> CouplingResult:
        g = torch.Generator(device=x0.device).manual_seed(seed)
        return call(x0, x1, generator=g)

    res = run(coupling.coupling)
    if not isinstance(res, CouplingResult):
        raise AssertionError(f"coupling returned {type(res).__name__}, not CouplingResult")
    for name in ("i", "j"):
        idx = getattr(res, name)
        if not isinstance(idx, Tensor) or idx.dtype != torch.int64:
            raise AssertionError(
                f"{name} must be an int64 tensor, got {getattr(idx, 'dtype', idx)}"
            )
        if idx.shape != (b0,) or idx.device != x0.device:
            raise AssertionError(
                f"{name} has shape {tuple(idx.shape)} on {idx.device}; expected ({b0},) on "
                f"{x0.device}"
            )
    if b0 and not (int(res.i.min()) >= 0 and int(res.i.max()) < b0):
        raise AssertionError(f"i holds indices outside [0, {b0})")
    if b0 and not (int(res.j.min()) >= 0 and int(res.j.max()) < b1):
        raise AssertionError(f"j holds indices outside [0, {b1})")
    if not torch.equal(torch.sort(res.i).values, torch.arange(b0, device=x0.device)):
        raise AssertionError("i must use every row of x0 exactly once")
    for name, got, src, idx in (("x0", res.x0, x0, res.i), ("x1", res.x1, x1, res.j)):
        if got.dtype != src.dtype or got.device != src.device:
            raise AssertionError(
                f"result.{name} has dtype/device {got.dtype}/{got.device}, the input "
                f"{src.dtype}/{src.device}"
            )
        if got.shape != (b0, *src.shape[1:]) or not torch.equal(got, src[idx]):
            raise AssertionError(f"result.{name} is not {name}[{'i' if name == 'x0' else 'j'}]")
    for label, again in (("a second call", run(coupling.coupling)), ("calling it", run(coupling))):
        if not (torch.equal(again.i, res.i) and torch.equal(again.j, res.j)):
            raise AssertionError(f"{label} with the same generator seed gave other pairs")
    if permutation and not torch.equal(
        torch.sort(res.j).values, torch.arange(b1, device=x1.device)
    ):
        raise AssertionError("j must use every row of x1 exactly once (a permutation)")
    if optimal:
        c = pairwise_cost(x0, x1, cost).to(torch.float64)
        rows = torch.arange(b0, device=c.device)
        total = float(c[res.i, res.j].sum())
        g = torch.Generator(device="cpu").manual_seed(seed + 1)
        trials = [rows] + [torch.randperm(b1, generator=g).to(c.device) for _ in range(16)]
        slack = 1e-9 * float(c.abs().sum()) + 1e-12
        for k, perm in enumerate(trials):
            other = float(c[rows, perm].sum())
            if total > other + slack:
                what = "the identity pairing" if k == 0 else f"random permutation {k}"
                raise AssertionError(
                    f"total pair cost {total:.10g} exceeds that of {what} ({other:.10g})"
                )
    return res
