"""ODE solvers: convergence orders, adaptive tolerance, reversibility, grids, NFE, trajectories,
manifold-aware steps, dtype/device, bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.solvers import (
    DOPRI5,
    METHODS,
    TABLEAUX,
    ButcherTableau,
    ODESolution,
    rk_step,
    solve_ode,
)

from .conftest import DEVICES

FIXED = ("euler", "midpoint", "heun", "rk4")
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


# ----------------------------------------------------------------------------- helpers
def linear_problem(seed: int, dim: int, time_dependent: bool, dtype=torch.float64, batch=3):
    """dx/dt = a(t) A x with scalar a(t), so the flow is expm((int a) A) (all A(t) commute).

    A has unit spectral norm, so discretisation errors stay far above round-off."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    A = (A / torch.linalg.matrix_norm(A, ord=2)).to(dtype)
    x0 = torch.randn(batch, dim, generator=g, dtype=torch.float64).to(dtype)
    if time_dependent:

        def a(t):
            return 1.0 + torch.sin(2.0 * t)

        def int_a(s, e):
            return (e - s) - 0.5 * (math.cos(2 * e) - math.cos(2 * s))
    else:

        def a(t):
            return torch.ones_like(t)

        def int_a(s, e):
            return e - s

    def v(x, t):
        return a(t)[:, None] * (x @ A.T)

    def exact(x, s, e):
        return x @ torch.linalg.matrix_exp(int_a(s, e) * A.double()).T.to(x.dtype)

    return v, x0, exact


def slope(steps: list[int], errors: list[float]) -> float:
    return float(np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(np.asarray(errors)), 1)[0])


class UnitSphere:
    """The unit sphere in R^n with geoopt's method names (test helper)."""

    def projx(self, x):
        return x / x.norm(dim=-1, keepdim=True)

    def proju(self, x, u):
        return u - (x * u).sum(-1, keepdim=True) * x

    def expmap(self, x, u):
        n = u.norm(dim=-1, keepdim=True)
        return torch.cos(n) * x + torch.sin(n) * u / torch.where(n > 0, n, torch.ones_like(n))

    def logmap(self, x, y):
        p = y - (x * y).sum(-1, keepdim=True) * x
        s = p.norm(dim=-1, keepdim=True)
        theta = torch.atan2(s, (x * y).sum(-1, keepdim=True))
        return p * theta / torch.where(s > 0, s, torch.ones_like(s))


class UnitSphereWithoutLog(UnitSphere):
    """The same sphere without logmap: the expmap scheme cannot pull velocities back."""

    logmap = None


def sphere_points(seed: int, batch: int = 8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, generator=g, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def polar_flow_exact(x0, t):
    """Flow of v(x) = proju(x, e_z) on S^2: the polar angle obeys tan(th/2) = tan(th0/2) e^-t."""
    th0 = torch.atan2(x0[:, :2].norm(dim=-1), x0[:, 2])
    th = 2 * torch.atan(torch.tan(th0 / 2) * math.exp(-t))
    phi = torch.atan2(x0[:, 1], x0[:, 0])
    return torch.stack([th.sin() * phi.cos(), th.sin() * phi.sin(), th.cos()], dim=-1)


def decay(method: str, steps: int) -> float:
    """x(1) for dx/dt = -x, x(0) = 1 by each method on equal steps: R(-h)^steps with R the
    method's stability polynomial (the exact exp(-1) for the adaptive method)."""
    h = 1.0 / steps
    z = -h
    poly = {
        "euler": 1 + z,
        "midpoint": 1 + z + z**2 / 2,
        "heun": 1 + z + z**2 / 2,
        "rk4": 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24,
    }
    return math.exp(-1) if method == "dopri5" else poly[method] ** steps


def decay_rtol(method: str) -> float:
    return 1e-4 if method == "dopri5" else 1e-12


def e_z(x, t):
    out = torch.zeros_like(x)
    out[:, 2] = 1.0
    return out


# --------------------------------------------------------------------------- tableaux
def _order_conditions(tab_b, tab: ButcherTableau) -> dict[int, list[tuple[float, float]]]:
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i, : len(row)] = row
    b, c = np.asarray(tab_b), np.asarray(tab.c)
    return {
        1: [(b.sum(), 1.0)],
        2: [(b @ c, 1 / 2)],
        3: [(b @ c**2, 1 / 3), (b @ A @ c, 1 / 6)],
        4: [
            (b @ c**3, 1 / 4),
            (b @ (c * (A @ c)), 1 / 8),
            (b @ A @ c**2, 1 / 12),
            (b @ A @ A @ c, 1 / 24),
        ],
        5: [(b @ c**4, 1 / 5), (b @ A @ A @ A @ c, 1 / 120), (b @ (c * (A @ c**2)), 1 / 15)],
    }


