"""Tests for manifoldfm.losses.cfm_loss."""

from __future__ import annotations

import geoopt
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm import AffinePath, CondOT, PathSample
from manifoldfm.losses import cfm_loss

from .conftest import TOL


def _sample(batch: int, shape: tuple[int, ...], seed: int, dtype=torch.float64) -> PathSample:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *shape), generator=g, dtype=dtype)
    x1 = torch.randn((batch, *shape), generator=g, dtype=dtype)
    t = torch.rand(batch, generator=g, dtype=dtype)
    return AffinePath(CondOT()).sample(x0, x1, t)


class _ScaledMetric:
    """A toy manifold whose metric is c times the Euclidean one (per point)."""

    def __init__(self, c: float) -> None:
        self.c = c

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        return self.c * (u * v).sum(dim=-1)


@given(
    batch=st.integers(1, 6),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    seed=st.integers(0, 2**16),
)
@example(batch=1, shape=(1,), seed=0)
def test_matches_hand_computation(batch, shape, seed):
    s = _sample(batch, shape, seed)
    g = torch.Generator().manual_seed(seed + 1)
    v = torch.randn(s.ut.shape, generator=g, dtype=torch.float64)
    per = cfm_loss(v, s, reduction="none")
    hand = torch.stack([((v[i] - s.ut[i]) ** 2).sum() for i in range(batch)])
    torch.testing.assert_close(per, hand, **TOL[torch.float64])
    torch.testing.assert_close(cfm_loss(v, s), hand.mean(), **TOL[torch.float64])
    assert per.shape == (batch,)


def test_small_hand_value():
    s = AffinePath().sample(torch.zeros(2, 2), torch.ones(2, 2), torch.tensor([0.1, 0.9]))
    v = torch.tensor([[1.0, 1.0], [0.0, 3.0]])  # ut = (1, 1): errors 0 and 1 + 4
    assert cfm_loss(v, s).item() == pytest.approx(2.5)
    torch.testing.assert_close(cfm_loss(v, s, reduction="none"), torch.tensor([0.0, 5.0]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_for_exact_target_and_dtype(dtype):
    s = _sample(5, (3,), 0, dtype=dtype)
    loss = cfm_loss(s.ut.clone(), s)
    assert loss.dtype == dtype and loss.ndim == 0
    assert loss.item() == 0.0


def test_gradient_is_twice_the_error_over_batch():
    s = _sample(4, (2,), 3)
    v = torch.zeros_like(s.ut, requires_grad=True)
    cfm_loss(v, s).backward()
    torch.testing.assert_close(v.grad, 2 * (v.detach() - s.ut) / 4)


def test_manifold_inner_is_used():
    s = _sample(4, (3,), 1)
    v = torch.zeros_like(s.ut)
    plain = cfm_loss(v, s)
    torch.testing.assert_close(cfm_loss(v, s, manifold=_ScaledMetric(2.0)), 2 * plain)


def test_geoopt_euclidean_matches_plain():
    s = _sample(4, (3,), 2)
    v = torch.randn(s.ut.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = cfm_loss(v, s)
    # ndim=1: one value per point; ndim=0: one per coordinate, summed by cfm_loss.
    for manifold in (geoopt.Euclidean(ndim=1), geoopt.Euclidean(ndim=0)):
        torch.testing.assert_close(cfm_loss(v, s, manifold=manifold), expected)


def test_geoopt_sphere_tangent_norm():
    g = torch.Generator().manual_seed(0)
    sphere = geoopt.Sphere()
    x = sphere.projx(torch.randn(6, 3, generator=g, dtype=torch.float64))
    ut = sphere.proju(x, torch.randn(6, 3, generator=g, dtype=torch.float64))
    s = PathSample(t=torch.rand(6, dtype=torch.float64), x0=x, x1=x, xt=x, ut=ut)
    per = cfm_loss(torch.zeros_like(ut), s, manifold=sphere, reduction="none")
    torch.testing.assert_close(per, (ut**2).sum(-1))


def test_multi_factor_points_are_summed():
    # Points made of N = 3 factors: inner returns (B, N); the loss sums the factors.
    s = _sample(2, (3, 4), 4)
    v = torch.zeros_like(s.ut)
    torch.testing.assert_close(cfm_loss(v, s, manifold=_ScaledMetric(1.0)), cfm_loss(v, s))


def test_bad_inputs():
    s = _sample(3, (2,), 0)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 2\)"):
        cfm_loss(torch.zeros(3, 3, dtype=torch.float64), s)
    with pytest.raises(ValueError, match="reduction"):
        cfm_loss(s.ut, s, reduction="sum")
    with pytest.raises(TypeError, match="PathSample"):
        cfm_loss(s.ut, s.ut)
    with pytest.raises(TypeError, match="v_pred"):
        cfm_loss(s.ut.numpy(), s)
    with pytest.raises(TypeError, match="inner"):
        cfm_loss(s.ut, s, manifold=object())

    class Bad:
        def inner(self, x, u, v):
            return (u * v).sum()

    with pytest.raises(ValueError, match="per-point"):
        cfm_loss(s.ut, s, manifold=Bad())
    empty = _sample(0, (2,), 0)
    assert cfm_loss(empty.ut, empty, reduction="none").shape == (0,)
    with pytest.raises(ValueError, match="empty"):
        cfm_loss(empty.ut, empty)
