"""Gaussian-process and white noise over point sets: exact covariance, methods, densities."""

from __future__ import annotations

import math
import warnings

import gpytorch
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manifoldfm.functional import GPSource, WhiteNoise, grid_points

from .conftest import DEVICES
from .strategies import seeds

F64 = torch.float64


def rbf(lengthscale: float, ard: int | None = None) -> gpytorch.kernels.Kernel:
    k = gpytorch.kernels.RBFKernel(ard_num_dims=ard)
    k.lengthscale = lengthscale
    return k


def matern(nu: float, lengthscale: float) -> gpytorch.kernels.Kernel:
    k = gpytorch.kernels.MaternKernel(nu=nu)
    k.lengthscale = lengthscale
    return k


def sample_cov(x: torch.Tensor) -> torch.Tensor:
    """Second moment of zero-mean samples ``(N, n)`` -> ``(n, n)``."""
    return x.mT @ x / x.shape[0]


def cov_tol(n_samples: int, variance: float = 1.0, z: float = 6.0) -> float:
    """``z`` standard errors of a sample covariance entry, ``sqrt(2 / N)`` times the variance."""
    return z * variance * math.sqrt(2.0 / n_samples)


def mean_var_tol(k: torch.Tensor, n_samples: int, z: float = 5.0) -> float:
    """``z`` standard errors of the point-averaged sample variance: ``sqrt(2 mean(K^2) / N)``."""
    return z * math.sqrt(2.0 * float(k.square().mean()) / n_samples)


def implied_fft_cov(src: GPSource) -> torch.Tensor:
    """The exact covariance of the FFT sampler on the grid, in grid order."""
    assert src.method == "fft" and src.grid is not None and src._sqrt_eig is not None
    m = src.embedding_shape
    lam = src._sqrt_eig.square() * math.prod(m)
    c = torch.fft.ifftn(lam.to(torch.complex128)).real  # first row of the circulant
    idx = [torch.arange(s) for s in src.grid.shape]
    pts = torch.stack(torch.meshgrid(*idx, indexing="ij"), -1).reshape(-1, len(m))
    off = (pts[None, :, :] - pts[:, None, :]) % torch.tensor(m)
    return c[tuple(off.unbind(-1))]


def in_grid_order(src: GPSource, k: torch.Tensor) -> torch.Tensor:
    order = src.grid.order
    return k[order][:, order]


# ---------------------------------------------------------------------------------------------
# exactness of the three methods
# ---------------------------------------------------------------------------------------------


