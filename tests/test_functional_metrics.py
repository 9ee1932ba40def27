"""Tests of the statistics of random functions in manifoldfm.metrics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm.metrics import (
    FunctionalStatistics,
    autocovariance,
    autocovariance_mse,
    density_mse,
    functional_statistics,
    pointwise_mean_mse,
    pointwise_variance_mse,
    power_spectrum_mse,
    radial_power_spectrum,
)

from .conftest import DEVICES
from .strategies import seeds

PAIR_METRICS = [
    pointwise_mean_mse,
    pointwise_variance_mse,
    autocovariance_mse,
    lambda a, b: autocovariance_mse(a, b, mode="matrix"),
    density_mse,
]


def _set(shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _brute_autocovariance(x: torch.Tensor, lag: int) -> torch.Tensor:
    c = x - x.mean(dim=0)
    n = x.shape[-1]
    out = []
    for h in range(lag + 1):
        out.append((c[..., : n - h] * c[..., h:]).sum(dim=-1).sum(dim=0) / (x.shape[0] * (n - h)))
    return torch.stack(out, dim=-1)


# ------------------------------------------------------------------ invariants of all statistics


@given(
    n=st.integers(2, 7),
    m=st.integers(2, 7),
    points=st.integers(1, 9),
    channels=st.sampled_from([None, 1, 2]),
    seed=seeds,
)
@example(n=2, m=2, points=1, channels=None, seed=0)
def test_zero_symmetric_and_permutation_invariant(n, m, points, channels, seed):
    shape = (points,) if channels is None else (channels, points)
    a, b = _set((n, *shape), seed), _set((m, *shape), seed + 1) * 1.5 + 0.3
    perm_a = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    perm_b = torch.randperm(m, generator=torch.Generator().manual_seed(seed + 2))
    for metric in PAIR_METRICS:
        assert float(metric(a, a)) == pytest.approx(0.0, abs=1e-12)
        ab = float(metric(a, b))
        assert ab >= 0
        assert float(metric(b, a)) == pytest.approx(ab, rel=1e-9, abs=1e-12)
        assert float(metric(a[perm_a], b[perm_b])) == pytest.approx(ab, rel=1e-9, abs=1e-12)
    stats = functional_statistics(a, b)
    assert stats.power_spectrum_mse is None
    assert stats.as_dict()["mean_mse"] == pytest.approx(float(pointwise_mean_mse(a, b)))


@given(n=st.integers(2, 5), h=st.integers(1, 8), w=st.integers(1, 8), seed=seeds)
def test_field_statistics_zero_symmetric_permutation(n, h, w, seed):
    a, b = _set((n, 2, h, w), seed), 2.0 * _set((n + 1, 2, h, w), seed + 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for log in (True, False):
        assert float(power_spectrum_mse(a, a, log=log)) == pytest.approx(0.0, abs=1e-12)
        ab = float(power_spectrum_mse(a, b, log=log))
        assert float(power_spectrum_mse(b, a, log=log)) == pytest.approx(ab, rel=1e-9)
        assert float(power_spectrum_mse(a[perm], b, log=log)) == pytest.approx(ab, rel=1e-9)
    stats = functional_statistics(a, b)
    assert stats.autocovariance_mse is None and stats.power_spectrum_mse is not None
    assert float(stats.power_spectrum_mse) == pytest.approx(float(power_spectrum_mse(a, b)))


# ------------------------------------------------------------------ closed forms


@given(
    c1=st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    c2=st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    points=st.integers(1, 12),
)
@example(c1=[0.0, 0.0], c2=[1.0, -1.0], points=1)
def test_constant_functions_closed_forms(c1, c2, points):
    """Sets of constant functions: mean, variance and autocovariance are those of the constants."""
    a1, a2 = torch.tensor(c1, dtype=torch.float64), torch.tensor(c2, dtype=torch.float64)
    f1, f2 = a1[:, None].expand(-1, points), a2[:, None].expand(-1, points)
    assert float(pointwise_mean_mse(f1, f2)) == pytest.approx(
        float((a1.mean() - a2.mean()) ** 2), rel=1e-9, abs=1e-12
    )
    dv = float(a1.var() - a2.var())
    assert float(pointwise_variance_mse(f1, f2)) == pytest.approx(dv**2, rel=1e-9, abs=1e-10)
    pv1, pv2 = float(a1.var(correction=0)), float(a2.var(correction=0))
    assert autocovariance(f1).tolist() == pytest.approx([pv1] * points, rel=1e-9, abs=1e-10)
    assert float(autocovariance_mse(f1, f2)) == pytest.approx((pv1 - pv2) ** 2, rel=1e-8, abs=1e-9)
    assert float(autocovariance_mse(f1, f2, mode="matrix")) == pytest.approx(
        (pv1 - pv2) ** 2, rel=1e-8, abs=1e-9
    )


@given(
    b=st.integers(1, 5),
    c=st.sampled_from([None, 1, 3]),
    n=st.integers(1, 20),
    seed=seeds,
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_autocovariance_matches_direct_sum(b, c, n, seed, dtype):
    shape = (b, n) if c is None else (b, c, n)
    x = _set(shape, seed, dtype)
    lag = n // 2
    got = autocovariance(x, max_lag=lag)
    want = _brute_autocovariance(x.double(), lag)
    assert got.dtype == dtype and got.shape == want.shape
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)


def test_autocovariance_of_random_phase_cosines():
    """cos(w j + phi) with uniform phase has autocovariance cos(w h) / 2 at every position."""
    g = torch.Generator().manual_seed(0)
    phi = 2 * math.pi * torch.rand(20000, 1, generator=g, dtype=torch.float64)
    j = torch.arange(40, dtype=torch.float64)
    x = torch.cos(0.3 * j + phi)
    got = autocovariance(x, max_lag=10)
    want = 0.5 * torch.cos(0.3 * torch.arange(11, dtype=torch.float64))
    torch.testing.assert_close(got, want, atol=0.02, rtol=0)


def test_density_mse_closed_form_and_range():
    a = torch.zeros(4, 5)
    b = torch.ones(2, 5)
    # Union range [0, 1]: densities (bins, 0, ..., 0) and (0, ..., bins); mean of squares.
    for bins in (1, 2, 5):
        want = 0.0 if bins == 1 else 2 * bins**2 / bins
        assert float(density_mse(a, b, bins=bins)) == pytest.approx(want)
    # All values equal: a unit range, identical densities.
    assert float(density_mse(a, torch.zeros(3, 5))) == 0.0
    # Densities integrate to one: a uniform sample against a point mass.
    x = torch.linspace(0, 1, 1000)[None, :]
    assert float(density_mse(x, x.clone())) == 0.0


def test_density_mse_changes_with_spread():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 50, generator=g, dtype=torch.float64)
    b = torch.randn(200, 50, generator=g, dtype=torch.float64)
    assert float(density_mse(a, b)) < 0.1 * float(density_mse(a, 2 * b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,peak", [((32, 32), (3, 4)), ((16, 24), (0, 7)), ((17, 17), (8, 0))])
def test_power_spectrum_of_a_sinusoid_peaks_at_its_radius(device, dtype, shape, peak):
    h, w = shape
    ky, kx = peak
    i = torch.arange(h, dtype=dtype, device=device)[:, None]
    j = torch.arange(w, dtype=dtype, device=device)[None, :]
    wave = torch.cos(2 * math.pi * (ky * i / h + kx * j / w) + 0.4)
    spec = radial_power_spectrum(wave[None, None])
    assert spec.shape == (1, min(h, w) // 2 + 1) and spec.dtype == dtype
    radius = round(math.hypot(ky, kx))
    assert int(spec.argmax()) == radius
    others = torch.cat([spec[0, :radius], spec[0, radius + 1 :]])
    assert float(others.abs().max()) < 1e-3 * float(spec[0, radius])


def test_power_spectrum_parseval_and_white_noise():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 1, 16, 16, generator=g, dtype=torch.float64)
    spec = radial_power_spectrum(x)
    # White noise: flat spectrum at the variance 1 (the DC radius has a single mode).
    assert float((spec[0, 1:] - 1).abs().max()) < 0.3
    # A smoothed field loses power at high wavenumbers.
    smooth = (x + x.roll(1, -1) + x.roll(1, -2) + x.roll((1, 1), (-2, -1))) / 4
    s2 = radial_power_spectrum(smooth)
    assert float(s2[0, -1]) < 0.1 * float(s2[0, 1])
    assert float(power_spectrum_mse(x, smooth)) > 0.1


# ------------------------------------------------------------------ results and refusals


def test_functional_statistics_result_type_and_values():
    a, b = _set((6, 2, 10), 0), _set((5, 2, 10), 1) + 1
    stats = functional_statistics(a, b, max_lag=4, bins=10)
    assert isinstance(stats, FunctionalStatistics)
    assert float(stats.autocovariance_mse) == pytest.approx(
        float(autocovariance_mse(a, b, max_lag=4))
    )
    assert float(stats.density_mse) == pytest.approx(float(density_mse(a, b, bins=10)))
    assert float(stats.mean_mse) > 0.5
    d = stats.as_dict()
    assert set(d) == {
        "mean_mse",
        "variance_mse",
        "autocovariance_mse",
        "density_mse",
        "power_spectrum_mse",
    }
    assert d["power_spectrum_mse"] is None and isinstance(d["variance_mse"], float)
    with pytest.raises(AttributeError):
        stats.mean_mse = torch.tensor(0.0)  # type: ignore[misc]


def test_dtype_and_gradients():
    a = _set((4, 8), 0, torch.float32).requires_grad_(True)
    b = _set((3, 8), 1, torch.float64)
    for metric in (pointwise_mean_mse, pointwise_variance_mse, autocovariance_mse):
        v = metric(a, b)
        assert v.dtype == torch.float32
        (grad,) = torch.autograd.grad(v, a)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("metric", [*PAIR_METRICS, power_spectrum_mse, functional_statistics])
def test_shape_mismatch_names_shapes(metric):
    a, b = torch.zeros(3, 1, 4, 5), torch.zeros(3, 1, 4, 6)
    with pytest.raises(ValueError, match=r"\(3, 1, 4, 5\).*\(3, 1, 4, 6\)"):
        metric(a, b)


def test_refusals():
    x = torch.zeros(3, 5)
    with pytest.raises(ValueError, match="at least 2"):
        pointwise_variance_mse(x[:1], x)
    assert float(pointwise_variance_mse(x[:1], x, unbiased=False)) == 0.0
    with pytest.raises(ValueError, match="max_lag"):
        autocovariance(x, max_lag=5)
    with pytest.raises(TypeError, match="max_lag"):
        autocovariance(x, max_lag=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(3, 1, 2, 2\)"):
        autocovariance_mse(torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match="bins"):
        density_mse(x, x, bins=0)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        power_spectrum_mse(x, x)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        pointwise_mean_mse(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        pointwise_mean_mse(torch.zeros(3, 2, dtype=torch.long), x)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        density_mse(bad, x)
    with pytest.raises(ValueError, match="mode"):
        autocovariance_mse(x, x, mode="lag")  # type: ignore[arg-type]
