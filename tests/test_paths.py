"""Schedulers, affine paths, bridge paths: endpoints, derivatives, conversions, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.testing import check_path, check_scheduler

SCHEDULERS = [
    mfm.CondOT(),
    mfm.CondOT(sigma_min=0.1),
    mfm.Polynomial(2.0),
    mfm.Polynomial(0.5),
    mfm.Cosine(),
    mfm.VP(),
    mfm.VP(beta_min=0.5, beta_max=5.0),
    mfm.VE(),
    mfm.VE(sigma_min=0.1, sigma_max=3.0),
]
DTYPES = [torch.float64, torch.float32]


def _pair(seed: int, shape: tuple[int, ...], dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g, dtype=dtype),
        torch.randn(shape, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scheduler_contract(sched, dtype):
    check_scheduler(sched, dtype=dtype)


def test_scheduler_closed_forms():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    out = mfm.VP(beta_min=0.1, beta_max=20.0)(t)
    assert torch.allclose(out.alpha**2 + out.sigma**2, torch.ones(3, dtype=torch.float64))
    assert out.alpha[0].item() == pytest.approx(math.exp(-0.25 * (0.1 + 20.0)))
    assert out.sigma[-1].item() == 0.0 and torch.isinf(out.d_sigma[-1])
    ve = mfm.VE(sigma_min=0.01, sigma_max=10.0)(t)
    assert ve.sigma[0].item() == pytest.approx(10.0) and ve.sigma[-1].item() == pytest.approx(0.01)
    cos = mfm.Cosine()(t)
    assert torch.allclose(cos.alpha**2 + cos.sigma**2, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: mfm.CondOT(sigma_min=1.0),
        lambda: mfm.CondOT(sigma_min=-0.1),
        lambda: mfm.Polynomial(0),
        lambda: mfm.VP(beta_min=2.0, beta_max=1.0),
        lambda: mfm.VE(sigma_min=1.0, sigma_max=1.0),
        lambda: mfm.VE(sigma_min=float("nan")),
    ],
)
def test_scheduler_bad_parameters(bad):
    with pytest.raises(ValueError):
        bad()


@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6), dim=st.integers(1, 5))
def test_affine_path_contract(sched, dtype, seed, batch, dim):
    x0, x1 = _pair(seed, (batch, dim), dtype)
    check_path(mfm.AffinePath(sched), x0, x1, exact_endpoints=sched.exact_endpoints)


def test_affine_path_multi_dim_points_and_float_time():
    x0, x1 = _pair(0, (3, 4, 2, 2))
    s = mfm.AffinePath().sample(x0, x1, 0.25)
    assert s.xt.shape == x0.shape and s.t.shape == (3,)
    assert torch.allclose(s.xt, 0.75 * x0 + 0.25 * x1)
    s0 = mfm.AffinePath().sample(x0, x1, torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(s0.xt, x1)


def test_straight_line_fast_path_matches_generic_formula():
    x0, x1 = _pair(1, (16, 7))
    t = torch.rand(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fast = mfm.AffinePath(mfm.CondOT()).sample(x0, x1, t)
    generic = mfm.AffinePath(mfm.Polynomial(1.0)).sample(x0, x1, t)
    assert torch.allclose(fast.xt, generic.xt) and torch.allclose(fast.ut, generic.ut)


CONVERTIBLE = [s for s in SCHEDULERS if not isinstance(s, mfm.VE)] + [mfm.VE(0.1, 3.0)]


@pytest.mark.parametrize("sched", CONVERTIBLE, ids=repr)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.05, 0.95))
@example(seed=0, t=0.05)
@example(seed=0, t=0.95)
def test_conversions_round_trip_and_recover_endpoints(sched, seed, t):
    path = mfm.AffinePath(sched)
    x0, x1 = _pair(seed, (5, 3))
    s = path.sample(x0, x1, t)
    # the conditional target maps back to the endpoints that generated it
    assert torch.allclose(path.velocity_to_x1(s.ut, s.xt, s.t), x1, atol=1e-8)
    if not isinstance(sched, mfm.VE):  # VE has d_alpha = 0: no information about x0 in x1 terms
        assert torch.allclose(path.velocity_to_noise(s.ut, s.xt, s.t), x0, atol=1e-7)
    v = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    assert torch.allclose(path.x1_to_velocity(path.velocity_to_x1(v, s.xt, t), s.xt, t), v)
    assert torch.allclose(path.score_to_velocity(path.velocity_to_score(v, s.xt, t), s.xt, t), v)
    if not isinstance(sched, mfm.VE):
        nz = path.velocity_to_noise(v, s.xt, t)
        assert torch.allclose(path.noise_to_velocity(nz, s.xt, t), v, atol=1e-8)


def test_score_of_gaussian_path_is_exact():
    # data = a single point m: p_t = N(alpha m, sigma^2 I), score = -(x - alpha m) / sigma^2
    path = mfm.AffinePath(mfm.Cosine())
    m = torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(4, 2)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    out = mfm.Cosine()(t)
    a, s = out.alpha[:, None], out.sigma[:, None]
    x0 = (x - a * m) / s
    v = out.d_sigma[:, None] * x0 + out.d_alpha[:, None] * m  # marginal velocity for a point mass
    assert torch.allclose(path.velocity_to_score(v, x, t), -(x - a * m) / s**2)


@pytest.mark.parametrize("sigma", [0.0, 0.3])
@given(seed=st.integers(0, 2**31 - 1))
def test_linear_gaussian_path(sigma, seed):
    x0, x1 = _pair(seed, (6, 2))
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(6, generator=g, dtype=torch.float64)
    s = mfm.LinearGaussianPath(sigma).sample(x0, x1, t, generator=g)
    assert torch.allclose(s.ut, x1 - x0)
    if sigma == 0:
        ref = mfm.AffinePath().sample(x0, x1, t)
        assert torch.allclose(s.xt, ref.xt)
    else:
        assert not torch.allclose(s.xt, mfm.AffinePath().sample(x0, x1, t).xt)


def test_linear_gaussian_noise_statistics():
    n = 20000
    x0, x1 = torch.zeros(n, 1, dtype=torch.float64), torch.ones(n, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    s = mfm.LinearGaussianPath(0.3).sample(x0, x1, 0.5, generator=g)
    assert abs(s.xt.mean().item() - 0.5) < 0.01 and abs(s.xt.std().item() - 0.3) < 0.01


@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.1, 2.0))
def test_schrodinger_bridge_endpoints_and_derivative(seed, sigma):
    x0, x1 = _pair(seed, (5, 3))
    path = mfm.SchrodingerBridgePath(sigma)
    g = torch.Generator().manual_seed(seed)
    ends = path.sample(x0[:2], x1[:2], torch.tensor([0.0, 1.0], dtype=torch.float64), generator=g)
    assert torch.allclose(ends.xt[0], x0[0]) and torch.allclose(ends.xt[1], x1[1])
    assert torch.isfinite(ends.ut).all()
    # fixed noise: x_t(eps) = lerp + sigma sqrt(t(1-t)) eps; ut must be its t-derivative.
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    s = path.sample(x0, x1, t, generator=torch.Generator().manual_seed(seed))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)

    def xt_of(tt):
        tb = tt[:, None]
        return torch.lerp(x0, x1, tb) + sigma * torch.sqrt(tb * (1 - tb)) * eps

    assert torch.allclose(s.xt, xt_of(t))
    _, dxdt = torch.func.jvp(xt_of, (t,), (torch.ones_like(t),))
    assert torch.allclose(s.ut, dxdt, atol=1e-9)


def test_schrodinger_bridge_variance():
    n = 20000
    z = torch.zeros(n, 1, dtype=torch.float64)
    s = mfm.SchrodingerBridgePath(0.8).sample(z, z, 0.5, generator=torch.Generator().manual_seed(1))
    assert abs(s.xt.var().item() - 0.64 * 0.25) < 0.01


@pytest.mark.parametrize(
    "path",
    [
        mfm.AffinePath(),
        mfm.AffinePath(mfm.VP()),
        mfm.LinearGaussianPath(0.1),
        mfm.SchrodingerBridgePath(0.5),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtype_preserved(path, dtype):
    x0, x1 = _pair(0, (4, 3), dtype)
    s = path.sample(x0, x1, torch.rand(4, dtype=dtype, generator=torch.Generator().manual_seed(0)))
    for v in (s.t, s.xt, s.ut):
        assert v.dtype == dtype and v.device == x0.device


@pytest.mark.parametrize(
    "path",
    [mfm.AffinePath(), mfm.LinearGaussianPath(0.1), mfm.SchrodingerBridgePath(0.5)],
    ids=repr,
)
def test_bad_input(path):
    x0, x1 = _pair(0, (4, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 3\)"):
        path.sample(x0, torch.zeros(5, 3, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample(x0, x1, torch.tensor([0.1, 0.2, 1.5, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample(x0, x1, torch.tensor([0.1, float("nan"), 0.5, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        path.sample(x0, x1, torch.rand(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        path.sample(x0, x1, torch.rand(4, 1, dtype=torch.float64))
    with pytest.raises(TypeError):
        path.sample(x0.numpy(), x1, 0.5)
    with pytest.raises(TypeError):
        path.sample(x0, x1, "0.5")
    with pytest.raises(ValueError):
        path.sample(x0, x1, -0.1)


def test_value_checks_can_be_switched_off():
    x0, x1 = _pair(0, (2, 3))
    with mfm.checks(values=False):
        s = mfm.AffinePath().sample(x0, x1, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert torch.allclose(s.xt[1], -0.5 * x0[1] + 1.5 * x1[1])


class _Sched:
    """alpha_t = t, sigma_t = 1 - t with one defect switched on by ``bad``."""

    singular_times = ()
    exact_endpoints = True

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def __call__(self, t):
        one = torch.ones_like(t)
        alpha, sigma, d_alpha, d_sigma = t, 1 - t, one, -one
        if self.bad == "derivative":
            d_alpha = 2 * one
        elif self.bad == "endpoint":
            alpha = 0.01 + 0.98 * t
            d_alpha = 0.98 * one
        elif self.bad == "dtype":
            sigma = sigma.float()
        elif self.bad == "infinite":
            sigma = torch.where(t == 1, torch.full_like(t, math.inf), sigma)
        elif self.bad == "type":
            return (alpha, sigma, d_alpha, d_sigma)
        return mfm.ScheduleOutput(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("derivative", "d_alpha vs finite difference"),
        ("endpoint", r"alpha at \(0, 1\)"),
        ("dtype", "sigma has shape/dtype"),
        ("infinite", "not finite at t = 0 or t = 1"),
        ("type", "not ScheduleOutput"),
    ],
)
def test_check_scheduler_catches_broken_schedulers(bad, message):
    check_scheduler(_Sched("none"))  # the intact schedule passes
    with pytest.raises(AssertionError, match=message):
        check_scheduler(_Sched(bad))


@pytest.mark.parametrize("scheduler", [mfm.CondOT(), mfm.Cosine()], ids=["condot", "cosine"])
def test_affine_path_refuses_integer_batches(scheduler):
    # the time would be cast to the batch's integer dtype (0.5 -> 0): refused, not computed
    x0 = torch.zeros(2, 3, dtype=torch.long)
    x1 = torch.full((2, 3), 10)
    with pytest.raises(TypeError, match="floating dtype"):
        mfm.AffinePath(scheduler).sample(x0, x1, 0.5)
