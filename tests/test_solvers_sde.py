"""SDE sampler: it keeps the marginals of a Gaussian path for any diffusion schedule, forwards
and backwards; geodesic random walk on the sphere; dtype/device; bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.solvers import SDESolution, solve_ode, solve_sde

from .conftest import DEVICES

# Data N(M, S^2 I), source N(0, I), CondOT path: x_t ~ N(t M, var_t I) with
# var_t = (1 - t)^2 + t^2 S^2 and the exact marginal velocity below.
M = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = 0.5
N = 4000
Z = 4.5  # z-score tolerance of the statistical checks


def var_t(t):
    return (1 - t) ** 2 + t * t * S * S


def marginal_velocity(x, t):
    """E[x1 - x0 | x_t = x] for the Gaussian data above (affine in x)."""
    t = t[:, None]
    m = M.to(x)
    return m + (t * S * S - (1 - t)) / var_t(t) * (x - t * m)


def gaussian_score(x, t):
    t = t[:, None]
    return -(x - t * M.to(x)) / var_t(t)


def check_marginal(x, t: float):
    """z-scores of the sample mean (per coordinate) and pooled variance against N(t M, var_t I)."""
    v = var_t(t)
    z_mean = ((x.mean(0) - t * M.to(x)) / math.sqrt(v / x.shape[0])).abs().max().item()
    z_var = abs(x.var(0).mean().item() - v) / (v * math.sqrt(2 / x.numel()))
    assert z_mean < Z, (t, z_mean)
    assert z_var < Z, (t, z_var)


def source(seed: int, n: int = N, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=dtype), g


class UnitSphere:
    """The unit sphere in R^n with geoopt's method names (test helper)."""

    def projx(self, x):
        return x / x.norm(dim=-1, keepdim=True)

    def proju(self, x, u):
        return u - (x * u).sum(-1, keepdim=True) * x

    def expmap(self, x, u):
        n = u.norm(dim=-1, keepdim=True)
        return torch.cos(n) * x + torch.sin(n) * u / torch.where(n > 0, n, torch.ones_like(n))


def zero_field(x, t):
    return torch.zeros_like(x)


# ------------------------------------------------------------------------ marginals
SCHEDULES = [
    pytest.param(0.7, 0.98, id="constant-to-0.98"),
    pytest.param(lambda t: 1.0 - t, 1.0, id="vanishing-at-1"),
    pytest.param(lambda t: 0.5 + 0.5 * torch.sin(3 * t), 0.95, id="time-varying"),
    pytest.param(lambda t: 0.6, 0.98, id="callable-float"),
]


@pytest.mark.parametrize(("diffusion", "t1"), SCHEDULES)
def test_sde_keeps_the_marginals_of_the_gaussian_path(diffusion, t1):
    x0, g = source(0)
    sol = solve_sde(
        marginal_velocity,
        x0,
        path=mfm.AffinePath(mfm.CondOT()),
        diffusion=diffusion,
        steps=100,
        t1=t1,
        generator=g,
        save_trajectory=True,
    )
    check_marginal(sol.x, t1)
    check_marginal(sol.xs[50], sol.ts[50].item())
    # the noise really acted: the SDE samples are far from the ODE's from the same start
    ode = solve_ode(marginal_velocity, x0, steps=100, t1=t1)
    assert (sol.x - ode.x).norm(dim=-1).mean().item() > 0.1


def test_without_the_score_term_the_marginals_drift():
    """The test above can fail: drop the score correction and the variance is far off."""
    x0, g = source(1)
    sol = solve_sde(
        marginal_velocity, x0, score=zero_field, diffusion=0.7, steps=100, t1=0.98, generator=g
    )
    v = var_t(0.98)
    assert abs(sol.x.var(0).mean().item() - v) / (v * math.sqrt(2 / sol.x.numel())) > 20


def test_sde_backwards_keeps_the_marginals():
    g = torch.Generator().manual_seed(2)
    x = 0.9 * M + math.sqrt(var_t(0.9)) * torch.randn(N, 2, generator=g, dtype=torch.float64)
    sol = solve_sde(
        marginal_velocity,
        x,
        path=mfm.AffinePath(),
        diffusion=0.8,
        steps=100,
        t0=0.9,
        t1=0.1,
        generator=g,
    )
    check_marginal(sol.x, 0.1)


