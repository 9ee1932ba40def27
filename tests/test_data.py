"""Tests for the 2-D toy samplers in manifoldfm.data."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm.data import (
    TOYS,
    ToySample,
    checkerboard,
    circles,
    eight_gaussians,
    moons,
    sample_toy,
    sample_toy_labeled,
    spirals,
)

from .conftest import DEVICES

NAMES = sorted(TOYS)
SAMPLERS = {
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "circles": circles,
    "checkerboard": checkerboard,
    "spirals": spirals,
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(name=st.sampled_from(NAMES), n=st.integers(0, 50), seed=st.integers(0, 2**16))
@example(name="spirals", n=0, seed=0)
@example(name="moons", n=1, seed=0)
def test_shape_reproducibility_and_dispatch(name, n, seed):
    x = SAMPLERS[name](n, generator=_gen(seed), dtype=torch.float64)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    assert torch.equal(x, SAMPLERS[name](n, generator=_gen(seed), dtype=torch.float64))
    assert torch.equal(x, sample_toy(name, n, generator=_gen(seed), dtype=torch.float64))
    lab = sample_toy_labeled(name, n, generator=_gen(seed), dtype=torch.float64)
    assert isinstance(lab, ToySample)
    assert torch.equal(lab.x, x) and lab.y.shape == (n,) and lab.y.dtype == torch.long
    assert bool(torch.isfinite(x).all())


@pytest.mark.parametrize("name", NAMES)
def test_seeds_differ_and_default_dtype(name):
    a = sample_toy(name, 20, generator=_gen(0))
    b = sample_toy(name, 20, generator=_gen(1))
    assert a.dtype == torch.get_default_dtype()
    assert not torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_device_follows_argument_and_cpu_generator_is_device_independent(name, device):
    x = sample_toy(name, 16, generator=_gen(3), device=device, dtype=torch.float32)
    assert x.device.type == device
    ref = sample_toy(name, 16, generator=_gen(3), dtype=torch.float32)
    torch.testing.assert_close(x.cpu(), ref)


def test_eight_gaussians_statistics():
    s = sample_toy_labeled("eight_gaussians", 8000, generator=_gen(0), dtype=torch.float64)
    angle = s.y.double() * math.pi / 4
    centres = 5.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    resid = s.x - centres
    std = 0.1**0.25
    # Per-coordinate std of the residual ~ 0.562 (8000 * 2 draws: relative error ~ 0.6 %).
    assert abs(resid.std().item() - std) < 0.02
    assert resid.mean(dim=0).abs().max().item() < 0.03
    freq = torch.bincount(s.y, minlength=8).double() / 8000
    assert (freq - 0.125).abs().max().item() < 0.015
    # Neighbouring centres are 3.83 apart (6.8 std): almost every point is closest to its own
    # centre (misassignment probability ~ 2 Phi(-3.4) ~ 7e-4).
    all_centres = (
        5.0
        * torch.stack(
            [torch.cos(torch.arange(8) * math.pi / 4), torch.sin(torch.arange(8) * math.pi / 4)], 1
        ).double()
    )
    hits = (torch.cdist(s.x, all_centres).argmin(dim=1) == s.y).double().mean().item()
    assert hits > 0.997
    x = eight_gaussians(10, generator=_gen(0), scale=2.0, std=0.0, dtype=torch.float64)
    torch.testing.assert_close(x.norm(dim=1), torch.full((10,), 2.0, dtype=torch.float64))


def test_moons_geometry():
    s = sample_toy_labeled("moons", 2000, generator=_gen(0), dtype=torch.float64, noise=0.0)
    p = (s.x + 1.0) / 3.0  # undo the default scale 3, shift (-1, -1)
    upper, lower = s.y == 0, s.y == 1
    torch.testing.assert_close(p[upper].norm(dim=1), torch.ones(int(upper.sum())).double())
    assert bool((p[upper, 1] >= -1e-12).all())
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(
        (p[lower] - centre).norm(dim=1), torch.ones(int(lower.sum())).double()
    )
    assert bool((p[lower, 1] <= 0.5 + 1e-12).all())
    noisy = moons(20000, generator=_gen(1), dtype=torch.float64)
    # Mean of the unit moons is (0.5, 0.25) -> (0.5, -0.25) after the map.
    torch.testing.assert_close(
        noisy.mean(0), torch.tensor([0.5, -0.25], dtype=torch.float64), atol=0.05, rtol=0
    )
    shifted = moons(5, generator=_gen(2), shift=(0.0, 0.0), scale=1.0, dtype=torch.float64)
    base = moons(5, generator=_gen(2), dtype=torch.float64)
    torch.testing.assert_close(3.0 * shifted - 1.0, base)


def test_circles_geometry():
    s = sample_toy_labeled("circles", 500, generator=_gen(0), dtype=torch.float64, noise=0.0)
    radius = torch.where(s.y == 0, 3.0, 1.5).double()
    torch.testing.assert_close(s.x.norm(dim=1), radius)
    noisy = circles(4000, generator=_gen(0), dtype=torch.float64)
    r = noisy.norm(dim=1)
    outer = r > 2.25
    assert abs(outer.double().mean().item() - 0.5) < 0.03
    assert abs(r[outer].mean().item() - 3.0) < 0.03


def test_checkerboard_support_and_balance():
    s = sample_toy_labeled("checkerboard", 8000, generator=_gen(0), dtype=torch.float64)
    x = s.x
    assert bool((x.abs() <= 4).all())
    i, j = torch.floor(x[:, 0] / 2), torch.floor(x[:, 1] / 2)
    assert bool(((i + j) % 2 == 0).all())  # dark squares only
    freq = torch.bincount(s.y, minlength=8).double() / 8000
    assert (freq - 0.125).abs().max().item() < 0.015
    # The label identifies the square.
    square = (i + 2) * 4 + (j + 2)
    assert len({(int(a), int(b)) for a, b in zip(s.y, square)}) == 8
    # Uniform inside squares: the mean is the board centre.
    assert x.mean(0).abs().max().item() < 0.1


def test_spirals_geometry():
    scale = 1.0 / 3.0
    s = sample_toy_labeled("spirals", 1000, generator=_gen(0), dtype=torch.float64, noise=0.0)
    q = s.x / scale * torch.where(s.y == 0, 1.0, -1.0).double()[:, None]  # back onto arm 0
    r = torch.linspace(0, 3 * math.pi, 20001, dtype=torch.float64)
    curve = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], dim=1)
    # q = curve(r) + jitter with jitter in [0, 0.5)^2: the point minus some jitter is on the curve,
    # so the distance of q to the curve is at most |jitter| <= 0.5 sqrt(2).
    dist = torch.cdist(q, curve).min(dim=1).values
    assert dist.max().item() <= 0.5 * math.sqrt(2) + 1e-3
    # And not trivially satisfied: a uniform cloud on the same box is often farther away.
    box = (torch.rand(1000, 2, generator=_gen(1), dtype=torch.float64) - 0.5) * 20
    assert (torch.cdist(box, curve).min(dim=1).values > 0.75).double().mean() > 0.3
    noisy = spirals(20000, generator=_gen(2), dtype=torch.float64)
    assert noisy.mean(0).abs().max().item() < 0.05  # the two arms are point-symmetric


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"checkerboard.*eight_gaussians.*moons"):
        sample_toy("swissroll", 10)
    with pytest.raises(ValueError, match=">= 0"):
        moons(-1)
    with pytest.raises(TypeError, match="int"):
        moons(2.5)
    with pytest.raises(TypeError, match="floating"):
        moons(3, dtype=torch.long)
    with pytest.raises(TypeError, match="spirals"):
        sample_toy("spirals", 3, scael=2.0)
    with pytest.raises(ValueError, match="factor"):
        circles(3, factor=1.5)
    with pytest.raises(ValueError, match="scale"):
        eight_gaussians(3, scale=0.0)
    with pytest.raises(ValueError, match="shift"):
        moons(3, shift=(1.0,))
