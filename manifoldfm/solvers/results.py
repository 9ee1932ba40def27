"""Result records of the solvers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["LikelihoodResult", "ODESolution", "SDESolution"]


@dataclass(frozen=True, kw_only=True)
class ODESolution:
    """The result of :func:`~manifoldfm.solvers.solve_ode`.

    The same fields come back whatever the flags: ``xs`` is always a tensor whose first entry is
    the initial state and whose last entry is the final state.

    Attributes:
        x: the final state at ``ts[-1]``, shape ``(B, *shape)``.
        ts: the time grid the solver stepped on, shape ``(T,)``, in ``x``'s dtype and device:
            the fixed grid for fixed-step methods, the accepted steps for ``dopri5``. ``ts[0]``
            is the start time and ``ts[-1]`` the end time (exactly).
        xs: the trajectory. With ``save_trajectory=True`` it has shape ``(T, B, *shape)`` and
            ``xs[i]`` is the state at ``ts[i]``; otherwise it has shape ``(2, B, *shape)`` and
            holds only the endpoints (the states at ``ts[0]`` and ``ts[-1]``).
        nfe: the number of evaluations of the velocity field (rejected ``dopri5`` steps and the
            initial step-size probe included).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import solve_ode
        >>> sol = solve_ode(lambda x, t: -x, torch.ones(3, 2), steps=4, method="heun")
        >>> sol.ts.shape, sol.xs.shape, sol.nfe
        (torch.Size([5]), torch.Size([2, 3, 2]), 8)
    """

    x: Tensor
    ts: Tensor
    xs: Tensor
    nfe: int


@dataclass(frozen=True, kw_only=True)
class SDESolution:
    """The result of :func:`~manifoldfm.solvers.solve_sde` (same layout as :class:`ODESolution`).

    Attributes:
        x: the final state at ``ts[-1]``, shape ``(B, *shape)``.
        ts: the time grid, shape ``(steps + 1,)``, in ``x``'s dtype and device.
        xs: ``(steps + 1, B, *shape)`` with ``save_trajectory=True``, otherwise the endpoints
            only, ``(2, B, *shape)``.
        nfe: the number of evaluations of the velocity field (one per step).

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath
        >>> from manifoldfm.solvers import solve_sde
        >>> g = torch.Generator().manual_seed(0)
        >>> sol = solve_sde(
        ...     lambda x, t: -x, torch.ones(3, 2), path=AffinePath(), diffusion=0.1,
        ...     steps=5, t1=0.9, generator=g, save_trajectory=True,
        ... )
        >>> sol.xs.shape, sol.nfe
        (torch.Size([6, 3, 2]), 5)
    """

    x: Tensor
    ts: Tensor
    xs: Tensor
    nfe: int


@dataclass(frozen=True, kw_only=True)
class LikelihoodResult:
    """The result of :func:`~manifoldfm.solvers.log_likelihood`.

    Attributes:
        log_prob: log-density of the flow at the data points, shape ``(B,)``:
            ``log_prob = log_prob_source + delta_logp``.
        x0: the data points transported back to the source time, shape ``(B, *shape)``.
        log_prob_source: the source log-density at ``x0``, shape ``(B,)``.
        delta_logp: the change of log-density along the flow,
            ``-integral_{t0}^{t1} div v(x_t, t) dt``, shape ``(B,)``.
        nfe: the number of evaluations of the velocity field (each with its divergence).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import log_likelihood
        >>> from manifoldfm.sources import Gaussian
        >>> res = log_likelihood(lambda x, t: -x, torch.zeros(1, 2), Gaussian(2), steps=8)
        >>> torch.allclose(res.log_prob, res.log_prob_source + res.delta_logp)
        True
    """

    log_prob: Tensor
    x0: Tensor
    log_prob_source: Tensor
    delta_logp: Tensor
    nfe: int
