"""Sources on manifolds (Uniform, WrappedNormal, VonMisesFisher, Mixture) and manifold data.

Densities integrate to one (exact quadrature in the angle to ``loc`` or on a periodic grid,
Monte Carlo with uniform proposals on S^2 and T^2), agree with brute-force sums and scipy,
samples follow the densities (moments, Kolmogorov-Smirnov on the angle to ``loc``), and bad
input is refused. Reader tests build their own temporary CSV files.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import special, stats

import manifoldfm as mfm
from manifoldfm.data import (
    read_earth_csv,
    read_torsions_csv,
    so3_igso3_mixture,
    sphere_vmf_mixture,
    torus_wrapped_mixture,
)
from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Product, Sphere
from manifoldfm.sources import Gaussian, Mixture, Uniform, VonMisesFisher, WrappedNormal

from .conftest import DEVICES, TOL
from .strategies import compact_manifolds, dtypes, seeds

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(v: list[float]) -> torch.Tensor:
    t = torch.tensor(v, dtype=F64)
    return t / t.norm()


def _frame(mu: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to ``mu``."""
    e = torch.zeros_like(mu)
    e[int(torch.argmin(mu.abs()))] = 1.0
    v = e - (e @ mu) * mu
    return v / v.norm()


def _points_at_angle(mu: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Points at geodesic distance ``r`` from ``mu`` (along one fixed direction)."""
    v = _frame(mu)
    return torch.cos(r)[:, None] * mu + torch.sin(r)[:, None] * v


def _sphere_area(d: int) -> float:
    return 2.0 * math.pi ** ((d + 1) / 2) / math.gamma((d + 1) / 2)


@functools.lru_cache(maxsize=4)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _gauss_legendre(a: float, b: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = _leggauss(n)
    x = 0.5 * (b - a) * x + 0.5 * (b + a)
    return torch.tensor(x, dtype=F64), torch.tensor(0.5 * (b - a) * w, dtype=F64)


def _angle_integral(src, mu: torch.Tensor, width: float) -> float:
    """``int_{S^d} p`` for a density symmetric about ``mu``: a 1-D integral in the angle r.

    ``int p = |S^{d-1}| int_0^pi p(r) sin(r)^{d-1} dr``; Gauss-Legendre on [0, a] and
    [a, pi] with ``a`` a few widths of the distribution (the integrand is smooth).
    """
    d = mu.shape[0] - 1
    a = min(math.pi / 2, width)
    nodes, weights = [], []
    for lo, hi in ((0.0, a), (a, math.pi)):
        x, w = _gauss_legendre(lo, hi, 300)
        nodes.append(x)
        weights.append(w)
    r, w = torch.cat(nodes), torch.cat(weights)
    p = src.log_prob(_points_at_angle(mu, r)).exp()
    return float((p * torch.sin(r) ** (d - 1) * w).sum()) * _sphere_area(d - 1)


def _angle_cdf(src, mu: torch.Tensor, width: float):
    """The CDF of the angle to ``mu`` (numerical, on a fine grid) as a callable."""
    d = mu.shape[0] - 1
    a = min(math.pi / 2, width)
    r = torch.cat(
        [torch.linspace(0.0, a, 4001, dtype=F64), torch.linspace(a, math.pi, 4001, dtype=F64)[1:]]
    )
    dens = src.log_prob(_points_at_angle(mu, r)).exp() * torch.sin(r) ** (d - 1)
    cum = torch.cat([torch.zeros(1, dtype=F64), torch.cumulative_trapezoid(dens, r)])
    cum = (cum / cum[-1]).numpy()
    grid = r.numpy()
    return lambda x: np.interp(x, grid, cum)


# ---------------------------------------------------------------------------------------------
# Uniform
# ---------------------------------------------------------------------------------------------


@given(manifold=compact_manifolds(max_dim=3), seed=seeds, dtype=dtypes)
def test_uniform_log_prob_is_minus_log_volume(manifold, seed, dtype):
    src = Uniform(manifold)
    x = src.sample(7, generator=_gen(seed), dtype=dtype)
    assert x.shape == (7, *manifold.point_shape) and x.dtype == dtype
    lp = src.log_prob(x)
    assert lp.shape == (7,) and lp.dtype == dtype
    torch.testing.assert_close(lp, torch.full((7,), -math.log(manifold.volume), dtype=dtype))
    assert src.shape == tuple(manifold.point_shape) and src.manifold is manifold


@pytest.mark.parametrize(
    ("manifold", "value"),
    [
        (Sphere(2), -math.log(4 * math.pi)),
        (SO3(), -math.log(8 * math.pi**2)),
        (FlatTorus(3), -3 * math.log(2 * math.pi)),
        (Sphere(1), -math.log(2 * math.pi)),
    ],
)
def test_uniform_known_values(manifold, value):
    assert Uniform(manifold).log_density == pytest.approx(value, rel=1e-14)


def test_uniform_refusals():
    with pytest.raises(ValueError, match="finite volume"):
        Uniform(Euclidean(2))
    with pytest.raises(ValueError, match="finite volume"):
        Uniform(Product(Sphere(2), Euclidean(1)))
    with pytest.raises(TypeError, match="Manifold"):
        Uniform("sphere")  # type: ignore[arg-type]
    src = Uniform(Sphere(2))
    with pytest.raises(ValueError, match=r"\(B, 3\).*\(4, 4\)"):
        src.log_prob(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="not on"):  # manifold checks are on in the tests
        src.log_prob(torch.full((2, 3), 2.0))


# ---------------------------------------------------------------------------------------------
# WrappedNormal on the torus
# ---------------------------------------------------------------------------------------------


def _wrapped_reference(delta: torch.Tensor, sigma: float, terms: int = 60) -> torch.Tensor:
    """Brute-force log of the 1-D wrapped normal density, 2 * terms + 1 wraps."""
    k = torch.arange(-terms, terms + 1, dtype=F64) * 2 * math.pi
    z = (delta[..., None] + k) / sigma
    return torch.logsumexp(-0.5 * z * z, dim=-1) - math.log(sigma) - 0.5 * math.log(2 * math.pi)


scales = st.floats(0.02, 12.0)


@given(sigma=scales, loc=st.floats(-10.0, 10.0), seed=seeds)
@example(sigma=2.0, loc=0.0, seed=0)  # the switch between wraps and Fourier series
@example(sigma=2.0000001, loc=3.0, seed=1)
@example(sigma=0.02, loc=math.pi, seed=2)
def test_torus_log_prob_matches_brute_force_sum(sigma, loc, seed):
    src = WrappedNormal(FlatTorus(1), torch.tensor([loc], dtype=F64), sigma)
    x = FlatTorus(1).random_uniform(64, generator=_gen(seed), dtype=F64)
    x = torch.cat([x, (src.loc + math.pi).remainder(2 * math.pi)[None], src.loc[None]])
    ref = _wrapped_reference((x - src.loc)[:, 0], sigma)
    torch.testing.assert_close(src.log_prob(x), ref, rtol=1e-12, atol=1e-12)


@given(sigma=st.floats(0.05, 50.0), loc=st.floats(0.0, 6.28))
@example(sigma=0.05, loc=0.0)
@example(sigma=1e3, loc=1.0)
def test_torus_1d_integrates_to_one(sigma, loc):
    # a uniform grid is spectrally exact for smooth periodic integrands
    src = WrappedNormal(FlatTorus(1), torch.tensor([loc]), sigma)
    th = torch.linspace(0, 2 * math.pi, 4097, dtype=F64)[:-1, None]
    total = float(src.log_prob(th).exp().sum()) * 2 * math.pi / 4096
    assert total == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("scale", [(0.15, 5.0), (1.0, 2.5), (3.0, 0.4), (0.3, 0.8), (3.0, 7.0)])
def test_torus_2d_grid_integrates_to_one(scale):
    src = WrappedNormal(FlatTorus(2), torch.tensor([1.0, 5.0]), list(scale))
    g = torch.linspace(0, 2 * math.pi, 513, dtype=F64)[:-1]
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1).reshape(-1, 2)
    total = float(src.log_prob(grid).exp().sum()) * (2 * math.pi / 512) ** 2
    assert total == pytest.approx(1.0, abs=1e-9)
    # the density factorises over angles
    one = [WrappedNormal(FlatTorus(1), src.loc[i : i + 1], scale[i]) for i in range(2)]
    prod = one[0].log_prob(grid[:, :1]) + one[1].log_prob(grid[:, 1:])
    torch.testing.assert_close(src.log_prob(grid), prod, **TOL[F64])


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_torus_2d_monte_carlo_with_uniform_proposals(scale):
    src = WrappedNormal(FlatTorus(2), torch.tensor([0.3, 6.0]), scale)
    x = Uniform(FlatTorus(2)).sample(100_000, generator=_gen(11), dtype=F64)
    ratio = src.log_prob(x).exp() * (2 * math.pi) ** 2
    se = float(ratio.std()) / math.sqrt(ratio.numel())
    assert abs(float(ratio.mean()) - 1.0) < 5 * se


@given(sigma=st.floats(0.1, 3.0), loc=st.floats(0.0, 6.28), seed=seeds)
def test_torus_samples_circular_moments(sigma, loc, seed):
    src = WrappedNormal(FlatTorus(1), torch.tensor([loc]), sigma)
    x = src.sample(4000, generator=_gen(seed), dtype=F64)[:, 0]
    assert bool(((x >= 0) & (x < 2 * math.pi)).all())
    n = x.numel()
    for m in (1, 2):
        c = torch.cos(m * (x - loc))
        s = torch.sin(m * (x - loc))
        # E cos m(x - loc) = exp(-m^2 sigma^2 / 2), E sin = 0; Var <= 1
        assert abs(float(c.mean()) - math.exp(-0.5 * m * m * sigma**2)) < 5 / math.sqrt(n)
        assert abs(float(s.mean())) < 5 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# WrappedNormal on the sphere
# ---------------------------------------------------------------------------------------------


def _sphere_reference(r: torch.Tensor, d: int, sigma: float, terms: int = 40) -> torch.Tensor:
    """Brute-force log-density of the sphere's wrapped normal at angle r (away from 0, pi)."""
    t = r[:, None] + 2 * math.pi * torch.arange(-terms, terms + 1, dtype=F64)
    jac = (d - 1) * (torch.log(t.abs()) - torch.log(torch.sin(r))[:, None])
    logs = -0.5 * (t / sigma) ** 2 + jac
    return torch.logsumexp(logs, dim=1) - 0.5 * d * math.log(2 * math.pi * sigma**2)


@given(d=st.integers(1, 4), sigma=st.floats(0.05, 4.0), seed=seeds)
@example(d=2, sigma=3.0, seed=0)
def test_sphere_log_prob_matches_brute_force_sum(d, sigma, seed):
    mu = _unit(torch.randn(d + 1, generator=_gen(seed), dtype=F64).tolist())
    src = WrappedNormal(Sphere(d), mu, sigma)
    r = torch.linspace(0.05, math.pi - 0.05, 50, dtype=F64)
    ref = _sphere_reference(r, d, sigma)
    torch.testing.assert_close(src.log_prob(_points_at_angle(mu, r)), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 2.0, 6.0])
