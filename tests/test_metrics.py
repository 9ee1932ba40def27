"""Tests for manifoldfm.metrics."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm.metrics import energy_distance, mmd, path_energy, wasserstein

from .conftest import DEVICES, TOL


def _cloud(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- Wasserstein


@given(
    n=st.integers(1, 12),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    p=st.sampled_from([1, 2, 3]),
)
@example(n=1, d=1, seed=0, p=2)
def test_wasserstein_self_zero_translate_and_symmetry(n, d, seed, p):
    x = _cloud(n, d, seed)
    c = _cloud(1, d, seed + 1)
    y = _cloud(n + 2, d, seed + 2)
    assert wasserstein(x, x, p=p).item() == pytest.approx(0.0, abs=1e-12)
    # Permuting the points changes nothing.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    assert wasserstein(x, x[perm], p=p).item() == pytest.approx(0.0, abs=1e-12)
    # A translate by c is at distance |c| (for p = 2 and p = 1 exactly).
    if p in (1, 2):
        assert wasserstein(x, x + c, p=p).item() == pytest.approx(c.norm().item(), rel=1e-9)
    torch.testing.assert_close(wasserstein(x, y, p=p), wasserstein(y, x, p=p), **TOL[torch.float64])


def test_wasserstein_brute_force_assignment():
    # Equal-size uniform clouds: the optimum is a permutation; check against all of them.
    x, y = _cloud(5, 2, 0), _cloud(5, 2, 1)
    cost = torch.cdist(x, y) ** 2
    best = min(
        sum(cost[i, j] for i, j in enumerate(perm)) for perm in itertools.permutations(range(5))
    )
    w2 = wasserstein(x, y)
    assert w2.item() == pytest.approx((best / 5).sqrt().item(), rel=1e-10)
    # Weighted case: 1 point vs 2 points, half the mass to each.
    a = torch.zeros(1, 1, dtype=torch.float64)
    b = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    assert wasserstein(a, b).item() == pytest.approx((0.5 * 1 + 0.5 * 9) ** 0.5)
    assert wasserstein(a, b, p=1).item() == pytest.approx(2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_metrics_dtype_device_and_point_shapes(dtype, device):
    x = _cloud(6, 6, 0, dtype).to(device).reshape(6, 2, 3)
    y = _cloud(4, 6, 1, dtype).to(device).reshape(4, 2, 3)
    for f in (wasserstein, mmd, energy_distance):
        out = f(x, y)
        assert out.ndim == 0 and out.dtype == dtype and out.device == x.device
        torch.testing.assert_close(out, f(x.reshape(6, 6), y.reshape(4, 6)))


# ----------------------------------------------------------------------------- MMD / energy


@given(n=st.integers(2, 30), d=st.integers(1, 3), seed=st.integers(0, 2**16))
@example(n=2, d=1, seed=0)
def test_mmd_and_energy_zero_on_identical_positive_otherwise(n, d, seed):
    x = _cloud(n, d, seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    shifted = x + 0.5
    for kernel in ("rbf", "imq"):
        assert mmd(x, x[perm], kernel=kernel).item() == pytest.approx(0.0, abs=1e-12)
        assert mmd(x, shifted, kernel=kernel).item() > 1e-6
        torch.testing.assert_close(mmd(x, shifted, kernel=kernel), mmd(shifted, x, kernel=kernel))
    assert energy_distance(x, x[perm]).item() == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, shifted).item() > 1e-6
    torch.testing.assert_close(energy_distance(x, shifted), energy_distance(shifted, x))


def test_mmd_hand_value_and_unbiased():
    x = torch.tensor([[0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0]], dtype=torch.float64)
    # k(0, 1) = exp(-1/2) with bandwidth 1: MMD^2 = 1 + 1 - 2 exp(-1/2).
    expected = 2 - 2 * torch.exp(torch.tensor(-0.5, dtype=torch.float64))
    torch.testing.assert_close(mmd(x, y, bandwidths=[1.0]), expected)
    # Two bandwidths: the kernels add.
    two = (
        2
        - 2 * torch.exp(torch.tensor(-0.5, dtype=torch.float64))
        + 2
        - 2 * torch.exp(torch.tensor(-0.125, dtype=torch.float64))
    )
    torch.testing.assert_close(mmd(x, y, bandwidths=[1.0, 2.0]), two)
    # Unbiased estimator: mean of off-diagonal terms; for two draws of one distribution it is
    # close to 0 and may be negative, while the biased one is positive.
    a, b = _cloud(200, 2, 0), _cloud(200, 2, 1)
    unbiased = mmd(a, b, bandwidths=[1.0], biased=False)
    biased = mmd(a, b, bandwidths=[1.0])
    assert abs(unbiased.item()) < 0.01
    assert biased.item() > unbiased.item()
    kxx = torch.exp(-0.5 * torch.cdist(a, a) ** 2)
    kyy = torch.exp(-0.5 * torch.cdist(b, b) ** 2)
    kxy = torch.exp(-0.5 * torch.cdist(a, b) ** 2)
    hand = (
        (kxx.sum() - kxx.trace()) / (200 * 199)
        + (kyy.sum() - kyy.trace()) / (200 * 199)
        - 2 * kxy.mean()
    )
    torch.testing.assert_close(unbiased, hand)


def test_energy_distance_hand_value():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    # E|X-Y| = (0 + 3 + 1 + 2) / 4 = 1.5, E|X-X'| = 0.5, E|Y-Y'| = 1.5.
    assert energy_distance(x, y).item() == pytest.approx(2 * 1.5 - 0.5 - 1.5)


def test_sample_metrics_detect_distribution_shift():
    a, b, c = _cloud(300, 2, 0), _cloud(300, 2, 1), _cloud(300, 2, 2) * 2.0
    for f in (wasserstein, mmd, energy_distance):
        assert f(a, b).item() < f(a, c).item()


def test_metric_bad_inputs():
    x = _cloud(4, 2, 0)
    with pytest.raises(ValueError, match="point shape"):
        wasserstein(x, _cloud(4, 3, 0))
    with pytest.raises(ValueError, match="non-empty"):
        mmd(x, x[:0])
    with pytest.raises(ValueError, match="p must be >= 1"):
        wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="kernel"):
        mmd(x, x, kernel="laplace")
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, x, bandwidths=[1.0, -1.0])
    with pytest.raises(TypeError, match="sequence"):
        mmd(x, x, bandwidths=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        mmd(x[:1], x, biased=False)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        energy_distance(bad, x)
    with pytest.raises(TypeError, match="floating"):
        wasserstein(torch.ones(3, 2, dtype=torch.long), x)


# ----------------------------------------------------------------------------- path energy


@given(
    steps=st.integers(1, 20),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    uniform=st.booleans(),
)
@example(steps=1, batch=1, seed=0, uniform=True)
def test_path_energy_straight_line(steps, batch, seed, uniform):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    if uniform:
        ts = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    else:
        inner = torch.sort(torch.rand(steps - 1, generator=g, dtype=torch.float64)).values
        ts = torch.cat([torch.zeros(1).double(), inner, torch.ones(1).double()])
    xs = x0 + ts[:, None, None] * (x1 - x0)
    expected = ((x1 - x0) ** 2).sum(dim=1)
    torch.testing.assert_close(
        path_energy(xs, ts, reduction="none"), expected, **TOL[torch.float64]
    )
    torch.testing.assert_close(path_energy(xs, ts), expected.mean(), **TOL[torch.float64])
    # Time reversed: the same energy.
    torch.testing.assert_close(
        path_energy(xs.flip(0), ts.flip(0)), expected.mean(), **TOL[torch.float64]
    )


def test_path_energy_detour_costs_more():
    ts = torch.linspace(0, 1, 101, dtype=torch.float64)
    straight = ts[:, None, None] * torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    bump = straight.clone()
    bump[:, 0, 1] = torch.sin(torch.pi * ts)  # same endpoints, curved
    assert path_energy(bump, ts).item() > path_energy(straight, ts).item() + 1.0
    # Non-uniform speed along the straight line also costs more: x = t^2.
    quad = (ts**2)[:, None, None] * torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert path_energy(quad, ts).item() == pytest.approx(4.0 / 3.0, rel=1e-3)


def test_path_energy_bad_inputs():
    xs = torch.zeros(5, 2, 3)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        path_energy(xs, torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        path_energy(xs, torch.tensor([0.0, 0.5, 0.5, 0.7, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        path_energy(xs[:1], torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(T, B"):
        path_energy(torch.zeros(5), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="reduction"):
        path_energy(xs, torch.linspace(0, 1, 5), reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_and_energy_metrics_take_half_precision_inputs(dtype):
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(20, 3, generator=g), torch.randn(15, 3, generator=g) + 1.0
    for metric in (mmd, energy_distance):
        got = metric(x.to(dtype), y.to(dtype))
        assert got.dtype == dtype
        ref = metric(x.to(dtype).float(), y.to(dtype).float())
        torch.testing.assert_close(got.float(), ref, rtol=1e-2, atol=1e-3)


def test_geodesic_w2_runs_the_exact_solver_to_the_optimum(monkeypatch):
    # POT's default of 100000 iterations stops short of the optimum from about 2000 points:
    # the evaluation's geodesic W2 gives it enough and refuses an unfinished solve
    import ot

    from manifoldfm.api import _geodesic_w2
    from manifoldfm.manifolds import Sphere

    s2 = Sphere(2)
    g = torch.Generator().manual_seed(5)
    x = s2.random_uniform(30, generator=g, dtype=torch.float64)
    y = s2.random_uniform(20, generator=g, dtype=torch.float64)
    seen = {}
    real = ot.emd2

    def spy(a, b, m, **kw):
        seen.update(kw)
        return real(a, b, m, **kw)

    monkeypatch.setattr(ot, "emd2", spy)
    value = _geodesic_w2(s2, x, y)
    assert seen["numItermax"] >= 50 * 30 * 20 and value > 0
    monkeypatch.setattr(ot, "emd2", lambda a, b, m, **kw: (0.5, {"warning": "numItermax reached"}))
    with pytest.raises(RuntimeError, match="did not converge"):
        _geodesic_w2(s2, x, y)
