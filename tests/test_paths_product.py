"""ProductPath: factor-wise sampling on Product manifolds, per-factor schedules, refusals."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Product, Sphere
from manifoldfm.paths import GeodesicPath, ProductPath
from manifoldfm.testing import check_path

from .strategies import batch_sizes, dtypes, seeds

F64 = torch.float64
SCHEDULERS = [mfm.CondOT(), mfm.Cosine(), mfm.Polynomial(2.0), mfm.Polynomial(0.5)]
FACTORS = [Sphere(1), Sphere(2), FlatTorus(2), SO3(), Euclidean(3)]


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == F64 else 1e-4


def _pair(m, seed, dtype, lead):
    g = torch.Generator().manual_seed(seed)
    return m.random(*lead, generator=g, dtype=dtype), m.random(*lead, generator=g, dtype=dtype)


def _times(seed, b, dtype):
    g = torch.Generator().manual_seed(seed + 1)
    return 0.05 + 0.9 * torch.rand(b, generator=g, dtype=dtype)


factor_paths = st.lists(
    st.tuples(st.sampled_from(FACTORS), st.sampled_from(SCHEDULERS)), min_size=1, max_size=3
)


@given(fp=factor_paths, seed=seeds, dtype=dtypes, b=batch_sizes, extra=st.sampled_from([(), (2,)]))
def test_factorwise_sampling_and_contract(fp, seed, dtype, b, extra):
    """Each piece of xt/ut is its factor path's sample at the shared t; the joined path meets
    the manifold contract of the product."""
    path = ProductPath([GeodesicPath(m, s) for m, s in fp])
    prod = path.manifold
    assert repr(prod) == repr(Product(*(m for m, _ in fp)))
    x0, x1 = _pair(prod, seed, dtype, (b, *extra))
    t = _times(seed, b, dtype)
    s = path.sample(x0, x1, t)
    tol = _tol(dtype)
    pieces = zip(prod.split(x0), prod.split(x1), prod.split(s.xt), prod.split(s.ut))
    for (m, sched), (a0, a1, xt, ut) in zip(fp, pieces):
        ref = GeodesicPath(m, sched).sample(a0, a1, t)
        assert torch.allclose(xt, ref.xt, atol=tol, rtol=0)
        assert torch.allclose(ut, ref.ut, atol=tol, rtol=tol)
    check_path(path, x0, x1, manifold=prod, t=t)


@given(seed=seeds, dtype=dtypes, b=batch_sizes, sched=st.sampled_from(SCHEDULERS))
def test_one_schedule_for_all_factors_equals_geodesic_path_on_the_product(seed, dtype, b, sched):
    prod = Product(SO3(), Sphere(2), Euclidean(3))
    path = ProductPath([GeodesicPath(m, sched) for m in prod.factors])
    x0, x1 = _pair(prod, seed, dtype, (b,))
    t = _times(seed, b, dtype)
    s, ref = path.sample(x0, x1, t), GeodesicPath(prod, sched).sample(x0, x1, t)
    tol = _tol(dtype)
    assert torch.allclose(s.xt, ref.xt, atol=tol, rtol=0)
    assert torch.allclose(s.ut, ref.ut, atol=tol, rtol=tol)


@given(seed=seeds, dtype=dtypes, b=batch_sizes)
def test_affine_factor_on_a_euclidean_factor(seed, dtype, b):
    """SE(3)-like: a fast rotation schedule and a variance-preserving affine translation."""
    se3 = Product(SO3(), Euclidean(3))
    affine = mfm.AffinePath(mfm.Cosine())
    path = ProductPath([GeodesicPath(SO3(), mfm.Polynomial(0.5)), affine], manifold=se3)
    assert path.manifold is se3 and path.singular_times == (0.0,)
    x0, x1 = _pair(se3, seed, dtype, (b, 2))
    t = _times(seed, b, dtype)
    s = path.sample(x0, x1, t)
    ref = affine.sample(se3.split(x0)[1], se3.split(x1)[1], t)
    _, trans_t = se3.split(s.xt)
    _, trans_u = se3.split(s.ut)
    assert torch.equal(trans_t, ref.xt) and torch.equal(trans_u, ref.ut)
    check_path(path, x0, x1, manifold=se3, t=t)


def test_nested_product_paths():
    inner = ProductPath([GeodesicPath(Sphere(1)), GeodesicPath(Sphere(1), mfm.Cosine())])
    path = ProductPath([inner, GeodesicPath(SO3())])
    assert repr(path.manifold) == "Product(Product(Sphere(1), Sphere(1)), SO3())"
    x0, x1 = _pair(path.manifold, 0, F64, (5,))
    check_path(path, x0, x1, manifold=path.manifold)


def test_noise_drawing_factor_uses_the_generator():
    prod = Product(Sphere(2), Euclidean(2))
    path = ProductPath([GeodesicPath(Sphere(2)), mfm.LinearGaussianPath(0.5)], manifold=prod)
    x0, x1 = _pair(prod, 0, F64, (4,))
    a = path.sample(x0, x1, 0.5, generator=torch.Generator().manual_seed(3))
    b = path.sample(x0, x1, 0.5, generator=torch.Generator().manual_seed(3))
    c = path.sample(x0, x1, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.xt, b.xt) and not torch.equal(a.xt, c.xt)
    assert torch.equal(prod.split(a.xt)[0], prod.split(c.xt)[0])  # the sphere draws no noise


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="at least one"):
        ProductPath([])
    with pytest.raises(ValueError, match=r"\[1\] have no manifold"):
        ProductPath([GeodesicPath(SO3()), mfm.AffinePath()])
    with pytest.raises(ValueError, match="has 2 factors, got 1 paths"):
        ProductPath([GeodesicPath(SO3())], manifold=Product(SO3(), Euclidean(3)))
    with pytest.raises(ValueError, match=r"factor 1: .* product's factor is Sphere\(2\)"):
        ProductPath([GeodesicPath(SO3()), mfm.AffinePath()], manifold=Product(SO3(), Sphere(2)))
    with pytest.raises(ValueError, match=r"path is on Sphere\(2\) but the product's factor is SO3"):
        ProductPath([GeodesicPath(Sphere(2))], manifold=Product(SO3()))
    with pytest.raises(TypeError, match="must be a Product"):
        ProductPath([GeodesicPath(SO3())], manifold=SO3())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sample method"):
        ProductPath([SO3()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence"):
        ProductPath(GeodesicPath(SO3()))  # type: ignore[arg-type]


def test_bad_inputs_to_sample():
    path = ProductPath([GeodesicPath(SO3()), GeodesicPath(Euclidean(3))])
    x0, x1 = _pair(path.manifold, 0, F64, (2,))
    with pytest.raises(
        ValueError, match=r"\(B, \.\.\., 12\) on Product\(SO3\(\), Euclidean\(3\)\)"
    ):
        path.sample(x0[:, :9], x1[:, :9], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample(x0, x1, torch.tensor([0.5, 2.0], dtype=F64))
    with pytest.raises(ValueError, match="x0 of shape"):
        path.sample(2 * x0, x1, 0.5)  # rotations scaled off SO(3), manifold checks on