@pytest.mark.parametrize("name", METHODS)
def test_tableaux_satisfy_their_order_conditions(name):
    tab = TABLEAUX[name]
    conds = _order_conditions(tab.b, tab)
    for p in range(1, tab.order + 1):
        for got, want in conds[p]:
            assert got == pytest.approx(want, abs=1e-13), (name, p)
    if tab.order < 5:  # the next order fails, so the test of the order is sharp
        assert any(abs(got - want) > 1e-6 for got, want in conds[tab.order + 1])


def test_dopri5_embedded_weights_are_fourth_order():
    b_hat = tuple(b - e for b, e in zip(DOPRI5.b, DOPRI5.b_err))
    conds = _order_conditions(b_hat, DOPRI5)
    for p in range(1, 5):
        for got, want in conds[p]:
            assert got == pytest.approx(want, abs=1e-13)
    assert any(abs(got - want) > 1e-6 for got, want in conds[5])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"c": (0.0,), "a": ((),), "b": (1.0, 0.0)},
        {"c": (0.0, 0.5), "a": ((), (0.4,)), "b": (0.0, 1.0)},
        {"c": (0.0, 0.5), "a": ((), (0.5, 0.0)), "b": (0.0, 1.0)},
        {"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5), "b_err": (1.0,)},
        {"c": (0.0, 1.0), "a": ((), (1.0,)), "b": (0.5, 0.5), "fsal": True},
    ],
)
def test_bad_tableau_raises(kwargs):
    with pytest.raises(ValueError, match="tableau"):
        ButcherTableau(name="bad", order=1, **kwargs)


# ------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("method", FIXED)
@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 4), time_dependent=st.booleans())
@example(seed=0, dim=2, time_dependent=True)
def test_fixed_step_convergence_order(method, seed, dim, time_dependent):
    v, x0, exact = linear_problem(seed, dim, time_dependent)
    steps = [8, 16, 32, 64]
    target = exact(x0, 0.0, 1.0)
    errors = [(solve_ode(v, x0, steps=n, method=method).x - target).norm().item() for n in steps]
    assert slope(steps, errors) == pytest.approx(ORDER[method], abs=0.3)


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_convergence_order_backwards(method):
    v, x1, exact = linear_problem(7, 3, True)
    steps = [8, 16, 32, 64]
    target = exact(x1, 1.0, 0.2)
    errors = [
        (solve_ode(v, x1, steps=n, method=method, t0=1.0, t1=0.2).x - target).norm().item()
        for n in steps
    ]
    assert slope(steps, errors) == pytest.approx(ORDER[method], abs=0.3)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1), time_dependent=st.booleans())
def test_dopri5_meets_tolerance(seed, time_dependent):
    v, x0, exact = linear_problem(seed, 3, time_dependent)
    target = exact(x0, 0.0, 1.0)
    previous = 0
    for tol in (1e-5, 1e-8, 1e-11):
        calls = []

        def counted(x, t, calls=calls):
            calls.append(1)
            return v(x, t)

        sol = solve_ode(counted, x0, method="dopri5", atol=tol, rtol=tol)
        err = (sol.x - target).abs().max().item()
        assert err < 50 * tol
        assert sol.nfe == len(calls)
        assert sol.ts[0].item() == 0.0 and sol.ts[-1].item() == 1.0
        assert bool((sol.ts.diff() > 0).all())
        assert (sol.nfe - 2) % 6 == 0 and sol.nfe >= 6 * (len(sol.ts) - 1) + 2
        assert sol.nfe > previous or err < 1e-12
        previous = sol.nfe


