"""Manifold-aware models: tangent outputs, geometry-respecting features."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Product, Sphere
from manifoldfm.nn import ManifoldFeatures, ManifoldMLP, MLPVelocity, TangentProjection

from .strategies import dtypes, manifolds, seeds


def _tangent_residual(m, x: torch.Tensor, v: torch.Tensor) -> float:
    """Size of the part of ``v`` that ``proju`` removes (zero for a tangent vector)."""
    return float((m.proju(x, v) - v).detach().abs().max())


@given(m=manifolds(max_dim=3), seed=seeds, dtype=dtypes)
def test_manifold_mlp_outputs_tangent_vectors(m, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ManifoldMLP(m, hidden=16, depth=2, time_dim=8).to(dtype)
    x = m.random(5, generator=g, dtype=dtype)
    v = model(x, torch.rand(5, generator=g, dtype=dtype))
    assert v.shape == x.shape and v.dtype == dtype
    assert torch.isfinite(v).all()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert _tangent_residual(m, x, v) <= tol * max(1.0, float(v.detach().abs().max()))


@given(m=manifolds(max_dim=3), seed=seeds)
def test_tangent_projection_of_any_network_is_tangent(m, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    size = math.prod(m.point_shape)

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = MLPVelocity(size, hidden=8, depth=1, time_dim=4).double()

        def forward(self, x, t):
            return self.mlp(x.reshape(x.shape[0], -1), t).reshape(x.shape)

    v = TangentProjection(Flat(), m)
    x = m.random(4, generator=g, dtype=torch.float64)
    out = v(x, torch.rand(4, generator=g, dtype=torch.float64))
    assert _tangent_residual(m, x, out) <= 1e-10 * max(1.0, float(out.detach().abs().max()))
    # idempotent on already tangent outputs: projecting twice changes nothing
    torch.testing.assert_close(m.proju(x, out), out, atol=1e-12, rtol=0)


@given(seed=seeds, d=st.integers(min_value=1, max_value=4))
def test_torus_features_and_fields_are_periodic(seed, d):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    torus = FlatTorus(d)
    x = torus.random_uniform(6, generator=g, dtype=torch.float64)
    shift = 2 * math.pi * torch.randint(-2, 3, (6, d), generator=g).to(torch.float64)
    feats = ManifoldFeatures(torus)
    torch.testing.assert_close(feats(x + shift), feats(x), atol=1e-12, rtol=0)
    model = ManifoldMLP(torus, hidden=16, depth=2, time_dim=8).double()
    t = torch.rand(6, generator=g, dtype=torch.float64)
    with mfm.checks(manifold=False):  # unwrapped angles are off the canonical range
        shifted = model(x + shift, t)
    torch.testing.assert_close(shifted, model(x, t), atol=1e-10, rtol=0)
    # continuity across the seam: 0 and 2 pi - 1e-9 are neighbours
    a = torch.zeros(1, d, dtype=torch.float64)
    b = torch.full((1, d), 2 * math.pi - 1e-9, dtype=torch.float64)
    assert float((feats(a) - feats(b)).abs().max()) < 1e-8


def test_feature_sizes_and_layout():
    assert ManifoldFeatures(FlatTorus(3)).out_features == 6
    assert ManifoldFeatures(Sphere(2)).out_features == 3
    assert ManifoldFeatures(SO3()).out_features == 9
    prod = Product(FlatTorus(2), Sphere(2), Euclidean(3))
    f = ManifoldFeatures(prod)
    assert f.out_features == 4 + 3 + 3
    g = torch.Generator().manual_seed(0)
    x = prod.random(5, generator=g, dtype=torch.float64)
    ang, sph, euc = prod.split(x)
    expected = torch.cat([torch.cos(ang), torch.sin(ang), sph, euc], dim=-1)
    torch.testing.assert_close(f(x), expected)


def test_so3_mlp_returns_left_trivialised_angular_velocity():
    so3 = SO3()
    torch.manual_seed(0)
    model = ManifoldMLP(so3, hidden=16, depth=1, time_dim=8).double()
    x = so3.random_uniform(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = model(x, torch.rand(4, dtype=torch.float64))
    body = x.mT @ v
    torch.testing.assert_close(body, -body.mT, atol=1e-12, rtol=0)  # skew: tangent
    assert model.mlp.out_dim == 3


def test_conditions_pass_through_and_gradients_flow():
    torch.manual_seed(0)
    model = ManifoldMLP(Sphere(2), hidden=16, depth=2, time_dim=8, num_classes=3)
    assert model.null_cond == {"y": 3}
    x = Sphere(2).random_uniform(4, generator=torch.Generator().manual_seed(0))
    t = torch.rand(4)
    a = model(x, t, y=torch.tensor([0, 1, 2, 3]))
    b = model(x, t, y=torch.tensor([1, 1, 2, 3]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])
    a.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        ManifoldFeatures(Sphere(2))(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="manifoldfm manifold"):
        ManifoldFeatures("sphere")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out_dim"):
        ManifoldMLP(Sphere(2), out_dim=4)
    with pytest.raises(TypeError, match="proju"):
        TangentProjection(MLPVelocity(3), object())
    wrong = TangentProjection(MLPVelocity(3, out_dim=2), Sphere(2))
    with pytest.raises(ValueError, match=r"x's shape \(2, 3\)"):
        wrong(Sphere(2).random_uniform(2), torch.rand(2))


def test_manifold_mlp_on_se3_outputs_body_twists():
    from manifoldfm.manifolds import SE3

    se3 = SE3()
    torch.manual_seed(0)
    model = ManifoldMLP(se3, hidden=16, depth=2)
    x = se3.random(5, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    t = torch.rand(5, generator=torch.Generator().manual_seed(2))
    u = model(x, t)
    assert u.shape == (5, 4, 4) and model.features.out_features == 12
    # tangent: zero bottom row, R^T dR skew-symmetric
    assert torch.equal(u[:, 3], torch.zeros(5, 4))
    a = x[:, :3, :3].mT @ u[:, :3, :3]
    torch.testing.assert_close(a, -a.mT, atol=1e-5, rtol=0)
    # six outputs, read as the body twist (w, v)
    raw = model.mlp(model.features(x), t)
    assert raw.shape == (5, 6)
    torch.testing.assert_close(se3.tangent_to_twist(x, u, frame="body"), raw)


@given(seed=seeds, bands=st.integers(1, 6), d=st.integers(1, 3))
def test_fourier_bands_on_the_torus_are_periodic_harmonics(seed, bands, d):
    g = torch.Generator().manual_seed(seed)
    torus = FlatTorus(d)
    x = torus.random_uniform(5, generator=g, dtype=torch.float64)
    f = ManifoldFeatures(torus, fourier=bands).double()
    out = f(x)
    assert out.shape == (5, f.out_features) == (5, 2 * d * (1 + bands))
    torch.testing.assert_close(out[:, : 2 * d], ManifoldFeatures(torus)(x))  # base first
    m = torch.arange(2, bands + 2, dtype=torch.float64)
    ang = x[..., None] * m
    expected = torch.cat([torch.sin(ang), torch.cos(ang)], -1).reshape(5, -1)
    torch.testing.assert_close(out[:, 2 * d :], expected)
    shift = 2 * math.pi * torch.randint(-2, 3, (5, d), generator=g).to(torch.float64)
    torch.testing.assert_close(f(x + shift), out, atol=1e-11, rtol=0)


@pytest.mark.parametrize("m", [Sphere(2), SO3()], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fourier_bands_of_bounded_coordinates(m, dtype):
    g = torch.Generator().manual_seed(3)
    x = m.random_uniform(7, generator=g, dtype=dtype)
    f = ManifoldFeatures(m, fourier=3).to(dtype)
    out = f(x)
    n = math.prod(m.point_shape)
    assert out.shape == (7, n * 7) and out.dtype == dtype
    flat = x.reshape(7, -1)
    torch.testing.assert_close(out[:, :n], flat)
    freqs = math.pi * torch.tensor([1.0, 2.0, 4.0], dtype=dtype)
    ang = flat[..., None] * freqs
    torch.testing.assert_close(out[:, n:], torch.cat([ang.sin(), ang.cos()], -1).reshape(7, -1))
    # a model with the bands still returns tangent vectors, with finite gradients
    torch.manual_seed(0)
    model = ManifoldMLP(m, hidden=16, depth=2, time_dim=8, fourier=3).to(dtype)
    xr = x.clone().requires_grad_(True)
    v = model(xr, torch.rand(7, generator=g, dtype=dtype))
    assert _tangent_residual(m, x, v) < (1e-5 if dtype == torch.float32 else 1e-12)
    v.square().sum().backward()
    assert torch.isfinite(xr.grad).all()


def test_fourier_bands_in_products_se3_and_refusals():
    prod = Product(FlatTorus(1), Sphere(2), Euclidean(2))
    f = ManifoldFeatures(prod, fourier=2)
    assert f.out_features == 2 * 3 + 3 * 5 + 2  # Euclidean coordinates: no bands
    x = prod.random(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert f.double()(x).shape == (4, f.out_features)
    se3 = mfm.SE3()
    fs = ManifoldFeatures(se3, fourier=2)
    assert fs.out_features == 12 + 18 * 2
    p = se3.random(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = fs.double()(p)
    torch.testing.assert_close(out[:, :12], p[:, :3, :].reshape(3, 12))
    assert ManifoldFeatures(se3, fourier=0).out_features == 12
    assert "fourier=2" in repr(fs)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="fourier"):
            ManifoldFeatures(Sphere(2), fourier=bad)