def test_sphere_integrates_to_one(d, sigma):
    mu = _unit([1.0, -2.0, 0.5, 3.0][: d + 1])
    src = WrappedNormal(Sphere(d), mu, sigma)
    assert _angle_integral(src, mu, 12 * sigma) == pytest.approx(1.0, abs=1e-9)


def test_sphere_monte_carlo_with_uniform_proposals():
    x = Uniform(Sphere(2)).sample(100_000, generator=_gen(5), dtype=F64)
    for sigma in (0.7, 2.0):
        src = WrappedNormal(Sphere(2), _unit([1.0, 1.0, -1.0]), sigma)
        ratio = src.log_prob(x).exp() * 4 * math.pi
        se = float(ratio.std()) / math.sqrt(ratio.numel())
        assert abs(float(ratio.mean()) - 1.0) < 5 * se


@given(sigma=st.floats(0.05, 5.0), seed=seeds)
def test_sphere_1_agrees_with_torus_1(sigma, seed):
    theta = FlatTorus(1).random_uniform(32, generator=_gen(seed), dtype=F64)
    on_circle = torch.cat([torch.cos(theta), torch.sin(theta)], dim=1)
    a = WrappedNormal(Sphere(1), _unit([math.cos(2.0), math.sin(2.0)]), sigma)
    b = WrappedNormal(FlatTorus(1), torch.tensor([2.0]), sigma)
    torch.testing.assert_close(a.log_prob(on_circle), b.log_prob(theta), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("d", "sigma"), [(2, 0.3), (3, 1.0), (2, 2.5)])
