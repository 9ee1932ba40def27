"""ODE solvers: fixed-step Runge-Kutta methods and adaptive Dormand-Prince, manifold-aware."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._utils import check_choice, check_positive
from ._common import (
    CountedField,
    FiniteTracker,
    ManifoldLike,
    check_cond,
    check_manifold,
    check_state,
    check_steps,
    check_time,
    require_point,
    uniform_grid,
)
from .results import ODESolution, _solution
from .steps import (
    DOPRI5,
    MANIFOLD_SCHEMES,
    TABLEAUX,
    ButcherTableau,
    _FixedStep,
    _move,
    has_logmap,
    rk_step,
)

__all__ = ["METHODS", "solve_ode"]

METHODS: tuple[str, ...] = ("euler", "midpoint", "heun", "rk4", "dopri5")
"""The method names accepted by :func:`solve_ode` (and :func:`~manifoldfm.solvers.log_likelihood`)."""

# Step-size controller of the adaptive method.
_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 10.0


def solve_ode(
    v: Callable[..., Tensor],
    x0: Tensor,
    *,
    steps: int | None = None,
    method: str = "euler",
    manifold: ManifoldLike | None = None,
    manifold_scheme: str | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    time_grid: Tensor | Sequence[float] | None = None,
    save_trajectory: bool = False,
    cond: Mapping[str, Any] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_steps: int = 10_000,
) -> ODESolution:
    """Integrate ``dx/dt = v(x, t, **cond)`` from ``t0`` to ``t1`` (backwards when ``t1 < t0``).

    Fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk4``) step on ``steps`` equal
    steps or on an explicit ``time_grid``; ``dopri5`` is the adaptive Dormand-Prince 5(4) pair
    with embedded error control and FSAL. All share one Runge-Kutta step
    (:func:`~manifoldfm.solvers.rk_step`).

    On a ``manifold`` (any object with geoopt's ``proju(x, u)``, ``expmap(x, u)`` and
    ``projx(x)``), velocities are projected onto the tangent space and the state moves by one
    of two schemes (see :mod:`manifoldfm.solvers.steps`), both of the method's full order
    (1, 2, 2, 4 and 5 for euler, midpoint, heun, rk4 and dopri5). ``"expmap"`` (the default
    where the manifold has ``logmap``, as every library manifold has) is Runge-Kutta in normal
    coordinates centred at the current state: stage points ``exp_x(xi)``, stage velocities
    pulled back to the tangent space at ``x`` by the differential of ``logmap``, and
    ``dopri5``'s error estimate measured in that tangent space. ``"projection"`` steps in the
    ambient space and maps back with ``projx`` (embedded manifolds; no ``logmap`` needed).
    Every state lies on the manifold (to rounding). Steps must keep ``|h v|`` well inside the
    injectivity radius (``pi`` on spheres, tori and SO(3)). Where autograd records nothing
    (sampling under ``torch.no_grad``, or nothing requiring grad), fixed-step solves on spheres
    and tori use faster operations without the small-angle series that make gradients exact;
    they agree with the recorded path to rounding (see :mod:`manifoldfm.solvers.steps`).

    The time passed to ``v`` is a ``(B,)`` tensor of ``x0``'s dtype and device. With value
    checks on (the default, see :func:`manifoldfm.checks`) the finiteness of every state is
    recorded on the device and read once at the end (one host-device sync per solve); a
    non-finite state raises ``ValueError`` naming the step and time. ``dopri5`` reads its error
    norm on the host at every step anyway and raises as soon as it is not finite.

    Args:
        v: the velocity field ``v(x, t, **cond) -> Tensor`` of ``x``'s shape.
        x0: the initial state ``(B, *shape)`` at time ``t0``.
        steps: the number of equal steps (fixed-step methods, unless ``time_grid`` is given).
            For ``dopri5`` it is optional and sets the first trial step to
            ``(t1 - t0) / steps``; without it the first step is chosen automatically.
        method: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` or ``"dopri5"``.
        manifold: optional manifold the states live on.
        manifold_scheme: ``"expmap"`` or ``"projection"`` (only used with a manifold);
            ``None`` picks ``"expmap"`` when the manifold has ``logmap`` and
            ``"projection"`` otherwise.
        t0: start time.
        t1: end time; ``t1 < t0`` integrates backwards.
        time_grid: explicit 1-D strictly increasing or decreasing grid (a tensor or a sequence
            of floats) for fixed-step methods, instead of ``steps``; its endpoints replace
            ``t0``/``t1`` (which must then be left at their defaults or agree with it).
        save_trajectory: keep the state at every grid time in ``xs``.
        cond: keyword arguments forwarded to ``v`` (class labels, context...).
        atol: absolute tolerance of ``dopri5``.
        rtol: relative tolerance of ``dopri5``.
        max_steps: the most step attempts (accepted or rejected) ``dopri5`` may make before it
            raises ``RuntimeError``.

    Returns:
        :class:`~manifoldfm.solvers.ODESolution` ``(x, ts, xs, nfe)``; ``xs`` always holds at
        least the two endpoints (see its docstring).

    Raises:
        ValueError: unknown method or manifold scheme, ``steps < 1``, both or neither of
            ``steps``/``time_grid`` for a fixed-step method, a grid that is not 1-D and
            strictly monotone, ``t0 == t1``, a velocity of the wrong shape, a non-finite state.
        TypeError: ``manifold_scheme="expmap"`` with a multi-stage method on a manifold
            without ``logmap``.
        RuntimeError: ``dopri5`` needed more than ``max_steps`` attempts or its step size
            underflowed.

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import solve_ode
        >>> A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        >>> sol = solve_ode(lambda x, t: x @ A.T, x0, steps=50, method="rk4")
        >>> sol.x  # rotated by one radian: (cos 1, sin 1)
        tensor([[0.5403, 0.8415]], dtype=torch.float64)
        >>> sol.nfe
        200
        >>> back = solve_ode(lambda x, t: x @ A.T, sol.x, method="dopri5", t0=1.0, t1=0.0)
        >>> torch.allclose(back.x, x0, atol=1e-4)
        True

        On the sphere S^2, the flow of a rotation about the z axis, by dopri5 in normal
        coordinates (the default scheme):

        >>> from manifoldfm.manifolds import Sphere
        >>> e_z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        >>> x0 = torch.tensor([[0.6, 0.0, 0.8]], dtype=torch.float64)
        >>> sol = solve_ode(lambda x, t: torch.linalg.cross(e_z.expand_as(x), x), x0,
        ...                 method="dopri5", manifold=Sphere(2), atol=1e-8, rtol=1e-8)
        >>> sol.x  # (0.6 cos 1, 0.6 sin 1, 0.8)
        tensor([[0.3242, 0.5049, 0.8000]], dtype=torch.float64)

    References:
        Hairer, Norsett, Wanner. Solving Ordinary Differential Equations I, 2nd ed., Springer
        1993 (II.1 Runge-Kutta methods, II.4 step-size control and starting step, II.5
        Dormand-Prince). Dormand, Prince. A family of embedded Runge-Kutta formulae. J. Comput.
        Appl. Math. 6 (1980). Munthe-Kaas. High order Runge-Kutta methods on manifolds. Appl.
        Numer. Math. 29 (1999) (the ``"expmap"`` scheme).
    """
    x0 = check_state(x0, "x0")
    method = check_choice(method, "method", METHODS)
    check_manifold(manifold)
    require_point(manifold, x0, "x0")
    cond_kw = check_cond(cond)
    field = CountedField(v, cond_kw, manifold)
    t0, t1 = check_time(t0, "t0"), check_time(t1, "t1")
    if not isinstance(save_trajectory, bool):
        raise TypeError(f"save_trajectory must be a bool, got {type(save_trajectory).__name__}")

    if manifold_scheme is None:
        scheme = "expmap" if manifold is None or has_logmap(manifold) else "projection"
    else:
        scheme = check_choice(manifold_scheme, "manifold_scheme", MANIFOLD_SCHEMES)
    if (
        manifold is not None
        and scheme == "expmap"
        and TABLEAUX[method].stages > 1
        and not has_logmap(manifold)
    ):
        raise TypeError(
            f"manifold_scheme='expmap' with method {method!r} pulls stage velocities back with "
            f"the differential of logmap(x, y), which {type(manifold).__name__} lacks; use "
            f"manifold_scheme='projection'"
        )

    if method == "dopri5":
        if time_grid is not None:
            raise ValueError(
                "time_grid is for the fixed-step methods; dopri5 chooses its own grid between "
                "t0 and t1 (pass steps to set its first trial step)"
            )
        atol = check_positive(atol, "atol", allow_zero=True)
        rtol = check_positive(rtol, "rtol", allow_zero=True)
        if atol == 0 and rtol == 0:
            raise ValueError("atol and rtol cannot both be 0")
        max_steps = check_steps(max_steps, "max_steps")
        if t0 == t1:
            raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
        h0 = None if steps is None else (t1 - t0) / check_steps(steps)
        x, grid, states = _adaptive(
            field, x0, t0, t1, DOPRI5, manifold, scheme, atol, rtol, max_steps, h0, save_trajectory
        )
    else:
        grid = _fixed_grid(steps, time_grid, t0, t1)
        x, states = _fixed(field, x0, grid, TABLEAUX[method], manifold, scheme, save_trajectory)

    # without a saved trajectory, ts and xs are built on first access (no stacked copy)
    return _solution(
        ODESolution,
        x=x,
        nfe=field.nfe,
        grid=grid,
        x0=x0,
        states=states if save_trajectory else None,
    )


def _fixed_grid(
    steps: int | None, time_grid: Tensor | Sequence[float] | None, t0: float, t1: float
) -> list[float]:
    if time_grid is None:
        if steps is None:
            raise ValueError("give the number of steps (steps=...) or an explicit time_grid")
        return uniform_grid(t0, t1, check_steps(steps))
    if steps is not None:
        raise ValueError(f"give either steps or time_grid, not both (got steps={steps})")
    grid = _grid_to_list(time_grid)
    if (t0, t1) not in ((0.0, 1.0), (grid[0], grid[-1])):
        raise ValueError(
            f"t0={t0}, t1={t1} disagree with the time_grid endpoints {grid[0]}, {grid[-1]}; "
            f"leave t0/t1 at their defaults when giving a time_grid"
        )
    return grid


def _grid_to_list(time_grid: Tensor | Sequence[float]) -> list[float]:
    if isinstance(time_grid, Tensor):
        if time_grid.ndim != 1:
            raise ValueError(f"time_grid must be 1-D, got shape {tuple(time_grid.shape)}")
        if time_grid.is_complex():
            raise TypeError(f"time_grid must be real, got dtype {time_grid.dtype}")
        grid = [float(t) for t in time_grid.detach().to("cpu", torch.float64).tolist()]
    elif isinstance(time_grid, Sequence) and not isinstance(time_grid, str):
        try:
            grid = [check_time(t, "time_grid entry") for t in time_grid]
        except TypeError as err:
            raise ValueError(f"time_grid must be a 1-D sequence of floats: {err}") from None
    else:
        raise TypeError(
            f"time_grid must be a 1-D tensor or a sequence of floats, got {type(time_grid).__name__}"
        )
    if len(grid) < 2:
        raise ValueError(f"time_grid needs at least 2 times, got {len(grid)}")
    if not all(math.isfinite(t) for t in grid):
        raise ValueError(f"time_grid must be finite, got {grid}")
    diffs = [b - a for a, b in itertools.pairwise(grid)]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise ValueError(
            f"time_grid must be strictly increasing or strictly decreasing, got {_short(grid)}"
        )
    return grid


def _short(grid: list[float]) -> str:
    body = ", ".join(f"{t:.6g}" for t in grid[:8])
    return f"[{body}{', ...' if len(grid) > 8 else ''}] ({len(grid)} times)"


def _fixed(
    field: CountedField,
    x: Tensor,
    grid: list[float],
    tableau: ButcherTableau,
    manifold: ManifoldLike | None,
    scheme: str,
    save: bool,
) -> tuple[Tensor, list[Tensor]]:
    step = _FixedStep(field, tableau, manifold, scheme, x)
    tracker = FiniteTracker("solve_ode", bounded=step.bounded)
    if step.absorbing:
        tracker.defer(x, grid[0])
    else:
        tracker.record(x, grid[0])
    states = [x] if save else []
    t = grid[0]
    for t_next in grid[1:]:
        x = step(x, t, t_next - t)
        tracker.record(x, t_next)
        if save:
            states.append(x)
        t = t_next
    tracker.check()
    return x, states


def _rms(x: Tensor, scale: Tensor) -> Tensor:
    """Per-sample RMS of ``x / scale`` maximised over the batch (a 0-dim tensor, no graph:
    a step-size control that autograd need not record)."""
    if x.numel() == 0:
        return x.new_zeros(())
    r = (x.detach() / scale.detach()).reshape(x.shape[0], -1)
    return r.square().mean(dim=1).sqrt().amax()


def _initial_step(
    field: CountedField,
    x: Tensor,
    k1: Tensor,
    t0: float,
    t1: float,
    manifold: ManifoldLike | None,
    scheme: str,
    atol: float,
    rtol: float,
    order: int,
) -> float:
    """Starting step size (Hairer, Norsett, Wanner, section II.4); costs one evaluation."""
    span = abs(t1 - t0)
    direction = 1.0 if t1 > t0 else -1.0
    scale = atol + rtol * x.abs()
    d0, d1 = float(_rms(x, scale)), float(_rms(k1, scale))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    x_probe = _move(x, k1 * (direction * h0), manifold, scheme)
    k_probe = field(x_probe, t0 + direction * h0)
    d2 = float(_rms(k_probe - k1, scale)) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (order + 1))
    h = min(100 * h0, h1, span)
    if not math.isfinite(h):
        raise ValueError(
            f"solve_ode(method='dopri5'): the velocity at t = {t0:.6g} (or just after) is not "
            f"finite, so no step size can be chosen"
        )
    return direction * h


def _adaptive(
    field: CountedField,
    x: Tensor,
    t0: float,
    t1: float,
    tableau: ButcherTableau,
    manifold: ManifoldLike | None,
    scheme: str,
    atol: float,
    rtol: float,
    max_steps: int,
    h_first: float | None,
    save: bool,
) -> tuple[Tensor, list[float], list[Tensor]]:
    direction = 1.0 if t1 > t0 else -1.0
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"solve_ode: x0 holds non-finite values (at t = {t0:.6g})")
    tracker = FiniteTracker("solve_ode")
    tracker.record(x, t0)
    k_start = field(x, t0)
    h = (
        _initial_step(field, x, k_start, t0, t1, manifold, scheme, atol, rtol, tableau.order - 1)
        if h_first is None
        else h_first
    )
    k1: Tensor | None = k_start
    grid, states = [t0], [x] if save else []
    t, attempts = t0, 0
    exponent = -1.0 / tableau.order  # error ~ h^order for the embedded (order - 1) estimate
    while direction * (t1 - t) > 0:
        if attempts >= max_steps:
            raise RuntimeError(
                f"solve_ode(method='dopri5') reached max_steps={max_steps} step attempts at "
                f"t = {t:.6g} (integrating from {t0} to {t1}, last step size {h:.3g}); loosen "
                f"atol/rtol (now {atol:g}/{rtol:g}) or raise max_steps"
            )
        attempts += 1
        last = direction * (t + h - t1) >= 0
        if last:
            h = t1 - t
        if abs(h) <= 1e-14 * max(1.0, abs(t)):
            raise RuntimeError(
                f"solve_ode(method='dopri5'): step size underflow at t = {t:.6g} (h = {h:.3g}); "
                f"the field is too stiff for atol/rtol = {atol:g}/{rtol:g} in {x.dtype}"
            )
        x_new, k_new, err = rk_step(
            field, x, t, h, tableau, manifold=manifold, scheme=scheme, k1=k1
        )
        scale = atol + rtol * torch.maximum(x.abs(), x_new.abs())
        ratio = float(_rms(x_new - x if err is None else err, scale))
        if not math.isfinite(ratio):
            raise ValueError(
                f"solve_ode(method='dopri5'): non-finite state or velocity in the step from "
                f"t = {t:.6g} to {t + h:.6g}; the velocity field returned NaN/inf there"
            )
        if ratio <= 1.0:
            t = t1 if last else t + h
            x, k1 = x_new, k_new
            grid.append(t)
            tracker.record(x, t)
            if save:
                states.append(x)
        fac = _FAC_MAX if ratio == 0 else min(_FAC_MAX, max(_FAC_MIN, _SAFETY * ratio**exponent))
        h = h * (fac if ratio <= 1.0 else min(1.0, fac))
    tracker.check()
    return x, grid, states
