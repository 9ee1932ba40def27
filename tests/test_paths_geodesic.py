"""GeodesicPath: contract on every manifold, geodesic properties, jvp route, cut locus, refusals."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from manifoldfm.manifolds.so3 import rotvec_to_rotmat
from manifoldfm.manifolds.torus import wrap_angle
from manifoldfm.paths import GeodesicPath
from manifoldfm.testing import check_path

from .strategies import DTYPES, batch_sizes, dtypes, seeds

F64 = torch.float64

MANIFOLDS: list[Manifold] = [
    Euclidean(3),
    Sphere(1),
    Sphere(2),
    Sphere(3),
    FlatTorus(1),
    FlatTorus(2),
    FlatTorus(3),
    SO3(),
    Product(Sphere(2), Euclidean(3)),
]
SCHEDULERS = [mfm.CondOT(), mfm.Cosine(), mfm.Polynomial(2.0), mfm.Polynomial(0.5)]

manifold_st = st.sampled_from(MANIFOLDS)
scheduler_st = st.sampled_from(SCHEDULERS)
extra_dims = st.sampled_from([(), (2,), (2, 3)])


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == F64 else 1e-4


def _pair(m: Manifold, seed: int, dtype: torch.dtype, lead: tuple[int, ...]):
    g = torch.Generator().manual_seed(seed)
    return m.random(*lead, generator=g, dtype=dtype), m.random(*lead, generator=g, dtype=dtype)


def _times(seed: int, b: int, dtype: torch.dtype) -> torch.Tensor:
    """Interior times, away from the singular t = 0 of Polynomial(0.5)."""
    g = torch.Generator().manual_seed(seed + 1)
    return 0.05 + 0.9 * torch.rand(b, generator=g, dtype=dtype)


class Foreign:
    """A manifold that is not a library Manifold: only geoopt's expmap/logmap (and ndim)."""

    def __init__(self, m: Manifold) -> None:
        self._m = m
        self.ndim = len(m.point_shape)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._m.expmap(x, u)

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._m.logmap(x, y)


# --------------------------------------------------------------------------- contract


@given(m=manifold_st, sched=scheduler_st, seed=seeds, dtype=dtypes, b=batch_sizes, extra=extra_dims)
def test_contract_on_every_manifold(m, sched, seed, dtype, b, extra):
    """Endpoints (by dist), xt on the manifold, ut tangent, ut = d xt / dt, also with extra dims."""
    x0, x1 = _pair(m, seed, dtype, (b, *extra))
    check_path(GeodesicPath(m, sched), x0, x1, manifold=m, t=_times(seed, b, dtype))


@given(m=manifold_st, sched=scheduler_st, seed=seeds, dtype=dtypes, b=batch_sizes)
def test_geodesic_fraction_and_speed(m, sched, seed, dtype, b):
    """dist(x0, xt) = kappa_t dist(x0, x1), dist(xt, x1) = (1 - kappa_t) dist, |ut| = kappa'_t dist."""
    x0, x1 = _pair(m, seed, dtype, (b,))
    t = _times(seed, b, dtype)
    s = GeodesicPath(m, sched).sample(x0, x1, t)
    out = sched(t)
    d = m.dist(x0, x1)
    tol = 10 * _tol(dtype)
    assert torch.allclose(m.dist(x0, s.xt), out.alpha * d, atol=tol, rtol=tol)
    assert torch.allclose(m.dist(s.xt, x1), (1 - out.alpha) * d, atol=tol, rtol=tol)
    assert torch.allclose(m.norm(s.xt, s.ut), out.d_alpha * d, atol=tol, rtol=tol)
    assert s.t.shape == (b,) and torch.equal(s.x0, x0) and torch.equal(s.x1, x1)


@given(seed=seeds, dtype=dtypes, b=batch_sizes, n=st.integers(1, 4), m=manifold_st)
def test_one_time_per_sample_broadcasts_over_extra_dims(seed, dtype, b, n, m):
    """(B, N, *point_shape) with t of shape (B,) = the flattened batch with t repeated N times."""
    x0, x1 = _pair(m, seed, dtype, (b, n))
    t = _times(seed, b, dtype)
    path = GeodesicPath(m, mfm.Cosine())
    s = path.sample(x0, x1, t)
    flat = path.sample(x0.flatten(0, 1), x1.flatten(0, 1), t.repeat_interleave(n))
    tol = _tol(dtype)
    assert torch.allclose(s.xt.flatten(0, 1), flat.xt, atol=tol, rtol=0)
    assert torch.allclose(s.ut.flatten(0, 1), flat.ut, atol=tol, rtol=tol)