def test_dopri5_first_step_from_steps_and_backwards():
    v, x0, exact = linear_problem(3, 2, True)
    sol = solve_ode(v, x0, method="dopri5", steps=50, atol=1e-9, rtol=1e-9, t0=0.9, t1=0.1)
    assert (sol.x - exact(x0, 0.9, 0.1)).abs().max().item() < 1e-7
    assert sol.ts[1].item() == pytest.approx(0.9 - 0.8 / 50)
    assert bool((sol.ts.diff() < 0).all()) and sol.ts[-1].item() == 0.1


# --------------------------------------------------------------------- reversibility
ROUNDTRIP = [("euler", 400, 5e-2), ("midpoint", 100, 1e-3), ("heun", 100, 1e-3), ("rk4", 40, 1e-6)]


@pytest.mark.parametrize(("method", "steps", "tol"), ROUNDTRIP)
@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_forward_then_backward_returns_to_start(method, steps, tol, seed):
    v, x0, _ = linear_problem(seed, 3, True)
    fwd = solve_ode(v, x0, steps=steps, method=method)
    back = solve_ode(v, fwd.x, steps=steps, method=method, t0=1.0, t1=0.0)
    assert (back.x - x0).abs().max().item() < tol
    assert (fwd.x - x0).abs().max().item() > 0.2  # the flow moved: the check can fail


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_dopri5_roundtrip_within_tolerance(seed):
    v, x0, _ = linear_problem(seed, 3, True)
    fwd = solve_ode(v, x0, method="dopri5", atol=1e-9, rtol=1e-9)
    back = solve_ode(v, fwd.x, method="dopri5", atol=1e-9, rtol=1e-9, t0=1.0, t1=0.0)
    assert (back.x - x0).abs().max().item() < 1e-7


# ----------------------------------------------------------------------------- grids
@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize(("t0", "t1"), [(0.0, 1.0), (1.0, 0.0), (0.2, 0.7)])
def test_uniform_time_grid_equals_steps(method, t0, t1):
    v, x0, _ = linear_problem(1, 3, True)
    a = solve_ode(v, x0, steps=10, method=method, t0=t0, t1=t1, save_trajectory=True)
    grid = torch.linspace(t0, t1, 11, dtype=torch.float64)
    b = solve_ode(v, x0, time_grid=grid, method=method, save_trajectory=True)
    c = solve_ode(v, x0, time_grid=grid.tolist(), method=method, t0=t0, t1=t1)
    torch.testing.assert_close(a.x, b.x, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(a.xs, b.xs, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(a.ts, b.ts, rtol=0, atol=1e-15)
    torch.testing.assert_close(b.x, c.x, rtol=0, atol=0)
    assert a.nfe == b.nfe == 10 * STAGES[method]


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), decreasing=st.booleans())
def test_nonuniform_time_grid_is_accurate(seed, decreasing):
    v, x0, exact = linear_problem(seed, 2, True)
    g = torch.Generator().manual_seed(seed)
    inner = torch.rand(30, generator=g, dtype=torch.float64).sort().values
    grid = torch.cat(
        [torch.zeros(1, dtype=torch.float64), inner, torch.ones(1, dtype=torch.float64)]
    )
    grid = grid.unique()  # strictly increasing
    if decreasing:
        grid = grid.flip(0)
    sol = solve_ode(v, x0, time_grid=grid, method="rk4", save_trajectory=True)
    s, e = grid[0].item(), grid[-1].item()
    # max gap of 31 sorted uniforms is well below 0.3, and rk4's error ~ gap^4
    assert (sol.x - exact(x0, s, e)).abs().max().item() < 1e-3
    torch.testing.assert_close(sol.ts, grid)
    assert sol.xs.shape == (len(grid), *x0.shape)