def test_sphere_samples_follow_log_prob(d, sigma):
    mu = _unit([0.0, 1.0, 2.0, -1.0][: d + 1])
    src = WrappedNormal(Sphere(d), mu, sigma)
    x = src.sample(3000, generator=_gen(d), dtype=F64)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(3000, dtype=F64))
    angle = Sphere(d).dist(mu.expand_as(x), x).numpy()
    cdf = _angle_cdf(src, mu, 12 * sigma)
    assert stats.kstest(angle, cdf).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_log_prob_finite_gradients_at_loc_and_antipode(dtype):
    mu = torch.tensor([0.0, 0.0, 1.0], dtype=dtype)
    for sigma in (0.3, 3.0):
        src = WrappedNormal(Sphere(2), mu, sigma)
        x = torch.stack([mu, -mu, torch.tensor([1.0, 0.0, 0.0], dtype=dtype)]).requires_grad_()
        lp = src.log_prob(x)
        lp.sum().backward()
        assert torch.isfinite(lp).all() and torch.isfinite(x.grad).all()
    # on the torus, at the cut locus
    t = WrappedNormal(FlatTorus(2), torch.tensor([1.0, 2.0], dtype=dtype), [0.2, 4.0])
    y = torch.tensor([[1.0 + math.pi, 2.0 + math.pi]], dtype=dtype, requires_grad=True)
    t.log_prob(y).sum().backward()
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize(
    "src",
    [
        WrappedNormal(FlatTorus(2), torch.tensor([1.0, 2.0]), [0.3, 3.0]),
        WrappedNormal(Sphere(2), _unit([1.0, 2.0, 2.0]), 0.6),
        WrappedNormal(Sphere(3), _unit([1.0, 0.0, 2.0, 2.0]), 2.0),
        VonMisesFisher(_unit([1.0, 2.0, 2.0]), 7.0),
        VonMisesFisher(_unit([1.0, 0.0, 2.0, 2.0]), 3.0),
    ],
    ids=repr,
)
def test_log_prob_gradcheck(src):
    x = src.sample(4, generator=_gen(0), dtype=F64).requires_grad_()
    with mfm.checks(manifold=False):  # gradcheck steps off the manifold
        assert torch.autograd.gradcheck(src.log_prob, (x,))


