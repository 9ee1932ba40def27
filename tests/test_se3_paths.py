"""Paths, solvers and minibatch OT on SE(3) frames ``(B, N, 4, 4)``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SE3, SO3, Sphere
from manifoldfm.paths import AffinePath, GeodesicPath, ProductPath
from manifoldfm.solvers import solve_ode
from manifoldfm.testing import check_path

from .strategies import DTYPES, dtypes, seeds

F64 = torch.float64
SCHEDULERS = [mfm.CondOT(), mfm.Cosine(), mfm.Polynomial(2.0), mfm.Polynomial(0.5)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _frames(seed: int, dtype: torch.dtype, b: int = 4, n: int = 5, se3: SE3 | None = None):
    se3 = SE3() if se3 is None else se3
    g = gen(seed)
    return se3.random(b, n, generator=g, dtype=dtype), se3.random(b, n, generator=g, dtype=dtype)


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == F64 else 1e-4


# ------------------------------------------------------------------------------- paths


@given(seed=seeds, dtype=dtypes, sched=st.sampled_from(SCHEDULERS))
def test_geodesic_path_on_se3_contract(seed, dtype, sched):
    se3 = SE3(rotation_weight=0.5, translation_weight=2.0)
    x0, x1 = _frames(seed, dtype, se3=se3)
    check_path(GeodesicPath(se3, sched), x0, x1, manifold=se3)


@given(seed=seeds, dtype=dtypes, rot=st.sampled_from(SCHEDULERS), tr=st.sampled_from(SCHEDULERS))
def test_product_path_on_se3_contract(seed, dtype, rot, tr):
    se3 = SE3()
    x0, x1 = _frames(seed, dtype, b=3, n=6)
    path = ProductPath([GeodesicPath(SO3(), rot), AffinePath(tr)], manifold=se3)
    check_path(path, x0, x1, manifold=se3)
    t = 0.1 + 0.8 * torch.rand(3, generator=gen(seed + 1), dtype=dtype)
    s = path.sample(x0, x1, t)
    assert s.xt.shape == (3, 6, 4, 4) and s.ut.shape == (3, 6, 4, 4)
    assert torch.equal(s.ut[..., 3, :], torch.zeros_like(s.ut[..., 3, :]))
    # factor by factor: each block follows its own path with one t per sample
    r0, t0 = se3.split(x0)
    r1, t1 = se3.split(x1)
    rs = GeodesicPath(SO3(), rot).sample(r0, r1, t)
    ts = AffinePath(tr).sample(t0, t1, t)
    tol = _tol(dtype)
    xr, xtr = se3.split(s.xt)
    ur, utr = se3.split(s.ut)
    torch.testing.assert_close(xr, rs.xt, atol=tol, rtol=tol)
    torch.testing.assert_close(ur, rs.ut, atol=tol, rtol=tol)
    torch.testing.assert_close(xtr, ts.xt, atol=tol, rtol=tol)
    torch.testing.assert_close(utr, ts.ut, atol=tol, rtol=tol)


@given(seed=seeds, dtype=dtypes, sched=st.sampled_from(SCHEDULERS))
def test_one_schedule_equals_the_geodesic_path(seed, dtype, sched):
    se3 = SE3()
    x0, x1 = _frames(seed, dtype)
    t = 0.05 + 0.9 * torch.rand(4, generator=gen(seed), dtype=dtype)
    a = ProductPath([GeodesicPath(SO3(), sched), GeodesicPath(se3.factors[1], sched)], manifold=se3)
    b = GeodesicPath(se3, sched)
    sa, sb = a.sample(x0, x1, t), b.sample(x0, x1, t)
    tol = _tol(dtype)
    torch.testing.assert_close(sa.xt, sb.xt, atol=tol, rtol=tol)
    torch.testing.assert_close(sa.ut, sb.ut, atol=tol, rtol=tol)
    # the speed is kappa'_t dist(x0, x1) per frame
    speed = se3.norm(sb.xt, sb.ut)
    d_kappa = sched(t).d_alpha[:, None]
    torch.testing.assert_close(speed, d_kappa * se3.dist(x0, x1), atol=10 * tol, rtol=10 * tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_paths_at_the_endpoints_and_the_cut_locus(dtype):
    se3 = SE3()
    x0, _ = _frames(0, F64, b=2, n=3)
    rot, trans = se3.split(x0)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))  # rotation by pi
    x1 = se3.join(rot @ flip, trans + 1.0)
    x0, x1 = x0.to(dtype), x1.to(dtype)
    path = ProductPath([GeodesicPath(SO3(), mfm.Cosine()), AffinePath(mfm.CondOT())], manifold=se3)
    for t in (0.0, 0.5, 1.0):
        s = path.sample(x0, x1, t)
        assert torch.isfinite(s.xt).all() and torch.isfinite(s.ut).all()
        assert float(se3._point_deviation(s.xt).max()) < _tol(dtype) * 10
    torch.testing.assert_close(path.sample(x0, x1, 1.0).xt, x1, atol=10 * _tol(dtype), rtol=0)


def test_product_path_refuses_mismatched_factors():
    se3 = SE3()
    with pytest.raises(ValueError, match="factor 0"):
        ProductPath([GeodesicPath(Sphere(2)), AffinePath(mfm.CondOT())], manifold=se3)
    with pytest.raises(ValueError, match="has 2 factors"):
        ProductPath([GeodesicPath(SO3())], manifold=se3)
    with pytest.raises(ValueError, match="no manifold"):
        ProductPath([AffinePath(mfm.CondOT()), AffinePath(mfm.CondOT())], manifold=se3)
    with pytest.raises(TypeError, match="Product or an SE3"):
        ProductPath([GeodesicPath(SO3()), AffinePath(mfm.CondOT())], manifold=SO3())
    path = ProductPath([GeodesicPath(SO3()), AffinePath(mfm.CondOT())], manifold=se3)
    with pytest.raises(ValueError, match=r"\(B, \.\.\., 4, 4\)"):
        path.sample(torch.zeros(2, 12), torch.zeros(2, 12), 0.5)
    x0, x1 = _frames(1, F64)
    x1 = x1.clone()
    x1[0, 0, :3, 0] *= -1.0
    with pytest.raises(ValueError, match="reflections"):
        path.sample(x0, x1, 0.5)


# ------------------------------------------------------------------------------- solvers


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_solve_ode_keeps_frames_on_se3(method, dtype):
    se3 = SE3()
    x0, x1 = _frames(2, dtype, b=3, n=4)
    target = x1

    def v(x, t):
        # the geodesic velocity towards a fixed target, scaled: a smooth field on SE(3)
        return 0.8 * se3.logmap(x, target)

    sol = solve_ode(v, x0, steps=10, method=method, manifold=se3)
    assert sol.x.shape == x0.shape and sol.x.dtype == dtype
    assert float(se3._point_deviation(sol.x).max()) < _tol(dtype) * 10
    # the flow of 0.8 log_x(target) for unit time: dist shrinks by exp(-0.8)
    ratio = se3.dist(sol.x, target) / se3.dist(x0, target)
    expected = torch.exp(torch.tensor(-0.8, dtype=dtype))
    tol = 0.02 if method == "euler" else 1e-3
    torch.testing.assert_close(ratio, expected.expand_as(ratio), atol=tol, rtol=0)


def test_solve_ode_follows_the_geodesic_path():
    se3 = SE3()
    x0, x1 = _frames(3, F64, b=2, n=3)
    u = se3.logmap(x0, x1)
    body = se3.tangent_to_twist(x0, u)
    trans_vel = se3.split(u)[1]

    def v(x, t):
        # constant body angular velocity and constant translation velocity: the geodesic
        rot = se3.split(x)[0]
        from manifoldfm.manifolds.so3 import hat

        return se3.join(rot @ hat(body[..., :3]), trans_vel, tangent=True)

    sol = solve_ode(v, x0, steps=4, method="rk4", manifold=se3)
    torch.testing.assert_close(sol.x, x1, atol=1e-9, rtol=0)
