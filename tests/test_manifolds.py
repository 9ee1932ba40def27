"""Manifolds: contract, cut-locus conventions, small-angle accuracy, uniformity, geoopt interop."""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import stats

import manifoldfm as mfm
from manifoldfm._utils import eps_for
from manifoldfm.manifolds import SE3, SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from manifoldfm.manifolds.base import atan_ratio, cos_sq, sinc_sq, versine_sq
from manifoldfm.manifolds.so3 import hat, rotation_angle, rotmat_to_rotvec, rotvec_to_rotmat, vee
from manifoldfm.manifolds.torus import wrap_angle, wrap_difference
from manifoldfm.testing import check_manifold

from .strategies import DTYPES, batch_sizes, dtypes, manifolds, seeds

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

NAMED: list[Manifold] = [
    Euclidean(3),
    Euclidean((2, 3)),
    Sphere(1),
    Sphere(2),
    Sphere(6),
    FlatTorus(1),
    FlatTorus(3),
    SO3(),
    Product(SO3(), Euclidean(3)),
    Product(Sphere(2), FlatTorus(2), SO3()),
    Product(Product(Sphere(1), Sphere(1)), Euclidean(1)),
    SE3(),
    SE3(0.5, 2.0),
]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tangent(m: Manifold, x: torch.Tensor, g: torch.Generator, length: float | None = None):
    u = m.proju(x, torch.randn(x.shape, generator=g, dtype=x.dtype))
    if length is not None:
        u = u / m.norm(x, u, keepdim=True) * length
    return u


# ------------------------------------------------------------------------------- contract


@given(m=manifolds(), seed=seeds, dtype=dtypes, b=batch_sizes)
def test_contract_hypothesis(m, seed, dtype, b):
    check_manifold(m, dtype=dtype, seed=seed, batch_size=b)