def test_cholesky_covariance_1000_points():
    pts = torch.rand(1000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    src = GPSource(rbf(0.1), pts)
    assert src.method == "cholesky" and src.grid is None
    x = src.sample(3000, generator=torch.Generator().manual_seed(1), dtype=F64)
    err = (sample_cov(x) - src.covariance()).abs().max()
    assert float(err) < cov_tol(3000)
    # the point-averaged variance is much tighter
    assert abs(float(x.square().mean()) - 1.0) < mean_var_tol(src.covariance(), 3000)


def test_fft_covariance_64x64_grid():
    k = rbf(0.15)
    pts = grid_points((64, 64), dtype=F64)
    src = GPSource(k, pts)
    assert src.method == "fft" and src.grid_shape == (64, 64)
    n = 2000
    x = src.to_grid(src.sample(n, generator=torch.Generator().manual_seed(2), dtype=F64))
    var = x.square().mean(0)
    assert float((var - 1.0).abs().max()) < cov_tol(n)
    k1 = torch.exp(
        -0.5 * (torch.arange(64.0)[:, None] - torch.arange(64.0)) ** 2 / (63 * 0.15) ** 2
    )
    bound = 5.0 * math.sqrt(2.0 * float(k1.square().mean()) ** 2 / n)  # separable kernel
    assert abs(float(var.mean()) - 1.0) < bound
    h = 1.0 / 63
    for lag in [(1, 0), (0, 1), (3, 2), (5, -4), (10, 0)]:
        a, b = lag
        i0, j0 = 8, 8 + max(0, -b)
        xa = x[:, i0 : i0 + 40, j0 : j0 + 40]
        xb = x[:, i0 + a : i0 + a + 40, j0 + b : j0 + b + 40]
        emp = (xa * xb).mean(0)
        target = math.exp(-0.5 * (a * a + b * b) * h * h / 0.15**2)
        assert float((emp - target).abs().max()) < cov_tol(n), lag


def test_fft_sampler_is_exact():
    """The covariance implied by the circulant embedding is the kernel matrix, to 1e-8."""
    for kernel, shape in [
        (rbf(0.2), (40,)),
        (matern(0.5, 0.3), (12, 9)),
        (matern(1.5, 0.2), (16, 16)),
        (gpytorch.kernels.ScaleKernel(rbf(0.2)) + matern(2.5, 0.1), (10, 11)),
        (matern(0.5, 0.5), (5, 4, 3)),
    ]:
        src = GPSource(kernel, grid_points(shape, dtype=F64), method="fft")
        assert src.method == "fft", kernel
        k = in_grid_order(src, src.covariance())
        torch.testing.assert_close(implied_fft_cov(src), k, atol=1e-8, rtol=0)


def test_kronecker_sampler_is_exact():
    k = rbf([0.3, 0.5], ard=2)
    k = gpytorch.kernels.ScaleKernel(k)
    k.outputscale = 2.0
    src = GPSource(k, grid_points((7, 9), dtype=F64), method="kronecker")
    assert src.method == "kronecker"
    full = src._axes[0] @ src._axes[0].mT
    full = torch.kron(full, src._axes[1] @ src._axes[1].mT) * src._kron_scale**2
    torch.testing.assert_close(full, in_grid_order(src, src.covariance()), atol=1e-8, rtol=0)


def test_methods_agree_in_distribution():
    pts = grid_points((9, 7), dtype=F64)
    perm = torch.randperm(63, generator=torch.Generator().manual_seed(3))
    pts = pts[perm]
    k = rbf(0.2)
    n = 20000
    covs = {}
    for method in ("cholesky", "fft", "kronecker"):
        src = GPSource(k, pts, method=method)
        assert src.method == method
        covs[method] = sample_cov(
            src.sample(n, generator=torch.Generator().manual_seed(4), dtype=F64)
        )
    target = src.covariance()
    for method, c in covs.items():
        assert float((c - target).abs().max()) < cov_tol(n), method
    assert float((covs["fft"] - covs["cholesky"]).abs().max()) < 2 * cov_tol(n)


def test_coarse_subset_of_fine_grid_has_coarse_covariance():
    k = matern(1.5, 0.2)
    fine = GPSource(k, grid_points(129, dtype=F64))
    coarse_pts = grid_points(33, dtype=F64)
    coarse = GPSource(k, coarse_pts)
    assert fine.method == coarse.method == "fft"
    n = 6000
    x = fine.sample(n, generator=torch.Generator().manual_seed(5), dtype=F64)[:, ::4]
    target = coarse.covariance()
    assert float((sample_cov(x) - target).abs().max()) < cov_tol(n)
    y = coarse.sample(n, generator=torch.Generator().manual_seed(6), dtype=F64)
    assert float((sample_cov(y) - target).abs().max()) < cov_tol(n)


def test_variance_at_1825_points_lanczos_regime():
    """gpytorch's MultivariateNormal.sample is a rank-100 Lanczos root above 800 points."""
    pts = torch.linspace(0, 10, 1825, dtype=F64)[:, None]
    pts = pts[torch.randperm(1825, generator=torch.Generator().manual_seed(7))]
    k = matern(2.5, 0.05)
    for method in ("cholesky", "fft"):
        src = GPSource(k, pts, method=method)
        x = src.sample(1000, generator=torch.Generator().manual_seed(8), dtype=F64)
        bound = mean_var_tol(src.covariance(), 1000)
        assert bound < 0.03  # a few per cent
        assert abs(float(x.square().mean()) - 1.0) < bound, method


@settings(max_examples=10)
@given(st.floats(0.05, 0.6), st.integers(8, 40), seeds)
def test_random_lengthscales_fft_is_exact(lengthscale, n, seed):
    pts = grid_points(n, dtype=F64)
    src = GPSource(matern(1.5, lengthscale), pts, method="fft")
    assert src.method == "fft"
    torch.testing.assert_close(
        implied_fft_cov(src), in_grid_order(src, src.covariance()), atol=1e-8, rtol=0
    )
    x = src.sample(4, generator=torch.Generator().manual_seed(seed), dtype=F64)
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(src.log_prob(x)).all())