# ------------------------------------------------------------------- NFE and shapes
@pytest.mark.parametrize("method", FIXED)
@given(steps=st.integers(1, 25))
@example(steps=1)
def test_nfe_counts(method, steps):
    calls = []

    def v(x, t):
        calls.append(t)
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        return -x

    sol = solve_ode(v, torch.ones(2, 3), steps=steps, method=method)
    assert sol.nfe == len(calls) == STAGES[method] * steps
    assert isinstance(sol.nfe, int)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("save", [True, False])
@pytest.mark.parametrize("shape", [(4,), (3, 2), (2, 2, 2)])
def test_trajectory_shapes(method, save, shape):
    x0 = torch.ones(5, *shape, dtype=torch.float64)
    sol = solve_ode(lambda x, t: -x, x0, steps=6, method=method, save_trajectory=save)
    assert isinstance(sol, ODESolution)
    T = len(sol.ts)
    assert sol.ts.ndim == 1 and sol.x.shape == x0.shape
    if method != "dopri5":
        assert T == 7
    assert sol.xs.shape == ((T if save else 2), 5, *shape)
    torch.testing.assert_close(sol.xs[0], x0, rtol=0, atol=0)
    torch.testing.assert_close(sol.xs[-1], sol.x, rtol=0, atol=0)
    torch.testing.assert_close(sol.x, x0 * decay(method, 6), rtol=decay_rtol(method), atol=0)