@pytest.mark.parametrize("m", NAMED, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_contract_named(m, dtype):
    check_manifold(m, dtype=dtype, seed=7, batch_size=32)


class _ScaledLog(Sphere):
    def _logmap(self, x, y):
        return 1.01 * super()._logmap(x, y)


class _HalfGradSO3(SO3):
    def _egrad2rgrad(self, x, u):
        return self._proju(x, u)


class _AcosSphere(Sphere):
    def _dist(self, x, y):
        return torch.acos((x * y).sum(-1).clamp(-1.0, 1.0))


class _ProjTransport(Sphere):
    def _transp(self, x, y, v):
        return self._proju(y, v)


class _NaNGradSphere(Sphere):
    def _dist(self, x, y):
        return torch.linalg.vector_norm(self._logmap(x, y), dim=-1).sqrt() ** 2


class _NoShapeCheck(Sphere):
    def _validate(self, name, x):
        return x


@pytest.mark.parametrize(
    ("bad", "dtype", "prop"),
    [
        (_ScaledLog(2), F64, r"logmap\(x, expmap\(x, u\)\) = u"),
        (_HalfGradSO3(), F64, "egrad2rgrad is the Riemannian gradient"),
        (_AcosSphere(2), torch.float32, "for tiny u"),
        (_ProjTransport(2), F64, "transp preserves inner products"),
        (_NaNGradSphere(2), F64, "gradient of dist at x = y"),
        (_NoShapeCheck(2), F64, "not ValueError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Manifold) else None,
)
def test_check_manifold_catches_broken_manifolds(bad, dtype, prop):
    with pytest.raises(AssertionError, match=prop):
        check_manifold(bad, dtype=dtype, seed=0)


def test_check_manifold_projection_transport_allowed_when_declared():
    m = _ProjTransport(2)
    m.parallel_transport = False
    check_manifold(m, seed=0)


# ------------------------------------------------------------------------------- attributes


def test_attributes_and_volumes():
    assert Sphere(1).volume == pytest.approx(2 * math.pi)
    assert Sphere(2).volume == pytest.approx(4 * math.pi)
    assert Sphere(3).volume == pytest.approx(2 * math.pi**2)
    assert FlatTorus(3).volume == pytest.approx((2 * math.pi) ** 3)
    assert SO3().volume == pytest.approx(8 * math.pi**2)
    assert Euclidean(2).volume == math.inf
    p = Product(Sphere(2), SO3(), FlatTorus(2))
    assert p.volume == pytest.approx(4 * math.pi * 8 * math.pi**2 * 4 * math.pi**2)
    assert (p.point_shape, p.dim, p.injectivity_radius) == ((3 + 9 + 2,), 2 + 3 + 2, math.pi)
    assert (SO3().point_shape, SO3().dim) == ((3, 3), 3)
    assert (Sphere(4).point_shape, Sphere(4).dim) == ((5,), 4)
    assert (Euclidean((2, 3)).point_shape, Euclidean((2, 3)).dim) == ((2, 3), 6)
    assert repr(p) == "Product(Sphere(2), SO3(), FlatTorus(2))"
    assert isinstance(p, geoopt.Manifold)


# ------------------------------------------------------------------- small angles (float32)


def _ray_angle64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return 2 * torch.asin((a - b).norm(dim=-1) / 2)


@pytest.mark.parametrize("angle", [1e-4, 1e-5, 1e-6, 1e-7])
def test_sphere_small_angles_float32(angle):
    s, g = Sphere(2), gen(1)
    x = s.random(64, generator=g, dtype=F64)
    y = s.expmap(x, tangent(s, x, g, angle))
    x32, y32 = x.float(), y.float()
    ref = _ray_angle64(x32.double(), y32.double())  # exact angle of the stored float32 rays
    d32 = s.dist(x32, y32).double()
    assert ((d32 - ref) / ref).abs().max() < 5e-6
    l32 = s.norm(x32, s.logmap(x32, y32)).double()
    assert ((l32 - ref) / ref).abs().max() < 5e-6
    naive = torch.acos((x32 * y32).sum(-1).clamp(-1, 1)).double()
    assert ((naive - ref) / ref).abs().max() > 0.1  # what atan2 avoids


@pytest.mark.parametrize("angle", [1e-4, 1e-5, 1e-6, 1e-7])
def test_so3_small_angles_float32(angle):
    so3, g = SO3(), gen(2)
    x = so3.random(64, generator=g, dtype=F64)
    y = so3.expmap(x, tangent(so3, x, g, angle))
    x32, y32 = x.float(), y.float()
    # Reference: angle between the nearest rotations of the stored float32 matrices, in float64.
    px, py = so3.projx(x32.double()), so3.projx(y32.double())
    ref = 2 * torch.asin((px - py).flatten(-2).norm(dim=-1) / (2 * math.sqrt(2)))
    d32 = so3.dist(x32, y32).double()
    assert ((d32 - ref) / ref).abs().max() < 5e-6
    l32 = so3.norm(x32, so3.logmap(x32, y32)).double()
    assert ((l32 - ref) / ref).abs().max() < 5e-6
    cos = ((x32.mT @ y32).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    naive = torch.acos(cos.clamp(-1, 1)).double()
    assert ((naive - ref) / ref).abs().max() > 0.1


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_series_helpers_on_both_sides_of_the_switch(dtype):
    t = torch.logspace(-9, 0.5, 200, dtype=F64)
    t2 = (t * t).to(dtype)
    tt = t2.double().sqrt()  # the argument actually represented
    rtol = 4 * torch.finfo(dtype).eps  # (atol too: sinc and cos have zeros in the range)
    assert torch.allclose(sinc_sq(t2).double(), torch.sin(tt) / tt, rtol=rtol, atol=rtol)
    assert torch.allclose(cos_sq(t2).double(), torch.cos(tt), rtol=rtol, atol=rtol)
    vers = 2 * torch.sin(tt / 2) ** 2 / tt**2
    assert torch.allclose(versine_sq(t2).double(), vers, rtol=2 * rtol, atol=0)
    for c in (1.0, 0.3, -0.5):
        s_ = t.to(dtype)
        if c < 0:  # callers switch to the antipodal convention below eps
            s_ = s_[s_ > eps_for(dtype)]
        c_ = torch.full_like(s_, c)
        theta, ratio = atan_ratio(s_, c_)
        ref = torch.atan2(s_.double(), c_.double())
        assert torch.allclose(theta.double(), ref, rtol=rtol, atol=0)
        assert torch.allclose(ratio.double(), ref / s_.double(), rtol=2 * rtol, atol=0)


# --------------------------------------------------------------------- cut locus: sphere


def _sphere_convention(x: torch.Tensor) -> torch.Tensor:
    k = 0 if float(x[0]) ** 2 <= 0.5 else 1
    a = torch.zeros_like(x)
    a[k] = 1.0
    v = a - x[k] * x
    return math.pi * v / v.norm()


@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sphere_antipode_convention(d, dtype):
    s = Sphere(d)
    e = torch.eye(d + 1, dtype=dtype)
    special = [e[0], -e[0], e[1], (e[0] + e[1]) / math.sqrt(2), (e[0] + 2 * e[1]) / math.sqrt(5)]
    xs = torch.cat([torch.stack(special), s.random(8, generator=gen(4), dtype=dtype)])
    log = s.logmap(xs, -xs)
    assert torch.isfinite(log).all()
    assert torch.equal(log, s.logmap(xs, -xs))  # deterministic
    expected = torch.stack([_sphere_convention(x) for x in xs])
    tol = 1e-12 if dtype == F64 else 1e-5
    assert torch.allclose(log, expected, atol=tol)
    assert torch.allclose(s.norm(xs, log), torch.full((len(xs),), math.pi, dtype=dtype), atol=tol)
    assert ((log * xs).sum(-1).abs() < tol).all()  # tangent
    assert torch.allclose(s.expmap(xs, log), -xs, atol=tol)
    assert torch.allclose(s.dist(xs, -xs), torch.full((len(xs),), math.pi, dtype=dtype), atol=tol)


def test_sphere_antipode_gradients_finite():
    s = Sphere(2)
    x = s.random(6, generator=gen(5), dtype=F64)
    w = torch.randn(6, 3, generator=gen(6), dtype=F64)
    xr = x.clone().requires_grad_(True)
    yr = (-x).clone().requires_grad_(True)
    gx, gy = torch.autograd.grad((s.logmap(xr, yr) * w).sum() + s.dist(xr, yr).sum(), (xr, yr))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    v = tangent(s, x, gen(7))
    assert torch.isfinite(s.transp(x, -x, v)).all()


def test_sphere_near_antipode_is_exact():
    s, g = Sphere(2), gen(8)
    x = s.random(16, generator=g, dtype=F64)
    for delta in (1e-2, 1e-4, 1e-6):  # log is conditioned like 1/delta near the antipode
        u = tangent(s, x, g, math.pi - delta)
        assert torch.allclose(s.logmap(x, s.expmap(x, u)), u, atol=1e-8)
    for delta in (1e-9, 1e-13):  # exp(log y) = y holds up to the cut locus itself
        y = s.expmap(x, tangent(s, x, g, math.pi - delta))
        assert torch.allclose(s.expmap(x, s.logmap(x, y)), y, atol=1e-12)


def test_sphere_projx_zero_vector():
    out = Sphere(2).projx(torch.zeros(2, 3, dtype=F64))
    assert torch.equal(out, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]], dtype=F64))


# ----------------------------------------------------------------------- cut locus: SO(3)


def _canonical_axis(n: torch.Tensor) -> torch.Tensor:
    k = int(n.abs().argmax())
    return n if float(n[k]) > 0 else -n


@pytest.mark.parametrize("diag", [(1, -1, -1), (-1, 1, -1), (-1, -1, 1)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_so3_angle_pi_diagonal(diag, dtype):
    so3 = SO3()
    r = torch.diag(torch.tensor(diag, dtype=dtype))
    eye = torch.eye(3, dtype=dtype)
    k = diag.index(1)
    expected = torch.zeros(3, dtype=dtype)
    expected[k] = math.pi
    assert torch.allclose(rotmat_to_rotvec(r), expected, atol=1e-6)
    assert torch.allclose(so3.logmap(eye, r), hat(expected), atol=1e-6)
    assert torch.allclose(so3.expmap(eye, so3.logmap(eye, r)), r, atol=1e-6)
    assert so3.dist(eye, r).item() == pytest.approx(math.pi, abs=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_so3_angle_pi_random_axes(dtype):
    so3, g = SO3(), gen(9)
    n = torch.randn(12, 3, generator=g, dtype=dtype)
    n = n / n.norm(dim=-1, keepdim=True)
    tol = 1e-9 if dtype == F64 else 1e-4
    x = so3.random(12, generator=g, dtype=dtype)
    for sign in (1.0, -1.0):
        rel = rotvec_to_rotmat(sign * math.pi * n)
        expected = torch.stack([_canonical_axis(a) for a in n]) * math.pi
        assert torch.allclose(rotmat_to_rotvec(rel), expected, atol=tol)
        y = x @ rel
        log = so3.logmap(x, y)
        assert torch.isfinite(log).all()
        assert torch.allclose(vee(x.mT @ log), expected, atol=tol)
        assert torch.allclose(so3.expmap(x, log), y, atol=tol)
        assert torch.allclose(so3.dist(x, y), torch.full((12,), math.pi, dtype=dtype), atol=tol)


def test_so3_angle_pi_gradients_finite():
    so3 = SO3()
    x = so3.random(5, generator=gen(10), dtype=F64)
    y = x @ torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=F64))
    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    w = torch.randn(5, 3, 3, generator=gen(11), dtype=F64)
    gx, gy = torch.autograd.grad((so3.logmap(xr, yr) * w).sum() + so3.dist(xr, yr).sum(), (xr, yr))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()


def test_so3_near_pi_is_exact():
    so3, g = SO3(), gen(12)
    x = so3.random(16, generator=g, dtype=F64)
    for delta in (1e-3, 1e-6, 1e-9):
        u = tangent(so3, x, g, math.pi - delta)
        assert torch.allclose(so3.logmap(x, so3.expmap(x, u)), u, atol=1e-8)


# ----------------------------------------------------------------------- cut locus: torus


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torus_half_turn_gives_minus_pi(dtype):
    t = FlatTorus(2)
    x = torch.tensor([[0.0, 1.0], [math.pi, 2.0]], dtype=dtype)
    y = torch.tensor([[math.pi, 1.0], [0.0, 2.0]], dtype=dtype)
    log = t.logmap(x, y)
    assert torch.equal(log[:, 0], torch.full((2,), -math.pi, dtype=dtype))
    assert torch.equal(log[:, 1], torch.zeros(2, dtype=dtype))
    assert torch.allclose(t.dist(t.expmap(x, log), y), torch.zeros(2, dtype=dtype), atol=1e-6)


@given(d=st.floats(-6.28, 6.28, allow_nan=False), dtype=dtypes)
@example(d=math.pi, dtype=F64)
@example(d=-math.pi, dtype=F64)
@example(d=0.0, dtype=torch.float32)
def test_wrap_difference_range(d, dtype):
    pi = float(torch.tensor(math.pi, dtype=dtype))  # pi as the dtype rounds it
    r = float(wrap_difference(torch.tensor([d], dtype=dtype)))
    assert -pi <= r < pi
    k = (float(torch.tensor(d, dtype=dtype)) - r) / (2 * math.pi)
    assert abs(k - round(k)) < 1e-5


@given(a=st.floats(-50, 50, allow_nan=False), dtype=dtypes)
@example(a=-1e-9, dtype=torch.float32)
@example(a=2 * math.pi, dtype=F64)
@example(a=-2 * math.pi, dtype=torch.float32)
def test_wrap_angle_range(a, dtype):
    two_pi = float(torch.tensor(2 * math.pi, dtype=dtype))
    r = float(wrap_angle(torch.tensor([a], dtype=dtype)))
    assert 0.0 <= r < two_pi
    k = (float(torch.tensor(a, dtype=dtype)) - r) / (2 * math.pi)
    assert abs(k - round(k)) < 1e-4


# ---------------------------------------------------------------------- uniform sampling


def test_uniform_sphere():
    n = 20000
    for d in (2, 4):
        x = Sphere(d).random_uniform(n, generator=gen(13), dtype=F64)
        assert (x.mean(0).abs() < 4.5 / math.sqrt(n * (d + 1))).all()
    # Archimedes: on S^2 every coordinate is uniform on [-1, 1].
    x = Sphere(2).random_uniform(n, generator=gen(14), dtype=F64)
    assert stats.kstest(x[:, 2].numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-3


def test_uniform_so3_angle_law():
    so3 = SO3()
    r = so3.random_uniform(20000, generator=gen(15), dtype=F64)
    angles = rotation_angle(r).numpy()
    # Haar measure: the angle has density (1 - cos t) / pi, CDF (t - sin t) / pi.
    assert stats.kstest(angles, lambda t: (t - np.sin(t)) / np.pi).pvalue > 1e-3
    assert r.mean(0).abs().max() < 0.03


def test_uniform_torus():
    x = FlatTorus(3).random_uniform(20000, generator=gen(16), dtype=F64)
    for k in range(3):
        assert stats.kstest(x[:, k].numpy(), stats.uniform(0, 2 * math.pi).cdf).pvalue > 1e-3


@pytest.mark.parametrize(
    ("m", "ball"),
    [
        (Sphere(2), lambda r: 2 * math.pi * (1 - math.cos(r))),
        (SO3(), lambda r: 8 * math.pi * (r - math.sin(r))),
        (FlatTorus(2), lambda r: math.pi * r**2),
    ],
    ids=repr,
)
def test_volume_matches_metric_and_sampler(m, ball):
    # P(dist(o, X) <= r) = vol(B_r) / volume for X uniform, vol(B_r) computed from the metric.
    n, r = 40000, 1.0
    x = m.random_uniform(n, generator=gen(17), dtype=F64)
    frac = (m.dist(m.origin(n, dtype=F64), x) <= r).double().mean().item()
    p = ball(r) / m.volume
    assert abs(frac - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_random_uniform_reproducible_and_devices():
    for m in (Sphere(2), SO3(), FlatTorus(2), Product(Sphere(1), SO3())):
        a = m.random_uniform(3, 2, generator=gen(18), dtype=torch.float32)
        b = m.random_uniform((3, 2), generator=gen(18), dtype=torch.float32)
        assert torch.equal(a, b) and a.shape == (3, 2, *m.point_shape) and a.dtype == torch.float32
        assert m.random_uniform().shape == m.point_shape


# --------------------------------------------------------------------------- geoopt interop


def _frechet(m: Manifold, optimiser: str, steps: int, lr: float) -> float:
    g = gen(19)
    c = m.random(generator=g, dtype=F64)
    v = tangent(m, c.expand(3, *m.point_shape), g, 0.3)
    ys = m.expmap(c.expand(6, *m.point_shape), torch.cat([v, -v]))  # symmetric: the mean is c
    start = m.expmap(c, tangent(m, c, g, 0.5))
    p = geoopt.ManifoldParameter(start, manifold=m)
    if optimiser == "adam":
        opt = geoopt.optim.RiemannianAdam([p], lr=lr)
    else:
        opt = geoopt.optim.RiemannianSGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.95 if optimiser == "adam" else 1.0)
    for _ in range(steps):
        opt.zero_grad()
        m.dist(p.expand(6, *m.point_shape), ys).pow(2).sum().backward()
        opt.step()
        sched.step()
    assert m.check_point_on_manifold(p.detach())
    return m.dist(p.detach(), c).item()


@pytest.mark.parametrize(
    "m", [Sphere(2), SO3(), FlatTorus(2), Euclidean(2), Product(SO3(), Euclidean(3))], ids=repr
)
def test_frechet_mean_riemannian_adam(m):
    assert _frechet(m, "adam", steps=80, lr=0.1) < 5e-3


@pytest.mark.parametrize("m", [Sphere(3), SO3(), Product(Sphere(2), FlatTorus(1))], ids=repr)
def test_frechet_mean_riemannian_sgd(m):
    assert _frechet(m, "sgd", steps=30, lr=0.08) < 1e-8


def test_manifold_parameter_checks_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        geoopt.ManifoldParameter(torch.zeros(4), manifold=Sphere(2))
    p = geoopt.ManifoldParameter(SO3().origin(), manifold=SO3())
    assert p.manifold.check_point_on_manifold(p)


def test_component_inner_product_layout():
    m = Product(SO3(), Euclidean(3))
    x = m.random(4, generator=gen(20), dtype=F64)
    u = tangent(m, x, gen(21))
    ci = m.component_inner(x, u)
    assert ci.shape == (4, 12)
    rot_x, _ = m.split(x)
    rot_u, tr_u = m.split(u)
    assert torch.allclose(ci[:, :9], SO3().inner(rot_x, rot_u)[:, None].expand(4, 9))
    assert torch.allclose(ci[:, 9:], (tr_u**2).sum(-1, keepdim=True).expand(4, 3))
    assert SO3().component_inner(rot_x, rot_u).shape == (4, 1, 1)


# ------------------------------------------------------------------------------ validation


def test_shape_errors_name_shapes():
    s = Sphere(2)
    x = s.origin(4, dtype=F64)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        s.expmap(x, torch.zeros(4, 4, dtype=F64))
    with pytest.raises(ValueError, match="do not broadcast"):
        s.dist(x, s.origin(5, dtype=F64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        SO3().projx(torch.zeros(3, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        s.dist(x, x.float())
    with pytest.raises(TypeError, match="floating"):
        s.projx(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="Tensor"):
        s.projx([[1.0, 0.0, 0.0]])


def test_off_manifold_checks_switchable():
    s, so3, t = Sphere(2), SO3(), FlatTorus(2)
    x = s.origin(2, dtype=F64)
    with pytest.raises(ValueError, match=r"not on Sphere\(2\).*\| \|x\| - 1 \| = 1"):
        s.dist(2 * x, x)
    with pytest.raises(ValueError, match="not tangent"):
        s.expmap(x, x)
    with pytest.raises(ValueError, match=r"det x - 1"):
        so3.logmap(so3.origin(dtype=F64), torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64)))
    with pytest.raises(ValueError, match="outside"):
        t.dist(torch.full((2,), 7.0, dtype=F64), t.origin(dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        Euclidean(2).dist(torch.tensor([math.nan, 0.0]), torch.zeros(2))
    with mfm.checks(manifold=False):
        assert torch.isfinite(s.dist(2 * x, x)).all()
        s.expmap(x, x)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Sphere(0),
        lambda: Sphere(1.5),
        lambda: FlatTorus(0),
        lambda: Euclidean(0),
        lambda: Euclidean(True),
        lambda: Product(),
    ],
)
def test_constructor_errors(make):
    with pytest.raises(ValueError):
        make()


def test_product_rejects_foreign_factors():
    with pytest.raises(TypeError, match="factor 0"):
        Product(geoopt.Sphere())


def test_random_uniform_errors():
    with pytest.raises(ValueError, match="infinite volume"):
        Euclidean(2).random_uniform(3)
    with pytest.raises(ValueError, match="infinite volume"):
        Product(Sphere(2), Euclidean(1)).random_uniform(3)
    with pytest.raises(ValueError, match=">= 0"):
        Sphere(2).random_uniform(-1)
    with pytest.raises(TypeError, match="ints"):
        Sphere(2).random_uniform(1.5)
    with pytest.raises(TypeError, match="floating"):
        Sphere(2).random_uniform(2, dtype=torch.int64)
    assert Euclidean(2).random(5, generator=gen(22)).shape == (5, 2)


# ------------------------------------------------------------------------------ so3 helpers


def test_hat_vee():
    g = gen(23)
    w, v = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    assert torch.allclose((hat(w) @ v[..., None])[..., 0], torch.linalg.cross(w, v))
    assert torch.allclose(vee(hat(w)), w)
    a = torch.randn(5, 3, 3, generator=g, dtype=F64)
    assert torch.allclose(hat(vee(a)), (a - a.mT) / 2)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        hat(torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        vee(torch.zeros(3, 2))


@pytest.mark.parametrize("scale", [0.0, 1e-12, 1e-8, 1e-3, 0.1, 1.0, 3.0, 3.14, 6.0])
def test_rotvec_to_rotmat_matches_matrix_exp(scale):
    w = torch.randn(8, 3, generator=gen(24), dtype=F64)
    w = w / w.norm(dim=-1, keepdim=True) * scale
    ref = torch.linalg.matrix_exp(hat(w))
    assert torch.allclose(rotvec_to_rotmat(w), ref, atol=2e-15, rtol=0)


@given(seed=seeds, dtype=dtypes)
def test_rotmat_to_rotvec_inverts(seed, dtype):
    g = gen(seed)
    w = torch.randn(8, 3, generator=g, dtype=dtype)
    w = w / w.norm(dim=-1, keepdim=True) * (3.1 * torch.rand(8, 1, generator=g, dtype=dtype))
    tol = 1e-12 if dtype == F64 else 2e-5
    assert torch.allclose(rotmat_to_rotvec(rotvec_to_rotmat(w)), w, atol=tol)
    assert torch.allclose(rotation_angle(rotvec_to_rotmat(w)), w.norm(dim=-1), atol=tol)


def test_gradcheck_rotations():
    g = gen(25)
    for scale in (1e-4, 0.5, 2.5):  # series branch, closed forms
        w = torch.randn(4, 3, generator=g, dtype=F64) * scale
        w.requires_grad_(True)
        assert torch.autograd.gradcheck(rotvec_to_rotmat, (w,))
        assert torch.autograd.gradcheck(lambda a: rotmat_to_rotvec(rotvec_to_rotmat(a)), (w,))


@pytest.mark.parametrize("m", [Sphere(2), SO3(), FlatTorus(2), Product(Sphere(1), SO3())], ids=repr)
@pytest.mark.parametrize("length", [1e-4, 1.0, 2.5])
def test_gradcheck_exp_log_dist(m, length):
    # Series branches (length 1e-4) and closed forms; points are moved along the manifold
    # (y' = exp_y(proju(y, a))) so that every evaluation stays on it.
    g = gen(26)
    x = m.random(2, generator=g, dtype=F64)
    u = tangent(m, x, g, length)
    y = m.expmap(x, u)
    a = (1e-3 * torch.randn(y.shape, generator=g, dtype=F64)).requires_grad_(True)
    uu = u.clone().requires_grad_(True)

    def moved(b):
        return m.expmap(y, m.proju(y, b))

    with mfm.checks(manifold=False):
        assert torch.autograd.gradcheck(lambda v: m.expmap(x, m.proju(x, v)), (uu,))
        assert torch.autograd.gradcheck(lambda b: m.logmap(x, moved(b)), (a,))
        assert torch.autograd.gradcheck(lambda b: m.dist(x, moved(b)), (a,))


# ------------------------------------------------------------- derivatives and transport


@given(m=manifolds(max_dim=3), seed=seeds)
def test_logmap_jacobian_at_diagonal_is_projection(m, seed):
    g = gen(seed)
    x = m.random(4, generator=g, dtype=F64)
    w = torch.randn(x.shape, generator=g, dtype=F64)
    y = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((m.logmap(x, y) * w).sum(), (y,))
    assert torch.allclose(grad, m.proju(x, w), atol=1e-10)


@given(m=manifolds(max_dim=3), seed=seeds, s=st.floats(0.1, 0.9))
def test_parallel_transport_composes_along_the_geodesic(m, seed, s):
    g = gen(seed)
    x = m.random(4, generator=g, dtype=F64)
    u = tangent(m, x, g, 0.8 * min(m.injectivity_radius, 3.0))
    v = tangent(m, x, g)
    y, mid = m.expmap(x, u), m.expmap(x, s * u)
    two_steps = m.transp(mid, y, m.transp(x, mid, v))
    assert torch.allclose(two_steps, m.transp(x, y, v), atol=1e-9)


# ------------------------------------------------------------------------------- product


def test_product_split_join_layout():
    m = Product(SO3(), Euclidean(3))
    r = SO3().random(2, 5, generator=gen(27), dtype=F64)
    t = torch.randn(2, 5, 3, generator=gen(28), dtype=F64)
    x = m.join(r, t)
    assert x.shape == (2, 5, 12)
    assert torch.equal(x[..., :9], r.flatten(-2)) and torch.equal(x[..., 9:], t)
    r2, t2 = m.split(x)
    assert torch.equal(r2, r) and torch.equal(t2, t)
    assert r2.data_ptr() == x.data_ptr()  # a view
    assert m.join(SO3().origin(dtype=F64), t).shape == (2, 5, 12)  # leading shapes broadcast
    with pytest.raises(ValueError, match="2 factors"):
        m.join(r)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        m.join(r, torch.zeros(2, 5, 4, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        m.join(r, t.float())


def test_product_dist_and_sampling_are_factorwise():
    a, b = Sphere(2), SO3()
    m = Product(a, b)
    x = m.random_uniform(6, generator=gen(29), dtype=F64)
    y = m.random_uniform(6, generator=gen(30), dtype=F64)
    (xa, xb), (ya, yb) = m.split(x), m.split(y)
    expected = (a.dist(xa, ya) ** 2 + b.dist(xb, yb) ** 2).sqrt()
    assert torch.allclose(m.dist(x, y), expected)
    g = gen(29)
    ref = m.join(
        a.random_uniform(6, generator=g, dtype=F64), b.random_uniform(6, generator=g, dtype=F64)
    )
    assert torch.equal(x, ref)


# ------------------------------------------------------------------ dtype / device / shapes


@pytest.mark.parametrize("m", NAMED, ids=repr)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtype_device_and_leading_shapes(m, device, dtype):
    g = torch.Generator(device).manual_seed(31)
    x = m.random(2, 3, generator=g, dtype=dtype, device=device)
    y = m.random(3, generator=g, dtype=dtype, device=device)  # broadcasts against x
    u = m.logmap(x, y)
    outs = {
        "projx": (m.projx(x), x.shape),
        "proju": (m.proju(x, u), x.shape),
        "expmap": (m.expmap(x, u), x.shape),
        "logmap": (u, x.shape),
        "transp": (m.transp(x, y, u), x.shape),
        "egrad2rgrad": (m.egrad2rgrad(x, u), x.shape),
        "dist": (m.dist(x, y), (2, 3)),
        "inner": (m.inner(x, u), (2, 3)),
        "norm": (m.norm(x, u), (2, 3)),
        "origin": (m.origin(2, 3, dtype=dtype, device=device), x.shape),
    }
    for name, (out, shape) in outs.items():
        assert out.shape == shape, name
        assert out.dtype == dtype and out.device.type == torch.device(device).type, name


@pytest.mark.gpu
def test_contract_on_cuda():
    for m in NAMED:
        check_manifold(m, dtype=torch.float32, device="cuda", seed=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_so3_log_near_pi_keeps_the_rotation_inside_the_canonical_band(dtype, monkeypatch):
    # within eps_for(dtype) of the cut the log takes the canonical representative, which must
    # still be the same rotation: exp(log) returns y as closely as without the canonical choice
    import manifoldfm.manifolds.so3 as so3_module

    so3, g = SO3(), gen(21)
    band = 1e-6 if dtype == torch.float32 else 1e-12
    axes = torch.randn(16, 3, generator=g, dtype=F64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    gaps = torch.logspace(math.log10(band) - 2, math.log10(band) + 0.5, 16, dtype=F64)
    y = rotvec_to_rotmat(axes * (math.pi - gaps)[:, None]).to(dtype)
    x = so3.random(16, generator=g, dtype=dtype)
    xy = x @ y

    def round_trip():
        return so3.dist(so3.expmap(x, so3.logmap(x, xy)), xy)

    canonical = round_trip()
    monkeypatch.setattr(so3_module, "eps_for", lambda dt: 0.0)  # the plain shortest log
    plain = round_trip()
    slack = 3e-7 if dtype == torch.float32 else 1e-15
    assert (canonical - plain).max().item() <= slack


def test_sphere_volume_and_uniform_density_in_high_dimensions():
    # Gamma((d + 1) / 2) overflows a float from d = 342: the volume goes through logarithms
    from manifoldfm.sources import Uniform

    for d in (2, 341, 400, 2000):
        s = Sphere(d)
        expected = math.log(2.0) + 0.5 * (d + 1) * math.log(math.pi) - math.lgamma(0.5 * (d + 1))
        assert s.log_volume == pytest.approx(expected, rel=1e-12)
        assert Uniform(s).log_density == pytest.approx(-expected, rel=1e-12)
    assert Sphere(2).volume == pytest.approx(4 * math.pi, rel=1e-14)


def test_bad_generators_and_integer_rotations_are_named():
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        Sphere(2).random_uniform(2, generator=3)
    with pytest.raises(TypeError, match="floating-point"):
        rotmat_to_rotvec(torch.eye(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point"):
        rotvec_to_rotmat(torch.tensor([1, 0, 0]))
