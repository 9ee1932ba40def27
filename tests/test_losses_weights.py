"""Tests of quadrature weights and the weighted (functional) flow-matching loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm import AffinePath, CondOT, PathSample
from manifoldfm.losses import cfm_loss, quadrature_weights
from manifoldfm.manifolds import Euclidean

from .conftest import DEVICES, TOL
from .strategies import dtypes, seeds


def _sample(batch: int, shape: tuple[int, ...], seed: int, dtype=torch.float64) -> PathSample:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *shape), generator=g, dtype=dtype)
    x1 = torch.randn((batch, *shape), generator=g, dtype=dtype)
    t = torch.rand(batch, generator=g, dtype=dtype)
    return AffinePath(CondOT()).sample(x0, x1, t)


def _scattered(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=dtype)


# ------------------------------------------------------------------ quadrature weights, 1-D


@given(
    n=st.integers(2, 40),
    seed=seeds,
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
    dtype=dtypes,
)
@example(n=2, seed=0, a=0.0, b=1.0, dtype=torch.float64)
def test_trapezoid_weights_integrate_linear_functions_exactly(n, seed, a, b, dtype):
    x = 5 * _scattered(n, seed, dtype) - 1
    w = quadrature_weights(x)
    lo, hi = float(x.min()), float(x.max())
    exact = a * (hi**2 - lo**2) / 2 + b * (hi - lo)
    tol = TOL[dtype]["atol"] * 100
    assert float(w @ (a * x + b)) == pytest.approx(exact, abs=tol, rel=tol)
    assert float(w.sum()) == pytest.approx(hi - lo, abs=tol, rel=tol)
    assert bool((w >= 0).all()) and w.dtype == dtype and w.shape == (n,)
    # Input order does not matter; (n, 1) is the same as (n,).
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(quadrature_weights(x[perm]), w[perm])
    torch.testing.assert_close(quadrature_weights(x[:, None]), w)
    w1 = quadrature_weights(x, normalize=True)
    assert float(w1.sum()) == pytest.approx(1.0, abs=tol)


def test_trapezoid_is_not_exact_for_quadratics():
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    err = float(quadrature_weights(x) @ x.square()) - 1 / 3
    assert err == pytest.approx(1 / (6 * 100), rel=1e-9)  # (b - a) h^2 / 6 for x^2


@pytest.mark.parametrize("d", [1, 2, 3])
def test_regular_grid_weights_are_uniform_in_the_interior(d):
    n = 9
    axes = [torch.linspace(0, 1, n, dtype=torch.float64)] * d
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
    w = quadrature_weights(grid)
    assert float(w.sum()) == pytest.approx(1.0)
    if d == 1:
        torch.testing.assert_close(w[1:-1], torch.full((n - 2,), 1 / (n - 1), dtype=w.dtype))
    else:  # nearest-neighbour cells on a grid: all equal
        torch.testing.assert_close(w, torch.full_like(w, 1 / n**d))


def test_refining_scattered_points_converges_weighted_loss_to_the_integral():
    """sum_i w_i (v - u)^2 -> int_0^1 (v - u)^2 on ever finer, unevenly spread points."""
    errors_w, errors_plain = [], []
    # e(x)^2 = x^2 + cos(2x)^2 on [0, 1]: the integral is 1/3 + 1/2 + sin(4)/8.
    exact = 1 / 3 + 0.5 + math.sin(4.0) / 8
    for n in (20, 80, 320, 1280):
        x = _scattered(n, n).square()  # crowded near 0
        x = torch.cat([x.new_tensor([0.0, 1.0]), x])
        e2 = x.square() + torch.cos(2 * x) ** 2
        v = torch.sqrt(e2)[None, :]
        sample = PathSample(t=x.new_zeros(1), x0=v, x1=v, xt=v, ut=torch.zeros_like(v))
        w = quadrature_weights(x)
        errors_w.append(abs(float(cfm_loss(v, sample, weights=w)) - exact))
        errors_plain.append(abs(float(cfm_loss(v, sample)) / x.numel() - exact))
    assert errors_w[-1] < 1e-4
    assert all(b < a for a, b in itertools.pairwise(errors_w))
    assert errors_plain[-1] > 100 * errors_w[-1]  # the plain mean is biased to crowded regions


def test_scattered_2d_weights_correct_for_uneven_density():
    def f(p):
        return torch.exp(p[:, 0]) * torch.cos(2 * p[:, 1])

    exact = (math.e - 1) * math.sin(2.0) / 2
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3000, 2, generator=g, dtype=torch.float64)
    p[:, 0] = p[:, 0].square()
    w = quadrature_weights(p, neighbours=4)
    box = float((p.max(0).values - p.min(0).values).prod())
    assert float(w.sum()) == pytest.approx(box)
    weighted = abs(float(w @ f(p)) - exact)
    plain = abs(float(f(p).mean()) - exact)
    assert weighted < 0.03 and plain > 0.1 and plain > 5 * weighted


# ------------------------------------------------------------------ the weighted loss


@given(
    batch=st.integers(1, 4),
    n=st.integers(2, 12),
    channels=st.sampled_from([None, 1, 3]),
    seed=seeds,
    dtype=dtypes,
)
def test_uniform_weights_are_the_plain_loss_up_to_a_constant(batch, n, channels, seed, dtype):
    shape = (n,) if channels is None else (n, channels)
    s = _sample(batch, shape, seed, dtype)
    v = torch.zeros_like(s.ut)
    w = torch.full((n,) if channels is None else (n, 1), 1.0 / n, dtype=dtype)
    plain = cfm_loss(v, s, reduction="none")
    weighted = cfm_loss(v, s, reduction="none", weights=w)
    torch.testing.assert_close(weighted, plain / n, **TOL[dtype])
    one = torch.ones((), dtype=dtype)
    torch.testing.assert_close(cfm_loss(v, s, weights=one), cfm_loss(v, s), **TOL[dtype])
    assert weighted.dtype == dtype


def test_weights_forms_fields_and_per_sample():
    s = _sample(2, (3, 4, 5), 0)  # (B, C, H, W) fields
    v = torch.zeros_like(s.ut)
    w = torch.rand(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = (s.ut.square() * w).sum(dim=(1, 2, 3))
    torch.testing.assert_close(cfm_loss(v, s, weights=w, reduction="none"), want)
    s2 = _sample(3, (6,), 2)
    w2 = torch.rand(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want2 = (s2.ut.square() * w2).sum(dim=1).mean()
    torch.testing.assert_close(cfm_loss(torch.zeros_like(s2.ut), s2, weights=w2), want2)


@pytest.mark.parametrize("device", DEVICES)
def test_weighted_loss_gradients_and_device(device):
    s = _sample(4, (7,), 5)
    ut = s.ut.to(device)
    sample = PathSample(t=s.t.to(device), x0=ut, x1=ut, xt=ut, ut=ut)
    v = torch.zeros_like(ut, requires_grad=True)
    w = quadrature_weights(torch.linspace(0, 1, 7, dtype=torch.float64, device=device))
    loss = cfm_loss(v, sample, weights=w)
    (grad,) = torch.autograd.grad(loss, v)
    torch.testing.assert_close(grad, -2 * w * ut / 4)
    assert loss.device.type == torch.device(device).type


def test_bad_weights_and_points_raise():
    s = _sample(2, (5,), 0)
    v = torch.zeros_like(s.ut)
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 5\)"):
        cfm_loss(v, s, weights=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(2, 5\)"):
        cfm_loss(v, s, weights=torch.ones(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-negative"):
        cfm_loss(v, s, weights=-torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        cfm_loss(v, s, weights=torch.full((5,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="manifold"):
        cfm_loss(v, s, weights=torch.ones(5, dtype=torch.float64), manifold=Euclidean(5))
    with pytest.raises(TypeError, match="weights"):
        cfm_loss(v, s, weights=[1.0] * 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(1,\)"):
        quadrature_weights(torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        quadrature_weights(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="neighbours"):
        quadrature_weights(torch.rand(4, 2), neighbours=4)
    with pytest.raises(TypeError, match="floating"):
        quadrature_weights(torch.arange(4))
    with pytest.raises(ValueError, match="zero extent"):
        quadrature_weights(torch.zeros(3), normalize=True)
