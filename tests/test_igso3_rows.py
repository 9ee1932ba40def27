"""IGSO(3) inverse-CDF samplers: the fixed-sigma table and the per-row (one sigma per draw) table.

Accuracy against exact quantiles (the sampled angle's CDF at the drawn angle against the
uniform that drew it, for sigma from 1e-4 to beyond the Haar limit, tails included),
Kolmogorov-Smirnov tests of mixed-sigma batches in float32 and float64 against the exact
angle CDF (Gauss-Legendre quadrature in float64), the small-sigma (Maxwell) and large-sigma
(Haar) limits, rotations on SO(3) with angles in [0, pi], determinism given the generator,
freedom from host-device synchronisation (no ``.item()``, boolean indexing, ``nonzero`` or
Python truth tests on tensors while drawing), the reparameterisation gradient, and the
bounded table caches.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

import manifoldfm as mfm
from manifoldfm import sources
from manifoldfm.manifolds import SO3
from manifoldfm.manifolds.so3 import rotation_angle
from manifoldfm.paths import GeodesicPath, StochasticGeodesicPath
from manifoldfm.sources import (
    IGSO3,
    _igso3_half_angle,
    _igso3_half_angle_rows,
    _igso3_rotmat,
    _igso3_rotmat_rows,
    _igso3_rotvec_rows,
)

from .conftest import DEVICES
from .strategies import dtypes, seeds

F64 = torch.float64
#: The bound used by the per-row draws below (sizes the table: built once per process).
SIGMA_MAX = 7.0
MIXED = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.lru_cache(maxsize=4)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


@functools.lru_cache(maxsize=32)
def _exact_cdf(sigma: float):
    """The angle's CDF in float64: Gauss-Legendre (64 nodes) on 400 panels of ``[0, top]``,
    then Gauss-Legendre again from the panel's left end for each query angle."""
    src = IGSO3(sigma)
    top = min(math.pi, 14 * sigma)
    edges = np.linspace(0.0, top, 401)
    x, w = _leggauss(64)

    def dens(v: np.ndarray) -> np.ndarray:
        return src.angle_log_prob(torch.from_numpy(v)).exp().numpy()

    def mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        mid, half = (a + b) / 2, (b - a) / 2
        pts = mid[:, None] + half[:, None] * x[None, :]
        return (dens(pts.ravel()).reshape(pts.shape) * w).sum(1) * half

    cum = np.concatenate([[0.0], np.cumsum(mass(edges[:-1], edges[1:]))])

    def cdf(v) -> np.ndarray:
        v = np.clip(np.atleast_1d(np.asarray(v, dtype=np.float64)), 0.0, top)
        i = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
        return cum[i] + mass(edges[i], v)

    return cdf