@given(st.integers(1, 3), seeds)
def test_grid_order_does_not_change_structured_draws(d, seed):
    shape = (6, 5, 4)[:d]
    pts = grid_points(shape, dtype=F64)
    perm = torch.randperm(pts.shape[0], generator=torch.Generator().manual_seed(seed))
    for method in ("fft", "kronecker"):
        a = GPSource(rbf(0.3), pts, method=method)
        b = GPSource(rbf(0.3), pts[perm], method=method)
        xa = a.sample(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
        xb = b.sample(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
        torch.testing.assert_close(xb, xa[:, perm], atol=1e-12, rtol=0)


def _periodic():
    k = gpytorch.kernels.PeriodicKernel()
    k.lengthscale, k.period_length = 0.5, 0.3
    return k


KERNELS = {
    "rbf": lambda: rbf(0.2),
    "matern12": lambda: matern(0.5, 0.2),
    "matern32": lambda: matern(1.5, 0.2),
    "matern52": lambda: matern(2.5, 0.2),
    "periodic": _periodic,
    "scale": lambda: gpytorch.kernels.ScaleKernel(matern(1.5, 0.2)),
    "sum": lambda: matern(0.5, 0.2) + rbf(0.5),
    "product": lambda: matern(1.5, 0.3) * _periodic(),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("where", ["line", "grid", "scattered"])
def test_gpytorch_kernel_family(name, where):
    pts = {
        "line": grid_points(50, dtype=F64),
        "grid": grid_points((8, 8), dtype=F64),
        "scattered": torch.rand(30, 2, generator=torch.Generator().manual_seed(0), dtype=F64),
    }[where]
    kernel = KERNELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # periodic kernels: FFT falls back
        src = GPSource(kernel, pts)
    with torch.no_grad():
        ref = kernel.double()(pts).to_dense()
    torch.testing.assert_close(src.covariance(), ref)
    assert src.method == "cholesky" if where == "scattered" else src.method in ("fft", "cholesky")
    if src.method == "fft":
        k = in_grid_order(src, ref)
        torch.testing.assert_close(implied_fft_cov(src), k, atol=1e-8, rtol=0)
    x = src.sample(5, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(src.log_prob(x)).all())


def test_kronecker_with_one_kernel_per_axis():
    k0 = gpytorch.kernels.RBFKernel(active_dims=[0])
    k0.lengthscale = 0.2
    k = k0 * gpytorch.kernels.MaternKernel(nu=0.5, active_dims=[1])
    pts = grid_points((7, 6), dtype=F64)
    src = GPSource(k, pts, method="kronecker")
    chol = GPSource(k, pts, method="cholesky")
    x = chol.sample(4, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(src.log_prob(x), chol.log_prob(x), atol=1e-6, rtol=1e-8)


def test_batched_kernels_are_refused():
    k = gpytorch.kernels.RBFKernel(batch_shape=torch.Size([2]))
    with pytest.raises(ValueError, match="batched kernels"):
        GPSource(k, torch.rand(5, 1))


def test_fft_falls_back_to_cholesky_with_a_warning():
    with pytest.warns(RuntimeWarning, match="circulant embedding"):
        src = GPSource(matern(2.5, 2.0), grid_points(16, dtype=F64))
    assert src.method == "cholesky" and src.embedding_shape is None
    x = src.sample(2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert x.shape == (2, 16)


def test_auto_uses_cholesky_for_scattered_points_and_non_stationary_kernels():
    assert GPSource(rbf(0.2), torch.rand(30, 2, dtype=F64)).method == "cholesky"
    lin = gpytorch.kernels.LinearKernel() + rbf(0.3)
    assert GPSource(lin, grid_points(20, dtype=F64)).method == "cholesky"

    def shifted(x, y):  # stationary-looking near the origin, not elsewhere
        return torch.exp(-((x - y.mT) ** 2) / 0.1) * (1 + x * y.mT)

    assert GPSource(shifted, grid_points(20, dtype=F64)).method == "cholesky"

    def stationary(x, y):
        return torch.exp(-(x - y.mT).abs() / 0.3)

    assert GPSource(stationary, grid_points(200, dtype=F64)).method == "fft"
    # a tiny grid: a dense draw is cheaper than the FFT of the embedding
    assert GPSource(stationary, grid_points(5, dtype=F64)).method == "cholesky"


# ---------------------------------------------------------------------------------------------
# densities
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cholesky", "fft", "kronecker"])
def test_log_prob_matches_torch_multivariate_normal(method):
    pts = grid_points((5, 4), dtype=F64)
    mean = torch.linspace(-1, 1, 20, dtype=F64)
    src = GPSource(
        matern(0.5, 0.3) if method != "kronecker" else rbf(0.3), pts, mean=mean, method=method
    )
    x = src.sample(6, generator=torch.Generator().manual_seed(9), dtype=F64)
    k = src.covariance()
    if src.jitter_used:
        k = k + src.jitter_used * k.diagonal().mean() * torch.eye(20, dtype=F64)
    ref = torch.distributions.MultivariateNormal(mean, covariance_matrix=k)
    torch.testing.assert_close(src.log_prob(x), ref.log_prob(x), atol=1e-6, rtol=1e-9)


def test_log_prob_channels_sum_and_float32():
    pts = torch.rand(15, 2, generator=torch.Generator().manual_seed(10), dtype=F64)
    src = GPSource(rbf(0.5), pts, channels=3)
    one = GPSource(rbf(0.5), pts)
    x = src.sample(4, generator=torch.Generator().manual_seed(11), dtype=F64)
    assert x.shape == (4, 15, 3)
    expect = sum(one.log_prob(x[:, :, c]) for c in range(3))
    torch.testing.assert_close(src.log_prob(x), expect)
    lp32 = src.log_prob(x.float())
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32, expect.float(), rtol=1e-4, atol=1e-3)


def test_log_prob_has_gradients():
    src = GPSource(rbf(0.5), grid_points(10, dtype=F64))
    x = src.sample(2, generator=torch.Generator().manual_seed(12), dtype=F64).requires_grad_()
    src.log_prob(x).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_white_noise():
    pts = grid_points((3, 4))
    src = WhiteNoise(pts, std=0.5, mean=1.0)
    assert src.grid_shape == (3, 4) and src.shape == (12,)
    x = src.sample(4000, generator=torch.Generator().manual_seed(13), dtype=F64)
    assert float(x.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(x.std()) == pytest.approx(0.5, rel=0.02)
    ref = torch.distributions.Normal(1.0, 0.5).log_prob(x[:3]).sum(1)
    torch.testing.assert_close(src.log_prob(x[:3]), ref)
    chan = WhiteNoise(pts, channels=2)
    y = chan.sample(2)
    assert y.shape == (2, 12, 2) and chan.to_grid(y).shape == (2, 2, 3, 4)
    assert chan.log_prob(y).shape == (2,)


# ---------------------------------------------------------------------------------------------
# dtype, device, generator, layout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["cholesky", "fft", "kronecker"])
def test_dtype_device_and_seed(device, dtype, method):
    src = GPSource(rbf(0.3), grid_points((6, 5)), method=method, channels=2)
    x = src.sample(3, generator=torch.Generator().manual_seed(0), dtype=dtype, device=device)
    assert x.dtype == dtype and x.device.type == torch.device(device).type
    assert x.shape == (3, 30, 2)
    y = src.sample(3, generator=torch.Generator().manual_seed(0), dtype=dtype, device=device)
    assert torch.equal(x, y)
    lp = src.log_prob(x)
    assert lp.dtype == dtype and lp.device == x.device and lp.shape == (3,)
    assert src.sample(0, dtype=dtype).shape == (0, 30, 2)
    assert src.to_grid(x).shape == (3, 2, 6, 5)
    w = WhiteNoise(grid_points(4), mean=torch.zeros(4))
    wx = w.sample(2, dtype=dtype, device=device)
    assert wx.dtype == dtype and w.log_prob(wx).dtype == dtype


def test_float32_draws_have_the_kernel_covariance():
    for method in ("cholesky", "fft"):
        src = GPSource(rbf(0.2), grid_points(64), method=method)
        x = src.sample(4000, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
        assert x.dtype == torch.float32
        err = (sample_cov(x.double()) - src.covariance()).abs().max()
        assert float(err) < cov_tol(4000), method


def test_mean_tensor_is_added():
    mean = torch.linspace(0, 5, 20)
    src = GPSource(rbf(0.3), grid_points(20), mean=mean)
    x = src.sample(3000, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(x.mean(0), mean.double(), atol=0.1, rtol=0)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_duplicates_raise():
    pts = torch.tensor([[0.0], [0.5], [0.2], [0.5]])
    with pytest.raises(ValueError, match=r"duplicates: points 1 and 3 are both \(0\.5,\)"):
        GPSource(rbf(0.3), pts)
    with pytest.raises(ValueError, match="duplicates"):
        WhiteNoise(pts)


def test_not_positive_definite_raises():
    def indefinite(x, y):
        return 1.0 - 4.0 * (x - y.mT) ** 2

    with pytest.raises(
        ValueError, match=r"not positive definite: smallest eigenvalue -.*jitter of up to 1e-06"
    ):
        GPSource(indefinite, torch.rand(10, 1, generator=torch.Generator().manual_seed(0)))

    def negative(x, y):
        return -torch.exp(-((x - y.mT) ** 2))

    with pytest.raises(ValueError, match="mean diagonal"):
        GPSource(negative, torch.rand(5, 1))

    def asymmetric(x, y):
        return torch.exp(-((x - y.mT) ** 2)) + 0.1 * x * torch.ones_like(y.mT)

    with pytest.raises(ValueError, match="not symmetric"):
        GPSource(asymmetric, torch.rand(5, 1) + 1.0)


def test_wrong_shapes_and_arguments_raise():
    k = rbf(0.3)
    with pytest.raises(ValueError, match=r"d in \(1, 2, 3\), got \(5, 4\)"):
        GPSource(k, torch.rand(5, 4))
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        GPSource(k, torch.rand(5))
    with pytest.raises(ValueError, match=r"got \(0, 2\)"):
        GPSource(k, torch.rand(0, 2))
    with pytest.raises(TypeError, match="floating"):
        GPSource(k, torch.zeros(5, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        GPSource(k, torch.tensor([[0.0], [math.nan]]))
    with pytest.raises(ValueError, match="method must be one of"):
        GPSource(k, torch.rand(5, 1), method="lanczos")
    with pytest.raises(ValueError, match="jitter"):
        GPSource(k, torch.rand(5, 1), jitter=-1.0)
    with pytest.raises(
        ValueError, match=r"mean must be a float or a floating tensor of shape \(5,\)"
    ):
        GPSource(k, torch.rand(5, 1), mean=torch.zeros(4))
    with pytest.raises(ValueError, match="channels"):
        GPSource(k, torch.rand(5, 1), channels=0)
    with pytest.raises(TypeError, match="kernel must be"):
        GPSource("rbf", torch.rand(5, 1))
    with pytest.raises(ValueError, match=r"kernel\(X, Y\) must return shape \(5, 5\)"):
        GPSource(lambda x, y: torch.ones(5), torch.rand(5, 1))


def test_structured_methods_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="not a regular grid"):
        GPSource(rbf(0.3), torch.rand(10, 1), method="fft")
    with pytest.raises(ValueError, match="not stationary"):
        GPSource(gpytorch.kernels.LinearKernel(), grid_points(10), method="fft")
    with pytest.raises(ValueError, match="not separable"):
        GPSource(matern(1.5, 0.3), grid_points((5, 6)), method="kronecker")
    src = GPSource(rbf(0.3), torch.rand(10, 2))
    with pytest.raises(ValueError, match="not a regular grid"):
        src.to_grid(torch.zeros(1, 10))


def test_mismatched_point_sets_in_log_prob_raise():
    src = GPSource(rbf(0.3), grid_points(10))
    with pytest.raises(ValueError, match=r"shape \(B, 10\).*got \(2, 12\)"):
        src.log_prob(torch.zeros(2, 12))
    with pytest.raises(ValueError, match=r"got \(2, 10, 1\)"):
        src.log_prob(torch.zeros(2, 10, 1))
    with pytest.raises(TypeError, match="floating"):
        src.log_prob(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(TypeError, match="int"):
        src.sample(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        src.sample(-1)