# ---------------------------------------------------------------------------------------------
# von Mises-Fisher
# ---------------------------------------------------------------------------------------------

KAPPAS = [0.0, 1.0, 50.0, 1e4]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kappa", KAPPAS)
def test_vmf_integrates_to_one(d, kappa):
    mu = _unit([2.0, -1.0, 0.5, 1.0][: d + 1])
    src = VonMisesFisher(mu, kappa)
    width = 40.0 / math.sqrt(kappa) if kappa > 0 else math.pi
    assert _angle_integral(src, mu, width) == pytest.approx(1.0, abs=1e-9)


def test_vmf_monte_carlo_with_uniform_proposals():
    x = Uniform(Sphere(2)).sample(100_000, generator=_gen(3), dtype=F64)
    for kappa in (1.0, 5.0):
        src = VonMisesFisher(_unit([1.0, 2.0, 2.0]), kappa)
        ratio = src.log_prob(x).exp() * 4 * math.pi
        se = float(ratio.std()) / math.sqrt(ratio.numel())
        assert abs(float(ratio.mean()) - 1.0) < 5 * se


@given(d=st.integers(1, 5), kappa=st.floats(1e-6, 500.0), seed=seeds)
@example(d=2, kappa=1e-6, seed=0)
@example(d=3, kappa=1e-4, seed=0)
def test_vmf_log_prob_matches_scipy(d, kappa, seed):
    mu = _unit(torch.randn(d + 1, generator=_gen(seed), dtype=F64).tolist())
    src = VonMisesFisher(mu, kappa)
    x = Uniform(Sphere(d)).sample(16, generator=_gen(seed + 1), dtype=F64)
    ref = stats.vonmises_fisher(mu.numpy(), kappa).logpdf(x.numpy())
    torch.testing.assert_close(src.log_prob(x), torch.tensor(ref), rtol=1e-9, atol=1e-9)
    assert src.log_normalizer + kappa == pytest.approx(float(src.log_prob(mu[None])[0]), rel=1e-12)


@given(d=st.integers(1, 4), kappa=st.sampled_from([0.0, 0.3, 4.0, 60.0, 1e4]), seed=seeds)
def test_vmf_mean_resultant_length(d, kappa, seed):
    mu = _unit(torch.randn(d + 1, generator=_gen(seed), dtype=F64).tolist())
    src = VonMisesFisher(mu, kappa)
    w = src.sample(2000, generator=_gen(seed), dtype=F64) @ mu
    p = 0.5 * (d + 1)
    mean = float(special.ive(p, kappa) / special.ive(p - 1, kappa)) if kappa > 0 else 0.0
    se = float(w.std()) / math.sqrt(w.numel())
    assert abs(float(w.mean()) - mean) < 5 * se + 1e-12


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kappa", [0.5, 50.0, 1e4])
def test_vmf_angle_ks(d, kappa):
    mu = _unit([1.0, 1.0, -1.0, 2.0][: d + 1])
    src = VonMisesFisher(mu, kappa)
    x = src.sample(2000, generator=_gen(7), dtype=F64)
    angle = Sphere(d).dist(mu.expand_as(x), x).numpy()
    assert stats.kstest(angle, _angle_cdf(src, mu, 40.0 / math.sqrt(kappa))).pvalue > 1e-3


