"""Result records of the solvers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["LikelihoodResult", "ODESolution", "SDESolution"]


@contextmanager
def _as_solved(x: Tensor) -> Iterator[None]:
    """The autograd and inference modes the solve ran in, read off its final state ``x``.

    ``ts`` and ``xs`` are built on first access, which may come inside a ``torch.no_grad()`` or
    ``torch.inference_mode()`` block that the solve was outside of (or the reverse); the kept
    tensors must be those the solve would have made (``xs`` with the solve's graph, no
    inference tensors from a solve outside inference mode), whatever the mode of the first read.
    """
    with torch.inference_mode(x.is_inference()), torch.set_grad_enabled(x.grad_fn is not None):
        yield


def _times(self: ODESolution | SDESolution) -> Tensor:
    """The time grid as a tensor of ``x``'s dtype and device (built on first access)."""
    with _as_solved(self.x):
        return torch.tensor(list(self.grid), dtype=self.x.dtype, device=self.x.device)


def _stacked(self: ODESolution | SDESolution) -> Tensor:
    """The states stacked along a new first axis, ``(len(states), B, *shape)`` (built on first
    access)."""
    with _as_solved(self.x):
        return torch.stack(tuple(self.states))


def _solution(
    cls: type[_Record],
    *,
    x: Tensor,
    nfe: int,
    grid: Sequence[float],
    x0: Tensor,
    states: list[Tensor] | None,
) -> _Record:
    """A solver's record: the endpoints ``(x0, x)`` kept as they are (``xs`` is stacked on
    first access), or, when the trajectory was saved (``states``), the trajectory stacked now,
    with its rows as the states (the record does not hold the states twice)."""
    if states is None:
        return cls(x=x, nfe=nfe, grid=tuple(grid), states=(x0, x))
    xs = torch.stack(states)
    out = cls(x=x, nfe=nfe, grid=tuple(grid), states=xs.unbind(0))
    vars(out)["xs"] = xs  # the value the cached property would compute, made in the solve's mode
    return out


@dataclass(frozen=True, kw_only=True)
class ODESolution:
    """The result of :func:`~manifoldfm.solvers.solve_ode`.

    The same fields come back whatever the flags: ``xs`` is always a tensor whose first entry is
    the initial state and whose last entry is the final state. ``ts`` and ``xs`` are built on
    first access (and then kept), so a caller who only needs ``x`` pays for neither the stacked
    copy of the states nor a host-to-device copy of the grid. Without ``save_trajectory`` the
    endpoints are the tensors ``x0`` and ``x`` themselves until ``xs`` is first read: an
    in-place change to either before that shows in ``xs``.

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
        grid: the times of ``ts`` as Python floats (no device involved).
        states: the states of ``xs`` as a sequence of ``(B, *shape)`` tensors (views of its
            rows when the trajectory was saved).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import solve_ode
        >>> sol = solve_ode(lambda x, t: -x, torch.ones(3, 2), steps=4, method="heun")
        >>> sol.ts.shape, sol.xs.shape, sol.nfe
        (torch.Size([5]), torch.Size([2, 3, 2]), 8)
    """

    x: Tensor
    nfe: int
    grid: Sequence[float] = field(repr=False)
    states: Sequence[Tensor] = field(repr=False)

    ts = cached_property(_times)
    xs = cached_property(_stacked)


@dataclass(frozen=True, kw_only=True)
class SDESolution:
    """The result of :func:`~manifoldfm.solvers.solve_sde` (same layout as :class:`ODESolution`).

    Attributes:
        x: the final state at ``ts[-1]``, shape ``(B, *shape)``.
        ts: the time grid, shape ``(steps + 1,)``, in ``x``'s dtype and device (built on first
            access).
        xs: ``(steps + 1, B, *shape)`` with ``save_trajectory=True``, otherwise the endpoints
            only, ``(2, B, *shape)`` (then built on first access).
        nfe: the number of evaluations of the velocity field (one per step).
        grid: the times of ``ts`` as Python floats.
        states: the states of ``xs`` as a sequence of ``(B, *shape)`` tensors (views of its
            rows when the trajectory was saved).

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
    nfe: int
    grid: Sequence[float] = field(repr=False)
    states: Sequence[Tensor] = field(repr=False)

    ts = cached_property(_times)
    xs = cached_property(_stacked)


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


_Record = TypeVar("_Record", ODESolution, SDESolution)