@pytest.mark.parametrize("save", [True, False])
def test_ts_and_xs_are_built_on_first_access_and_kept(save):
    x0 = torch.ones(5, 3, dtype=torch.float64)
    sol = solve_ode(lambda x, t: -x, x0, steps=4, method="heun", save_trajectory=save)
    assert "ts" not in vars(sol)
    assert len(sol.states) == (5 if save else 2)
    if save:
        # the trajectory that was asked for is stacked once; the states are views of its rows
        xs = vars(sol)["xs"]
        assert all(s.data_ptr() == xs[i].data_ptr() for i, s in enumerate(sol.states))
        assert torch.equal(sol.states[0], x0) and torch.equal(sol.states[-1], sol.x)
    else:
        # the endpoints themselves: nothing stacked or copied until asked for
        assert "xs" not in vars(sol)
        assert sol.states[0] is x0 and sol.states[-1] is sol.x
    assert sol.grid == (0.0, 0.25, 0.5, 0.75, 1.0)
    xs, ts = sol.xs, sol.ts
    assert sol.xs is xs and sol.ts is ts
    assert ts.tolist() == list(sol.grid)
    torch.testing.assert_close(xs, torch.stack(tuple(sol.states)), rtol=0, atol=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.x = x0  # type: ignore[misc]


def test_lazy_ts_and_xs_follow_the_solve_not_the_mode_of_the_first_read():
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    x0 = torch.ones(4, 2, dtype=torch.float64)

    def v(x, t):
        return -w * x

    # solved with gradients, first read inside no_grad: xs keeps the solve's graph
    sol = solve_ode(v, x0, steps=3, method="heun", save_trajectory=True)
    with torch.no_grad():
        first = sol.xs
    assert first is sol.xs and sol.xs.requires_grad
    (g_xs,) = torch.autograd.grad(sol.xs[-1].sum(), w, retain_graph=True)
    (g_x,) = torch.autograd.grad(sol.x.sum(), w)
    assert g_x.item() < 0 and g_xs.item() == g_x.item()
    # solved without gradients, first read with them: no graph back to a grad-requiring x0
    with torch.no_grad():
        quiet = solve_ode(v, x0.clone().requires_grad_(), steps=3, method="heun")
    assert not quiet.xs.requires_grad
    # first read inside inference_mode: no inference tensors from a solve outside it
    sol = solve_ode(v, x0, steps=3, method="heun")
    with torch.inference_mode():
        sol.ts, sol.xs
    assert not sol.ts.is_inference() and not sol.xs.is_inference()
    (g_ts,) = torch.autograd.grad((sol.x * sol.ts[-1]).sum(), w)
    assert torch.isfinite(g_ts)
    # ... and inference tensors from a solve inside it
    with torch.inference_mode():
        inside = solve_ode(v, x0, steps=3, method="heun")
    assert inside.xs.is_inference() and inside.ts.is_inference()


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch_and_unstructured_states(method):
    empty = solve_ode(_v, torch.zeros(0, 3), steps=3, method=method)
    assert empty.x.shape == (0, 3) and empty.xs.shape == (2, 0, 3)
    flat = solve_ode(_v, torch.ones(4, dtype=torch.float64), steps=5, method=method)
    want = torch.full((4,), decay(method, 5), dtype=torch.float64)
    torch.testing.assert_close(flat.x, want, rtol=decay_rtol(method), atol=0)


def test_trajectory_matches_the_times():
    v, x0, exact = linear_problem(4, 2, True)
    sol = solve_ode(v, x0, steps=40, method="rk4", save_trajectory=True)
    for i in (0, 13, 40):
        torch.testing.assert_close(sol.xs[i], exact(x0, 0.0, sol.ts[i].item()), rtol=0, atol=1e-7)


def test_cond_is_forwarded_to_the_field():
    def v(x, t, *, scale, label):
        assert label.shape == (x.shape[0],)
        return scale * x

    x0 = torch.ones(3, 2, dtype=torch.float64)
    cond = {"scale": -1.0, "label": torch.arange(3)}
    for method in METHODS:
        sol = solve_ode(v, x0, steps=30, method=method, cond=cond)
        torch.testing.assert_close(sol.x, x0 * decay(method, 30), rtol=decay_rtol(method), atol=0)


def test_gradients_flow_through_the_solver():
    w = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    sol = solve_ode(
        lambda x, t: w * x, torch.ones(2, 1, dtype=torch.float64), steps=20, method="rk4"
    )
    (grad,) = torch.autograd.grad(sol.x.sum(), w)
    assert grad.item() == pytest.approx(2 * math.exp(-0.5), rel=1e-6)  # d/dw 2 e^w


# -------------------------------------------------------------------------- manifold
@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_manifold_solver_stays_on_the_sphere_and_follows_the_flow(method, seed):
    x0 = sphere_points(seed)
    sphere = UnitSphere()
    sol = solve_ode(e_z, x0, steps=32, method=method, manifold=sphere, save_trajectory=True)
    assert (sol.xs.norm(dim=-1) - 1).abs().max().item() < 1e-12
    tol = {"euler": 2e-2, "midpoint": 1e-3, "heun": 1e-3, "rk4": 1e-3, "dopri5": 1e-4}[method]
    assert (sol.x - polar_flow_exact(x0, 1.0)).norm(dim=-1).max().item() < tol


def test_without_manifold_the_same_field_leaves_the_sphere():
    sol = solve_ode(e_z, sphere_points(0), steps=32, method="rk4")
    assert (sol.x.norm(dim=-1) - 1).abs().max().item() > 0.1


@pytest.mark.parametrize("scheme", ["expmap", "projection"])
def test_manifold_rk4_order_by_scheme(scheme):
    """Both schemes keep RK4's order 4 on a curved manifold (the expmap scheme through the
    logmap of a duck-typed manifold, differentiated by forward-mode autodiff)."""
    x0, sphere, order = sphere_points(3), UnitSphere(), 4
    target = polar_flow_exact(x0, 1.0)
    steps = [8, 16, 32, 64]
    errors = [
        (
            solve_ode(e_z, x0, steps=n, method="rk4", manifold=sphere, manifold_scheme=scheme).x
            - target
        )
        .norm(dim=-1)
        .max()
        .item()
        for n in steps
    ]
    assert slope(steps, errors) == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("scheme", ["expmap", "projection"])
def test_manifold_dopri5_meets_tolerance(scheme):
    x0, sphere = sphere_points(5), UnitSphere()
    for tol in (1e-6, 1e-9):
        sol = solve_ode(
            e_z, x0, method="dopri5", manifold=sphere, manifold_scheme=scheme, atol=tol, rtol=tol
        )
        assert (sol.x - polar_flow_exact(x0, 1.0)).norm(dim=-1).max().item() < 20 * tol


def test_manifold_without_logmap_uses_the_projection_scheme():
    x0, plain = sphere_points(4), UnitSphereWithoutLog()
    sol = solve_ode(e_z, x0, steps=16, method="rk4", manifold=plain)
    ref = solve_ode(e_z, x0, steps=16, method="rk4", manifold=plain, manifold_scheme="projection")
    torch.testing.assert_close(sol.x, ref.x, rtol=0, atol=0)
    with pytest.raises(TypeError, match="logmap"):
        solve_ode(e_z, x0, steps=4, method="rk4", manifold=plain, manifold_scheme="expmap")
    # Euler has a single stage: its geodesic step needs no logmap.
    sol = solve_ode(e_z, x0, steps=1, method="euler", manifold=plain, manifold_scheme="expmap")
    torch.testing.assert_close(sol.x, plain.expmap(x0, plain.proju(x0, e_z(x0, None))))


def test_manifold_euler_is_the_geodesic_step():
    x0, sphere = sphere_points(2), UnitSphere()
    u = sphere.proju(x0, e_z(x0, None))
    sol = solve_ode(e_z, x0, steps=1, method="euler", manifold=sphere, t1=0.3)
    torch.testing.assert_close(sol.x, sphere.expmap(x0, 0.3 * u))


def test_rk_step_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="projection"):
        rk_step(e_z, sphere_points(0), 0.0, 0.1, TABLEAUX["rk4"], manifold=UnitSphere(), scheme="x")