def _haar_cdf(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return (v - np.sin(v)) / math.pi


def test_exact_cdf_reference_is_normalised():
    for sigma in MIXED:
        assert float(_exact_cdf(sigma)(math.pi)[0]) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# accuracy of the tables: F(theta(u)) = u
# ---------------------------------------------------------------------------------------------

#: Uniforms from the far lower tail to the far upper tail (1 - u down to float64's 2^-53).
U_PROBE = torch.tensor(
    [
        2.0**-53,
        1e-12,
        1e-6,
        1e-3,
        0.05,
        0.3,
        0.5,
        0.7,
        0.95,
        1 - 1e-3,
        1 - 1e-6,
        1 - 1e-12,
        1 - 2.0**-53,
    ],
    dtype=F64,
)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("sigma", [1e-3, 0.01, 0.1, 0.5, 1.0, 1.5, 2.0, 5.0])
def test_fixed_sigma_quantiles_are_exact(sigma, dtype):
    u = torch.cat([U_PROBE, torch.linspace(0.001, 0.999, 97, dtype=F64)])
    theta = 2 * _igso3_half_angle(u, sigma, dtype).double()
    err = np.abs(_exact_cdf(sigma)(theta.numpy()) - u.numpy())
    # float64: the table (5e-10); float32: the angle rounded to float32 (p(theta) theta 6e-8)
    assert err.max() < (1e-9 if dtype == F64 else 5e-7)
    assert bool((theta >= 0).all()) and bool((theta <= math.pi + 4e-7).all())  # pi in float32


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_per_row_quantiles_are_exact_within_tolerance(dtype):
    g = _gen(0)
    # off-grid sigmas everywhere, densest where the law changes shape (0.4 to 2)
    sigma = torch.cat(
        [
            torch.rand(12, generator=g, dtype=F64) * 6.4,
            0.4 + 1.6 * torch.rand(12, generator=g, dtype=F64),
        ]
    )
    sigma = torch.cat([sigma, torch.tensor((*MIXED, 1e-4, 1.69), dtype=F64)])
    u = torch.cat([U_PROBE, torch.linspace(0.001, 0.999, 37, dtype=F64)])
    rows = sigma.repeat_interleave(len(u))
    theta = 2 * _igso3_half_angle_rows(rows, u.repeat(len(sigma)), dtype, SIGMA_MAX).double()
    theta = theta.view(len(sigma), len(u))
    worst = 0.0
    for s, th in zip(sigma.tolist(), theta, strict=True):
        err = np.abs(_exact_cdf(s)(th.numpy()) - u.numpy())
        worst = max(worst, float(err.max()))
    assert worst < (2e-7 if dtype == F64 else 1e-6)
    assert bool((theta >= 0).all()) and bool((theta <= math.pi + 4e-7).all())  # pi in float32


def test_per_row_limits_zero_small_and_haar():
    u = torch.linspace(0.01, 0.99, 99, dtype=F64)
    # sigma = 0: the identity; tiny sigma: theta / sigma is Maxwell (|N(0, I_3)|)
    zero = _igso3_half_angle_rows(torch.zeros(99, dtype=F64), u, F64, 1.0)
    assert torch.equal(zero, torch.zeros_like(zero))
    tiny = 2 * _igso3_half_angle_rows(torch.full((99,), 1e-5, dtype=F64), u, F64, 1.0) / 1e-5
    np.testing.assert_allclose(tiny.numpy(), stats.maxwell.ppf(u.numpy()), rtol=1e-6)
    # beyond sigma = 6.4 the angle's law is Haar's to float64 precision
    for s in (6.4, 8.0, 100.0):
        haar = 2 * _igso3_half_angle_rows(torch.full((99,), s, dtype=F64), u, F64)
        np.testing.assert_allclose(_haar_cdf(haar.numpy()), u.numpy(), atol=2e-7)


# ---------------------------------------------------------------------------------------------
# the draws: Kolmogorov-Smirnov, manifold, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_mixed_sigma_batch_follows_the_exact_law(dtype):
    k = 3000
    sigma = torch.tensor(MIXED, dtype=dtype).repeat(k)  # interleaved: one batch, six laws
    r = _igso3_rotmat_rows(sigma, _gen(21), dtype, sigma_max=SIGMA_MAX)
    assert r.shape == (6 * k, 3, 3) and r.dtype == dtype
    angle = rotation_angle(r.double()).view(k, 6)
    for i, s in enumerate(MIXED):
        assert stats.kstest(angle[:, i].numpy(), _exact_cdf(s)).pvalue > 1e-3, s
    # the rotation vectors of the same draws (angle times the axis)
    w = _igso3_rotvec_rows(sigma, _gen(21), sigma_max=SIGMA_MAX).double()
    torch.testing.assert_close(w.norm(dim=-1).view(k, 6), angle, atol=1e-5, rtol=1e-5)


def test_small_and_large_sigma_batch():
    k = 3000
    sigma = torch.tensor([1e-4, 9.0], dtype=F64).repeat(k)
    angle = rotation_angle(_igso3_rotmat_rows(sigma, _gen(5), F64)).view(k, 2)
    assert stats.kstest(angle[:, 0].numpy() / 1e-4, stats.maxwell.cdf).pvalue > 1e-3
    assert stats.kstest(angle[:, 1].numpy(), _haar_cdf).pvalue > 1e-3


def test_axes_are_uniform():
    w = _igso3_rotvec_rows(torch.full((20000,), 0.7, dtype=F64), _gen(3), sigma_max=1.0)
    axis = w / w.norm(dim=-1, keepdim=True)
    assert float(axis.mean(0).abs().max()) < 0.03
    torch.testing.assert_close(
        axis.T @ axis / len(axis), torch.eye(3, dtype=F64) / 3, atol=0.02, rtol=0
    )


@settings(deadline=None, max_examples=25)
@given(
    seed=seeds,
    dtype=dtypes,
    sigma=st.lists(st.floats(0.0, 8.0), min_size=1, max_size=12),
)
@example(seed=0, dtype=torch.float32, sigma=[0.0, 1e-8, math.pi, 8.0])
def test_rows_on_manifold_in_range_and_deterministic(seed, dtype, sigma):
    s = torch.tensor(sigma, dtype=dtype)
    a = _igso3_rotmat_rows(s, _gen(seed), dtype, sigma_max=SIGMA_MAX)
    b = _igso3_rotmat_rows(s, _gen(seed), dtype, sigma_max=SIGMA_MAX)
    assert torch.equal(a, b) and a.shape == (len(sigma), 3, 3) and a.dtype == dtype
    assert torch.isfinite(a).all()
    tol = 1e-12 if dtype == F64 else 2e-6
    assert float(SO3()._point_deviation(a).max()) < tol
    angle = rotation_angle(a.double())
    assert bool((angle >= 0).all()) and bool((angle <= math.pi + 1e-6).all())
    # sigma = 0 rows are the identity, exactly
    for i, v in enumerate(sigma):
        if v == 0.0:
            assert torch.equal(a[i], torch.eye(3, dtype=dtype))
    # the same uniforms in float32 and float64 give the same rotations, up to rounding
    c = _igso3_rotmat_rows(s.double(), _gen(seed), F64, sigma_max=SIGMA_MAX)
    torch.testing.assert_close(a.double(), c, atol=2e-5 if dtype != F64 else 1e-12, rtol=0)


@settings(deadline=None, max_examples=20)
@given(seed=seeds, dtype=dtypes)
@example(seed=0, dtype=torch.float32)
def test_rotmat_matches_rodrigues(seed, dtype):
    g = _gen(seed)
    half = torch.rand(64, generator=g, dtype=F64) * (0.5 * math.pi)
    half[:4] = torch.tensor([0.0, 1e-9, 0.5 * math.pi - 1e-7, 0.5 * math.pi], dtype=F64)
    axis = torch.rand(2, 64, generator=g, dtype=F64)
    r = _igso3_rotmat(half.to(dtype), axis)
    z = 2 * axis[0] - 1
    rxy = torch.sqrt(1 - z * z)
    phi = 2 * math.pi * axis[1]
    w = torch.stack([rxy * torch.cos(phi), rxy * torch.sin(phi), z], -1) * (2 * half)[:, None]
    ref = mfm.manifolds.so3.rotvec_to_rotmat(w)
    torch.testing.assert_close(r.double(), ref, atol=1e-14 if dtype == F64 else 1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_rows_dtype_device(device):
    s = torch.tensor([0.1, 0.5, 2.0], device=device)
    g = torch.Generator(device=device).manual_seed(0)
    r = _igso3_rotmat_rows(s, g, torch.float32, sigma_max=2.0)
    assert r.device.type == device and r.dtype == torch.float32 and r.is_contiguous()


# ---------------------------------------------------------------------------------------------
# no host-device synchronisation
# ---------------------------------------------------------------------------------------------


class _SyncError(AssertionError):
    pass


@pytest.fixture
def forbid_syncs(monkeypatch):
    """Make every tensor -> host transfer of values raise (what would sync with a GPU)."""

    def refuse(name):
        def method(*args, **kwargs):
            raise _SyncError(f"host-device sync: {name}")

        return method

    for name in (
        "item",
        "tolist",
        "nonzero",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "numpy",
        "cpu",
    ):
        monkeypatch.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
    monkeypatch.setattr(torch, "nonzero", refuse("torch.nonzero"))
    monkeypatch.setattr(torch, "masked_select", refuse("torch.masked_select"))
    getitem, setitem = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def is_mask(index) -> bool:
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    def checked_getitem(self, index):
        if is_mask(index):
            raise _SyncError("boolean-mask indexing")
        return getitem(self, index)

    def checked_setitem(self, index, value):
        if is_mask(index):
            raise _SyncError("boolean-mask assignment")
        return setitem(self, index, value)

    monkeypatch.setattr(torch.Tensor, "__getitem__", checked_getitem)
    monkeypatch.setattr(torch.Tensor, "__setitem__", checked_setitem)


def test_the_guard_catches_syncs(forbid_syncs):
    x = torch.arange(4.0)
    for bad in (
        lambda: x.sum().item(),
        lambda: x[x > 1],
        lambda: bool(x.any()),
        lambda: x.nonzero(),
    ):
        with pytest.raises(_SyncError):
            bad()


def _warm_tables():
    # the tables are built once per process (host work by design); drawing is what must not sync
    _igso3_rotmat_rows(torch.tensor([0.5]), _gen(0), torch.float32, sigma_max=0.7)
    _igso3_rotmat_rows(torch.tensor([0.5], dtype=F64), _gen(0), F64, sigma_max=0.7)
    IGSO3(0.3).sample(2, generator=_gen(0))


def test_per_row_draws_do_not_sync(request):
    _warm_tables()
    request.getfixturevalue("forbid_syncs")
    for dtype in (torch.float32, F64):
        sigma = torch.linspace(0.0, 0.7, 64, dtype=dtype)
        r = _igso3_rotmat_rows(sigma, _gen(1), dtype, sigma_max=0.7)
        assert r.shape == (64, 3, 3)


def test_fixed_sigma_draws_do_not_sync(request):
    _warm_tables()
    request.getfixturevalue("forbid_syncs")
    assert IGSO3(0.3).sample(64, generator=_gen(1)).shape == (64, 3, 3)


def test_stochastic_path_sample_does_not_sync(request):
    g = _gen(2)
    so3 = SO3()
    x0 = so3.random_uniform((8, 16), generator=g)
    x1 = so3.random_uniform((8, 16), generator=g)
    t = torch.rand(8, generator=g)
    path = StochasticGeodesicPath(so3, g=1.0, sigma_min=0.2)
    path.sample(x0, x1, t, generator=_gen(3))  # builds the table for sigma_t <= 0.54
    request.getfixturevalue("forbid_syncs")
    # value and manifold checks (off in training loops) do sync, by design
    with mfm.checks(values=False, manifold=False):
        s = path.sample(x0, x1, t, generator=_gen(3))
    assert s.xt.shape == x0.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stochastic_path_sample_does_not_sync_on_cuda():
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    so3 = SO3()
    x0 = so3.random_uniform((64, 128), generator=g, device=dev)
    x1 = so3.random_uniform((64, 128), generator=g, device=dev)
    t = torch.rand(64, generator=g, device=dev)
    path = StochasticGeodesicPath(so3, g=0.1, sigma_min=0.01)
    path.sample(x0, x1, t, generator=g)  # tables
    IGSO3(0.3).sample(1, generator=g, device=dev)  # its table (cached per sigma and device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with mfm.checks(values=False, manifold=False):
            s = path.sample(x0, x1, t, generator=g)
            r = IGSO3(0.3).sample(1000, generator=g, device=dev)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert s.xt.device.type == "cuda" and r.device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# the stochastic path, gradients, caches
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_stochastic_path_noise_mixed_times(dtype):
    # one batch, one time per sample: the noise angle of sample i follows IGSO3(sigma_t_i)
    k = 2000
    times = torch.tensor([0.0, 0.25, 0.5], dtype=dtype)
    t = times.repeat(k)
    g = _gen(9)
    so3 = SO3()
    x0 = so3.random_uniform(3 * k, generator=g, dtype=dtype)
    x1 = so3.random_uniform(3 * k, generator=g, dtype=dtype)
    path = StochasticGeodesicPath(so3, g=3.0, sigma_min=0.05)
    s = path.sample(x0, x1, t, generator=_gen(10))
    mu = GeodesicPath(so3).sample(x0, x1, t).xt
    angle = rotation_angle(mu.double().mT @ s.xt.double()).view(k, 3)
    for i, tt in enumerate(times.tolist()):
        sigma = math.sqrt(9.0 * tt * (1 - tt) + 0.05**2)
        assert stats.kstest(angle[:, i].numpy(), _exact_cdf(sigma)).pvalue > 1e-3
    tol = 1e-12 if dtype == F64 else 1e-5
    assert float(so3._point_deviation(s.xt).max()) < tol


def test_angle_reparameterisation_gradient():
    # d theta / d sigma at fixed u: finite, and the slope of the quantile in sigma
    u = torch.tensor([0.1, 0.5, 0.9, 0.999], dtype=F64)
    for s in (0.05, 0.8, 2.5):
        sigma = torch.full((4,), s, dtype=F64, requires_grad=True)
        theta = 2 * _igso3_half_angle_rows(sigma, u, F64, SIGMA_MAX)
        (grad,) = torch.autograd.grad(theta.sum(), sigma)
        assert torch.isfinite(grad).all()
        h = 1e-4
        hi = 2 * _igso3_half_angle(u.clone(), s + h, F64)
        lo = 2 * _igso3_half_angle(u.clone(), s - h, F64)
        torch.testing.assert_close(grad, (hi - lo) / (2 * h), atol=1e-3, rtol=1e-3)
    # small sigma: theta = sigma Q(u), the gradient is theta / sigma
    sigma = torch.full((4,), 0.01, dtype=F64, requires_grad=True)
    theta = 2 * _igso3_half_angle_rows(sigma, u, F64, SIGMA_MAX)
    (grad,) = torch.autograd.grad(theta.sum(), sigma)
    torch.testing.assert_close(grad, theta.detach() / 0.01, rtol=1e-4, atol=0)


def test_stochastic_path_gradient_through_the_noise_and_nan_sigma():
    g = _gen(4)
    so3 = SO3()
    x0, x1 = so3.random_uniform(6, generator=g), so3.random_uniform(6, generator=g)
    t = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9, 1.0], requires_grad=True)
    s = StochasticGeodesicPath(so3, g=1.0, sigma_min=0.0).sample(x0, x1, t, generator=g)
    (grad,) = torch.autograd.grad(s.xt.sum(), t)
    assert torch.isfinite(s.xt).all() and torch.isfinite(grad).all()
    # a NaN sigma gives a NaN rotation (and a valid table read), its neighbours are untouched
    r = _igso3_rotmat_rows(
        torch.tensor([0.3, math.nan, 0.3]), _gen(0), torch.float32, sigma_max=1.0
    )
    assert bool(r[1].isnan().all()) and torch.isfinite(r[0]).all() and torch.isfinite(r[2]).all()


def test_table_caches_are_bounded():
    for k in range(40):
        IGSO3(0.2 + 0.01 * k).sample(1, generator=_gen(0))
    info = sources._igso3_sampling_table.cache_info()
    assert info.maxsize == 16 and info.currsize <= 16
    assert sources._igso3_row_table.cache_info().maxsize == 8
    # the per-row table is sized by the bound, in steps of 16 intervals of 1/80
    assert sources._igso3_row_intervals(0.05) == 16
    assert sources._igso3_row_intervals(0.21) == 32
    assert sources._igso3_row_intervals(math.inf) == sources._igso3_row_intervals(100.0) == 512