@given(seed=seeds, dtype=dtypes, b=batch_sizes, d=st.integers(1, 5))
def test_euclidean_condot_equals_affine_path_exactly(seed, dtype, b, d):
    x0, x1 = _pair(Euclidean(d), seed, dtype, (b,))
    t = torch.rand(b, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    t[0] = 1.0
    geo = GeodesicPath(Euclidean(d)).sample(x0, x1, t)
    aff = mfm.AffinePath(mfm.CondOT()).sample(x0, x1, t)
    assert torch.equal(geo.xt, aff.xt) and torch.equal(geo.ut, aff.ut)
    assert torch.equal(geo.xt[0], x1[0])  # exact endpoint


@pytest.mark.parametrize("sched", [mfm.Polynomial(2.0), mfm.Polynomial(0.5)], ids=repr)
def test_euclidean_equals_affine_path_with_sigma_one_minus_alpha(sched):
    x0, x1 = _pair(Euclidean(3), 0, F64, (16,))
    t = _times(0, 16, F64)
    geo = GeodesicPath(Euclidean(3), sched).sample(x0, x1, t)
    aff = mfm.AffinePath(sched).sample(x0, x1, t)
    assert torch.allclose(geo.xt, aff.xt, atol=1e-12) and torch.allclose(geo.ut, aff.ut, atol=1e-12)


@given(m=manifold_st, sched=scheduler_st, seed=seeds, dtype=dtypes, b=batch_sizes)
def test_user_manifold_jvp_route_equals_closed_form(m, sched, seed, dtype, b):
    x0, x1 = _pair(m, seed, dtype, (b,))
    t = _times(seed, b, dtype)
    closed = GeodesicPath(m, sched).sample(x0, x1, t)
    jvp = GeodesicPath(Foreign(m), sched).sample(x0, x1, t)
    tol = 10 * _tol(dtype)
    assert torch.allclose(jvp.xt, closed.xt, atol=tol, rtol=0)
    assert torch.allclose(jvp.ut, closed.ut, atol=tol, rtol=tol)


def test_geoopt_sphere_as_user_manifold():
    x0, x1 = _pair(Sphere(2), 3, F64, (32,))
    t = _times(3, 32, F64)
    path = GeodesicPath(geoopt.Sphere(), mfm.Cosine())
    ours = GeodesicPath(Sphere(2), mfm.Cosine()).sample(x0, x1, t)
    theirs = path.sample(x0, x1, t)
    assert torch.allclose(theirs.xt, ours.xt, atol=1e-7) and torch.allclose(
        theirs.ut, ours.ut, atol=1e-6
    )
    check_path(path, x0, x1, manifold=Sphere(2))


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_closed_form_route_one_log_no_jvp(m, monkeypatch):
    """The library route: one log map, one fused exp/velocity, no forward-mode autodiff."""

    def no_jvp(*args, **kwargs):
        raise AssertionError("torch.func.jvp called on the closed-form route")

    calls = {"log": 0, "exp": 0}
    leaves = list(m.factors) if isinstance(m, Product) else [m]
    for leaf in leaves:
        log, exp = leaf._logmap, leaf._expmap

        def counted_log(x, y, _f=log):
            calls["log"] += 1
            return _f(x, y)

        def counted_exp(x, u, _f=exp):
            calls["exp"] += 1
            return _f(x, u)

        monkeypatch.setattr(leaf, "_logmap", counted_log)
        monkeypatch.setattr(leaf, "_expmap", counted_exp)
    monkeypatch.setattr(torch.func, "jvp", no_jvp)
    x0, x1 = _pair(m, 0, F64, (4,))
    GeodesicPath(m, mfm.Cosine()).sample(x0, x1, 0.5)
    expected_logs = 0 if isinstance(m, Euclidean) else len(leaves)
    assert calls == {"log": expected_logs, "exp": 0}


@pytest.mark.parametrize("angle", [1e-3, 1e-5, 1e-7])
def test_sphere_small_distances_float32_speed_is_exact(angle):
    """|ut| = dist(x0, x1) for CondOT, relative to the exact angle of the stored float32 rays."""
    s2 = Sphere(2)
    g = torch.Generator().manual_seed(0)
    x = s2.random(64, generator=g, dtype=F64)
    u = s2.proju(x, torch.randn(x.shape, generator=g, dtype=F64))
    x1 = s2.expmap(x, u / s2.norm(x, u, keepdim=True) * angle)
    a, b = x.float(), x1.float()
    s = GeodesicPath(s2).sample(a, b, torch.rand(64, generator=g))
    ra, rb = (v.double() / v.double().norm(dim=-1, keepdim=True) for v in (a, b))
    ref = 2 * torch.asin((ra - rb).norm(dim=-1) / 2)
    assert ((s.ut.double().norm(dim=-1) - ref) / ref).abs().max() < 1e-5


# --------------------------------------------------------------------------- cut locus


def _cut_pair(name: str, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    if name.startswith("sphere"):
        m = Sphere(int(name[-1]))
        x0 = m.random(4, generator=g, dtype=dtype)
        return m, x0, -x0, math.pi
    if name == "so3":
        m = SO3()
        x0 = m.random(4, generator=g, dtype=dtype)
        axes = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=dtype)
        axes = axes / axes.norm(dim=-1, keepdim=True)
        return m, x0, x0 @ rotvec_to_rotmat(math.pi * axes), math.pi
    m = FlatTorus(3)
    x0 = m.random(4, generator=g, dtype=dtype)
    x0[0] = 0.0
    return m, x0, wrap_angle(x0 + math.pi), math.pi * math.sqrt(3)  # every angle half a turn


@given(
    name=st.sampled_from(["sphere1", "sphere2", "sphere3", "so3", "torus"]),
    dtype=dtypes,
    seed=seeds,
    tval=st.floats(0.0, 1.0),
)
@example(name="sphere2", dtype=F64, seed=0, tval=0.0)
@example(name="sphere2", dtype=torch.float32, seed=0, tval=1.0)
@example(name="so3", dtype=F64, seed=0, tval=1.0)
@example(name="so3", dtype=torch.float32, seed=1, tval=0.5)
@example(name="torus", dtype=F64, seed=0, tval=1.0)
@example(name="sphere1", dtype=torch.float32, seed=2, tval=0.0)
def test_cut_locus_finite_values_and_gradients(name, dtype, seed, tval):
    """Antipodes, rotations by pi, torus half-turns: the logmap convention, finite gradients."""
    m, x0, x1, dist = _cut_pair(name, dtype, seed)
    x0 = x0.clone().requires_grad_(True)
    x1 = x1.clone().requires_grad_(True)
    t = torch.full((4,), tval, dtype=dtype, requires_grad=True)
    sched = mfm.Cosine()
    s = GeodesicPath(m, sched).sample(x0, x1, t)
    assert torch.isfinite(s.xt).all() and torch.isfinite(s.ut).all()
    g = torch.Generator().manual_seed(seed)
    w1, w2 = (torch.randn(s.xt.shape, generator=g, dtype=dtype) for _ in range(2))
    grads = torch.autograd.grad((s.xt * w1 + s.ut * w2).sum(), (x0, x1, t))
    assert all(torch.isfinite(gr).all() for gr in grads)
    tol = 10 * _tol(dtype)
    d = m.dist(x0.detach(), x1.detach())
    assert torch.allclose(d, torch.full_like(d, dist), atol=tol)  # on the cut locus
    out = sched(t.detach())
    assert torch.allclose(m.dist(x0.detach(), s.xt.detach()), out.alpha * d, atol=tol)
    assert torch.allclose(m.norm(s.xt.detach(), s.ut.detach()), out.d_alpha * d, atol=tol)
    # The path follows logmap's convention: its initial direction is log_{x0} x1.
    u = m.logmap(x0.detach(), x1.detach())
    s0 = GeodesicPath(m).sample(x0.detach(), x1.detach(), 0.0)
    assert torch.allclose(s0.ut, u, atol=tol)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "sched",
    [mfm.VP(), mfm.VP(beta_min=0.5, beta_max=5.0), mfm.VE(), mfm.VE(sigma_min=0.1, sigma_max=3.0)],
    ids=repr,
)
def test_schedules_that_miss_the_endpoints_are_refused(sched):
    with pytest.raises(ValueError, match=r"alpha_0 = .* and alpha_1 = "):
        GeodesicPath(Sphere(2), sched)