def test_user_score_matches_the_path_score():
    x0, _ = source(3, n=64)
    kw = {"diffusion": 0.7, "steps": 20, "t1": 0.9}
    a = solve_sde(
        marginal_velocity,
        x0,
        path=mfm.AffinePath(),
        generator=torch.Generator().manual_seed(5),
        **kw,
    )
    b = solve_sde(
        marginal_velocity,
        x0,
        score=gaussian_score,
        generator=torch.Generator().manual_seed(5),
        **kw,
    )
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------- determinism, flags
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 12))
@example(seed=0, steps=1)
def test_zero_diffusion_is_the_euler_ode(seed, steps):
    x0, g = source(seed, n=8)
    state = g.get_state()
    sol = solve_sde(marginal_velocity, x0, diffusion=0.0, steps=steps, t1=0.9, generator=g)
    ode = solve_ode(marginal_velocity, x0, steps=steps, t1=0.9, method="euler")
    torch.testing.assert_close(sol.x, ode.x, rtol=0, atol=0)
    assert torch.equal(g.get_state(), state)  # no noise drawn
    assert sol.nfe == steps


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_same_generator_seed_same_samples(seed):
    x0, _ = source(0, n=16)
    kw = {"path": mfm.AffinePath(), "diffusion": 0.5, "steps": 10, "t1": 0.9}
    a = solve_sde(marginal_velocity, x0, generator=torch.Generator().manual_seed(seed), **kw)
    b = solve_sde(marginal_velocity, x0, generator=torch.Generator().manual_seed(seed), **kw)
    c = solve_sde(marginal_velocity, x0, generator=torch.Generator().manual_seed(seed + 1), **kw)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert not torch.allclose(a.x, c.x)


@pytest.mark.parametrize("save", [True, False])
def test_solution_layout(save):
    x0 = torch.zeros(5, 3, 2, dtype=torch.float64)
    sol = solve_sde(
        lambda x, t: -x,
        x0,
        path=mfm.AffinePath(),
        diffusion=0.3,
        steps=7,
        t1=0.9,
        generator=torch.Generator().manual_seed(0),
        save_trajectory=save,
    )
    assert isinstance(sol, SDESolution)
    assert "ts" not in vars(sol) and ("xs" in vars(sol)) == save  # endpoints on first access
    assert len(sol.grid) == 8 and len(sol.states) == (8 if save else 2)
    assert sol.ts.shape == (8,) and sol.ts[-1].item() == 0.9 and sol.nfe == 7
    assert sol.ts is sol.ts and sol.xs is sol.xs
    assert sol.xs.shape == ((8 if save else 2), 5, 3, 2)
    assert torch.equal(sol.xs[0], x0) and torch.equal(sol.xs[-1], sol.x)


def test_never_evaluates_at_t1():
    times = []

    def v(x, t):
        times.append(t[0].item())
        return marginal_velocity(x, t)

    solve_sde(v, source(0, n=4)[0], path=mfm.AffinePath(), diffusion=lambda t: 1 - t, steps=10)
    assert max(times) < 1.0 and len(times) == 10


def test_cond_is_forwarded_to_field_and_score():
    seen = []

    def v(x, t, *, label):
        seen.append(("v", label))
        return -x

    def score(x, t, *, label):
        seen.append(("score", label))
        return -x

    solve_sde(v, torch.ones(2, 2), score=score, diffusion=0.1, steps=3, cond={"label": 7})
    assert seen == [("v", 7), ("score", 7)] * 3


# -------------------------------------------------------------------------- manifold
def test_geodesic_random_walk_is_brownian_motion_on_the_sphere():
    """From the north pole, Brownian motion on S^2 has E[z_t] = exp(-g^2 t)."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.zeros(N, 3, dtype=torch.float64)
    x0[:, 2] = 1.0
    sol = solve_sde(
        zero_field, x0, diffusion=1.0, steps=50, t1=0.5, manifold=UnitSphere(), generator=g
    )
    assert (sol.x.norm(dim=-1) - 1).abs().max().item() < 1e-12
    z = sol.x[:, 2]
    assert abs(z.mean().item() - math.exp(-0.5)) < Z * z.std().item() / math.sqrt(N)


def _von_mises_fisher_z(n: int, kappa: float, g: torch.Generator):
    """Samples of vMF(e_z, kappa) on S^2 by the inverse CDF of w = <x, e_z>."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
    phi = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r = (1 - w * w).clamp_min(0).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), w], dim=-1)


@pytest.mark.parametrize("with_score", [True, False])
def test_manifold_score_keeps_a_stationary_density(with_score):
    """v = 0 and the Riemannian score of vMF(e_z, kappa): Langevin dynamics keep the density;
    without the score the walk spreads it out (so the check can fail)."""
    kappa = 2.0
    g = torch.Generator().manual_seed(6)
    x0 = _von_mises_fisher_z(N, kappa, g)
    mu = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    sol = solve_sde(
        zero_field,
        x0,
        diffusion=1.0,
        steps=100,
        t1=0.5,
        manifold=UnitSphere(),
        generator=g,
        score=(lambda x, t: kappa * mu.expand_as(x)) if with_score else None,
    )
    z = sol.x[:, 2]
    dev = abs(z.mean().item() - (1 / math.tanh(kappa) - 1 / kappa)) / (
        z.std().item() / math.sqrt(N)
    )
    assert (dev < Z) if with_score else (dev > 10)