@pytest.mark.parametrize("d", [1, 2, 3])
def test_vmf_float32_large_kappa_is_finite_and_accurate(d):
    mu = _unit([1.0, 2.0, 3.0, 4.0][: d + 1])
    for kappa in (1e4, 1e7):
        src = VonMisesFisher(mu, kappa)
        x32 = src.sample(500, generator=_gen(1), dtype=torch.float32)
        x64 = src.sample(500, generator=_gen(1), dtype=F64)
        assert x32.dtype == torch.float32 and torch.isfinite(x32).all()
        torch.testing.assert_close(x32.double(), x64, atol=1e-6, rtol=0)
        lp32, lp64 = src.log_prob(x32), src.log_prob(x64)
        assert lp32.dtype == torch.float32 and torch.isfinite(lp32).all()
        assert float((lp32.double() - lp64).abs().max()) < 1e-4 * max(1.0, kappa**0.5)
        # samples lie close to mu: 1 - <mu, x> ~ d / (2 kappa)
        assert float(1 - (x64 @ mu).mean()) == pytest.approx(d / (2 * kappa), rel=0.2)


def test_vmf_kappa_zero_is_uniform():
    for d in (1, 2, 4):
        src = VonMisesFisher(_unit([1.0] * (d + 1)), 0.0)
        x = src.sample(5, generator=_gen(0), dtype=F64)
        torch.testing.assert_close(
            src.log_prob(x), Uniform(Sphere(d)).log_prob(x), rtol=1e-13, atol=1e-13
        )


# ---------------------------------------------------------------------------------------------
# dtype, device, generator, shapes
# ---------------------------------------------------------------------------------------------


def _all_sources():
    mu = _unit([1.0, 0.0, 1.0])
    return [
        Uniform(Sphere(2)),
        WrappedNormal(FlatTorus(2), torch.tensor([0.5, 6.0]), [0.3, 3.0]),
        WrappedNormal(Sphere(2), mu, 0.4),
        VonMisesFisher(mu, 20.0),
        VonMisesFisher(_unit([1.0, 2.0, 3.0, 4.0]), 5.0),
        Mixture([VonMisesFisher(mu, 20.0), WrappedNormal(Sphere(2), -mu, 0.2)], [1.0, 3.0]),
        Mixture([Gaussian(2, mean=-2.0), Gaussian(2, mean=2.0)]),
    ]


@pytest.mark.parametrize("src", _all_sources(), ids=repr)
@pytest.mark.parametrize("device", DEVICES)
@given(seed=seeds, dtype=dtypes, n=st.integers(0, 40))
@settings(max_examples=6)
def test_dtype_device_generator(src, device, seed, dtype, n):
    a = src.sample(n, generator=_gen(seed), dtype=dtype, device=device)
    b = src.sample(n, generator=_gen(seed), dtype=dtype, device=device)
    assert a.shape == (n, *src.shape) and a.dtype == dtype and a.device.type == device
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    lp = src.log_prob(a)
    assert lp.shape == (n,) and lp.dtype == dtype and lp.device.type == device
    assert torch.isfinite(lp).all()
    if n > 0:  # the log-density does not depend on the batch it is evaluated in
        torch.testing.assert_close(src.log_prob(a[:1]), lp[:1], **TOL[dtype])
    assert isinstance(repr(src), str) and type(src).__name__ in repr(src)


def test_default_dtype_and_cpu_generator_reproducible_across_calls():
    src = VonMisesFisher(_unit([0.0, 0.0, 1.0]), 3.0)
    g = _gen(0)
    first = src.sample(10, generator=g)
    second = src.sample(10, generator=g)
    assert first.dtype == torch.get_default_dtype()
    assert not torch.equal(first, second)  # the generator advances


def test_loc_keeps_no_device_and_follows_inputs():
    src = WrappedNormal(Sphere(2), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float32), 0.5)
    assert src.loc.dtype == F64
    x = src.sample(4, generator=_gen(0), dtype=torch.float32)
    assert src.log_prob(x).dtype == torch.float32
    assert src.log_prob(x.double()).dtype == F64
    assert not any(isinstance(v, str) and v in ("cpu", "cuda") for v in vars(src).values())


# ---------------------------------------------------------------------------------------------
# Mixture
# ---------------------------------------------------------------------------------------------


def test_mixture_log_prob_is_logsumexp_and_integrates_to_one():
    mu = _unit([0.0, 0.0, 1.0])
    comps = [VonMisesFisher(mu, 8.0), WrappedNormal(Sphere(2), mu, 0.5), Uniform(Sphere(2))]
    mix = Mixture(comps, [1.0, 2.0, 1.0])
    x = Uniform(Sphere(2)).sample(20, generator=_gen(0), dtype=F64)
    manual = torch.log(sum(w * c.log_prob(x).exp() for w, c in zip([0.25, 0.5, 0.25], comps)))
    torch.testing.assert_close(mix.log_prob(x), manual, **TOL[F64])
    assert _angle_integral(mix, mu, 2.0) == pytest.approx(1.0, abs=1e-9)


