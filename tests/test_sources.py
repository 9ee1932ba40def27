"""Gaussian source: density, normalisation, sampling statistics, dtype/device, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from manifoldfm.sources import Gaussian

from .conftest import DEVICES

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
means = st.floats(-3.0, 3.0)
stds = st.floats(0.1, 4.0)


@given(shape=shapes, mean=means, std=stds, seed=st.integers(0, 2**31 - 1))
@example(shape=(), mean=0.0, std=1.0, seed=0)
@example(shape=(2, 1, 3), mean=-1.0, std=0.1, seed=1)
def test_log_prob_matches_torch_distributions(shape, mean, std, seed):
    src = Gaussian(shape, mean=mean, std=std)
    g = torch.Generator().manual_seed(seed)
    x = mean + 2 * std * torch.randn(5, *shape, generator=g, dtype=torch.float64)
    loc, scale = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    ref = torch.distributions.Normal(loc, scale).log_prob(x).reshape(5, -1).sum(dim=1)
    torch.testing.assert_close(src.log_prob(x), ref, rtol=1e-12, atol=1e-12)
    assert src.shape == shape and src.dim == math.prod(shape)


@settings(max_examples=10)
@given(mean=means, std=stds)
def test_density_integrates_to_one(mean, std):
    # 1-D: trapezoid over +-10 std; 2-D: a grid over +-8 std
    xs = torch.linspace(mean - 10 * std, mean + 10 * std, 2001, dtype=torch.float64)
    p = Gaussian(1, mean=mean, std=std).log_prob(xs[:, None]).exp()
    assert torch.trapezoid(p, xs).item() == pytest.approx(1.0, abs=1e-9)
    ys = torch.linspace(mean - 8 * std, mean + 8 * std, 161, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ys, ys, indexing="ij"), dim=-1).reshape(-1, 2)
    p2 = Gaussian(2, mean=mean, std=std).log_prob(grid).exp()
    h = (ys[1] - ys[0]).item()
    assert p2.sum().item() * h * h == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=10)
@given(mean=means, std=stds, seed=st.integers(0, 2**31 - 1))
def test_sample_statistics(mean, std, seed):
    n = 4000
    x = Gaussian((2, 2), mean=mean, std=std).sample(
        n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    assert x.shape == (n, 2, 2)
    flat = x.reshape(-1)
    assert abs(flat.mean().item() - mean) < 4.5 * std / math.sqrt(flat.numel())
    assert abs(flat.var().item() / std**2 - 1) < 4.5 * math.sqrt(2 / flat.numel())


def test_sampling_is_reproducible_and_default_dtype():
    src = Gaussian(3)
    a = src.sample(4, generator=torch.Generator().manual_seed(0))
    b = src.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.get_default_dtype()
    assert src.sample(0).shape == (0, 3)
    assert repr(src) == "Gaussian(shape=(3,), mean=0.0, std=1.0)"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_are_preserved(dtype, device):
    src = Gaussian((2,), mean=1.0, std=2.0)
    x = src.sample(7, dtype=dtype, device=device)
    assert x.dtype == dtype and x.device.type == device
    lp = src.log_prob(x)
    assert lp.shape == (7,) and lp.dtype == dtype and lp.device == x.device
    g = torch.Generator(device=device).manual_seed(0)
    assert src.sample(3, generator=g, dtype=dtype).device.type == device  # generator's device


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Gaussian(0), ValueError, "shape entries must be >= 1"),
        (lambda: Gaussian((2, -1)), ValueError, "shape entries must be >= 1"),
        (lambda: Gaussian(2.0), TypeError, "shape"),
        (lambda: Gaussian("ab"), TypeError, "shape"),
        (lambda: Gaussian((2, True)), TypeError, "shape entries must be ints"),
        (lambda: Gaussian(2, std=0.0), ValueError, "std"),
        (lambda: Gaussian(2, std=-1.0), ValueError, "std"),
        (lambda: Gaussian(2, std=math.inf), ValueError, "std"),
        (lambda: Gaussian(2, mean=math.nan), ValueError, "mean must be finite"),
        (lambda: Gaussian(2, mean=torch.tensor(1.0)), TypeError, "mean must be a Python float"),
        (lambda: Gaussian(2).sample(-1), ValueError, "n must be >= 0"),
        (lambda: Gaussian(2).sample(2.0), TypeError, "n must be an int"),
        (lambda: Gaussian(2).sample(2, dtype=torch.int64), TypeError, "floating"),
        (lambda: Gaussian(2).log_prob(torch.zeros(3, 3)), ValueError, r"\(B, 2\).*\(3, 3\)"),
        (lambda: Gaussian(2).log_prob(torch.zeros(3)), ValueError, r"\(B, 2\)"),
        (lambda: Gaussian((2, 2)).log_prob(torch.zeros(3, 4)), ValueError, r"\(B, 2, 2\)"),
        (lambda: Gaussian(2).log_prob([[0.0, 0.0]]), TypeError, "torch.Tensor"),
        (lambda: Gaussian(2).log_prob(torch.zeros(3, 2, dtype=torch.int64)), TypeError, "floating"),
    ],
)
def test_bad_input_raises(make, error, match):
    with pytest.raises(error, match=match):
        make()
