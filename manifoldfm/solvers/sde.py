"""SDE sampler with the marginals of the flow: Euler-Maruyama, geodesic random walk on manifolds."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import broadcast_time, check_positive
from ..manifolds.base import Manifold
from ._common import (
    CountedField,
    FiniteTracker,
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
    uniform_grid,
)
from .results import SDESolution, _solution

__all__ = ["ScorePath", "solve_sde"]

Diffusion = float | Callable[[Tensor], Tensor | float]


@runtime_checkable
class ScorePath(Protocol):
    """A path that converts a velocity into the score of its marginals (e.g.
    :class:`~manifoldfm.AffinePath` with a standard Gaussian source).

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, CondOT
        >>> from manifoldfm.solvers.sde import ScorePath
        >>> path = AffinePath(CondOT())
        >>> isinstance(path, ScorePath)
        True
        >>> path.velocity_to_score(torch.zeros(1, 2), torch.zeros(1, 2), 0.5).shape
        torch.Size([1, 2])
    """

    def velocity_to_score(self, v: Tensor, xt: Tensor, t: Tensor | float) -> Tensor: ...


def solve_sde(
    v: Callable[..., Tensor],
    x0: Tensor,
    *,
    path: ScorePath | None = None,
    diffusion: Diffusion,
    steps: int,
    generator: torch.Generator | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    manifold: ManifoldLike | None = None,
    score: Callable[..., Tensor] | None = None,
    save_trajectory: bool = False,
    cond: Mapping[str, Any] | None = None,
) -> SDESolution:
    """Sample with a stochastic process that has the same marginals ``p_t`` as the flow of ``v``.

    For any diffusion schedule ``g(t)`` the SDE

        ``dx = [v(x, t) + g(t)^2 / 2 * score(x, t)] dt + g(t) dW``

    has the marginals of the ODE ``dx/dt = v``, because the extra drift cancels the spreading
    of the noise in the Fokker-Planck equation. Backwards in time (``t1 < t0``) the sign of the
    score term flips: ``dx = [v - g^2/2 * score] dt + g dW``. The Euler-Maruyama scheme
    evaluates everything at the left end of each step only, so with ``t1 = 1`` the field and
    score are never evaluated at ``t = 1``, where the score of a path with ``sigma_1 = 0`` is
    singular; backwards from ``t0 = 1`` the first step is, so a path's score that is singular
    there needs a diffusion that vanishes at ``t0`` (the score term is then left out of that
    step) or a start at ``1 - eps``, else a ValueError says so. Near ``t = 1`` the score
    recovered from a *learned* velocity amplifies its errors by ``1 / sigma_t``: prefer a
    diffusion that vanishes at 1 (e.g. ``lambda t: 0.5 * (1 - t)``) or stop at
    ``t1 = 1 - eps``.

    **Euclidean space** (``manifold=None``): the score comes from ``score(x, t, **cond)`` when
    given, else from the velocity through ``path.velocity_to_score`` (exact for an
    :class:`~manifoldfm.AffinePath` with a standard Gaussian source). Times must then lie in
    ``[0, 1]``.

    **Manifolds** (``manifold`` given): the geodesic random walk
    ``x <- projx(expmap(x, drift * dt + g * sqrt(|dt|) * z))`` with ``z =
    manifold.random_tangent(x)`` a standard Gaussian in the tangent space w.r.t. the Riemannian
    metric (identity covariance in an orthonormal basis, e.g. ``x @ hat(w)`` with ``w`` standard
    normal on ``SO3``), so that the noise is Brownian motion on the manifold, converging (as
    ``dt -> 0``) to the diffusion with generator ``drift + g^2 / 2 * Laplace-Beltrami``. For an
    object without ``random_tangent``, ``z`` is an ambient standard normal projected with
    ``proju`` (right for submanifolds with the induced metric, such as spheres). With ``v`` as
    the drift and no ``score`` this samples the SDE ``dx = v dt + g dB`` (e.g. ``v = 0`` gives
    Brownian motion, whose law tends to the uniform one on a compact manifold). To keep the
    marginals of the flow, pass ``score`` (a Riemannian score, tangent at ``x``); without it the
    walk adds noise to the flow and does **not** keep its marginals. ``path`` is not accepted
    on a manifold.

    Args:
        v: the velocity field ``v(x, t, **cond) -> Tensor``.
        x0: initial states ``(B, *shape)`` at ``t0``.
        path: the affine path ``v`` was trained on (Euclidean, when ``score`` is not given).
        diffusion: ``g(t)``: a float ``>= 0`` or a callable mapping the ``(B,)`` time tensor to
            a ``(B,)`` (or 0-dim) tensor. ``0`` gives the Euler ODE solver.
        steps: number of equal Euler-Maruyama steps.
        generator: random generator of the noise (on ``x0``'s device).
        t0: start time.
        t1: end time (``t1 < t0`` runs backwards).
        manifold: optional manifold with geoopt's ``proju``, ``expmap``, ``projx`` (and
            ``random_tangent(x, generator=...)``, as every library manifold has).
        score: optional ``score(x, t, **cond) -> Tensor``, the gradient of ``log p_t``.
        save_trajectory: keep every state in ``xs``.
        cond: keyword arguments forwarded to ``v`` (and ``score``).

    Returns:
        :class:`~manifoldfm.solvers.SDESolution` ``(x, ts, xs, nfe)``; ``nfe`` counts the calls
        of ``v`` (one per step).

    Raises:
        ValueError: bad steps/times/diffusion, a missing score source, a ``path`` with a
            manifold, shapes that do not match, a non-finite state.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath
        >>> from manifoldfm.solvers import solve_sde
        >>> g = torch.Generator().manual_seed(0)
        >>> v = lambda x, t: -x  # not a trained field, just a shape demo
        >>> sol = solve_sde(
        ...     v, torch.randn(4, 2, generator=g), path=AffinePath(),
        ...     diffusion=lambda t: 0.5 * (1 - t), steps=20, generator=g,
        ... )
        >>> sol.x.shape, sol.nfe, float(sol.ts[-1])
        (torch.Size([4, 2]), 20, 1.0)

        Brownian motion on S^2 (zero drift): ``E[<x_t, x_0>] = exp(-t)``.

        >>> from manifoldfm.manifolds import Sphere
        >>> x0 = Sphere(2).origin(20000, dtype=torch.float64)
        >>> zero = lambda x, t: torch.zeros_like(x)
        >>> sol = solve_sde(zero, x0, diffusion=1.0, steps=50, manifold=Sphere(2), generator=g)
        >>> round(float(sol.x[:, 0].mean()), 2)  # exp(-1) = 0.37
        0.37

    References:
        Song et al. Score-Based Generative Modeling through Stochastic Differential Equations.
        ICLR 2021 (the family of SDEs sharing the probability-flow marginals). De Bortoli et al.
        Riemannian Score-Based Generative Modelling. NeurIPS 2022 (geodesic random walk).
    """
    x0 = check_state(x0, "x0")
    check_manifold(manifold)
    require_point(manifold, x0, "x0")
    cond_kw = check_cond(cond)
    field = CountedField(v, cond_kw, manifold)
    steps = check_steps(steps)
    t0, t1 = check_time(t0, "t0"), check_time(t1, "t1")
    grid = uniform_grid(t0, t1, steps)
    if not isinstance(save_trajectory, bool):
        raise TypeError(f"save_trajectory must be a bool, got {type(save_trajectory).__name__}")
    const_g, g_fn = 0.0, None
    if callable(diffusion):
        g_fn = diffusion
    else:
        const_g = check_positive(diffusion, "diffusion", allow_zero=True)
    if score is not None and not callable(score):
        raise TypeError(
            f"score must be callable as score(x, t, **cond), got {type(score).__name__}"
        )
    noisy = g_fn is not None or const_g != 0.0
    if manifold is not None:
        if path is not None:
            raise ValueError(
                "path is for Euclidean Gaussian paths (its score conversion is not valid on a "
                "manifold); on a manifold pass score=... or leave the diffusion unmatched"
            )
    elif noisy and score is None:
        if path is None:
            raise ValueError(
                "a nonzero diffusion needs the score: pass path=AffinePath(...) (the path v was "
                "trained on) or score=..."
            )
        if not callable(getattr(path, "velocity_to_score", None)):
            raise TypeError(f"path must provide velocity_to_score, got {type(path).__name__}")
        if min(t0, t1) < 0.0 or max(t0, t1) > 1.0:
            raise ValueError(
                f"t0 and t1 must lie in [0, 1] to use the path's score, got {t0}, {t1}"
            )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    # the first step evaluates at t0: where the path's score is singular there (sigma = 0, as
    # at t0 = 1 backwards), only a diffusion that vanishes at t0 lets it go without the score
    skip_score = False
    if manifold is None and noisy and score is None and path is not None and x0.numel():
        ones = torch.ones_like(x0.detach()[:1])
        if not bool(torch.isfinite(path.velocity_to_score(ones, ones, t0)).all()):
            g_start = torch.as_tensor(
                const_g if g_fn is None else _diffusion(g_fn, field.time(x0, t0), x0)
            )
            if not bool((g_start == 0).all()):
                raise ValueError(
                    f"solve_sde: the path's score is singular at t0 = {t0} (its sigma_t is 0 "
                    f"there), where the first step is evaluated, and the diffusion is not 0 "
                    f"there: start at t0 = {t0} - eps, or use a diffusion that vanishes at t0"
                )
            skip_score = True

    x = x0
    tracker = FiniteTracker("solve_sde")
    tracker.record(x, t0)
    states = [x] if save_trajectory else []
    sign = 1.0 if t1 > t0 else -1.0
    for t, t_next in itertools.pairwise(grid):
        h = t_next - t
        tt = field.time(x, t)
        vel = field.raw(x, tt)
        if manifold is not None:
            vel = proju(manifold, x, vel)
        if not noisy:
            x = _advance(x, vel * h, manifold)
        else:
            g = const_g if g_fn is None else _diffusion(g_fn, tt, x)
            if score is not None:
                sc = _score(score, x, tt, cond_kw)
            elif skip_score:  # g = 0 at this singular time: no score term
                sc, skip_score = None, False
            elif manifold is None and path is not None:
                # A float time: the path checks its range on the host, without a device sync.
                sc = path.velocity_to_score(vel, x, t)
            else:
                sc = None
            if sc is not None and manifold is not None:
                sc = proju(manifold, x, sc)
            drift = vel if sc is None else vel + ((0.5 * sign) * g * g) * sc
            z = _noise(x, manifold, generator)
            x = _advance(x, drift * h + (g * math.sqrt(abs(h))) * z, manifold)
        tracker.record(x, t_next)
        if save_trajectory:
            states.append(x)
    tracker.check()
    # without a saved trajectory, ts and xs are built on first access (no stacked copy)
    return _solution(
        SDESolution,
        x=x,
        nfe=field.nfe,
        grid=grid,
        x0=x0,
        states=states if save_trajectory else None,
    )


def _noise(x: Tensor, manifold: ManifoldLike | None, generator: torch.Generator | None) -> Tensor:
    """Standard Gaussian increments: ambient, or in the tangent space at ``x`` on a manifold."""
    if isinstance(manifold, Manifold):
        return manifold._random_tangent(x, generator)
    sampler = getattr(manifold, "random_tangent", None)
    if callable(sampler):
        z: Tensor = sampler(x, generator=generator)
        return z
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return z if manifold is None else proju(manifold, x, z)


def _advance(x: Tensor, u: Tensor, manifold: ManifoldLike | None) -> Tensor:
    if manifold is None:
        return x + u
    return projx(manifold, expmap(manifold, x, proju(manifold, x, u)))


def _diffusion(g_fn: Callable[[Tensor], Tensor | float], t: Tensor, x: Tensor) -> Tensor | float:
    """``g(t)`` broadcasting against ``x``: a float, a 0-dim or a ``(B, 1, ..., 1)`` tensor."""
    g = g_fn(t)
    if not isinstance(g, Tensor):
        return check_positive(g, "diffusion(t)", allow_zero=True)
    if g.ndim == 0:
        return g.to(dtype=x.dtype)
    if g.shape != t.shape:
        raise ValueError(
            f"diffusion(t) must return a 0-dim or ({t.shape[0]},) tensor for t of shape "
            f"{tuple(t.shape)}, got shape {tuple(g.shape)}"
        )
    return broadcast_time(g.to(dtype=x.dtype), x)


def _score(score: Callable[..., Tensor], x: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
    out = score(x, t, **cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"score(x, t) must return x's shape {tuple(x.shape)}, got {got}")
    return out
