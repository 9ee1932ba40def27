"""Log-likelihood of a flow by the instantaneous change of variables."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import check_choice, check_finite
from ._common import CountedField, check_cond, check_state, check_steps, check_time
from .ode import METHODS, solve_ode
from .results import LikelihoodResult

__all__ = ["DIVERGENCES", "LogDensity", "divergence", "log_likelihood"]

#: The divergence estimators accepted by :func:`log_likelihood`.
DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")


@runtime_checkable
class LogDensity(Protocol):
    """Anything with ``log_prob(x) -> (B,)`` (every source in :mod:`manifoldfm.sources`)."""

    def log_prob(self, x: Tensor) -> Tensor: ...


def divergence(out: Tensor, x: Tensor, *, probes: Tensor | None = None) -> Tensor:
    """Divergence ``sum_i d out_i / d x_i`` per batch element, by autograd.

    ``out`` must have been computed from ``x`` (which requires grad) sample by sample: element
    ``b`` of ``out`` may depend only on element ``b`` of ``x``. Without ``probes`` the exact
    divergence takes one backward pass per dimension of a sample (a loop over dimensions, never
    over the batch); with Rademacher ``probes`` of shape ``(K, B, D)`` it is Hutchinson's
    unbiased estimate ``mean_k eps_k^T J eps_k`` (``K`` backward passes).

    Args:
        out: ``(B, *shape)`` values of a field at ``x``.
        x: ``(B, *shape)`` inputs with ``requires_grad``.
        probes: optional ``(K, B, D)`` probe vectors, ``D`` the number of entries of a sample.

    Returns:
        ``(B,)`` divergences (detached from the graph).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import divergence
        >>> x = torch.randn(5, 3, requires_grad=True)
        >>> divergence(2 * x, x)
        tensor([6., 6., 6., 6., 6.])

    References:
        Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian
        smoothing splines. Comm. Statist. Simulation Comput. 18 (1989).
    """
    if out.shape != x.shape:
        raise ValueError(
            f"out and x must have the same shape, got {tuple(out.shape)} and {tuple(x.shape)}"
        )
    if not out.requires_grad:
        raise ValueError(
            "the field's output does not depend on x through autograd (is it computed under "
            "torch.no_grad() or detached?); the divergence needs its graph"
        )
    batch = x.shape[0]
    flat = out.reshape(batch, -1)
    dim = flat.shape[1]
    div = out.new_zeros(batch)
    if probes is None:
        for i in range(dim):
            (grad,) = torch.autograd.grad(
                flat[:, i].sum(), x, retain_graph=i < dim - 1, allow_unused=True
            )
            if grad is not None:
                div = div + grad.reshape(batch, -1)[:, i]
        return div.detach()
    if probes.ndim != 3 or probes.shape[1:] != flat.shape:
        raise ValueError(
            f"probes must have shape (K, {batch}, {dim}) for x of shape {tuple(x.shape)}, "
            f"got {tuple(probes.shape)}"
        )
    n = probes.shape[0]
    for k in range(n):
        eps = probes[k]
        (vjp,) = torch.autograd.grad(
            (flat * eps).sum(), x, retain_graph=k < n - 1, allow_unused=True
        )
        if vjp is not None:
            div = div + (vjp.reshape(batch, -1) * eps).sum(dim=1)
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
) -> LikelihoodResult:
    """Log-density of the flow of ``v`` at data points, by the instantaneous change of variables.

    ``x1`` is transported back from ``t1`` to ``t0`` by ``dx/dt = v(x, t)`` while the
    divergence is integrated along the way:

        ``log p_{t1}(x1) = log p_{t0}(x0) - integral_{t0}^{t1} div v(x_t, t) dt``.

    The augmented state ``(x, integral)`` is integrated by :func:`~manifoldfm.solvers.solve_ode`,
    so any of its methods works, ``dopri5`` included (its error control then covers the
    log-density too). Samples of any shape ``(B, *shape)`` are flattened to ``D`` entries.

    The exact divergence costs ``D`` backward passes per evaluation (fine for small ``D``);
    Hutchinson's estimator costs ``n_probes`` and is unbiased: its Rademacher probes are drawn
    once from ``generator`` and reused along the whole trajectory, so the estimate is the
    log-density of one (random) continuous flow.

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

    Returns:
        :class:`~manifoldfm.solvers.LikelihoodResult` ``(log_prob, x0, log_prob_source,
        delta_logp, nfe)`` in ``x1``'s dtype and device.

    Raises:
        ValueError: unknown method or divergence, ``n_probes`` given with the exact divergence,
            a source whose ``log_prob`` is not ``(B,)``, and the errors of ``solve_ode``.

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

    References:
        Chen, Rubanova, Bettencourt, Duvenaud. Neural Ordinary Differential Equations.
        NeurIPS 2018 (instantaneous change of variables). Grathwohl et al. FFJORD: Free-form
        Continuous Dynamics for Scalable Reversible Generative Models. ICLR 2019 (Hutchinson).
    """
    x1 = check_state(x1, "x1")
    check_finite(x1, "x1")
    method = check_choice(method, "method", METHODS)
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
    field = CountedField(v, cond_kw)

    batch, shape = x1.shape[0], tuple(x1.shape[1:])
    dim = math.prod(shape)
    probes = None
    if div_kind == "hutchinson":
        bits = torch.randint(0, 2, (n_probes, batch, dim), generator=generator, device=x1.device)
        probes = bits.to(x1.dtype).mul_(2).sub_(1)

    def augmented(z: Tensor, t: Tensor, **kw: Any) -> Tensor:
        with torch.enable_grad():
            x = z[:, :dim].detach().reshape(z.shape[0], *shape).requires_grad_(True)
            out = field.raw(x, t)
            div = _divergence(out, x, probes)
        return torch.cat([out.detach().reshape(z.shape[0], dim), div[:, None]], dim=1)

    z1 = torch.cat([x1.detach().reshape(batch, dim), x1.new_zeros(batch, 1)], dim=1)
    sol = solve_ode(augmented, z1, steps=steps, method=method, t0=t1, t1=t0, atol=atol, rtol=rtol)
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


def _divergence(out: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
    try:
        return divergence(out, x, probes=probes)
    except ValueError as err:
        raise ValueError(f"log_likelihood: {err}") from None
