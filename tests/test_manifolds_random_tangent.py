"""Manifold.random_tangent: tangent, standard Gaussian w.r.t. the Riemannian metric, seeded,
dtype and shape preserving, validated."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import manifoldfm as mfm
from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from manifoldfm.manifolds.base import check_tol
from manifoldfm.manifolds.so3 import vee

from .conftest import DEVICES
from .strategies import dtypes, manifolds, seeds

F64 = torch.float64


def orthonormal_basis(m: Manifold, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
    """An orthonormal basis of the tangent space at one point ``x`` (Gram-Schmidt for m.inner)."""
    basis: list[torch.Tensor] = []
    while len(basis) < m.dim:
        u = m.proju(x, torch.randn(x.shape, generator=g, dtype=x.dtype))
        for e in basis:
            u = u - m.inner(x, u, e) * e
        n = m.norm(x, u)
        if n.item() > 1e-6:
            basis.append(u / n)
    return basis


@settings(max_examples=15)
@given(m=manifolds(max_dim=3), seed=seeds)
def test_coordinates_in_an_orthonormal_basis_are_standard_normal(m, seed):
    g = torch.Generator().manual_seed(seed)
    x = m.random(generator=g, dtype=F64)
    basis = orthonormal_basis(m, x, g)
    n = 20000
    z = m.random_tangent(x.expand(n, *x.shape), generator=g)
    coords = torch.stack([m.inner(x, z, e) for e in basis], dim=-1)  # (n, dim)
    cov = coords.T @ coords / n
    torch.testing.assert_close(cov, torch.eye(m.dim, dtype=F64), atol=0.06, rtol=0)
    assert coords.mean(0).abs().max().item() < 0.04
    # Nothing outside the tangent space: the squared norm is the sum of the coordinates'.
    torch.testing.assert_close(m.inner(x, z), coords.square().sum(-1), atol=1e-9, rtol=1e-9)


@given(m=manifolds(max_dim=4), seed=seeds, dtype=dtypes)
def test_tangent_shape_dtype_and_seed(m, seed, dtype):
    x = m.random(2, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    z1 = m.random_tangent(x, generator=torch.Generator().manual_seed(seed))
    z2 = m.random_tangent(x, generator=torch.Generator().manual_seed(seed))
    assert z1.shape == x.shape and z1.dtype == dtype
    assert torch.equal(z1, z2)
    assert m._tangent_deviation(x, z1).max().item() <= check_tol(dtype)


def test_so3_noise_has_unit_body_velocity_covariance():
    """On SO3 (metric tr(u^T v) / 2) an ambient Gaussian projected on the tangent space would
    have body-velocity variance 1/2; random_tangent has 1."""
    so3 = SO3()
    x = so3.random_uniform(20000, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = so3.random_tangent(x, generator=torch.Generator().manual_seed(1))
    w = vee(x.mT @ z)
    torch.testing.assert_close(w.T @ w / len(w), torch.eye(3, dtype=F64), atol=0.05, rtol=0)
    assert so3.inner(x, z).mean().item() == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_device_follows_the_points(device):
    s2 = Sphere(2)
    x = s2.origin(4, dtype=torch.float32, device=device)
    z = s2.random_tangent(x, generator=torch.Generator(device=device).manual_seed(0))
    assert z.device == x.device and z.dtype == torch.float32


def test_product_draws_each_factor_from_the_same_generator():
    prod = Product(SO3(), FlatTorus(2), Euclidean(1))
    x = prod.random(5, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = prod.random_tangent(x, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    parts = [m.random_tangent(p, generator=g) for m, p in zip(prod.factors, prod.split(x))]
    torch.testing.assert_close(z, prod.join(*parts), rtol=0, atol=0)


def test_bad_input_raises():
    s2 = Sphere(2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        s2.random_tangent(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="generator"):
        s2.random_tangent(s2.origin(2), generator=0)
    with pytest.raises(TypeError, match="floating"):
        s2.random_tangent(torch.zeros(2, 3, dtype=torch.long))
    with mfm.checks(manifold=True), pytest.raises(ValueError, match="not on"):
        s2.random_tangent(torch.full((2, 3), 2.0))
