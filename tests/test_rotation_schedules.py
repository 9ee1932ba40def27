"""Rotation schedules and stochastic paths for SE(3) flow matching.

ExponentialRate (FrameFlow's exp rotation schedule, normalised): the scheduler contract,
exact endpoints, derivatives against forward-mode autodiff, the rate ``kappa' / (1 - kappa)``,
its geodesic path on SO(3) and inside a ProductPath, and integration of the rescaled
x1-pointing field. StochasticGeodesicPath (FoldFlow-SFM): equality with GeodesicPath without
noise, the noise law at both ends and in the middle (Kolmogorov-Smirnov against IGSO3 and the
normal law), targets tangent and equal to ``log_{x_t}(x1) / (1 - t)``, centred noise, shapes
with extra dimensions, refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, stats

from manifoldfm.manifolds import SO3, Euclidean, Product, Sphere
from manifoldfm.paths import (
    AffinePath,
    CondOT,
    ExponentialRate,
    GeodesicPath,
    ProductPath,
    StochasticGeodesicPath,
)
from manifoldfm.solvers import solve_ode
from manifoldfm.sources import IGSO3
from manifoldfm.testing import check_path, check_scheduler

from .strategies import dtypes, seeds

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _so3_pair(n: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    so3 = SO3()
    return so3.random_uniform(n, generator=g, dtype=dtype), so3.random_uniform(
        n, generator=g, dtype=dtype
    )


def _igso3_cdf(sigma: float):
    top = min(math.pi, 14 * sigma)
    grid = np.linspace(0.0, top, 100001)
    dens = IGSO3(sigma).angle_log_prob(torch.tensor(grid, dtype=F64)).exp().numpy()
    cum = integrate.cumulative_simpson(dens, x=grid, initial=0.0)
    return lambda v: np.interp(v, grid, cum)


# ---------------------------------------------------------------------------------------------
# ExponentialRate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.5, 1.0, 10.0, 50.0])
def test_exponential_rate_contract(rate):
    check_scheduler(ExponentialRate(rate))
    check_scheduler(ExponentialRate(rate), dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rate", [1e-3, 1.0, 10.0, 200.0])
def test_exponential_rate_exact_endpoints_and_monotone(dtype, rate):
    t = torch.linspace(0.0, 1.0, 1001, dtype=dtype)
    out = ExponentialRate(rate)(t)
    assert out.alpha[0].item() == 0.0 and out.alpha[-1].item() == 1.0
    assert out.sigma[0].item() == 1.0 and out.sigma[-1].item() == 0.0
    assert bool((out.alpha.diff() >= 0).all()) and bool(torch.isfinite(out.d_alpha).all())
    torch.testing.assert_close(out.alpha + out.sigma, torch.ones_like(t))


@given(t=st.floats(0.0, 1.0), rate=st.floats(0.01, 60.0))
@example(t=0.0, rate=10.0)
@example(t=1.0, rate=10.0)
def test_exponential_rate_derivative_by_jvp(t, rate):
    sched = ExponentialRate(rate)
    tt = torch.tensor([t], dtype=F64)
    _, (da, ds) = torch.func.jvp(
        lambda s: (sched(s).alpha, sched(s).sigma), (tt,), (torch.ones_like(tt),)
    )
    out = sched(tt)
    if t < 1.0:  # at t = 1 the snap to exactly 1 has derivative 0
        torch.testing.assert_close(out.d_alpha, da, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.d_sigma, ds, rtol=1e-12, atol=1e-12)
    expected = rate * math.exp(-rate * t) / -math.expm1(-rate)
    assert out.d_alpha.item() == pytest.approx(expected, rel=1e-12)


def test_exponential_rate_velocity_scale_and_limits():
    sched = ExponentialRate(10.0)
    t = torch.linspace(0.0, 0.999, 200, dtype=F64)
    out = sched(t)
    torch.testing.assert_close(sched.velocity_scale(t), out.d_alpha / (1 - out.alpha))
    assert sched.velocity_scale(torch.tensor([0.0], dtype=F64)).item() == pytest.approx(
        10.0 / -math.expm1(-10.0)
    )
    assert sched.velocity_scale(torch.tensor([1.0], dtype=F64)).item() == math.inf
    # c -> 0 is CondOT
    small = ExponentialRate(1e-7)(t)
    torch.testing.assert_close(small.alpha, t, atol=1e-7, rtol=0)
    torch.testing.assert_close(small.d_alpha, torch.ones_like(t), atol=1e-7, rtol=0)


@given(seed=seeds)
def test_exponential_rate_geodesic_path_on_so3(seed):
    x0, x1 = _so3_pair(6, seed)
    sched = ExponentialRate(10.0)
    path = GeodesicPath(SO3(), sched)
    check_path(path, x0, x1, manifold=SO3())
    t = torch.rand(6, generator=_gen(seed + 1), dtype=F64) * 0.99
    s = path.sample(x0, x1, t)
    # u_t = kappa' / (1 - kappa) log_{x_t}(x1): the x1-pointing field of FrameFlow's sampler
    expected = sched.velocity_scale(t)[:, None, None] * SO3().logmap(s.xt, x1)
    torch.testing.assert_close(s.ut, expected, atol=1e-9, rtol=1e-9)


def test_rescaled_x1_field_integrates_along_the_path():
    x0, x1 = _so3_pair(5, 7)
    sched = ExponentialRate(10.0)
    so3 = SO3()

    def v(x, t):  # FrameFlow's exp sampler with the exact x1 (a perfect x1-prediction)
        return sched.velocity_scale(t)[:, None, None] * so3.logmap(x, x1)

    sol = solve_ode(v, x0, steps=100, method="rk4", manifold=so3, t1=0.95)
    ref = GeodesicPath(so3, sched).sample(x0, x1, torch.full((5,), 0.95, dtype=F64)).xt
    assert float(so3.dist(sol.x, ref).max()) < 1e-6
    # kappa_0.95 of the turn is done: the remaining angle is (1 - kappa) of the distance
    remaining = so3.dist(sol.x, x1) / so3.dist(x0, x1)
    torch.testing.assert_close(
        remaining, (1 - sched(torch.full((5,), 0.95, dtype=F64)).alpha), atol=1e-6, rtol=0
    )


def test_exponential_rate_in_a_product_path_for_se3():
    so3, r3 = SO3(), Euclidean(3)
    prod = Product(so3, r3)
    path = ProductPath(
        [GeodesicPath(so3, ExponentialRate(10.0)), AffinePath(CondOT())], manifold=prod
    )
    g = _gen(3)
    x0, x1 = prod.random(8, generator=g, dtype=F64), prod.random(8, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64)
    s = path.sample(x0, x1, t)
    rot0, tr0 = prod._split(x0)
    rot1, tr1 = prod._split(x1)
    rot_t, tr_t = prod._split(s.xt)
    torch.testing.assert_close(
        rot_t, GeodesicPath(so3, ExponentialRate(10.0)).sample(rot0, rot1, t).xt
    )
    torch.testing.assert_close(tr_t, torch.lerp(tr0, tr1, t[:, None]))


def test_exponential_rate_refusals():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="rate"):
            ExponentialRate(bad)
    with pytest.raises(TypeError, match="rate"):
        ExponentialRate("10")  # type: ignore[arg-type]
    assert repr(ExponentialRate(5)) == "ExponentialRate(rate=5.0)"


# ---------------------------------------------------------------------------------------------
# StochasticGeodesicPath
# ---------------------------------------------------------------------------------------------


@given(seed=seeds, dtype=dtypes)
@example(seed=0, dtype=torch.float32)
def test_no_noise_is_the_geodesic_path_and_draws_nothing(seed, dtype):
    x0, x1 = _so3_pair(5, seed, dtype)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=dtype)
    gen = _gen(seed)
    state = gen.get_state()
    a = StochasticGeodesicPath(SO3(), g=0.0, sigma_min=0.0).sample(x0, x1, t, generator=gen)
    b = GeodesicPath(SO3()).sample(x0, x1, t)
    assert torch.equal(a.xt, b.xt) and torch.equal(a.ut, b.ut)
    assert torch.equal(gen.get_state(), state)
    e0, e1 = (
        torch.randn(5, 3, generator=gen, dtype=dtype),
        torch.randn(5, 3, generator=gen, dtype=dtype),
    )
    a = StochasticGeodesicPath(Euclidean(3), g=0.0, sigma_min=0.0).sample(e0, e1, t)
    b = GeodesicPath(Euclidean(3)).sample(e0, e1, t)
    assert torch.equal(a.xt, b.xt) and torch.equal(a.ut, b.ut)
    assert StochasticGeodesicPath(SO3(), 0.0, 0.0).singular_times == ()


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_so3_noise_follows_igso3_sigma_t(t):
    g, smin = 1.0, 0.2
    path = StochasticGeodesicPath(SO3(), g=g, sigma_min=smin)
    x0, x1 = _so3_pair(3000, 1)
    tt = torch.full((3000,), t, dtype=F64)
    s = path.sample(x0, x1, tt, generator=_gen(2))
    mu = GeodesicPath(SO3()).sample(x0, x1, tt).xt
    sigma = math.sqrt(g * g * t * (1 - t) + smin * smin)
    assert float(path.sigma_t(tt)[0]) == pytest.approx(sigma)
    angle = SO3().dist(mu, s.xt).numpy()
    assert stats.kstest(angle, _igso3_cdf(sigma)).pvalue > 1e-3
    assert float(SO3()._point_deviation(s.xt).max()) < 1e-12


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_euclidean_noise_is_gaussian_with_sigma_t(t):
    path = StochasticGeodesicPath(Euclidean(3), g=2.0, sigma_min=0.1)
    g = _gen(4)
    x0, x1 = (
        torch.randn(2000, 3, generator=g, dtype=F64),
        torch.randn(2000, 3, generator=g, dtype=F64),
    )
    tt = torch.full((2000,), t, dtype=F64)
    s = path.sample(x0, x1, tt, generator=g)
    sigma = math.sqrt(4.0 * t * (1 - t) + 0.01)
    z = ((s.xt - torch.lerp(x0, x1, t)) / sigma).reshape(-1).numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3


@given(seed=seeds, dtype=dtypes)
def test_so3_target_is_tangent_and_points_to_x1(seed, dtype):
    x0, x1 = _so3_pair(6, seed, dtype)
    t = torch.tensor([0.0, 0.1, 0.4, 0.7, 0.99, 1.0], dtype=dtype)
    s = StochasticGeodesicPath(SO3(), g=0.5, sigma_min=0.05).sample(x0, x1, t, generator=_gen(seed))
    assert torch.isfinite(s.ut).all() and torch.isfinite(s.xt).all()
    so3 = SO3()
    tol = 1e-10 if dtype == F64 else 1e-4
    assert float(so3._tangent_deviation(s.xt, s.ut).max()) < tol
    rest = (1 - t[:5])[:, None, None]
    torch.testing.assert_close(s.ut[:5] * rest, so3.logmap(s.xt[:5], x1[:5]), atol=10 * tol, rtol=0)


def test_euclidean_target_and_centred_noise():
    path = StochasticGeodesicPath(Euclidean(3), g=1.0, sigma_min=0.1, centred=True)
    g = _gen(5)
    x0 = torch.randn(4000, 7, 3, generator=g, dtype=F64)
    x0 = x0 - x0.mean(1, keepdim=True)
    x1 = torch.zeros_like(x0)
    t = torch.full((4000,), 0.5, dtype=F64)
    s = path.sample(x0, x1, t, generator=g)
    assert float(s.xt.mean(1).abs().max()) < 1e-12  # zero-mean inputs stay zero-mean
    torch.testing.assert_close(s.ut, (x1 - s.xt) / 0.5)
    noise = (s.xt - 0.5 * x0).reshape(4000, -1)
    var = path.sigma_t(t)[0].item() ** 2
    cov = noise.T @ noise / 4000
    expected = var * torch.kron(torch.eye(7, dtype=F64) - 1 / 7, torch.eye(3, dtype=F64))
    torch.testing.assert_close(cov, expected, atol=0.1 * var, rtol=0)


def test_frames_shape_one_time_per_sample_and_reproducible():
    g = _gen(6)
    so3 = SO3()
    x0 = so3.random_uniform((4, 5), generator=g, dtype=F64)
    x1 = so3.random_uniform((4, 5), generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=F64)
    path = StochasticGeodesicPath(so3, g=0.3, sigma_min=0.01)
    a = path.sample(x0, x1, t, generator=_gen(7))
    b = path.sample(x0, x1, t, generator=_gen(7))
    assert a.xt.shape == (4, 5, 3, 3) and torch.equal(a.xt, b.xt)
    mu = GeodesicPath(so3).sample(x0, x1, t).xt
    d = so3.dist(mu, a.xt)
    assert d.shape == (4, 5) and bool((d[:, 0] != d[:, 1]).all())  # noise differs per frame
    assert float(d[0].max()) < 0.1  # sigma_0 = 0.01


def test_stochastic_paths_in_a_product_path():
    so3, r3 = SO3(), Euclidean(3)
    path = ProductPath([StochasticGeodesicPath(so3), StochasticGeodesicPath(r3)])
    g = _gen(8)
    x0, x1 = (
        path.manifold.random(6, generator=g, dtype=F64),
        path.manifold.random(6, generator=g, dtype=F64),
    )
    s = path.sample(x0, x1, torch.rand(6, generator=g, dtype=F64), generator=g)
    assert s.xt.shape == x0.shape and path.singular_times == (1.0,)


def test_stochastic_path_refusals():
    with pytest.raises(TypeError, match="supports SO3"):
        StochasticGeodesicPath(Sphere(2))
    with pytest.raises(ValueError, match="g must"):
        StochasticGeodesicPath(SO3(), g=-0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        StochasticGeodesicPath(SO3(), sigma_min=math.nan)
    with pytest.raises(TypeError, match="centred"):
        StochasticGeodesicPath(Euclidean(3), centred=1)  # type: ignore[arg-type]
    path = StochasticGeodesicPath(Euclidean(3), centred=True)
    with pytest.raises(ValueError, match="point sets"):
        path.sample(torch.zeros(2, 3), torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="not on"):
        StochasticGeodesicPath(SO3()).sample(torch.ones(2, 3, 3), torch.ones(2, 3, 3), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        x0, x1 = _so3_pair(2, 0)
        StochasticGeodesicPath(SO3()).sample(x0, x1, 1.5)


@given(t=st.floats(0.0, 1.0), rate=st.floats(0.1, 50.0), dtype=dtypes)
@example(t=1.0, rate=10.0, dtype=torch.float32)
@example(t=1.0 - 1e-7, rate=10.0, dtype=torch.float64)
@example(t=0.99999, rate=1.0, dtype=torch.float32)  # 1 - t of the rounded time, not of t
def test_exponential_rate_linear_rescale_is_velocity_scale_times_one_minus_t(t, rate, dtype):
    sched = ExponentialRate(rate)
    tt = torch.tensor([t], dtype=dtype)
    got = sched.linear_rescale(tt)
    assert torch.isfinite(got).all() and got.dtype == dtype
    z = rate * (1.0 - t)
    want = 1.0 if z == 0 else z / -math.expm1(-z)
    assert float(got) == pytest.approx(want, rel=1e-6 if dtype == torch.float64 else 1e-5)
    t_seen = float(tt)  # the time as the schedule sees it (rounded in float32)
    if t_seen < 1.0:
        direct = float(sched.velocity_scale(tt.double())) * (1.0 - t_seen)
        assert float(got) == pytest.approx(direct, rel=1e-5)


def test_linear_rescale_turns_a_linear_field_into_the_exponential_one_on_so3():
    # the linear schedule's exact field towards one target, rescaled, follows the geodesic
    # with the exponential schedule's kappa
    so3, sched = SO3(), ExponentialRate(10.0)
    g = torch.Generator().manual_seed(3)
    x0 = so3.random_uniform(4, generator=g, dtype=torch.float64)
    x1 = so3.random_uniform(4, generator=g, dtype=torch.float64)

    def v(x, t):
        lin = so3.logmap(x, x1) / (1.0 - t)[:, None, None]
        return sched.linear_rescale(t)[:, None, None] * lin

    sol = solve_ode(v, x0, steps=200, method="rk4", manifold=so3, t1=0.5)
    kappa = float(sched(torch.tensor(0.5, dtype=torch.float64)).alpha)
    want = so3.expmap(x0, kappa * so3.logmap(x0, x1))
    assert float(so3.dist(sol.x, want).max()) < 1e-6