def test_manifold_without_methods_raises():
    class NotAManifold:
        def projx(self, x):
            return x

    with pytest.raises(TypeError, match="proju"):
        solve_ode(e_z, sphere_points(0), steps=2, manifold=NotAManifold())


# ---------------------------------------------------------------------- dtype/device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_dtype_and_device_are_preserved(method, dtype, device):
    seen = []

    def v(x, t):
        seen.append((t.dtype, t.device, x.dtype))
        return -x

    x0 = torch.ones(4, 3, dtype=dtype, device=device)
    sol = solve_ode(v, x0, steps=10, method=method, save_trajectory=True)
    for out in (sol.x, sol.ts, sol.xs):
        assert out.dtype == dtype and out.device == x0.device
    assert all(s == (dtype, x0.device, dtype) for s in seen)
    torch.testing.assert_close(
        sol.x, x0 * decay(method, 10), rtol=max(decay_rtol(method), 1e-5), atol=0
    )


def test_float32_rk4_accuracy():
    v, x0, exact = linear_problem(11, 3, True, dtype=torch.float32)
    sol = solve_ode(v, x0, steps=50, method="rk4")
    assert (sol.x.double() - exact(x0.double(), 0.0, 1.0)).abs().max().item() < 1e-5


# ------------------------------------------------------------------------- bad input
def _v(x, t):
    return -x


