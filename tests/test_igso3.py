"""IGSO3 (isotropic Gaussian on SO(3)) and CentredGaussian (zero-mean translations).

IGSO3: the angle density integrates to one (Gauss-Legendre in the angle, Monte Carlo with
uniform rotations), the two evaluation forms (Poisson summation, character series) agree
where both converge, the small-sigma limit is the Gaussian in rotation-vector coordinates and
the large-sigma limit the uniform law, samples follow the density (Kolmogorov-Smirnov on the
angle, both the fixed-sigma sampler and the per-row sampler), the density is invariant
under conjugation and inversion, values and gradients are finite at the edges, and bad input
is refused. CentredGaussian: zero mean, covariance ``std^2 (I - 1 1^T / n)``, ``log_prob``
against the density of the coordinates in an orthonormal basis of the zero-mean subspace.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, stats

import manifoldfm as mfm
from manifoldfm.manifolds import SO3
from manifoldfm.manifolds.so3 import rotation_angle, rotmat_to_rotvec, rotvec_to_rotmat
from manifoldfm.sources import (
    IGSO3,
    CentredGaussian,
    Uniform,
    _igso3_degree,
    _igso3_log_lead,
    _igso3_log_series,
    _igso3_log_wraps,
    _igso3_pairs,
    _igso3_rotvec_rows,
)

from .conftest import DEVICES
from .strategies import dtypes, seeds

F64 = torch.float64
LOG_VOL = math.log(8 * math.pi**2)
SIGMAS = (0.01, 0.1, 0.5, 1.0, 1.5, 2.0, 5.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.lru_cache(maxsize=4)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _gl(a: float, b: float, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = _leggauss(n)
    return (
        torch.tensor(0.5 * (b - a) * x + 0.5 * (b + a), dtype=F64),
        torch.tensor(0.5 * (b - a) * w, dtype=F64),
    )


def _rot_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about e_z by the given angles (exact matrices, also at pi)."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, i = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, -s, o, s, c, o, o, o, i], dim=-1).unflatten(-1, (3, 3))


def _angle_mass(sigma: float) -> float:
    """``int_0^pi (1 - cos w) / pi f(w) dw`` by Gauss-Legendre on [0, a] and [a, pi]."""
    src = IGSO3(sigma)
    a = min(math.pi, 12 * sigma)
    total = 0.0
    for lo, hi in ((0.0, a), (a, math.pi)):
        if hi > lo:
            x, w = _gl(lo, hi)
            # through log_prob on actual rotations: f(w) = exp(log_prob + log 8 pi^2)
            f = (src.log_prob(_rot_z(x)) + LOG_VOL).exp()
            total += float(((1 - torch.cos(x)) / math.pi * f * w).sum())
    return total


def _numeric_cdf(sigma: float):
    """CDF of the angle from a fine cumulative Simpson integration of ``angle_log_prob``."""
    top = min(math.pi, 14 * sigma)
    grid = np.linspace(0.0, top, 200001)
    dens = IGSO3(sigma).angle_log_prob(torch.tensor(grid, dtype=F64)).exp().numpy()
    cum = integrate.cumulative_simpson(dens, x=grid, initial=0.0)
    return lambda v: np.interp(v, grid, cum)


# ---------------------------------------------------------------------------------------------
# density
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", SIGMAS)
def test_angle_density_integrates_to_one(sigma):
    assert _angle_mass(sigma) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0])
def test_monte_carlo_with_uniform_rotations(sigma):
    x = Uniform(SO3()).sample(40000, generator=_gen(3), dtype=F64)
    ratio = (IGSO3(sigma).log_prob(x) + LOG_VOL).exp()  # p / p_uniform
    mean, se = float(ratio.mean()), float(ratio.std()) / math.sqrt(ratio.numel())
    assert abs(mean - 1.0) < 5 * se + 1e-3


@pytest.mark.parametrize("sigma", [0.8, 1.0, 1.5, 2.0, 3.0])
def test_poisson_and_series_agree_where_both_converge(sigma):
    w = torch.linspace(0.0, math.pi, 2001, dtype=F64)
    poisson = _igso3_log_lead(w, sigma) + _igso3_log_wraps(w, sigma * sigma, 8)
    series = _igso3_log_series(w, sigma, 80)
    torch.testing.assert_close(poisson, series, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 1.5])
def test_poisson_truncation_matches_many_pairs(sigma):
    w = torch.linspace(0.0, math.pi, 1001, dtype=F64)
    for dtype in (torch.float64, torch.float32):
        pairs = _igso3_pairs(sigma, torch.finfo(dtype).eps)
        assert 1 <= pairs <= 3
        a = _igso3_log_wraps(w, sigma * sigma, pairs)
        b = _igso3_log_wraps(w, sigma * sigma, 10)
        assert float((a - b).abs().max()) <= torch.finfo(dtype).eps


@pytest.mark.parametrize("sigma", [1.5, 2.0, 4.0, 10.0])
def test_series_truncation_matches_many_terms(sigma):
    w = torch.linspace(0.0, math.pi, 1001, dtype=F64)
    for dtype in (torch.float64, torch.float32):
        degree = _igso3_degree(sigma, torch.finfo(dtype).eps)
        a = _igso3_log_series(w, sigma, degree)
        b = _igso3_log_series(w, sigma, 60)
        assert float((a - b).abs().max()) <= 2 * torch.finfo(dtype).eps
    assert _igso3_degree(1.5, torch.finfo(F64).eps) <= 8
    assert _igso3_degree(10.0, torch.finfo(F64).eps) == 0


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_small_sigma_is_the_gaussian_in_rotation_vector_coordinates(sigma):
    # density in rotation-vector coordinates: N(w; 0, sigma^2 I) e^{sigma^2/8} sinc(|w|/2),
    # and the Riemannian volume there is sinc(|w|/2)^2 d^3 w (up to the wraps, ~ e^{-2 pi^2/sigma^2})
    gen = _gen(0)
    w = torch.randn(200, 3, generator=gen, dtype=F64) * sigma
    th = w.norm(dim=-1)
    sinc = torch.sin(th / 2) / (th / 2)
    log_gauss = -0.5 * (w * w).sum(-1) / sigma**2 - 1.5 * math.log(2 * math.pi * sigma**2)
    expected = log_gauss + sigma**2 / 8 - torch.log(sinc)
    got = IGSO3(sigma).log_prob(rotvec_to_rotmat(w))
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-12)


def test_large_sigma_tends_to_uniform():
    x = Uniform(SO3()).sample(50, generator=_gen(1), dtype=F64)
    torch.testing.assert_close(
        IGSO3(20.0).log_prob(x), torch.full((50,), -LOG_VOL, dtype=F64), atol=1e-14, rtol=0
    )
    gap = [float((IGSO3(s).log_prob(x) + LOG_VOL).abs().max()) for s in (2.0, 3.0, 4.0)]
    assert gap[0] > gap[1] > gap[2] and gap[2] < 1e-5


@given(seed=seeds, sigma=st.sampled_from(SIGMAS), dtype=dtypes)
@example(seed=0, sigma=0.01, dtype=torch.float32)
def test_log_prob_invariant_under_conjugation_and_inversion(seed, sigma, dtype):
    gen = _gen(seed)
    src = IGSO3(sigma)
    x = src.sample(6, generator=gen, dtype=F64)
    r = Uniform(SO3()).sample(6, generator=gen, dtype=F64)
    lp = src.log_prob(x.to(dtype))
    tol = {"atol": 1e-9, "rtol": 1e-9} if dtype == F64 else {"atol": 5e-3, "rtol": 1e-4}
    torch.testing.assert_close(src.log_prob((r @ x @ r.mT).to(dtype)), lp, **tol)
    torch.testing.assert_close(src.log_prob(x.mT.contiguous().to(dtype)), lp, **tol)


@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0, 2.0])
def test_float32_agrees_with_float64(sigma):
    x = IGSO3(sigma).sample(200, generator=_gen(2), dtype=F64)
    lp64 = IGSO3(sigma).log_prob(x)
    lp32 = IGSO3(sigma).log_prob(x.float())
    assert torch.isfinite(lp32).all()
    # float32 rounding of small angles: relative error of theta^2 / sigma^2 about 1e-6
    torch.testing.assert_close(lp32.double(), lp64, atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0, 2.0])
def test_log_prob_and_gradient_finite_at_the_edges(dtype, sigma):
    angles = torch.tensor([0.0, 1e-8, 1e-3, math.pi - 1e-6, math.pi], dtype=F64)
    x = _rot_z(angles).to(dtype).requires_grad_(True)
    lp = IGSO3(sigma).log_prob(x)
    assert torch.isfinite(lp).all()
    (g,) = torch.autograd.grad(lp.sum(), x)
    assert torch.isfinite(g).all()
    # f(pi) = 2 x the n = 0 term for small sigma (the n = 1 wrap equals it): finite, accurate
    if sigma == 0.01:
        expected = (
            sigma**2 / 8 + 0.5 * math.log(2 * math.pi) - 3 * math.log(sigma)
            + math.log(math.pi) - math.pi**2 / (2 * sigma**2) + math.log(2) - LOG_VOL
        )  # fmt: skip
        assert float(lp[-1].detach()) == pytest.approx(expected, rel=1e-6)


def test_angle_log_prob_matches_log_prob():
    src = IGSO3(0.4)
    w = torch.linspace(0.01, math.pi, 50, dtype=F64)
    expected = src.log_prob(_rot_z(w)) + LOG_VOL + torch.log((1 - torch.cos(w)) / math.pi)
    torch.testing.assert_close(src.angle_log_prob(w), expected)
    assert src.angle_log_prob(torch.zeros(1, dtype=F64)).item() == -math.inf


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.5, 1.0, 2.0])
def test_samples_follow_the_angle_density(sigma):
    cdf = _numeric_cdf(sigma)
    x = IGSO3(sigma).sample(4000, generator=_gen(11), dtype=F64)
    assert stats.kstest(rotation_angle(x).numpy(), cdf).pvalue > 1e-3
    # the per-row sampler of the stochastic paths (several sigma in one call)
    sig = torch.tensor([sigma, 0.3] * 3000, dtype=F64)
    w = _igso3_rotvec_rows(sig, _gen(12)).norm(dim=-1)
    assert stats.kstest(w[0::2].numpy(), cdf).pvalue > 1e-3
    assert stats.kstest(w[1::2].numpy(), _numeric_cdf(0.3)).pvalue > 1e-3


def test_per_row_sampler_zero_sigma_and_known_bound():
    sig = torch.tensor([0.0, 0.2, 0.0, 1.2], dtype=F64)
    w = _igso3_rotvec_rows(sig, _gen(0), sigma_max=1.2)
    assert torch.equal(w[0], torch.zeros(3, dtype=F64)) and torch.equal(w[2], w[0])
    assert bool((w[1:].norm(dim=-1) <= math.pi).all()) and bool((w[1] != 0).all())


@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_angle_cdf_matches_quadrature(sigma):
    src = IGSO3(sigma)
    grid = torch.linspace(0.0, math.pi, 41, dtype=F64)

    def dens(v: float) -> float:
        return math.exp(float(src.angle_log_prob(torch.tensor(v, dtype=F64)))) if v > 0 else 0.0

    pts = [k * sigma for k in range(1, 13) if k * sigma < math.pi]
    ref = [
        integrate.quad(dens, 0.0, float(v), points=[p for p in pts if p < v] or None, limit=200)[0]
        for v in grid
    ]
    np.testing.assert_allclose(src.angle_cdf(grid).numpy(), ref, atol=1e-9)


def test_axes_are_uniform_and_loc_rotates():
    x = IGSO3(0.8).sample(20000, generator=_gen(5), dtype=F64)
    v = rotmat_to_rotvec(x)
    axis = v / v.norm(dim=-1, keepdim=True)
    assert float(axis.mean(0).abs().max()) < 0.03
    torch.testing.assert_close(
        axis.T @ axis / len(axis), torch.eye(3, dtype=F64) / 3, atol=0.02, rtol=0
    )
    loc = rotvec_to_rotmat(torch.tensor([0.3, -1.0, 2.0], dtype=F64))
    y = IGSO3(0.8, loc=loc).sample(20000, generator=_gen(5), dtype=F64)
    torch.testing.assert_close(y, loc @ x)
    torch.testing.assert_close(IGSO3(0.8, loc=loc).log_prob(y), IGSO3(0.8).log_prob(x))


@pytest.mark.parametrize("device", DEVICES)
@given(seed=seeds, dtype=dtypes, n=st.integers(0, 5))
def test_sample_dtype_device_and_reproducible(device, seed, dtype, n):
    src = IGSO3(0.3)
    a = src.sample(n, generator=_gen(seed), dtype=dtype, device=device)
    b = src.sample(n, generator=_gen(seed), dtype=F64)
    assert a.shape == (n, 3, 3) and a.dtype == dtype and a.device.type == device
    torch.testing.assert_close(a.cpu(), b.to(dtype))
    if n:
        assert SO3()._point_deviation(a).max() < 1e-5
        assert src.log_prob(a).shape == (n,) and src.log_prob(a).dtype == dtype


def test_table_cache_is_bounded():
    from manifoldfm import sources

    for k in range(40):
        IGSO3(0.1 + 0.01 * k).sample(1, generator=_gen(0))
    assert len(sources._IGSO3_TABLES) <= sources._IGSO3_TABLES_MAX


def test_igso3_refusals():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma"):
            IGSO3(bad)
    with pytest.raises(TypeError, match="sigma"):
        IGSO3("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotation"):
        IGSO3(0.1, loc=2 * torch.eye(3))
    with pytest.raises(ValueError, match="shape"):
        IGSO3(0.1, loc=torch.eye(4))
    src = IGSO3(0.1)
    with pytest.raises(ValueError, match="not on"):
        src.log_prob(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="shape"):
        src.log_prob(torch.eye(3))
    with pytest.raises(TypeError):
        src.log_prob(torch.eye(3, dtype=torch.int64)[None])
    with pytest.raises(ValueError, match="n must be"):
        src.sample(-1)
    with pytest.raises(TypeError):
        src.angle_log_prob([0.1])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# CentredGaussian
# ---------------------------------------------------------------------------------------------


def test_centred_gaussian_mean_and_covariance():
    n, dim, std = 4, 2, 1.5
    x = CentredGaussian(n, dim, std).sample(40000, generator=_gen(0), dtype=F64)
    assert x.shape == (40000, n, dim)
    assert float(x.mean(dim=1).abs().max()) < 1e-13
    flat = x.reshape(len(x), -1)
    cov = flat.T @ flat / len(x)
    expected = std**2 * torch.kron(
        torch.eye(n, dtype=F64) - torch.full((n, n), 1.0 / n, dtype=F64), torch.eye(dim, dtype=F64)
    )
    torch.testing.assert_close(cov, expected, atol=0.06, rtol=0)


def _helmert(n: int) -> torch.Tensor:
    """An orthonormal basis (n, n - 1) of the vectors with zero sum."""
    q, _ = torch.linalg.qr(torch.eye(n, dtype=F64) - 1.0 / n)
    basis = q[:, : n - 1]
    assert torch.allclose(basis.sum(0), torch.zeros(n - 1, dtype=F64), atol=1e-12)
    return basis


@given(seed=seeds, n=st.integers(2, 6), dim=st.integers(1, 3), std=st.floats(0.1, 5.0))
def test_centred_gaussian_log_prob_is_the_subspace_density(seed, n, dim, std):
    src = CentredGaussian(n, dim, std)
    x = src.sample(5, generator=_gen(seed), dtype=F64)
    z = torch.einsum("ik,bid->bkd", _helmert(n), x)  # coordinates in V: i.i.d. N(0, std^2)
    ref = (-0.5 * (z / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))).sum((1, 2))
    torch.testing.assert_close(src.log_prob(x), ref)
    assert src.subspace_dim == (n - 1) * dim and src.shape == (n, dim)


def test_centred_gaussian_refusals():
    src = CentredGaussian(3)
    with pytest.raises(ValueError, match="zero mean"):
        src.log_prob(torch.ones(2, 3, 3))
    with mfm.checks(values=False):
        assert torch.isfinite(src.log_prob(torch.ones(2, 3, 3))).all()
    with pytest.raises(ValueError, match="shape"):
        src.log_prob(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="n must be >= 2"):
        CentredGaussian(1)
    with pytest.raises(ValueError, match="dim"):
        CentredGaussian(3, dim=0)
    with pytest.raises(TypeError, match="n must be an int"):
        CentredGaussian(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="std"):
        CentredGaussian(3, std=0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_centred_gaussian_dtype_device(device):
    x = CentredGaussian(5).sample(3, generator=_gen(0), dtype=torch.float32, device=device)
    assert x.dtype == torch.float32 and x.device.type == device
    assert src_lp_ok(x)


def src_lp_ok(x: torch.Tensor) -> bool:
    lp = CentredGaussian(5).log_prob(x)
    return lp.shape == (3,) and lp.dtype == x.dtype and bool(torch.isfinite(lp).all())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_sample_with_a_mean_rotation_in_every_dtype(dtype):
    from manifoldfm.manifolds.so3 import rotvec_to_rotmat

    loc = rotvec_to_rotmat(torch.tensor([0.3, -1.2, 2.0], dtype=F64))
    src = IGSO3(0.2, loc=loc)
    a = src.sample(64, generator=_gen(5), dtype=dtype)
    b = src.sample(64, generator=_gen(5), dtype=F64)
    assert a.dtype == dtype
    torch.testing.assert_close(a, b.to(dtype))
    # concentrated around loc, not around the identity
    assert float(SO3().dist(b, loc.expand_as(b)).max()) < 1.5
    assert float(SO3().dist(b, torch.eye(3, dtype=F64).expand_as(b)).min()) > 1.0
