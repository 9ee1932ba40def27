"""expmap_transp: end point, transport along the geodesic of u, velocity, defaults, validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from manifoldfm.manifolds.so3 import hat, vee

from .strategies import DTYPES, batch_sizes, dtypes, manifolds, seeds

F64 = torch.float64

NAMED: list[Manifold] = [
    Euclidean(3),
    Euclidean((2, 2)),
    Sphere(1),
    Sphere(2),
    Sphere(3),
    FlatTorus(1),
    FlatTorus(3),
    SO3(),
    Product(Sphere(2), Euclidean(3)),
    Product(SO3(), FlatTorus(2)),
]


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == F64 else 1e-4


def _draw(m: Manifold, seed: int, dtype: torch.dtype, lead: tuple[int, ...], scale: float):
    """Points, a tangent ``u`` of norm up to ``scale`` times the injectivity radius, and two ``v``."""
    g = torch.Generator().manual_seed(seed)
    x = m.random(*lead, generator=g, dtype=dtype)

    def tangent() -> torch.Tensor:
        return m.proju(x, torch.randn(x.shape, generator=g, dtype=dtype))

    radius = m.injectivity_radius if math.isfinite(m.injectivity_radius) else 3.0
    u = tangent()
    length = scale * radius * torch.rand(lead, generator=g, dtype=dtype)
    u = u / m.norm(x, u, keepdim=True) * length.reshape(lead + (1,) * len(m.point_shape))
    return x, u, tangent(), tangent()


def _jvp_velocity(m: Manifold, x: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """d/ds exp_x(s u) by forward-mode autodiff (the reference)."""
    shape = s.shape + (1,) * len(m.point_shape)
    return torch.func.jvp(lambda r: m.expmap(x, r.reshape(shape) * u), (s,), (torch.ones_like(s),))[
        1
    ]


# --------------------------------------------------------------------------- properties


@given(m=manifolds(max_dim=3), seed=seeds, dtype=dtypes, b=batch_sizes, scale=st.floats(0.0, 2.0))
@example(m=Sphere(2), seed=0, dtype=F64, b=3, scale=0.0)
@example(m=Sphere(2), seed=1, dtype=torch.float32, b=3, scale=2.0)
@example(m=SO3(), seed=2, dtype=F64, b=3, scale=1.9)
def test_expmap_transp_properties(m, seed, dtype, b, scale):
    """End point = expmap; transported vectors tangent at y with inner products kept; the
    transport of u is the geodesic's velocity (jvp), also beyond the injectivity radius."""
    tol = _tol(dtype)
    x, u, v, w = _draw(m, seed, dtype, (b,), scale)
    y, tv = m.expmap_transp(x, u, v)
    _, tw = m.expmap_transp(x, u, w)
    assert y.shape == x.shape and tv.shape == x.shape and tv.dtype == dtype
    assert torch.allclose(y, m.expmap(x, u), atol=tol, rtol=0)
    ok, reason = m.check_point_on_manifold(y, explain=True, atol=tol, rtol=0)
    assert ok, reason
    ok, reason = m.check_vector_on_tangent(y, tv, explain=True, atol=tol, rtol=0)
    assert ok, reason
    assert torch.allclose(m.inner(y, tv, tv), m.inner(x, v, v), atol=tol, rtol=tol)
    assert torch.allclose(m.inner(y, tv, tw), m.inner(x, v, w), atol=tol, rtol=tol)
    _, vel = m.expmap_transp(x, u, u)
    ones = torch.ones(b, dtype=dtype)
    assert torch.allclose(vel, _jvp_velocity(m, x, u, ones), atol=10 * tol, rtol=10 * tol)