def test_accepted_schedules_and_attributes():
    path = GeodesicPath(SO3(), mfm.Polynomial(0.5))
    assert path.singular_times == (0.0,)
    assert GeodesicPath(SO3()).singular_times == ()
    assert isinstance(GeodesicPath(SO3()).scheduler, mfm.CondOT)
    GeodesicPath(Sphere(2), mfm.CondOT(sigma_min=0.1))  # alpha_t = t: sigma plays no part
    assert repr(path) == "GeodesicPath(SO3(), Polynomial(n=0.5))"
    assert isinstance(path, mfm.ProbPath)


def test_constructor_type_errors():
    with pytest.raises(TypeError, match="expmap and logmap"):
        GeodesicPath(object())
    with pytest.raises(TypeError, match="callable"):
        GeodesicPath(Sphere(2), 3.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x0", "x1", "match"),
    [
        (torch.zeros(4, 2), torch.zeros(4, 2), r"\(B, \.\.\., 3\) on Sphere\(2\), got \(4, 2\)"),
        (torch.zeros(4, 3), torch.zeros(5, 3), r"same shape, got x0 \(4, 3\) and x1 \(5, 3\)"),
        (torch.zeros(3), torch.zeros(3), r"\(B, \.\.\., 3\) on Sphere\(2\), got \(3,\)"),
    ],
)
def test_bad_shapes_name_the_shapes(x0, x1, match):
    with mfm.checks(manifold=False), pytest.raises(ValueError, match=match):
        GeodesicPath(Sphere(2)).sample(x0, x1, 0.5)