@given(w=st.floats(0.05, 0.95), seed=seeds)
def test_mixture_component_frequencies(w, seed):
    north, south = _unit([0.0, 0.0, 1.0]), _unit([0.0, 0.0, -1.0])
    mix = Mixture([VonMisesFisher(north, 200.0), VonMisesFisher(south, 200.0)], [w, 1 - w])
    x = mix.sample(2000, generator=_gen(seed), dtype=F64)
    frac = float((x[:, 2] > 0).double().mean())
    assert abs(frac - w) < 5 * math.sqrt(w * (1 - w) / 2000)


def test_mixture_refusals():
    s2 = VonMisesFisher(_unit([0.0, 0.0, 1.0]), 1.0)
    s3 = VonMisesFisher(_unit([0.0, 0.0, 0.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        Mixture([s2, s3])
    with pytest.raises(ValueError, match="same manifold"):
        Mixture([WrappedNormal(FlatTorus(3), torch.zeros(3), 1.0), Gaussian(3)])
    with pytest.raises(ValueError, match="at least one"):
        Mixture([])
    with pytest.raises(ValueError, match="one value per component"):
        Mixture([s2, s2], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        Mixture([s2, s2], [1.0, -1.0])
    with pytest.raises(TypeError, match=r"component 1 .* has no"):
        Mixture([s2, object()])  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


def test_wrapped_normal_refusals():
    with pytest.raises(ValueError, match=r"shape \(2\)"):
        WrappedNormal(FlatTorus(2), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="unit vector"):
        WrappedNormal(Sphere(2), torch.tensor([0.0, 0.0, 1.1]), 1.0)
    with pytest.raises(ValueError, match="> 0"):
        WrappedNormal(FlatTorus(2), torch.zeros(2), -0.5)
    with pytest.raises(ValueError, match="> 0"):
        WrappedNormal(FlatTorus(2), torch.zeros(2), [0.5, 0.0])
    with pytest.raises(ValueError, match="2 values"):
        WrappedNormal(FlatTorus(2), torch.zeros(2), [0.5, 0.5, 0.5])
    with pytest.raises(TypeError, match="isotropic"):
        WrappedNormal(Sphere(2), torch.tensor([0.0, 0.0, 1.0]), [0.5, 0.5])
    with pytest.raises(TypeError, match="FlatTorus and Sphere"):
        WrappedNormal(SO3(), torch.eye(3), 1.0)
    with pytest.raises(ValueError, match="finite"):
        WrappedNormal(FlatTorus(1), torch.tensor([math.nan]), 1.0)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        WrappedNormal(FlatTorus(2), torch.zeros(2), 1.0).log_prob(torch.zeros(3))


def test_vmf_refusals():
    with pytest.raises(ValueError, match="1-D"):
        VonMisesFisher(torch.eye(3), 1.0)
    with pytest.raises(ValueError, match="d \\+ 1 >= 2"):
        VonMisesFisher(torch.tensor([1.0]), 1.0)
    with pytest.raises(ValueError, match="unit vector"):
        VonMisesFisher(torch.tensor([0.0, 0.5, 0.0]), 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        VonMisesFisher(torch.tensor([0.0, 1.0]), -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        VonMisesFisher(torch.tensor([0.0, 1.0]), math.inf)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), 1.0).log_prob(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="n must be >= 0"):
        VonMisesFisher(torch.tensor([0.0, 1.0]), 1.0).sample(-1)


# ---------------------------------------------------------------------------------------------
# synthetic mixtures
# ---------------------------------------------------------------------------------------------


@given(k=st.integers(2, 6), seed=seeds)
def test_sphere_vmf_mixture(k, seed):
    mix = sphere_vmf_mixture(k=k, concentration=40.0, generator=_gen(seed))
    again = sphere_vmf_mixture(k=k, concentration=40.0, generator=_gen(seed))
    means = torch.stack([c.loc for c in mix.components])
    torch.testing.assert_close(means, torch.stack([c.loc for c in again.components]))
    dist = Sphere(2).dist(means[:, None], means[None])
    # greedy farthest points are at least half the optimal (Tammes) separation apart
    off = dist[~torch.eye(k, dtype=torch.bool)]
    assert float(off.min()) > {2: 1.5, 3: 1.0, 4: 0.9, 5: 0.7, 6: 0.7}[k]
    x = mix.sample(50, generator=_gen(seed + 1), dtype=F64)
    assert x.shape == (50, 3) and torch.isfinite(mix.log_prob(x)).all()


@given(k=st.integers(2, 6), seed=seeds)
def test_torus_wrapped_mixture(k, seed):
    mix = torus_wrapped_mixture(k=k, scale=[0.2] * k, generator=_gen(seed))
    means = torch.stack([c.loc for c in mix.components])
    dist = FlatTorus(2).dist(means[:, None], means[None])
    assert float(dist[~torch.eye(k, dtype=torch.bool)].min()) > 1.2
    x = mix.sample(50, generator=_gen(seed + 1), dtype=torch.float32)
    assert x.dtype == torch.float32 and torch.isfinite(mix.log_prob(x)).all()


@settings(max_examples=10, deadline=None)
@given(k=st.integers(2, 5), seed=seeds)
def test_so3_igso3_mixture(k, seed):
    mix = so3_igso3_mixture(k=k, sigma=0.15, generator=_gen(seed))
    again = so3_igso3_mixture(k=k, sigma=0.15, generator=_gen(seed))
    centres = torch.stack([c.loc for c in mix.components])
    torch.testing.assert_close(centres, torch.stack([c.loc for c in again.components]))
    dist = SO3().dist(centres[:, None], centres[None])
    assert float(dist[~torch.eye(k, dtype=torch.bool)].min()) > 1.5  # rotation angles apart
    r = mix.sample(60, generator=_gen(seed + 1), dtype=F64)
    eye = torch.eye(3, dtype=F64).expand(60, 3, 3)
    torch.testing.assert_close(r.mT @ r, eye, atol=1e-10, rtol=0)
    assert torch.isfinite(mix.log_prob(r)).all()
    # every sample lies near a centre: within 5 sigma-ish of rotation angle
    assert float(SO3().dist(r[:, None], centres[None]).min(1).values.max()) < 1.0


def test_so3_igso3_mixture_density_integrates_to_one():
    mix = so3_igso3_mixture(k=3, sigma=[0.4, 0.5, 0.6], weights=[1.0, 2.0, 3.0], generator=_gen(3))
    x = Uniform(SO3()).sample(40000, generator=_gen(4), dtype=F64)
    mass = mix.log_prob(x).exp() * SO3().volume
    se = float(mass.std()) / math.sqrt(x.shape[0])
    assert abs(float(mass.mean()) - 1.0) < 4 * se


def test_synthetic_refusals():
    with pytest.raises(ValueError, match="k"):
        sphere_vmf_mixture(k=0)
    with pytest.raises(ValueError, match="k = 3 values"):
        torus_wrapped_mixture(k=3, scale=[0.1, 0.2])
    with pytest.raises(ValueError, match="> 0"):
        torus_wrapped_mixture(k=2, scale=0.0)
    with pytest.raises(ValueError, match="k = 2 values"):
        so3_igso3_mixture(k=2, sigma=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="sigma"):
        so3_igso3_mixture(k=2, sigma=-1.0)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def test_read_earth_csv_lat_lon_and_xyz(tmp_path):
    rows = [(-30.2, -178.47), (30.78, 130.28), (90.0, 10.0), (0.0, 0.0)]
    path = tmp_path / "earth.csv"
    lines = ["name,lat_deg,lon_deg"] + [f"p{i},{a},{b}" for i, (a, b) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    x = read_earth_csv(path)
    lat = torch.deg2rad(torch.tensor([r[0] for r in rows], dtype=F64))
    lon = torch.deg2rad(torch.tensor([r[1] for r in rows], dtype=F64))
    ref = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=1)
    assert x.dtype == F64 and x.shape == (4, 3)
    torch.testing.assert_close(x, ref, **TOL[F64])
    # the same points as x, y, z columns (9 decimals), in a file with a blank line
    xyz = tmp_path / "xyz.csv"
    body = [",".join(f"{v:.9f}" for v in row) for row in ref.tolist()]
    xyz.write_text("x,y,z\n" + "\n".join(body[:2]) + "\n\n" + "\n".join(body[2:]) + "\n")
    torch.testing.assert_close(read_earth_csv(xyz), ref, atol=1e-8, rtol=0)
    torch.testing.assert_close(read_earth_csv(xyz).norm(dim=1), torch.ones(4, dtype=F64))


def test_read_earth_csv_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("lat_deg,longitude\n1,2\n")
    with pytest.raises(ValueError, match=r"row 1.*'lat_deg', 'lon_deg'"):
        read_earth_csv(p)
    p.write_text("lat_deg,lon_deg\n1,2\n3,east\n")
    with pytest.raises(ValueError, match=r"row 3, column 'lon_deg'.*'east'"):
        read_earth_csv(p)
    p.write_text("lat_deg,lon_deg\n1,2\n3,4\nnan,4\n")
    with pytest.raises(ValueError, match=r"row 4, column 'lat_deg'.*finite"):
        read_earth_csv(p)
    p.write_text("lat_deg,lon_deg\n91,2\n")
    with pytest.raises(ValueError, match=r"row 2, column 'lat_deg'.*\[-90, 90\]"):
        read_earth_csv(p)
    p.write_text("lat_deg,lon_deg\n1\n")
    with pytest.raises(ValueError, match=r"row 2, column 'lon_deg'.*missing"):
        read_earth_csv(p)
    p.write_text("x,y,z\n1,1,1\n")
    with pytest.raises(ValueError, match=r"row 2.*norm"):
        read_earth_csv(p)
    p.write_text("lat_deg,lon_deg\n")
    with pytest.raises(ValueError, match="no data rows"):
        read_earth_csv(p)
    p.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_earth_csv(p)


def test_read_torsions_csv(tmp_path):
    p = tmp_path / "rama.csv"
    p.write_text(
        "entry,phi,psi,rama_class\n"
        "A,-60.0,-45.0,General\n"
        "B,180.0,-180.0,Glycine\n"
        "C,-75.5,150.25,General\n"
        "D,not-a-number,1,Proline\n"
    )
    x = read_torsions_csv(p, where={"rama_class": "General"})
    ref = torch.deg2rad(torch.tensor([[-60.0, -45.0], [-75.5, 150.25]], dtype=F64))
    torch.testing.assert_close(x, ref.remainder(2 * math.pi), **TOL[F64])
    both = read_torsions_csv(p, ("psi",), where={"rama_class": ["General", "Glycine"]})
    assert both.shape == (3, 1)
    assert bool(((both >= 0) & (both < 2 * math.pi)).all())
    with pytest.raises(ValueError, match=r"row 5, column 'phi'.*'not-a-number'"):
        read_torsions_csv(p)
    with pytest.raises(ValueError, match=r"row 1.*'chi1'"):
        read_torsions_csv(p, ("phi", "chi1"), where={"rama_class": "General"})
    with pytest.raises(ValueError, match=r"row 1.*'class'"):
        read_torsions_csv(p, where={"class": "General"})
    with pytest.raises(ValueError, match="no data rows matching"):
        read_torsions_csv(p, where={"rama_class": "Pre-Pro"})
    with pytest.raises(TypeError, match="sequence of column names"):
        read_torsions_csv(p, "phi")  # type: ignore[arg-type]


def test_read_torsions_csv_radians_and_degree_detection(tmp_path):
    p = tmp_path / "ile.csv"
    p.write_text("label,phi,psi,chi1\na,4.6,-2.2,0.1\nb,6.2,0.5,3.0\n")
    x = read_torsions_csv(p, ("phi", "psi", "chi1"))  # all |values| <= 2 pi: radians
    torch.testing.assert_close(x[0], torch.tensor([4.6, 2 * math.pi - 2.2, 0.1], dtype=F64))
    forced = read_torsions_csv(p, ("phi",), degrees=True)
    torch.testing.assert_close(forced[:, 0], torch.deg2rad(torch.tensor([4.6, 6.2], dtype=F64)))
    p.write_text("phi,psi\n1.0,inf\n")
    with pytest.raises(ValueError, match=r"row 2, column 'psi'"):
        read_torsions_csv(p)


@pytest.mark.parametrize("d", [1, 3, 9])
@pytest.mark.parametrize("kappa", [1e9, 1e10, 1e12])
def test_vmf_at_huge_concentration_off_s2(d, kappa):
    # scipy's ive returns NaN from about 1e10: the large-argument expansion takes over, and
    # agrees with scipy where both work
    from scipy import special

    from manifoldfm.sources import _log_ive_large

    mu = torch.zeros(d + 1, dtype=torch.float64)
    mu[0] = 1.0
    vmf = VonMisesFisher(mu, kappa)
    x = vmf.sample(64, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.isfinite(x).all() and (x.norm(dim=-1) - 1.0).abs().max() < 1e-12
    assert torch.isfinite(vmf.log_prob(x)).all()
    nu = 0.5 * (d + 1) - 1.0
    assert _log_ive_large(nu, 1e8) == pytest.approx(math.log(special.ive(nu, 1e8)), rel=1e-12)


@pytest.mark.parametrize("kappa", [0.01, 0.5, 10.0])
def test_vmf_on_a_high_sphere_at_small_concentration(kappa):
    # on S^300 scipy's ive underflows for small kappa: the power series takes over; at a point
    # orthogonal to mu the density is the uniform one to O(kappa^2 / d)
    from scipy import special

    from manifoldfm.sources import _log_ive_series

    d = 300
    mu = torch.zeros(d + 1, dtype=torch.float64)
    mu[0] = 1.0
    x = torch.zeros(1, d + 1, dtype=torch.float64)
    x[0, 1] = 1.0
    got = float(VonMisesFisher(mu, kappa).log_prob(x)[0])
    uniform = -Sphere(d).log_volume
    assert got == pytest.approx(uniform, abs=2 * kappa**2 / d + 1e-9)
    assert _log_ive_series(24.0, 5.0) == pytest.approx(math.log(special.ive(24.0, 5.0)), rel=1e-13)