# ---------------------------------------------------------------------- dtype/device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("manifold", [None, UnitSphere()], ids=["euclidean", "sphere"])
def test_dtype_and_device_are_preserved(dtype, device, manifold):
    seen = []

    def v(x, t):
        seen.append((t.dtype, t.device, t.shape))
        return -x

    x0 = torch.ones(4, 3, dtype=dtype, device=device) / math.sqrt(3)
    g = torch.Generator(device=device).manual_seed(0)
    kw = {"path": mfm.AffinePath()} if manifold is None else {"manifold": manifold}
    sol = solve_sde(
        v,
        x0,
        diffusion=lambda t: 0.5 * (1 - t),
        steps=5,
        generator=g,
        save_trajectory=True,
        **kw,
    )
    for out in (sol.x, sol.ts, sol.xs):
        assert out.dtype == dtype and out.device == x0.device
    assert all(s == (dtype, x0.device, (4,)) for s in seen)


# ------------------------------------------------------------------------- bad input
X0 = torch.zeros(3, 2, dtype=torch.float64)
PATH = mfm.AffinePath()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": PATH, "diffusion": -0.1, "steps": 3}, ValueError, "diffusion"),
        ({"path": PATH, "diffusion": "big", "steps": 3}, TypeError, "diffusion"),
        ({"path": PATH, "diffusion": math.nan, "steps": 3}, ValueError, "diffusion"),
        ({"diffusion": 0.5, "steps": 3}, ValueError, "path=AffinePath"),
        ({"path": PATH, "diffusion": 0.5, "steps": 0}, ValueError, "steps must be >= 1"),
        ({"path": PATH, "diffusion": 0.5, "steps": 3, "t0": 0.5, "t1": 0.5}, ValueError, "differ"),
        ({"path": PATH, "diffusion": 0.5, "steps": 3, "t1": 1.5}, ValueError, r"\[0, 1\]"),
        ({"path": object(), "diffusion": 0.5, "steps": 3}, TypeError, "velocity_to_score"),
        ({"path": PATH, "diffusion": 0.5, "steps": 3, "generator": 1}, TypeError, "generator"),
        ({"path": PATH, "diffusion": 0.5, "steps": 3, "score": 1}, TypeError, "score"),
        ({"path": PATH, "diffusion": 0.5, "steps": 3, "cond": 5}, TypeError, "cond"),
        (
            {"path": PATH, "diffusion": 0.5, "steps": 3, "manifold": UnitSphere()},
            ValueError,
            "manifold",
        ),
        (
            {"path": PATH, "diffusion": lambda t: torch.ones(5), "steps": 3},
            ValueError,
            r"0-dim or \(3,\)",
        ),
        ({"path": PATH, "diffusion": lambda t: -1.0, "steps": 3}, ValueError, r"diffusion\(t\)"),
        (
            {"diffusion": 0.5, "steps": 3, "score": lambda x, t: x[:, :1]},
            ValueError,
            r"score\(x, t\) must return",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        solve_sde(lambda x, t: -x, X0, **kwargs)


def test_bad_field_and_state_raise():
    with pytest.raises(ValueError, match=r"must return x's shape"):
        solve_sde(lambda x, t: x[:, :1], X0, path=PATH, diffusion=0.5, steps=3)
    with pytest.raises(TypeError, match="floating"):
        solve_sde(lambda x, t: x, torch.zeros(3, 2, dtype=torch.int64), diffusion=0.0, steps=3)
    with pytest.raises(ValueError, match="non-finite"):
        solve_sde(lambda x, t: x * math.inf, X0 + 1, path=PATH, diffusion=0.1, steps=3, t1=0.9)


def test_backward_sde_from_one_names_the_singular_score():
    # backwards from t0 = 1 the first step is evaluated where sigma_1 = 0: a diffusion that
    # does not vanish there is refused with the reason; one that vanishes there runs finite
    path = mfm.AffinePath(mfm.CondOT())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)

    def v(x, t):  # a finite field (what is tested is the score at the start, not the law)
        return -0.5 * x

    with pytest.raises(ValueError, match="singular at t0 = 1"):
        solve_sde(v, x, path=path, diffusion=0.5, steps=20, t0=1.0, t1=0.0)
    sol = solve_sde(
        v, x, path=path, diffusion=lambda t: 0.8 * (1 - t), steps=20, t0=1.0, t1=0.0, generator=g
    )
    assert torch.isfinite(sol.x).all()
