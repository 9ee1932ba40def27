"""SE3: contract, product geometry, edge angles, twists, equivariance, validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import geoopt
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SE3, SO3, Euclidean
from manifoldfm.manifolds.so3 import hat, rotation_angle, rotvec_to_rotmat
from manifoldfm.paths import GeodesicPath
from manifoldfm.testing import check_manifold

from .strategies import DTYPES, dtypes, seeds

F64 = torch.float64
WEIGHTS = [(1.0, 1.0), (0.3, 2.5), (4.0, 0.01)]
weights = st.sampled_from(WEIGHTS)
EDGE_ANGLES = [0.0, 1e-8, 1e-3, 1.0, math.pi - 1e-6, math.pi]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == F64 else 2e-5


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _rigid(se3: SE3, seed: int, dtype: torch.dtype, *lead: int) -> torch.Tensor:
    return se3.random(*lead, generator=gen(seed), dtype=dtype)


# ------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("w", WEIGHTS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_contract_named(w, dtype):
    check_manifold(SE3(*w), dtype=dtype, seed=3, batch_size=32)


@given(seed=seeds, dtype=dtypes, w=weights)
def test_contract_hypothesis(seed, dtype, w):
    check_manifold(SE3(*w), dtype=dtype, seed=seed, batch_size=4)


def test_attributes_and_factors():
    se3 = SE3(rotation_weight=4.0, translation_weight=0.5)
    assert se3.point_shape == (4, 4) and se3.dim == 6
    assert se3.volume == math.inf
    assert se3.injectivity_radius == pytest.approx(2.0 * math.pi)
    assert repr(se3) == "SE3(rotation_weight=4.0, translation_weight=0.5)"
    so3, r3 = se3.factors
    assert isinstance(so3, SO3) and isinstance(r3, Euclidean) and r3.point_shape == (3,)
    assert isinstance(se3, geoopt.Manifold)


@given(seed=seeds, dtype=dtypes, w=weights)
def test_metric_is_the_weighted_product(seed, dtype, w):
    se3 = SE3(*w)
    g = gen(seed)
    x = se3.random(5, 3, generator=g, dtype=dtype)
    y = se3.random(5, 3, generator=g, dtype=dtype)
    rx, tx = se3.split(x)
    ry, ty = se3.split(y)
    angle = SO3().dist(rx, ry)
    expected = w[0] * angle**2 + w[1] * ((ty - tx) ** 2).sum(-1)
    tol = _tol(dtype) * 10
    torch.testing.assert_close(se3.dist2(x, y), expected, atol=tol, rtol=tol)
    torch.testing.assert_close(se3.dist(x, y) ** 2, expected, atol=tol, rtol=tol)
    u = se3.logmap(x, y)
    torch.testing.assert_close(se3.inner(x, u), expected, atol=tol, rtol=tol)
    # exp/log do not depend on the weights
    torch.testing.assert_close(u, SE3().logmap(x, y), atol=0, rtol=0)
    assert se3.dist2(x, y, keepdim=True).shape == (5, 3, 1, 1)


@given(seed=seeds, dtype=dtypes)
def test_matches_product_of_so3_and_r3(seed, dtype):
    from manifoldfm.manifolds import Product

    se3, prod = SE3(), Product(SO3(), Euclidean(3))
    g = gen(seed)
    x, y = se3.random(6, generator=g, dtype=dtype), se3.random(6, generator=g, dtype=dtype)
    px, py = prod.join(*se3.split(x)), prod.join(*se3.split(y))
    tol = _tol(dtype) * 10
    torch.testing.assert_close(se3.dist(x, y), prod.dist(px, py), atol=tol, rtol=tol)
    u = se3.logmap(x, y)
    pu = prod.logmap(px, py)
    torch.testing.assert_close(prod.join(*se3.split(u)), pu, atol=tol, rtol=tol)
    torch.testing.assert_close(
        prod.join(*se3.split(se3.expmap(x, 0.7 * u))), prod.expmap(px, 0.7 * pu), atol=tol, rtol=tol
    )


def test_split_join_round_trip_and_layout():
    se3 = SE3()
    x = _rigid(se3, 0, F64, 4, 7)
    rot, trans = se3.split(x)
    assert rot.shape == (4, 7, 3, 3) and trans.shape == (4, 7, 3)
    assert torch.equal(se3.join(rot, trans), x)
    u = se3.join(hat(torch.ones(3, dtype=F64)), torch.ones(4, 1, 3, dtype=F64), tangent=True)
    assert u.shape == (4, 1, 4, 4)
    assert torch.equal(u[..., 3, :], torch.zeros(4, 1, 4, dtype=F64))
    assert torch.equal(
        se3.join(rot, trans)[..., 3, :], torch.tensor([0.0, 0, 0, 1], dtype=F64).expand(4, 7, 4)
    )
    with pytest.raises(ValueError, match="do not broadcast"):
        se3.join(torch.eye(3).expand(2, 3, 3), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="share a dtype"):
        se3.join(torch.eye(3), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        se3.join(torch.eye(3), torch.zeros(4))


def test_random_is_haar_times_gaussian_and_uniform_refuses():
    se3 = SE3()
    x = se3.random(4000, generator=gen(1), dtype=F64)
    rot, trans = se3.split(x)
    # Haar angle law: density (1 - cos t) / pi, mean pi/2 + 2/pi
    assert float(rotation_angle(rot).mean()) == pytest.approx(math.pi / 2 + 2 / math.pi, abs=0.03)
    assert float(trans.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(trans.var()) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="infinite volume"):
        se3.random_uniform(3)
    o = se3.origin(2, 5, dtype=F64)
    assert torch.equal(o, torch.eye(4, dtype=F64).expand(2, 5, 4, 4))


@pytest.mark.parametrize("w", WEIGHTS, ids=str)
def test_random_tangent_is_standard_in_the_metric(w):
    se3 = SE3(*w)
    x = se3.random(20000, generator=gen(2), dtype=F64)
    z = se3.random_tangent(x, generator=gen(3))
    assert float(se3._tangent_deviation(x, z).max()) < 1e-12
    assert float(se3.inner(x, z).mean()) == pytest.approx(6.0, rel=0.03)
    xi = se3.tangent_to_twist(x, z)  # body: w, v; the metric is w_R |w|^2 + w_t |v|^2
    cov = torch.cov((xi * torch.tensor([w[0]] * 3 + [w[1]] * 3, dtype=F64).sqrt()).T)
    torch.testing.assert_close(cov, torch.eye(6, dtype=F64), atol=0.05, rtol=0)


def test_rejects_bad_weights():
    with pytest.raises(ValueError, match="rotation_weight"):
        SE3(rotation_weight=0.0)
    with pytest.raises(ValueError, match="translation_weight"):
        SE3(translation_weight=-1.0)
    with pytest.raises(TypeError, match="translation_weight"):
        SE3(translation_weight="1")


# ------------------------------------------------------------------------------- edge angles


def _pair_at_angle(angle: float, dtype: torch.dtype, seed: int = 0, b: int = 6):
    se3 = SE3()
    g = gen(seed)
    x = se3.random(b, generator=g, dtype=F64)
    axis = _unit(torch.randn(b, 3, generator=g, dtype=F64))
    rel = rotvec_to_rotmat(angle * axis)
    rx, _ = se3.split(x)
    y = se3.join(rx @ rel, torch.randn(b, 3, generator=g, dtype=F64))
    return x.to(dtype), y.to(dtype), axis


@pytest.mark.parametrize("angle", EDGE_ANGLES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_exp_log_and_gradients_at_edge_angles(angle, dtype):
    se3 = SE3(rotation_weight=2.0, translation_weight=0.5)
    x, y, _axis = _pair_at_angle(angle, dtype)
    u = se3.logmap(x, y)
    assert torch.isfinite(u).all()
    back = se3.expmap(x, u)
    tol = 1e-9 if dtype == F64 else 1e-5
    torch.testing.assert_close(back, y, atol=tol * 10, rtol=0)
    # the rotation part of log has the right length
    w = se3.tangent_to_twist(x, u)[..., :3]
    ref_angle = torch.tensor(angle, dtype=F64).to(dtype)
    torch.testing.assert_close(
        torch.linalg.vector_norm(w, dim=-1), ref_angle.expand(6), atol=tol * 100, rtol=tol * 10
    )
    if angle < 3.0:  # away from the cut locus log(exp(u)) = u
        torch.testing.assert_close(se3.logmap(x, se3.expmap(x, u)), u, atol=tol * 10, rtol=tol)
    for fn in (
        lambda a, b: se3.dist2(a, b),
        lambda a, b: se3.dist(a, b) ** 2,
        lambda a, b: se3.inner(a, se3.logmap(a, b)),
    ):
        xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        val = fn(xr, yr)
        assert torch.isfinite(val).all()
        gx, gy = torch.autograd.grad(val.sum(), (xr, yr))
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all()


@given(seed=seeds, dtype=dtypes)
@example(seed=0, dtype=torch.float32)
def test_round_trip_near_identity_and_near_pi(seed, dtype):
    se3 = SE3()
    g = gen(seed)
    x = se3.random(4, generator=g, dtype=dtype)
    axis = _unit(torch.randn(4, 3, generator=g, dtype=dtype))
    tiny = 1e-8 if dtype == F64 else 1e-4
    for angle in (tiny, math.pi - 1e-3):
        xi = torch.cat([angle * axis, torch.randn(4, 3, generator=g, dtype=dtype)], dim=-1)
        u = se3.twist_to_tangent(x, xi)
        y = se3.expmap(x, u)
        tol = 1e-9 if dtype == F64 else 3e-4
        torch.testing.assert_close(se3.logmap(x, y), u, atol=tol, rtol=tol)
        torch.testing.assert_close(se3.dist(x, y), se3.norm(x, u), atol=tol, rtol=tol)


# ------------------------------------------------------------------------------- twists


@given(seed=seeds, dtype=dtypes, frame=st.sampled_from(["body", "space", "mixed"]))
def test_twist_round_trips(seed, dtype, frame):
    se3 = SE3()
    g = gen(seed)
    x = se3.random(3, 5, generator=g, dtype=dtype)
    xi = torch.randn(3, 5, 6, generator=g, dtype=dtype)
    u = se3.twist_to_tangent(x, xi, frame=frame)
    assert u.shape == (3, 5, 4, 4)
    assert float(se3._tangent_deviation(x, u).max()) < _tol(dtype)
    tol = _tol(dtype) * 10
    torch.testing.assert_close(se3.tangent_to_twist(x, u, frame=frame), xi, atol=tol, rtol=tol)
    v = se3.proju(x, torch.randn(3, 5, 4, 4, generator=g, dtype=dtype))
    back = se3.twist_to_tangent(x, se3.tangent_to_twist(x, v, frame=frame), frame=frame)
    torch.testing.assert_close(back, v, atol=tol, rtol=tol)


@given(seed=seeds, dtype=dtypes, w=weights)
def test_twist_frames_and_the_lie_algebra(seed, dtype, w):
    se3 = SE3(*w)
    g = gen(seed)
    x = se3.random(7, generator=g, dtype=dtype)
    u = se3.proju(x, torch.randn(7, 4, 4, generator=g, dtype=dtype))
    body = se3.tangent_to_twist(x, u, frame="body")
    space = se3.tangent_to_twist(x, u, frame="space")
    mixed = se3.tangent_to_twist(x, u, frame="mixed")
    tol = _tol(dtype) * 10
    inv = torch.linalg.inv(x)
    # body twist = vee4(x^-1 u), space twist = vee4(u x^-1)
    for twist, mat in ((body, inv @ u), (space, u @ inv)):
        assert float(mat[..., 3, :].abs().max()) < tol
        torch.testing.assert_close(twist[..., :3], hat_inv(mat[..., :3, :3]), atol=tol, rtol=tol)
        torch.testing.assert_close(twist[..., 3:], mat[..., :3, 3], atol=tol, rtol=tol)
    ad = se3.adjoint(x)
    torch.testing.assert_close(space, (ad @ body[..., None])[..., 0], atol=tol, rtol=tol)
    rot, _trans = se3.split(x)
    torch.testing.assert_close(
        mixed[..., :3], (rot @ body[..., :3, None])[..., 0], atol=tol, rtol=tol
    )
    torch.testing.assert_close(mixed[..., 3:], se3.split(u)[1], atol=tol, rtol=tol)
    # the metric in body and mixed coordinates
    scale = torch.tensor([w[0]] * 3 + [w[1]] * 3, dtype=dtype)
    for twist in (body, mixed):
        torch.testing.assert_close((scale * twist**2).sum(-1), se3.inner(x, u), atol=tol, rtol=tol)


def hat_inv(a: torch.Tensor) -> torch.Tensor:
    return torch.stack([a[..., 2, 1], a[..., 0, 2], a[..., 1, 0]], dim=-1)


def test_twist_validation():
    se3 = SE3()
    x = se3.origin(2)
    with pytest.raises(ValueError, match="frame"):
        se3.tangent_to_twist(x, torch.zeros(2, 4, 4), frame="world")
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        se3.twist_to_tangent(x, torch.zeros(2, 5))
    with pytest.raises(TypeError, match="share a dtype"):
        se3.twist_to_tangent(x, torch.zeros(2, 6, dtype=F64))
    with pytest.raises(ValueError, match="broadcast"):
        se3.twist_to_tangent(x, torch.zeros(3, 6))
    with pytest.raises(ValueError, match="not tangent"):
        se3.tangent_to_twist(x, torch.ones(2, 4, 4))


# ------------------------------------------------------------------------------- equivariance


def _left(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return g @ x


@given(seed=seeds, dtype=dtypes, w=weights)
def test_left_rigid_motions_are_isometries_and_move_geodesics(seed, dtype, w):
    se3 = SE3(*w)
    gen_ = gen(seed)
    b, n = 3, 4
    x0 = se3.random(b, n, generator=gen_, dtype=dtype)
    x1 = se3.random(b, n, generator=gen_, dtype=dtype)
    g = se3.random(generator=gen_, dtype=dtype)  # one rigid motion (Q, s) for everything
    tol = _tol(dtype) * 100
    torch.testing.assert_close(
        se3.dist(_left(g, x0), _left(g, x1)), se3.dist(x0, x1), atol=tol, rtol=tol
    )
    path = GeodesicPath(se3, mfm.Cosine())
    t = torch.rand(b, generator=gen_, dtype=dtype)
    s = path.sample(x0, x1, t)
    sg = path.sample(_left(g, x0), _left(g, x1), t)
    # (R, t) -> (Q R, Q t + s) moves x_t to g x_t and u_t = [[dR, dt], 0] to g u_t
    torch.testing.assert_close(sg.xt, g @ s.xt, atol=tol, rtol=tol)
    torch.testing.assert_close(sg.ut, g @ s.ut, atol=tol, rtol=tol)
    torch.testing.assert_close(se3.inner(sg.xt, sg.ut), se3.inner(s.xt, s.ut), atol=tol, rtol=tol)


def test_right_multiplication_is_not_an_isometry():
    se3 = SE3()
    x0, x1 = _rigid(se3, 0, F64, 8), _rigid(se3, 1, F64, 8)
    h = se3.join(
        rotvec_to_rotmat(torch.tensor([0.0, 0.0, 1.0], dtype=F64)),
        torch.tensor([1.0, 2, 3], dtype=F64),
    )
    assert not torch.allclose(se3.dist(x0 @ h, x1 @ h), se3.dist(x0, x1), atol=1e-3)


# ------------------------------------------------------------------------------- validation


def test_points_off_the_manifold_are_named():
    se3 = SE3()
    x = se3.origin(3, dtype=F64)
    good = se3.random(3, generator=gen(0), dtype=F64)
    reflected = good.clone()
    reflected[..., :3, 0] *= -1.0
    with pytest.raises(ValueError, match=r"reflections \(det R = -1\)"):
        se3.dist(x, reflected)
    stretched = good.clone()
    stretched[1, :3, :3] *= 1.1
    with pytest.raises(ValueError, match="not orthonormal"):
        se3.logmap(stretched, x)
    nan = good.clone()
    nan[2, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        se3.expmap(nan, torch.zeros_like(nan))
    inf = good.clone()
    inf[0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        se3.dist2(inf, x)
    bottom = good.clone()
    bottom[0, 3, 1] = 0.5
    with pytest.raises(ValueError, match=r"bottom row is not \[0, 0, 0, 1\]"):
        se3.proju(bottom, torch.zeros_like(bottom))
    scaled = good.clone()
    scaled[0, 3, 3] = 2.0
    with pytest.raises(ValueError, match="bottom row"):
        GeodesicPath(se3).sample(scaled, good, 0.5)
    # geoopt's check reports the deviation
    ok, reason = se3.check_point_on_manifold(reflected, explain=True)
    assert not ok and "det" in reason
    # with checks off nothing is validated beyond shapes
    with mfm.checks(manifold=False):
        se3.dist(x, reflected)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\)"):
        se3.dist(x, torch.zeros(3, 3, 4, dtype=F64))


def test_tangent_vectors_off_the_tangent_space_are_refused():
    se3 = SE3()
    x = se3.random(2, generator=gen(0), dtype=F64)
    u = se3.proju(x, torch.randn(2, 4, 4, generator=gen(1), dtype=F64))
    bad = u.clone()
    bad[..., 3, 3] = 1.0
    with pytest.raises(ValueError, match="not tangent"):
        se3.expmap(x, bad)
    sym = u + x * torch.tensor([1.0, 1, 1, 0], dtype=F64)[:, None] * torch.tensor(
        [1.0, 1, 1, 0], dtype=F64
    )
    with pytest.raises(ValueError, match="not tangent"):
        se3.inner(x, sym)
    p = se3.proju(x, bad)
    assert torch.equal(p[..., 3, :], torch.zeros(2, 4, dtype=F64))
    torch.testing.assert_close(p, u)


def test_projx_repairs_points():
    se3 = SE3()
    x = se3.random(5, generator=gen(4), dtype=F64)
    noisy = x + 0.01 * torch.randn(5, 4, 4, generator=gen(5), dtype=F64)
    p = se3.projx(noisy)
    assert float(se3._point_deviation(p).max()) < 1e-12
    torch.testing.assert_close(p[..., :3, 3], noisy[..., :3, 3])


def test_riemannian_adam_keeps_frames_on_se3():
    se3 = SE3(rotation_weight=1.0, translation_weight=0.1)
    target = se3.random(6, generator=gen(0), dtype=F64)
    p = geoopt.ManifoldParameter(se3.origin(6, dtype=F64), manifold=se3)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.05)
    start = float(se3.dist2(p.detach(), target).sum())
    for _ in range(50):
        opt.zero_grad()
        se3.dist2(p, target).sum().backward()
        opt.step()
    assert float(se3._point_deviation(p.detach()).max()) < 1e-10
    assert float(se3.dist2(p.detach(), target).sum()) < 0.5 * start


@given(seed=seeds, dtype=dtypes)
def test_left_rigid_motions_move_product_paths_with_their_own_schedules(seed, dtype):
    # FrameFlow's exponential rotation rate and straight translations; FoldFlow's stochastic
    # rotations with the same noise draws (IGSO(3) noise acts in the body frame)
    from manifoldfm.paths import AffinePath, ExponentialRate, ProductPath
    from manifoldfm.paths.stochastic import StochasticGeodesicPath

    se3 = SE3()
    gen_ = gen(seed)
    b, n = 3, 5
    x0 = se3.random(b, n, generator=gen_, dtype=dtype)
    x1 = se3.random(b, n, generator=gen_, dtype=dtype)
    g = se3.random(generator=gen_, dtype=dtype)
    t = torch.rand(b, generator=gen_, dtype=dtype)
    tol = _tol(dtype) * 100
    paths = [
        ProductPath(
            [GeodesicPath(SO3(), ExponentialRate(10.0)), AffinePath(mfm.CondOT())], manifold=se3
        ),
        ProductPath(
            [StochasticGeodesicPath(SO3(), g=0.5, sigma_min=0.05), AffinePath(mfm.CondOT())],
            manifold=se3,
        ),
    ]
    for path in paths:
        s = path.sample(x0, x1, t, generator=gen(seed + 1))
        sg = path.sample(_left(g, x0), _left(g, x1), t, generator=gen(seed + 1))
        torch.testing.assert_close(sg.xt, g @ s.xt, atol=tol, rtol=tol)
        torch.testing.assert_close(sg.ut, g @ s.ut, atol=tol, rtol=tol)


def test_residue_masks_in_the_loss_and_the_centred_source():
    from manifoldfm.losses import cfm_loss
    from manifoldfm.paths import AffinePath, ProductPath
    from manifoldfm.sources import CentredGaussian

    se3 = SE3()
    b, n = 4, 6
    lengths = torch.tensor([6, 3, 5, 1])
    mask = torch.arange(n) < lengths[:, None]
    x0 = se3.random(b, n, generator=gen(0), dtype=F64)
    x1 = se3.random(b, n, generator=gen(1), dtype=F64)
    path = ProductPath([GeodesicPath(SO3()), AffinePath(mfm.CondOT())], manifold=se3)
    s = path.sample(x0, x1, torch.rand(b, generator=gen(2), dtype=F64))
    v = se3.proju(s.xt, torch.randn(s.xt.shape, generator=gen(3), dtype=F64))
    per = cfm_loss(v, s, manifold=se3, weights=mask.double(), reduction="none")
    for i, k in enumerate(lengths.tolist()):  # the loss of the first k residues alone
        sub = SimpleNamespace(xt=s.xt[i : i + 1, :k], ut=s.ut[i : i + 1, :k])
        alone = cfm_loss(v[i : i + 1, :k], sub, manifold=se3, reduction="none")
        torch.testing.assert_close(per[i], alone[0])
    # changing a padded residue's prediction changes nothing
    v2 = v.clone()
    v2[3, 2:, :3, 3] += 5.0
    torch.testing.assert_close(
        cfm_loss(v2, s, manifold=se3, weights=mask.double()),
        cfm_loss(v, s, manifold=se3, weights=mask.double()),
    )
    with pytest.raises(ValueError, match=r"\(5,\).*\(4, 6\)"):
        cfm_loss(v, s, manifold=se3, weights=torch.ones(5, dtype=F64))
    # the centred source: present points centred and distributed as CentredGaussian(k)
    src = CentredGaussian(n, std=2.0)
    x = src.sample(20000, generator=gen(4), dtype=F64, mask=mask[1])
    assert bool(x[:, 3:].eq(0).all())
    assert float(x[:, :3].mean(1).abs().max()) < 1e-12
    var = x[:, :3].square().mean((0, 2))  # std^2 (1 - 1/3) per coordinate
    torch.testing.assert_close(var, torch.full((3,), 4.0 * 2 / 3, dtype=F64), rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="at least one present"):
        src.sample(2, dtype=F64, mask=torch.zeros(2, n, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 6\)"):
        src.sample(2, dtype=F64, mask=torch.ones(3, n, dtype=torch.bool))
