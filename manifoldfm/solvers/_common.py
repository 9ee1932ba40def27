"""Helpers shared by the solvers (private): argument checks, the counted velocity wrapper and
the deferred finiteness check."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import value_checks_enabled
from ..manifolds.base import Manifold

__all__ = [
    "CountedField",
    "FiniteTracker",
    "ManifoldLike",
    "check_cond",
    "check_manifold",
    "check_state",
    "check_steps",
    "check_time",
    "expmap",
    "proju",
    "projx",
    "require_point",
    "uniform_grid",
]


@runtime_checkable
class ManifoldLike(Protocol):
    """What the solvers need from a manifold (geoopt method names and argument order).

    Optional methods, used where present: ``logmap(x, y)`` (the ``"expmap"`` scheme of
    :func:`~manifoldfm.solvers.solve_ode` differentiates it unless ``dlogmap(x, y, u)``, its
    differential in ``y``, is given too) and ``random_tangent(x, *, generator)`` (the noise
    of :func:`~manifoldfm.solvers.solve_sde`). Every library manifold has them.
    """

    def proju(self, x: Tensor, u: Tensor) -> Tensor: ...

    def expmap(self, x: Tensor, u: Tensor) -> Tensor: ...

    def projx(self, x: Tensor) -> Tensor: ...


def check_manifold(manifold: Any) -> None:
    """Raise ``TypeError`` unless ``manifold`` is ``None`` or has ``proju``, ``expmap``, ``projx``."""
    if manifold is None or isinstance(manifold, Manifold):
        return
    missing = [m for m in ("proju", "expmap", "projx") if not callable(getattr(manifold, m, None))]
    if missing:
        raise TypeError(
            f"manifold must provide the geoopt methods proju(x, u), expmap(x, u) and projx(x); "
            f"{type(manifold).__name__} lacks {', '.join(missing)}"
        )


# The solvers validate their inputs once at the boundary; inside their loops they call the
# library manifolds' unvalidated operations (no shape checks, no on-manifold checks, no host
# syncs). Other (duck-typed) manifolds are called through their public methods.


def proju(manifold: ManifoldLike, x: Tensor, u: Tensor) -> Tensor:
    """Tangent projection of ``u`` at ``x``, unvalidated on a library manifold."""
    if isinstance(manifold, Manifold):
        return manifold._proju(x, u)
    return manifold.proju(x, u)


def projx(manifold: ManifoldLike, x: Tensor) -> Tensor:
    """Projection of ``x`` onto the manifold, unvalidated on a library manifold."""
    if isinstance(manifold, Manifold):
        return manifold._projx(x)
    return manifold.projx(x)


def expmap(manifold: ManifoldLike, x: Tensor, u: Tensor) -> Tensor:
    """``exp_x(u)``, unvalidated on a library manifold."""
    if isinstance(manifold, Manifold):
        return manifold._expmap(x, u)
    return manifold.expmap(x, u)


def require_point(manifold: ManifoldLike | None, x: Tensor, name: str) -> None:
    """The boundary check of a solver's initial state on a library manifold: its shape always,
    and (with manifold checks on, see :func:`manifoldfm.checks`) that it lies on the manifold."""
    if isinstance(manifold, Manifold):
        manifold._validate(name, x)
        manifold._require_point(name, x)


def check_state(x: Any, name: str) -> Tensor:
    """Check that ``x`` is a floating tensor with a batch dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(
            f"{name} must have a batch dimension (B, *shape), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    return x


def check_cond(cond: Any) -> dict[str, Any]:
    """Return the conditions as a plain dict (``None`` gives an empty one)."""
    if cond is None:
        return {}
    if not isinstance(cond, Mapping):
        raise TypeError(f"cond must be a mapping of keyword arguments, got {type(cond).__name__}")
    bad = [k for k in cond if not isinstance(k, str)]
    if bad:
        raise TypeError(f"cond keys must be strings, got {bad!r}")
    return dict(cond)


def check_time(value: Any, name: str) -> float:
    """A finite time given as a Python number (or a 0-dim tensor) as a float."""
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_complex():
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value}")
    return out


def check_steps(steps: Any, name: str = "steps") -> int:
    """A positive Python integer."""
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"{name} must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"{name} must be >= 1, got {steps}")
    return steps


