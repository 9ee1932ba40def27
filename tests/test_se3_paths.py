"""Paths, solvers and minibatch OT (FrameCost, kabsch) on SE(3) frames ``(B, N, 4, 4)``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.couplings import ExactOT, FrameCost, SinkhornOT, kabsch
from manifoldfm.manifolds import SE3, SO3, Sphere
from manifoldfm.manifolds.so3 import hat, rotvec_to_rotmat
from manifoldfm.paths import AffinePath, GeodesicPath, ProductPath
from manifoldfm.solvers import solve_ode, solve_sde
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
        return se3.join(rot @ hat(body[..., :3]), trans_vel, tangent=True)

    sol = solve_ode(v, x0, steps=4, method="rk4", manifold=se3)
    torch.testing.assert_close(sol.x, x1, atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------- frame OT

COST_WEIGHTS = [(1.0, 1.0), (0.2, 3.0), (5.0, 0.05)]


def _batch(seed: int, dtype: torch.dtype, b0: int, b1: int, n: int):
    se3 = SE3()
    g = gen(seed)
    return (
        se3.random(b0, n, generator=g, dtype=dtype),
        se3.random(b1, n, generator=g, dtype=dtype),
        g,
    )


def _brute(se3: SE3, x0, x1, w=None):
    d2 = se3.dist2(x0[:, None].double(), x1[None].double())  # (B0, B1, N)
    return (d2 if w is None else d2 * w).sum(-1)


@given(
    seed=seeds,
    dtype=dtypes,
    w=st.sampled_from(COST_WEIGHTS),
    b0=st.integers(1, 5),
    b1=st.integers(1, 5),
    n=st.integers(1, 6),
)
def test_frame_cost_is_the_summed_squared_se3_distance(seed, dtype, w, b0, b1, n):
    x0, x1, g = _batch(seed, dtype, b0, b1, n)
    cost = FrameCost(*w)(x0, x1)
    assert cost.shape == (b0, b1) and cost.dtype == F64
    ref = _brute(SE3(*w), x0, x1)
    tol = 1e-9 if dtype == F64 else 1e-4
    torch.testing.assert_close(cost, ref, atol=tol, rtol=tol)
    m0 = torch.rand(b0, n, generator=g) < 0.7
    m1 = torch.rand(b1, n, generator=g, dtype=F64)
    masked = FrameCost(*w).pairwise(x0, x1, mask0=m0, mask1=m1)
    pair_w = m0.double()[:, None, :] * m1[None, :, :]
    torch.testing.assert_close(masked, _brute(SE3(*w), x0, x1, pair_w), atol=tol, rtol=tol)


def test_frame_cost_at_edge_angles():
    se3 = SE3()
    x0 = se3.origin(1, 5, dtype=F64)
    angles = torch.tensor([0.0, 1e-8, 1.0, torch.pi - 1e-6, torch.pi], dtype=F64)
    rot = rotvec_to_rotmat(angles[:, None] * torch.tensor([0.0, 0.6, 0.8], dtype=F64))
    x1 = se3.join(rot, torch.zeros(5, 3, dtype=F64))[None]
    for dtype in (F64, torch.float32):
        cost = FrameCost()(x0.to(dtype), x1.to(dtype))
        expected = angles.square().sum()
        tol = 1e-9 if dtype == F64 else 1e-5
        torch.testing.assert_close(cost, expected.reshape(1, 1), atol=tol, rtol=tol)


@given(seed=seeds, dtype=dtypes, align=st.booleans(), w=st.sampled_from(COST_WEIGHTS))
def test_ot_pairing_never_costs_more_than_the_identity(seed, dtype, align, w):
    x0, x1, _ = _batch(seed, dtype, 7, 7, 4)
    fc = FrameCost(*w, align=align)
    pair = ExactOT(cost=fc)(x0, x1)
    c = fc(x0, x1)
    identity = c.diagonal().sum()
    chosen = c[pair.i, pair.j].sum()
    assert float(chosen) <= float(identity) + 1e-9
    # the coupling returns the original rows of x1, in the chosen order
    assert torch.equal(pair.x1, x1[pair.j])
    assert sorted(pair.j.tolist()) == list(range(7))


def test_ot_recovers_a_shuffle_up_to_rigid_motions():
    se3 = SE3()
    x0, _, g = _batch(5, F64, 8, 1, 12)
    perm = torch.randperm(8, generator=g)
    motions = se3.random(8, 1, generator=g, dtype=F64)
    x1 = motions @ x0[perm]  # each set shuffled and moved rigidly
    pair = ExactOT(cost=FrameCost(align=True))(x0, x1)
    assert torch.equal(perm[pair.j], torch.arange(8))
    aligned = FrameCost().align(pair.x1, pair.x0)
    torch.testing.assert_close(aligned, x0, atol=1e-10, rtol=0)
    plain = ExactOT(cost=FrameCost())(x0, x1)  # without alignment the poses dominate
    assert float(FrameCost()(plain.x0, plain.x1).diagonal().sum()) > 1.0


@given(seed=seeds, dtype=dtypes, n=st.integers(3, 12))
def test_kabsch_recovers_a_known_motion(seed, dtype, n):
    g = gen(seed)
    p = torch.randn(4, n, 3, generator=g, dtype=dtype)
    q = rotvec_to_rotmat(torch.randn(4, 3, generator=g, dtype=dtype) * 1.5)
    s = torch.randn(4, 3, generator=g, dtype=dtype)
    y = p @ q.mT + s[:, None]
    rot, shift = kabsch(p, y)
    tol = 1e-9 if dtype == F64 else 1e-4
    torch.testing.assert_close(rot, q, atol=tol, rtol=tol)
    torch.testing.assert_close(shift, s, atol=tol * 10, rtol=tol)
    # padded points (weight 0) holding garbage change nothing
    junk = torch.randn(4, 2, 3, generator=g, dtype=dtype) * 100
    w = torch.cat([torch.ones(4, n, dtype=dtype), torch.zeros(4, 2, dtype=dtype)], dim=1)
    rot_w, shift_w = kabsch(torch.cat([p, junk], 1), torch.cat([y, -junk], 1), w)
    torch.testing.assert_close(rot_w, q, atol=tol * 10, rtol=tol)
    torch.testing.assert_close(shift_w, s, atol=tol * 100, rtol=tol)


def test_kabsch_never_returns_a_reflection():
    g = gen(0)
    p = torch.randn(16, 6, 3, generator=g, dtype=F64)
    mirrored = p * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    rot, _ = kabsch(p, mirrored)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(16, dtype=F64))
    torch.testing.assert_close(rot.mT @ rot, torch.eye(3, dtype=F64).expand(16, 3, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        kabsch(p[..., :2], p[..., :2])
    with pytest.raises(ValueError, match="same number of points"):
        kabsch(p, p[:, :4])
    with pytest.raises(ValueError, match="weights"):
        kabsch(p, p, torch.ones(16, 5, dtype=F64))


@given(seed=seeds, dtype=dtypes, w=st.sampled_from(COST_WEIGHTS))
def test_aligned_cost_is_invariant_under_rigid_motions(seed, dtype, w):
    se3 = SE3()
    x0, x1, g = _batch(seed, dtype, 4, 5, 6)
    fc = FrameCost(*w, align=True)
    base = fc(x0, x1)
    motions1 = se3.random(5, 1, generator=g, dtype=dtype)  # one motion per set of frames
    motions0 = se3.random(4, 1, generator=g, dtype=dtype)
    tol = 1e-8 if dtype == F64 else 2e-3
    torch.testing.assert_close(fc(x0, motions1 @ x1), base, atol=tol, rtol=tol)
    torch.testing.assert_close(fc(motions0 @ x0, x1), base, atol=tol, rtol=tol)
    # the unaligned cost is not invariant
    assert not torch.allclose(FrameCost(*w)(x0, motions1 @ x1), FrameCost(*w)(x0, x1), atol=1e-3)


@given(seed=seeds, masked=st.booleans())
def test_aligned_cost_is_the_cost_of_the_aligned_copies(seed, masked):
    x0, x1, g = _batch(seed, F64, 3, 4, 7)
    m0 = (torch.rand(3, 7, generator=g) < 0.8) if masked else torch.ones(3, 7, dtype=torch.bool)
    m1 = (torch.rand(4, 7, generator=g) < 0.8) if masked else torch.ones(4, 7, dtype=torch.bool)
    m0[:, :3] = True
    m1[:, :3] = True
    fc = FrameCost(0.7, 1.3, align=True)
    cost = fc.pairwise(x0, x1, mask0=m0, mask1=m1)
    # brute force over pairs: align x1[b] on x0[a] with the pair's mask, then the plain cost
    a_idx, b_idx = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    a_idx, b_idx = a_idx.reshape(-1), b_idx.reshape(-1)
    pair_mask = (m0[a_idx] & m1[b_idx]).double()
    moved = fc.align(x1[b_idx], x0[a_idx], mask=pair_mask)
    d2 = SE3(0.7, 1.3).dist2(x0[a_idx], moved)
    ref = (d2 * pair_mask).sum(-1).reshape(3, 4)
    torch.testing.assert_close(cost, ref, atol=1e-9, rtol=1e-9)


def test_sinkhorn_with_a_frame_cost():
    x0, x1, g = _batch(3, F64, 6, 6, 5)
    pair = SinkhornOT(0.5, cost=FrameCost(align=True))(x0, x1, generator=g)
    assert pair.x1.shape == x1.shape
    assert torch.equal(pair.x1, x1[pair.j])


def test_frame_cost_validation():
    se3 = SE3()
    x0, x1, _ = _batch(0, F64, 2, 3, 4)
    fc = FrameCost()
    with pytest.raises(ValueError, match=r"\(B, N, 4, 4\)"):
        fc(x0[0], x1[0])
    with pytest.raises(ValueError, match="same number of frames"):
        fc(x0, x1[:, :3])
    with pytest.raises(ValueError, match=r"mask0 must have shape \(2, 4\)"):
        fc.pairwise(x0, x1, mask0=torch.ones(2, 3))
    with pytest.raises(TypeError, match="mask1"):
        fc.pairwise(x0, x1, mask1=[1, 1, 1])
    bad = x1.clone()
    bad[0, 0, :3, 0] *= -1.0
    with pytest.raises(ValueError, match="reflections"):
        fc(x0, bad)
    # without the manifold switch too (value checks, on by default), and through a coupling
    nan = x1.clone()
    nan[1, 2, 0, 3] = float("nan")
    with mfm.checks(manifold=False):
        with pytest.raises(ValueError, match="reflections"):
            mfm.ExactOT(cost=fc)(x0, bad)
        with pytest.raises(ValueError, match="non-finite"):
            fc(x0, nan)
        with pytest.raises(ValueError, match="not orthonormal"):
            fc(x0, x1 * 1.01)
        with mfm.checks(values=False):  # both off: the caller vouches for the frames
            assert fc(x0, bad).shape == (x0.shape[0], x1.shape[0])
        # zero-padded frames under a zero mask are fine; a NaN one is not
        padded = x1.clone()
        padded[1, 2:] = 0.0
        m1 = torch.ones(x1.shape[:2])
        m1[1, 2:] = 0.0
        cost = fc.pairwise(x0, padded, mask1=m1)
        assert bool(torch.isfinite(cost).all())
        torch.testing.assert_close(cost[:, 1], fc.pairwise(x0, x1, mask1=m1)[:, 1])
        padded[1, 3, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="non-finite"):
            fc.pairwise(x0, padded, mask1=m1)
        with pytest.raises(ValueError, match="not orthonormal"):  # present frames still checked
            fc.pairwise(x0, padded.nan_to_num(), mask1=torch.ones(x1.shape[:2]))
    with pytest.raises(ValueError, match="row by row"):
        fc.align(x0, x1)
    with pytest.raises(ValueError, match="rotation_weight"):
        FrameCost(rotation_weight=0.0)
    with pytest.raises(TypeError, match="align"):
        FrameCost(align=1)
    assert repr(FrameCost(align=True)) == (
        "FrameCost(rotation_weight=1.0, translation_weight=1.0, align=True)"
    )
    assert FrameCost(align=True).aligned and se3.dim == 6


# ------------------------------------------------------------------------------- loss and SDE


def test_cfm_loss_uses_the_weighted_metric_summed_over_frames():
    se3 = SE3(rotation_weight=2.0, translation_weight=0.5)
    x0, x1 = _frames(4, F64, b=3, n=5)
    s = GeodesicPath(se3).sample(x0, x1, torch.full((3,), 0.3, dtype=F64))
    v = se3.proju(s.xt, torch.randn(3, 5, 4, 4, generator=gen(5), dtype=F64))
    per = mfm.cfm_loss(v, s, manifold=se3, reduction="none")
    xi = se3.tangent_to_twist(s.xt, v - s.ut)
    scale = torch.tensor([2.0] * 3 + [0.5] * 3, dtype=F64)
    torch.testing.assert_close(per, (scale * xi.square()).sum((-1, -2)))


def test_brownian_motion_on_se3_stays_on_it_with_the_metric_variance():
    se3 = SE3(rotation_weight=1.0, translation_weight=4.0)
    x0 = se3.origin(4000, dtype=F64)
    sol = solve_sde(
        lambda x, t: torch.zeros_like(x),
        x0,
        diffusion=1.0,
        steps=20,
        manifold=se3,
        generator=gen(6),
    )
    assert float(se3._point_deviation(sol.x).max()) < 1e-10
    trans = se3.split(sol.x)[1]
    # the translation is an exact Brownian motion of variance t / translation_weight
    assert float(trans.var(0).mean()) == pytest.approx(0.25, rel=0.05)


def test_kabsch_refuses_bad_input():
    p = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"weights must be a torch\.Tensor"):
        kabsch(p, p, [1.0] * 5)
    with pytest.raises(TypeError, match="floating dtype"):
        kabsch(p.long(), p.long())
    for w in (torch.zeros(5, dtype=torch.float64), -torch.ones(5, dtype=torch.float64)):
        with pytest.raises(ValueError, match="non-negative weights"):
            kabsch(p, p, w)
    q = p.clone()
    q[2, 1] = float("nan")
    with pytest.raises(ValueError, match="finite points"):
        kabsch(q, p)


@pytest.mark.parametrize("align", [False, True])
def test_frame_cost_ignores_the_values_of_padded_frames(align):
    # a padded frame (mask 0) may hold anything: moving it far away changes no cost
    x0, x1, _ = _batch(3, F64, 3, 4, 5)
    m0 = torch.ones(3, 5, dtype=F64)
    m0[0, 2] = 0.0
    ref = FrameCost(align=align).pairwise(x0, x1, mask0=m0)
    far = x0.clone()
    far[0, 2, :3, 3] = 1e10
    torch.testing.assert_close(FrameCost(align=align).pairwise(far, x1, mask0=m0), ref)


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_frame_cost_rejects_negative_or_non_finite_masks(bad):
    x0, x1, _ = _batch(4, F64, 2, 2, 3)
    mask = torch.ones(2, 3, dtype=F64)
    mask[1, 1] = bad
    with pytest.raises(ValueError, match="mask0"):
        FrameCost().pairwise(x0, x1, mask0=mask)