def test_bad_dtypes_and_types():
    s2 = GeodesicPath(Sphere(2))
    with pytest.raises(TypeError, match="floating"):
        s2.sample(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        s2.sample([[1.0, 0.0, 0.0]], torch.zeros(1, 3), 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        x = Sphere(2).origin(2, dtype=F64)
        s2.sample(x, x.float(), 0.5)


@pytest.mark.parametrize(
    ("t", "match"),
    [
        (torch.tensor([0.5, 1.5]), r"\[0, 1\]"),
        (torch.tensor([-0.1, 0.5]), r"\[0, 1\]"),
        (torch.tensor([0.5, float("nan")]), r"\[0, 1\]"),
        (1.5, r"\[0, 1\]"),
        (torch.rand(3), r"shape \(2,\)"),
        (torch.rand(2, 1), r"shape \(2,\)"),
    ],
)
def test_bad_times_are_refused(t, match):
    x = Sphere(2).origin(2)
    with pytest.raises(ValueError, match=match):
        GeodesicPath(Sphere(2)).sample(x, x, t)


def test_points_off_the_manifold_refused_under_checks():
    x = Sphere(2).origin(2, dtype=F64)
    with pytest.raises(ValueError, match="x1 of shape"):
        GeodesicPath(Sphere(2)).sample(x, 2 * x, 0.5)
    with mfm.checks(manifold=False):
        GeodesicPath(Sphere(2)).sample(x, 2 * x, 0.5)  # no check, no error


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtype_and_scalar_time(dtype):
    x0, x1 = _pair(SO3(), 0, dtype, (3,))
    s = GeodesicPath(SO3()).sample(x0, x1, 0.25)
    assert s.xt.dtype == dtype and s.ut.dtype == dtype and s.t.dtype == dtype
    assert torch.equal(s.t, torch.full((3,), 0.25, dtype=dtype))
    s0 = GeodesicPath(SO3()).sample(x0, x1, torch.tensor(0.25, dtype=dtype))
    assert torch.equal(s.xt, s0.xt)


# --------------------------------------------------------------------------- check_path


class _SlowVelocity(GeodesicPath):
    def _target(self, x0, x1, t, generator):
        xt, ut = super()._target(x0, x1, t, generator)
        return xt, 1.01 * ut


class _OffManifold(GeodesicPath):
    def _target(self, x0, x1, t, generator):
        xt, ut = super()._target(x0, x1, t, generator)
        return 1.01 * xt, ut


class _Unwrapped(GeodesicPath):
    """Torus path that forgets to wrap: the same points as angles, off [0, 2 pi)."""

    def _target(self, x0, x1, t, generator):
        u = self.manifold.logmap(x0, x1)
        k = self.scheduler(t)
        return x0 + k.alpha[:, None] * u, k.d_alpha[:, None] * u


def test_check_path_catches_broken_paths():
    s2, torus = Sphere(2), FlatTorus(2)
    x0, x1 = _pair(s2, 0, F64, (6,))
    with pytest.raises(AssertionError, match="ut vs d xt / dt"):
        check_path(_SlowVelocity(s2), x0, x1, manifold=s2)
    with mfm.checks(manifold=False), pytest.raises(AssertionError, match="not on the manifold"):
        check_path(_OffManifold(s2), x0, x1, manifold=s2, exact_endpoints=False)
    a, b = _pair(torus, 1, F64, (64,))
    with mfm.checks(manifold=False), pytest.raises(AssertionError, match="not on the manifold"):
        check_path(_Unwrapped(torus), a, b, manifold=torus)


def test_check_path_compares_torus_endpoints_by_distance():
    """x1 = 2 pi is a valid angle; the path ends on the same point written as 0."""
    torus = FlatTorus(2)
    x0 = torch.tensor([[1.0, 3.0], [5.0, 0.0]], dtype=F64)
    x1 = torch.full((2, 2), 2 * math.pi, dtype=F64)
    path = GeodesicPath(torus)
    assert torch.equal(path.sample(x0, x1, 1.0).xt, torch.zeros_like(x1))
    check_path(path, x0, x1, manifold=torus)
    with pytest.raises(AssertionError, match="xt at t = 1 vs x1"):
        check_path(path, x0, x1)  # entrywise comparison without the manifold