def uniform_grid(t0: float, t1: float, steps: int) -> list[float]:
    """``steps + 1`` evenly spaced times from ``t0`` to ``t1`` (both exactly)."""
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
    grid = [t0 + (t1 - t0) * (i / steps) for i in range(steps + 1)]
    grid[-1] = t1
    return grid


class CountedField:
    """Wrap ``v(x, t, **cond)`` as ``f(x, t_float)``: builds the ``(B,)`` time tensor, checks
    the output shape, projects onto the tangent space on a manifold and counts evaluations."""

    def __init__(
        self,
        v: Callable[..., Tensor],
        cond: dict[str, Any],
        manifold: ManifoldLike | None = None,
        name: str = "v",
    ) -> None:
        if not callable(v):
            raise TypeError(f"{name} must be callable as v(x, t, **cond), got {type(v).__name__}")
        self.v = v
        self.cond = cond
        self.manifold = manifold
        self.name = name
        self.nfe = 0

    def time(self, x: Tensor, t: float) -> Tensor:
        """The ``(B,)`` time tensor of ``x``'s dtype and device."""
        return x.new_full((x.shape[0],), t)

    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        """Evaluate ``v`` at a time tensor, check the shape, count (no projection)."""
        out = self.v(x, t, **self.cond)
        self.nfe += 1
        if not isinstance(out, Tensor):
            raise TypeError(f"{self.name} must return a tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ValueError(
                f"{self.name}(x, t) must return x's shape {tuple(x.shape)}, got {tuple(out.shape)}"
            )
        if out.dtype != x.dtype:
            raise TypeError(f"{self.name}(x, t) must return x's dtype {x.dtype}, got {out.dtype}")
        return out

    def __call__(self, x: Tensor, t: float) -> Tensor:
        out = self.raw(x, self.time(x, t))
        if self.manifold is not None:
            out = proju(self.manifold, x, out)
        return out


class FiniteTracker:
    """Record, without a host-device sync, whether each state is finite; check once at the end.

    Recording is skipped entirely when value checks are off (see :func:`manifoldfm.checks`).
    With ``bounded=True`` (states whose coordinates are bounded, e.g. on spheres and tori) the
    flag is the plain sum of a state, which cannot overflow there and is finite exactly when
    every entry is (one reduction instead of two). A state given to :meth:`defer` is checked
    only when a later flag fails: for solvers whose steps keep a non-finite state non-finite.
    """

    def __init__(self, solver: str, *, bounded: bool = False) -> None:
        self.solver = solver
        self.enabled = value_checks_enabled()
        self.bounded = bounded
        self.flags: list[Tensor] = []
        self.times: list[float] = []
        self.initial: tuple[Tensor, float] | None = None

    def defer(self, x: Tensor, t: float) -> None:
        """Keep the initial state ``x`` to check only if a later state is not finite."""
        if self.enabled and x.numel() > 0:
            self.initial = (x, t)

    def record(self, x: Tensor, t: float) -> None:
        if self.enabled and x.numel() > 0:
            if x.requires_grad:
                x = x.detach()
            # max |x| is finite exactly when every entry is (NaN propagates through amax); two
            # full reductions are several times cheaper than isfinite(x).all() on the CPU
            self.flags.append(x.sum() if self.bounded else x.abs().amax())
            self.times.append(t)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first step whose state is not finite."""
        if not self.flags:  # no step recorded: only a deferred initial state to check
            if self.initial is not None and not bool(torch.isfinite(self.initial[0]).all()):
                raise ValueError(
                    f"{self.solver}: x0 holds non-finite values (at t = {self.initial[1]:.6g})"
                )
            return
        # one host read of one number (a 0-dim isfinite costs several times more on the CPU)
        worst = self.flags[0] if len(self.flags) == 1 else torch.stack(self.flags).abs().amax()
        if math.isfinite(float(worst)):
            return
        ok = torch.isfinite(torch.stack(self.flags))
        times = self.times
        first = int((~ok).nonzero()[0, 0])
        if self.initial is not None:
            x0, t0 = self.initial
            if not bool(torch.isfinite(x0).all()):
                first, times = -1, [t0]
            else:
                first, times = first + 1, [t0, *times]
        if first <= 0:
            raise ValueError(f"{self.solver}: x0 holds non-finite values (at t = {times[0]:.6g})")
        raise ValueError(
            f"{self.solver}: the state became non-finite at step {first} "
            f"(t = {times[first]:.6g}, previous t = {times[first - 1]:.6g}); the velocity field "
            f"returned NaN/inf there or the step size is too large for it"
        )