@pytest.mark.parametrize("m", NAMED, ids=repr)
def test_velocity_matches_central_finite_difference(m):
    x, u, _, _ = _draw(m, 3, F64, (5,), 1.5)
    _, vel = m.expmap_transp(x, u, u)
    h = 1e-6
    # log at y of the two neighbours: removes the torus wrap from the difference.
    y = m.expmap(x, u)
    fd = (m.logmap(y, m.expmap(x, (1 + h) * u)) - m.logmap(y, m.expmap(x, (1 - h) * u))) / (2 * h)
    assert torch.allclose(vel, fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("m", NAMED, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_equals_transp_inside_injectivity_radius(m, dtype):
    x, u, v, _ = _draw(m, 4, dtype, (6,), 0.9)
    y, tv = m.expmap_transp(x, u, v)
    tol = _tol(dtype)
    assert torch.allclose(tv, m.transp(x, y, v), atol=10 * tol, rtol=10 * tol)


def test_sphere_velocity_beyond_pi():
    """|u| = 3 pi / 2: three quarters of a great circle, the velocity keeps its length."""
    s2 = Sphere(2)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    u = torch.tensor([[0.0, 1.5 * math.pi, 0.0]], dtype=F64)
    y, vel = s2.expmap_transp(x, u, u)
    assert torch.allclose(y, torch.tensor([[0.0, -1.0, 0.0]], dtype=F64), atol=1e-12)
    assert torch.allclose(vel, torch.tensor([[1.5 * math.pi, 0.0, 0.0]], dtype=F64), atol=1e-12)


def test_so3_beyond_pi_follows_u_not_the_minimising_geodesic():
    """A turn by 3 pi / 2 about e_z ends where a turn by -pi / 2 does; transported vectors
    orthogonal to the axis come out opposite on the two geodesics."""
    so3 = SO3()
    x = torch.eye(3, dtype=F64)[None]
    u = hat(torch.tensor([[0.0, 0.0, 1.5 * math.pi]], dtype=F64))
    v = hat(torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))
    y, tv = so3.expmap_transp(x, u, v)
    c = math.sqrt(0.5)
    assert torch.allclose(vee(y.mT @ tv), torch.tensor([[-c, -c, 0.0]], dtype=F64), atol=1e-12)
    short = so3.transp(x, y, v)
    assert torch.allclose(short, -tv, atol=1e-12)


@given(seed=seeds, dtype=dtypes, b=batch_sizes)
def test_so3_velocity_is_y_hat_w(seed, dtype, b):
    so3 = SO3()
    x, u, _, _ = _draw(so3, seed, dtype, (b,), 1.5)
    y, vel = so3.expmap_transp(x, u, u)
    w = vee(x.mT @ u)
    assert torch.allclose(vel, y @ hat(w), atol=10 * _tol(dtype), rtol=0)


@given(m=manifolds(max_dim=3), seed=seeds, dtype=dtypes, s=st.floats(0.0, 1.0))
@example(m=Product(SO3(), Sphere(2)), seed=0, dtype=F64, s=0.0)
def test_expmap_velocity_hook_with_extra_leading_dims(m, seed, dtype, s):
    """The private hook used by GeodesicPath: point and velocity at s, one s per sample."""
    x, u, _, _ = _draw(m, seed, dtype, (3, 2), 1.0)
    sv = torch.tensor([s, 0.5, 1.0], dtype=dtype)[:, None]  # leading shape (3, 1)
    y, vel = m._expmap_velocity(x, u, sv)
    sb = sv.reshape(sv.shape + (1,) * len(m.point_shape))
    tol = _tol(dtype)
    assert torch.allclose(y, m.expmap(x, sb * u), atol=tol, rtol=0)
    ref = _jvp_velocity(m, x, u, sv.expand(3, 2).contiguous())
    assert torch.allclose(vel, ref, atol=10 * tol, rtol=10 * tol)


def test_broadcasting_of_leading_shapes():
    """One base point, four initial velocities, one vector to transport: shapes broadcast."""
    s2 = Sphere(2)
    g = torch.Generator().manual_seed(0)
    x = s2.random(1, generator=g, dtype=F64)
    u = s2.proju(x, torch.randn(4, 3, generator=g, dtype=F64))
    v = s2.proju(x, torch.randn(1, 3, generator=g, dtype=F64))
    y, tv = s2.expmap_transp(x, u, v)
    assert y.shape == (4, 3) and tv.shape == (4, 3)
    y_ref, tv_ref = s2.expmap_transp(x.expand(4, 3), u, v.expand(4, 3))
    assert torch.equal(y, y_ref) and torch.equal(tv, tv_ref)


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("m", NAMED, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gradients_finite_at_zero_and_at_the_cut_locus(m, dtype):
    x, u, v, _ = _draw(m, 5, dtype, (4,), 1.0)
    radius = m.injectivity_radius if math.isfinite(m.injectivity_radius) else 3.0
    for scale in (0.0, radius):
        uu = (u / m.norm(x, u, keepdim=True) * scale).requires_grad_(True)
        xx, vv = x.clone().requires_grad_(True), v.clone().requires_grad_(True)
        y, tv = m.expmap_transp(xx, uu, vv)
        assert torch.isfinite(y).all() and torch.isfinite(tv).all()
        grads = torch.autograd.grad((y.sum() + tv.sum()), (xx, uu, vv))
        assert all(torch.isfinite(gr).all() for gr in grads)


def test_sphere_small_vectors_float32_accurate():
    s2 = Sphere(2)
    x, u, v, _ = _draw(s2, 6, F64, (16,), 1.0)
    u = u / s2.norm(x, u, keepdim=True) * 1e-6
    y64, tv64 = s2.expmap_transp(x, u, v)
    y32, tv32 = s2.expmap_transp(x.float(), u.float(), v.float())
    assert torch.allclose(y32.double(), y64, atol=1e-6, rtol=0)
    assert torch.allclose(tv32.double(), tv64, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- base-class defaults


class _DefaultSphere(Sphere):
    """A sphere that falls back to the base class's expmap_transp and velocity hooks."""

    _expmap_transp = Manifold._expmap_transp
    _expmap_velocity = Manifold._expmap_velocity


class _VectorTransportSphere(_DefaultSphere):
    """No exact transport: transp is a projection and the velocity comes from jvp."""

    parallel_transport = False

    def _transp(self, x, y, v):
        return self._proju(y, v)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cls", [_DefaultSphere, _VectorTransportSphere], ids=lambda c: c.__name__)
def test_base_defaults_match_the_closed_form(cls, dtype):
    ref, m = Sphere(2), cls(2)
    x, u, v, _ = _draw(ref, 7, dtype, (6,), 0.9)
    tol = 10 * _tol(dtype)
    y, tv = m.expmap_transp(x, u, v)
    y_ref, tv_ref = ref.expmap_transp(x, u, v)
    assert torch.allclose(y, y_ref, atol=tol, rtol=0)
    if m.parallel_transport:
        assert torch.allclose(tv, tv_ref, atol=tol, rtol=tol)
    else:  # the declared vector transport, not the parallel one
        assert torch.allclose(tv, ref.proju(y, v), atol=tol, rtol=tol)
    s = torch.linspace(0, 1, 6, dtype=dtype)
    p, vel = m._expmap_velocity(x, u, s)
    p_ref, vel_ref = ref._expmap_velocity(x, u, s)
    assert torch.allclose(p, p_ref, atol=tol, rtol=0)
    assert torch.allclose(vel, vel_ref, atol=tol, rtol=tol)


# --------------------------------------------------------------------------- validation


def test_shape_and_type_errors_name_the_shapes():
    s2 = Sphere(2)
    x = s2.origin(2, dtype=F64)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        s2.expmap_transp(x, torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="do not broadcast"):
        s2.expmap_transp(x, torch.zeros(3, 3, dtype=F64), torch.zeros(2, 3, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        s2.expmap_transp(x, torch.zeros(2, 3), torch.zeros(2, 3, dtype=F64))


def test_manifold_checks_refuse_non_tangent_vectors():
    s2 = Sphere(2)
    x = s2.origin(2, dtype=F64)
    normal = torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=F64)
    with pytest.raises(ValueError, match="not tangent"):
        s2.expmap_transp(x, torch.zeros_like(x), normal)
    with mfm.checks(manifold=False):
        y, _ = s2.expmap_transp(x, torch.zeros_like(x), normal)  # unchecked: no error
    assert torch.equal(y, x)
