"""Log-likelihood of a flow by the instantaneous change of variables."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import check_choice, check_finite
from ..manifolds.base import Manifold
from ._common import (
    CountedField,
    ManifoldLike,
    check_cond,
    check_manifold,
    check_state,
    check_steps,
    check_time,
    expmap,
    proju,
    projx,
    require_point,
)
from .ode import METHODS, solve_ode
from .results import LikelihoodResult
from .steps import MANIFOLD_SCHEMES, dlogmap, has_logmap

__all__ = ["DIVERGENCES", "LogDensity", "divergence", "log_likelihood"]

DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")
"""The divergence estimators accepted by :func:`log_likelihood`."""

_NO_GRAPH = (
    "the field's output does not depend on x through autograd (is it computed under "
    "torch.no_grad() or detached?); the divergence needs its graph (a field that is constant "
    "in x has none either: return it as `c + 0 * x`)"
)


@runtime_checkable
class LogDensity(Protocol):
    """Anything with ``log_prob(x) -> (B,)`` (every source in :mod:`manifoldfm.sources`).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import LogDensity
        >>> from manifoldfm.sources import Gaussian
        >>> isinstance(Gaussian(2), LogDensity)
        True
        >>> round(float(Gaussian(2).log_prob(torch.zeros(1, 2))), 4)  # -log(2 pi)
        -1.8379
    """

    def log_prob(self, x: Tensor) -> Tensor: ...


def divergence(
    out: Tensor,
    x: Tensor,
    *,
    probes: Tensor | None = None,
    manifold: ManifoldLike | None = None,
) -> Tensor:
    """Divergence of a field per batch element, by autograd; Riemannian on a manifold.

    ``out`` must have been computed from ``x`` (which requires grad) sample by sample: element
    ``b`` of ``out`` may depend only on element ``b`` of ``x``. With ``J`` the Jacobian of
    ``out`` w.r.t. ``x`` (flattened to ``D`` entries per sample):

    - Euclidean space (``manifold=None``): ``tr J = sum_i d out_i / d x_i``.
    - On a ``manifold`` embedded in the ambient space of ``x`` (spheres, ``SO3`` as 3x3
      matrices, tori as angles, products of these), ``out`` must be a tangent field written
      as an ambient function, ``out = proju(x, v(x))`` computed with ``x``'s graph, and the
      result is its Riemannian divergence ``tr(P J)``, ``P`` the orthogonal projector onto the
      tangent space at ``x`` (``P = I`` on tori and Euclidean space: the plain divergence in
      the intrinsic coordinates). It only involves derivatives along tangent directions, so the
      extension of ``v`` off the manifold does not matter, and it does not depend on a constant
      scale of the metric (``SO3``'s ``tr(u^T v) / 2``).

    Without ``probes`` it is exact: one backward pass per ambient dimension ``D`` (a loop over
    the basis, vectorised over the batch; on CPU this beats a single batched backward over the
    basis). With ``probes`` ``eps`` of shape ``(K, B, D)`` it is Hutchinson's unbiased estimate
    ``mean_k z_k^T J z_k`` with tangent probes ``z_k = P eps_k`` (``K`` backward passes):
    unbiased for any probes with ``E[eps eps^T] = I`` since ``tr(P J P) = tr(P J)``.

    Args:
        out: ``(B, *shape)`` values of a field at ``x``.
        x: ``(B, *shape)`` inputs with ``requires_grad``.
        probes: optional ``(K, B, D)`` probe vectors, ``D`` the number of entries of a sample.
        manifold: optional manifold with ``proju`` that ``x`` lies on.

    Returns:
        ``(B,)`` divergences (detached from the graph).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import divergence
        >>> x = torch.randn(5, 3, requires_grad=True)
        >>> divergence(2 * x, x)
        tensor([6., 6., 6., 6., 6.])

        On S^2 the tangent part of a constant field ``a`` has divergence ``-2 <a, x>``:

        >>> from manifoldfm.manifolds import Sphere
        >>> s2 = Sphere(2)
        >>> x = torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64, requires_grad=True)
        >>> a = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
        >>> divergence(s2.proju(x, a), x, manifold=s2)
        tensor([-1.6000], dtype=torch.float64)

    References:
        Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian
        smoothing splines. Comm. Statist. Simulation Comput. 18 (1989). Mathieu, Nickel.
        Riemannian Continuous Normalizing Flows. NeurIPS 2020 (divergence on embedded
        manifolds through the tangent projection).
    """
    if out.shape != x.shape:
        raise ValueError(
            f"out and x must have the same shape, got {tuple(out.shape)} and {tuple(x.shape)}"
        )
    if not out.requires_grad:
        raise ValueError(_NO_GRAPH)
    batch = x.shape[0]
    flat = out.reshape(batch, math.prod(x.shape[1:]))
    dim = flat.shape[1]
    div = out.new_zeros(batch)
    point = x.detach()
    if probes is None:
        for i in range(dim):
            if manifold is None:
                (grad,) = torch.autograd.grad(
                    flat[:, i].sum(), x, retain_graph=i < dim - 1, allow_unused=True
                )
            else:
                # Row i of P J is e_i^T P J = (J^T P e_i)^T: a vector-Jacobian product.
                e_i = torch.zeros_like(flat)
                e_i[:, i] = 1.0
                p_i = proju(manifold, point, e_i.reshape(x.shape))
                (grad,) = torch.autograd.grad(
                    out, x, grad_outputs=p_i, retain_graph=i < dim - 1, allow_unused=True
                )
            if grad is not None:
                div = div + grad.reshape(batch, dim)[:, i]
        return div.detach()
    if probes.ndim != 3 or probes.shape[1:] != flat.shape:
        raise ValueError(
            f"probes must have shape (K, {batch}, {dim}) for x of shape {tuple(x.shape)}, "
            f"got {tuple(probes.shape)}"
        )
    n = probes.shape[0]
    for k in range(n):
        eps = probes[k]
        if manifold is not None:
            eps = proju(manifold, point, eps.reshape(x.shape)).reshape(batch, dim)
        (vjp,) = torch.autograd.grad(
            out, x, grad_outputs=eps.reshape(out.shape), retain_graph=k < n - 1, allow_unused=True
        )
        if vjp is not None:
            div = div + (vjp.reshape(batch, dim) * eps).sum(dim=1)
    return (div / n).detach()


def log_likelihood(
    v: Callable[..., Tensor],
    x1: Tensor,
    source: LogDensity,
    *,
    steps: int | None = None,
    method: str = "rk4",
    divergence: str = "exact",
    generator: torch.Generator | None = None,
    n_probes: int = 1,
    t1: float = 1.0,
    t0: float = 0.0,
    cond: Mapping[str, Any] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    manifold: ManifoldLike | None = None,
    manifold_scheme: str | None = None,
) -> LikelihoodResult:
    """Log-density of the flow of ``v`` at data points, by the instantaneous change of variables.

    ``x1`` is transported back from ``t1`` to ``t0`` by ``dx/dt = v(x, t)`` while the
    divergence is integrated along the way:

        ``log p_{t1}(x1) = log p_{t0}(x0) - integral_{t0}^{t1} div v(x_t, t) dt``.

    The augmented state ``(x, integral)`` is integrated by :func:`~manifoldfm.solvers.solve_ode`,
    so any of its methods works, ``dopri5`` included (its error control then covers the
    log-density too). Samples of any shape ``(B, *shape)`` are flattened to ``D`` entries.

    **On a manifold** (``manifold`` given; ``x1`` on it) the field is the tangent projection
    ``proju(x, v(x, t))``, the state moves by the manifold-aware steps of ``solve_ode``
    (``manifold_scheme`` as there: by default Runge-Kutta in normal coordinates, of full
    order) and the divergence is the Riemannian one (see
    :func:`~manifoldfm.solvers.divergence`): ``tr(P J)`` with ``J`` the ambient Jacobian of
    ``proju(x, v(x))`` and ``P`` the tangent projector on embedded manifolds (spheres,
    ``SO3`` as matrices, their products), the plain divergence of the angles on tori. The
    result is then a log-density w.r.t. the Riemannian volume, provided ``source.log_prob`` is
    one too (e.g. the uniform law on ``S^2`` has ``-log(4 pi)``, on ``SO3`` ``-log(8 pi^2)``),
    which makes it comparable with the Riemannian flow-matching literature.

    The exact divergence costs ``D`` backward passes per evaluation (fine for small ``D``);
    Hutchinson's estimator costs ``n_probes`` and is unbiased: its Rademacher probes are drawn
    once from ``generator`` and reused along the whole trajectory, so the estimate is the
    log-density of one (random) continuous flow. On a manifold each probe is projected onto
    the tangent space at every evaluation point (``z = P eps``, ``E[z^T J z] = tr(P J)``;
    Rademacher rather than Gaussian ``eps`` because their estimate never has more variance).

    Fixed-step methods evaluate ``v`` at ``t1`` itself: for a field that is singular there (a
    data- or noise-prediction model converted to a velocity) pass ``t1 = 1 - eps``.

    The result is for evaluation: no gradient flows back to ``x1`` or to ``v``'s parameters.
    ``v`` must treat batch elements independently (no batch statistics: call ``model.eval()``).

    Args:
        v: the velocity field ``v(x, t, **cond) -> Tensor``.
        x1: data points ``(B, *shape)`` at time ``t1``.
        source: the density at ``t0``: any object with ``log_prob(x) -> (B,)``, e.g.
            :class:`~manifoldfm.sources.Gaussian`.
        steps: number of steps (required for fixed-step methods; optional first trial step for
            ``dopri5``).
        method: a :func:`~manifoldfm.solvers.solve_ode` method, ``"rk4"`` by default.
        divergence: ``"exact"`` or ``"hutchinson"``.
        generator: random generator of the Hutchinson probes (on ``x1``'s device).
        n_probes: number of Hutchinson probes averaged at each evaluation.
        t1: the data time (start of the backward integration).
        t0: the source time.
        cond: keyword arguments forwarded to ``v``.
        atol: absolute tolerance of ``dopri5``.
        rtol: relative tolerance of ``dopri5``.
        manifold: optional manifold the data live on (geoopt's ``proju``, ``expmap``,
            ``projx``; ``logmap`` for the ``"expmap"`` scheme), e.g.
            :class:`~manifoldfm.manifolds.Sphere`.
        manifold_scheme: ``"expmap"`` or ``"projection"`` (see
            :func:`~manifoldfm.solvers.solve_ode`); ``None`` picks ``"expmap"`` when the
            manifold has ``logmap``.

    Returns:
        :class:`~manifoldfm.solvers.LikelihoodResult` ``(log_prob, x0, log_prob_source,
        delta_logp, nfe)`` in ``x1``'s dtype and device.

    Raises:
        ValueError: unknown method, divergence or manifold scheme, ``n_probes`` given with the
            exact divergence, a source whose ``log_prob`` is not ``(B,)``, ``x1`` off the
            manifold (with manifold checks on), and the errors of ``solve_ode``.
        TypeError: a manifold without ``proju``, ``expmap`` or ``projx``.
        RuntimeError: called under ``torch.inference_mode()``, where no graph can be built
            for the divergence (``torch.no_grad()`` is fine).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import log_likelihood
        >>> from manifoldfm.sources import Gaussian
        >>> # dx/dt = -x pushes N(0, I) forward to N(0, exp(-2) I); its log-density at 0 in 2-D
        >>> # is -log(2 pi) + 2 = 0.1621...
        >>> x1 = torch.zeros(1, 2, dtype=torch.float64)
        >>> res = log_likelihood(lambda x, t: -x, x1, Gaussian(2), steps=20)
        >>> round(float(res.log_prob), 4), round(float(res.delta_logp), 4), res.nfe
        (0.1621, 2.0, 80)

        On S^2 with the uniform source (density ``1 / (4 pi)`` w.r.t. the area), the flow of
        ``proju(x, e_z)`` (towards the north pole) at the north pole:

        >>> import math
        >>> from manifoldfm.manifolds import Sphere
        >>> class UniformS2:
        ...     def log_prob(self, x):
        ...         return torch.full(x.shape[:1], -math.log(4 * math.pi), dtype=x.dtype)
        >>> s2 = Sphere(2)
        >>> e_z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        >>> v = lambda x, t: s2.proju(x, e_z.expand_as(x))
        >>> res = log_likelihood(v, e_z[None], UniformS2(), steps=20, manifold=s2)
        >>> round(float(res.delta_logp), 4)  # div = -2 <e_z, x> = -2 along the path
        2.0

    References:
        Chen, Rubanova, Bettencourt, Duvenaud. Neural Ordinary Differential Equations.
        NeurIPS 2018 (instantaneous change of variables). Grathwohl et al. FFJORD: Free-form
        Continuous Dynamics for Scalable Reversible Generative Models. ICLR 2019 (Hutchinson).
    """
    x1 = check_state(x1, "x1")
    check_finite(x1, "x1")
    method = check_choice(method, "method", METHODS)
    if steps is None and method != "dopri5":
        raise ValueError(f"log_likelihood: method {method!r} needs the number of steps (steps=...)")
    div_kind = check_choice(divergence, "divergence", DIVERGENCES)
    if not callable(getattr(source, "log_prob", None)):
        raise TypeError(f"source must provide log_prob(x), got {type(source).__name__}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, int):
        raise TypeError(f"n_probes must be an int, got {type(n_probes).__name__}")
    if div_kind == "exact" and n_probes != 1:
        raise ValueError(
            f"n_probes applies to divergence='hutchinson' only, got n_probes={n_probes}"
        )
    n_probes = check_steps(n_probes, "n_probes")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    t0, t1 = check_time(t0, "t0"), check_time(t1, "t1")
    cond_kw = check_cond(cond)
    check_manifold(manifold)
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "log_likelihood needs autograd for the divergence, which torch.inference_mode() "
            "turns off for good inside it; call it under torch.no_grad() or plain instead"
        )
    if manifold_scheme is not None:
        check_choice(manifold_scheme, "manifold_scheme", MANIFOLD_SCHEMES)
    field = CountedField(v, cond_kw)

    batch, shape = x1.shape[0], tuple(x1.shape[1:])
    dim = math.prod(shape)
    probes = None
    if div_kind == "hutchinson":
        bits = torch.randint(0, 2, (n_probes, batch, dim), generator=generator, device=x1.device)
        probes = bits.to(x1.dtype).mul_(2).sub_(1)
    state_manifold = None if manifold is None else _WithIntegral(manifold, shape)
    require_point(manifold, x1, "x1")  # shape; on the manifold with manifold checks on

    def augmented(z: Tensor, t: Tensor, **kw: Any) -> Tensor:
        with torch.enable_grad():
            x = z[:, :dim].detach().reshape(z.shape[0], *shape).requires_grad_(True)
            out = field.raw(x, t)
            if manifold is not None:
                if not out.requires_grad:  # else proju would hide a missing graph
                    raise ValueError(f"log_likelihood: {_NO_GRAPH}")
                out = proju(manifold, x, out)
            div = _divergence(out, x, probes, manifold)
        return torch.cat([out.detach().reshape(z.shape[0], dim), div[:, None]], dim=1)

    z1 = torch.cat([x1.detach().reshape(batch, dim), x1.new_zeros(batch, 1)], dim=1)
    sol = solve_ode(
        augmented,
        z1,
        steps=steps,
        method=method,
        t0=t1,
        t1=t0,
        atol=atol,
        rtol=rtol,
        manifold=state_manifold,
        manifold_scheme=manifold_scheme,
    )
    x0 = sol.x[:, :dim].reshape(x1.shape)
    delta = sol.x[:, dim]
    log_p0 = source.log_prob(x0)
    if not isinstance(log_p0, Tensor) or log_p0.shape != (batch,):
        got = tuple(log_p0.shape) if isinstance(log_p0, Tensor) else type(log_p0).__name__
        raise ValueError(f"source.log_prob must return shape ({batch},), got {got}")
    return LikelihoodResult(
        log_prob=log_p0 + delta,
        x0=x0,
        log_prob_source=log_p0,
        delta_logp=delta,
        nfe=field.nfe,
    )


def _divergence(
    out: Tensor, x: Tensor, probes: Tensor | None, manifold: ManifoldLike | None
) -> Tensor:
    try:
        return divergence(out, x, probes=probes, manifold=manifold)
    except ValueError as err:
        raise ValueError(f"log_likelihood: {err}") from None


class _WithIntegral:
    """The state of the likelihood ODE: a point of ``manifold`` (samples of shape ``shape``)
    and the running integral of the divergence, stored flat as ``(B, D + 1)``: the manifold
    acts on the first ``D`` entries, the last one is Euclidean."""

    def __init__(self, manifold: ManifoldLike, shape: tuple[int, ...]) -> None:
        self.manifold = manifold
        self.shape = shape
        self.dim = math.prod(shape)
        self._log = has_logmap(manifold)

    def _point(self, z: Tensor) -> Tensor:
        return z[:, : self.dim].reshape(z.shape[0], *self.shape)

    def _join(self, x: Tensor, last: Tensor) -> Tensor:
        return torch.cat([x.reshape(x.shape[0], self.dim), last], dim=1)

    def proju(self, z: Tensor, u: Tensor) -> Tensor:
        return self._join(proju(self.manifold, self._point(z), self._point(u)), u[:, self.dim :])

    def expmap(self, z: Tensor, u: Tensor) -> Tensor:
        x = expmap(self.manifold, self._point(z), self._point(u))
        return self._join(x, z[:, self.dim :] + u[:, self.dim :])

    def projx(self, z: Tensor) -> Tensor:
        return self._join(projx(self.manifold, self._point(z)), z[:, self.dim :])

    def logmap(self, z: Tensor, w: Tensor) -> Tensor:
        duck: Any = self.manifold
        log = duck._logmap if isinstance(duck, Manifold) else duck.logmap
        u = log(self._point(z), self._point(w))
        return self._join(u, w[:, self.dim :] - z[:, self.dim :])

    def dlogmap(self, z: Tensor, w: Tensor, u: Tensor) -> Tensor:
        du = dlogmap(self.manifold, self._point(z), self._point(w), self._point(u))
        return self._join(du, u[:, self.dim :])