X0 = torch.ones(2, 3, dtype=torch.float64)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 4, "method": "rk45"}, ValueError, "euler, midpoint, heun, rk4, dopri5"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": -3}, ValueError, "steps must be >= 1"),
        ({"steps": 2.0}, TypeError, "steps must be an int"),
        ({"steps": True}, TypeError, "steps must be an int"),
        ({}, ValueError, "steps"),
        ({"steps": 4, "time_grid": [0.0, 1.0]}, ValueError, "not both"),
        ({"time_grid": torch.zeros(2, 3)}, ValueError, "1-D"),
        ({"time_grid": [0.0, 0.5, 0.4, 1.0]}, ValueError, "strictly increasing or strictly"),
        ({"time_grid": [0.0, 0.5, 0.5, 1.0]}, ValueError, "strictly"),
        ({"time_grid": [0.5]}, ValueError, "at least 2"),
        ({"time_grid": [0.0, float("nan")]}, ValueError, "finite"),
        ({"time_grid": "0 1"}, TypeError, "time_grid"),
        ({"time_grid": [0.0, 0.5], "t1": 0.7}, ValueError, "disagree"),
        ({"steps": 4, "t0": 0.3, "t1": 0.3}, ValueError, "t0 and t1 must differ"),
        ({"method": "dopri5", "t0": 0.3, "t1": 0.3}, ValueError, "t0 and t1 must differ"),
        ({"steps": 4, "t1": float("inf")}, ValueError, "t1 must be finite"),
        ({"steps": 4, "t1": "1"}, TypeError, "t1 must be a float"),
        ({"method": "dopri5", "time_grid": [0.0, 1.0]}, ValueError, "fixed-step"),
        ({"method": "dopri5", "atol": 0.0, "rtol": 0.0}, ValueError, "both be 0"),
        ({"method": "dopri5", "atol": -1.0}, ValueError, "atol"),
        ({"method": "dopri5", "max_steps": 0}, ValueError, "max_steps"),
        ({"steps": 4, "cond": [1, 2]}, TypeError, "cond must be a mapping"),
        ({"steps": 4, "save_trajectory": 1}, TypeError, "save_trajectory"),
        ({"steps": 4, "manifold_scheme": "geodesic"}, ValueError, "expmap, projection"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        solve_ode(_v, X0, **kwargs)


@pytest.mark.parametrize(
    ("x0", "error", "match"),
    [
        ([[1.0, 2.0]], TypeError, "torch.Tensor"),
        (torch.tensor(1.0), ValueError, "batch dimension"),
        (torch.ones(2, 3, dtype=torch.int64), TypeError, "floating"),
    ],
)
def test_bad_state_raises(x0, error, match):
    with pytest.raises(error, match=match):
        solve_ode(_v, x0, steps=2)


@pytest.mark.parametrize("method", METHODS)
def test_field_of_wrong_shape_raises(method):
    with pytest.raises(ValueError, match=r"must return x's shape \(2, 3\), got \(2, 1\)"):
        solve_ode(lambda x, t: x[:, :1], X0, steps=2, method=method)
    with pytest.raises(TypeError, match="callable"):
        solve_ode("not a field", X0, steps=2)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_state_raises_naming_the_time(method):
    def blows_up(x, t):
        return torch.where(t[:, None] > 0.5, torch.full_like(x, math.inf), -x)

    # fixed steps name the first non-finite state; dopri5 the step that straddles t = 0.5
    match = r"non-finite .*t = 0\.[5-9]" if method != "dopri5" else r"non-finite .*to 0\.[5-9]"
    with pytest.raises(ValueError, match=match):
        solve_ode(blows_up, X0, steps=10, method=method)
    with pytest.raises(ValueError, match="x0 holds non-finite"):
        solve_ode(_v, torch.full((2, 3), math.nan, dtype=torch.float64), steps=3, method=method)


def test_non_finite_state_passes_when_value_checks_are_off():
    with mfm.checks(values=False):
        sol = solve_ode(lambda x, t: x * math.inf, X0, steps=3, method="euler")
    assert not bool(torch.isfinite(sol.x).all())


def test_dopri5_max_steps_raises():
    with pytest.raises(RuntimeError, match="max_steps=5"):
        solve_ode(
            lambda x, t: 50 * torch.cos(50 * t)[:, None] * x, X0, method="dopri5", max_steps=5
        )


def test_dopri5_with_inputs_that_require_grad_raises_no_warning():
    import warnings

    x0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = solve_ode(lambda x, t: -x, x0, method="dopri5")
    (grad,) = torch.autograd.grad(sol.x.sum(), x0)
    torch.testing.assert_close(grad, torch.full_like(x0, math.exp(-1.0)), rtol=1e-4, atol=1e-6)
