"""Rotation and pose conversions: quaternion orders, canonical signs, poses, screw motions, pytorch3d."""

from __future__ import annotations

import importlib.util
import math

import pytest
import roma
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds.so3 import rotmat_to_rotvec, rotvec_to_rotmat
from manifoldfm.rotations import (
    canonical_quat,
    from_pytorch3d_matrix,
    from_pytorch3d_quaternion,
    matrix_to_rt,
    pose_from_quat_trans,
    pose_from_tum,
    pose_to_quat_trans,
    pose_to_tum,
    quat_to_rotmat,
    quat_to_rotvec,
    rotmat_to_quat,
    rotvec_to_quat,
    rt_to_matrix,
    screw_exp,
    screw_log,
    se3_exp_map_pytorch3d,
    se3_log_map_pytorch3d,
    so3_left_jacobian,
    so3_left_jacobian_inv,
    to_pytorch3d_matrix,
    to_pytorch3d_quaternion,
)

from .conftest import DEVICES, TOL
from .strategies import batch_sizes, dtypes, seeds

F64, F32 = torch.float64, torch.float32
HAS_PYTORCH3D = importlib.util.find_spec("pytorch3d") is not None

#: Rotation angles at the numerical edges: identity, tiny, series/closed-form switch, cut locus.
EDGE_ANGLES = [0.0, 1e-8, 1e-4, 0.14, 0.2, 1.0, 2.0, math.pi - 1e-6, math.pi]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_quats(b: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    q = torch.randn(b, 4, generator=gen(seed), dtype=F64)
    return (q / q.norm(dim=-1, keepdim=True)).to(dtype)


def rotvecs(b: int, seed: int, dtype: torch.dtype, angle: float | None = None) -> torch.Tensor:
    # an offset stream, so that vectors drawn from gen(seed) in a test are not along the axes
    g = gen(seed + 1_000_003)
    axis = torch.randn(b, 3, generator=g, dtype=F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    if angle is None:
        ang = torch.rand(b, 1, generator=g, dtype=F64) * math.pi
    else:
        ang = torch.full((b, 1), angle, dtype=F64)
    return (axis * ang).to(dtype)


def rot_z(theta: float, dtype=F64) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def hamilton_rotmat(w, x, y, z) -> torch.Tensor:
    """R = (w^2 - |v|^2) I + 2 v v^T + 2 w hat(v), written out independently of the library."""
    n2 = x * x + y * y + z * z
    d = w * w - n2
    return torch.tensor(
        [
            [d + 2 * x * x, 2 * x * y - 2 * w * z, 2 * x * z + 2 * w * y],
            [2 * x * y + 2 * w * z, d + 2 * y * y, 2 * y * z - 2 * w * x],
            [2 * x * z - 2 * w * y, 2 * y * z + 2 * w * x, d + 2 * z * z],
        ],
        dtype=F64,
    )


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> bool:
    tol = TOL[dtype]
    return torch.allclose(a, b, atol=tol["atol"] * scale, rtol=tol["rtol"] * scale)


def same_up_to_sign(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    d = torch.minimum((a - b).abs().amax(-1), (a + b).abs().amax(-1))
    return bool((d <= 10 * TOL[dtype]["atol"]).all())


def swap(q: torch.Tensor, to_first: bool) -> torch.Tensor:
    return roma.quat_xyzw_to_wxyz(q) if to_first else roma.quat_wxyz_to_xyzw(q)


# ------------------------------------------------------------------------------- quaternions


@given(seed=seeds, dtype=dtypes, b=batch_sizes, first=st.booleans())
def test_quat_rotmat_round_trip(seed, dtype, b, first):
    xyzw = unit_quats(b, seed, dtype)
    q = swap(xyzw, True) if first else xyzw
    r = quat_to_rotmat(q, scalar_first=first)
    assert r.dtype == dtype and r.shape == (b, 3, 3)
    # q and -q are the same rotation
    assert close(quat_to_rotmat(-q, scalar_first=first), r, dtype)
    back = rotmat_to_quat(r, scalar_first=first)
    w = back[..., 0] if first else back[..., 3]
    assert bool((w >= 0).all())
    assert close(back, canonical_quat(q, scalar_first=first), dtype, scale=10)
    assert close(back.norm(dim=-1), torch.ones(b, dtype=dtype), dtype)


@given(seed=seeds, dtype=dtypes, b=batch_sizes)
def test_agrees_with_roma(seed, dtype, b):
    xyzw = unit_quats(b, seed, dtype)
    wxyz = roma.quat_xyzw_to_wxyz(xyzw)
    r = roma.unitquat_to_rotmat(xyzw)
    assert close(quat_to_rotmat(xyzw, scalar_first=False), r, dtype)
    assert close(quat_to_rotmat(wxyz, scalar_first=True), r, dtype)
    assert same_up_to_sign(rotmat_to_quat(r, scalar_first=False), roma.rotmat_to_unitquat(r), dtype)
    w = roma.unitquat_to_rotvec(xyzw, shortest_arc=True)
    assert close(quat_to_rotvec(xyzw, scalar_first=False), w, dtype, scale=10)
    assert close(quat_to_rotvec(wxyz, scalar_first=True), w, dtype, scale=10)
    assert same_up_to_sign(rotvec_to_quat(w, scalar_first=False), roma.rotvec_to_unitquat(w), dtype)


def test_hand_computed_quaternions():
    c, s = math.cos(0.35), math.sin(0.35)  # rotation by 0.7 about z
    r = rot_z(0.7)
    assert torch.allclose(
        quat_to_rotmat(torch.tensor([c, 0, 0, s], dtype=F64), scalar_first=True), r
    )
    assert torch.allclose(
        quat_to_rotmat(torch.tensor([0, 0, s, c], dtype=F64), scalar_first=False), r
    )
    assert torch.allclose(
        rotmat_to_quat(r, scalar_first=True), torch.tensor([c, 0, 0, s], dtype=F64)
    )
    assert torch.allclose(
        rotmat_to_quat(r, scalar_first=False), torch.tensor([0, 0, s, c], dtype=F64)
    )
    # a generic quaternion against the Hamilton formula written out in this file
    w, x, y, z = 0.3, -0.5, 0.7, 0.4
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    want = hamilton_rotmat(w, x, y, z)
    got = quat_to_rotmat(torch.tensor([w, x, y, z], dtype=F64), scalar_first=True)
    assert torch.allclose(got, want)
    # the two orders of the same numbers are different rotations (why the order is required)
    other = quat_to_rotmat(torch.tensor([w, x, y, z], dtype=F64), scalar_first=False)
    assert (other - want).abs().max() > 0.1


def test_canonical_sign_at_pi():
    # scalar part exactly 0: the largest-magnitude component of the vector part is made positive
    q = torch.tensor([[0.0, -0.6, 0.8, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, -0.6, 0.6, 0.0]])
    got = canonical_quat(q, scalar_first=True)
    want = torch.tensor([[0.0, -0.6, 0.8, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.6, -0.6, 0.0]])
    assert torch.equal(got, want)
    assert not torch.signbit(got[got == 0]).any()  # no negative zeros
    # rotation matrices at angle pi
    for dtype in (F32, F64):
        r = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype))
        assert torch.equal(
            rotmat_to_quat(r, scalar_first=True), torch.tensor([0, 1.0, 0, 0], dtype=dtype)
        )
        r = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=dtype))
        assert torch.equal(
            rotmat_to_quat(r, scalar_first=False), torch.tensor([0, 0, 1.0, 0], dtype=dtype)
        )


@given(seed=seeds, dtype=dtypes, first=st.booleans())
def test_canonical_is_idempotent_and_sign_invariant(seed, dtype, first):
    q = unit_quats(5, seed, dtype)
    c = canonical_quat(q, scalar_first=first)
    assert torch.equal(canonical_quat(c, scalar_first=first), c)
    assert torch.equal(canonical_quat(-q, scalar_first=first), c)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("angle", EDGE_ANGLES)
def test_rotvec_quat_round_trip_at_edges(dtype, angle):
    w = rotvecs(6, 3, dtype, angle).requires_grad_(True)
    for first in (True, False):
        q = rotvec_to_quat(w, scalar_first=first)
        back = quat_to_rotvec(q, scalar_first=first)
        if angle < 3.0:
            scale = 10.0 if dtype == F32 and angle > 1.5 else 1.0
            assert close(back, w.detach(), dtype, scale=scale)
            if 0 < angle < 1e-3:  # relative precision at small angles, also in float32
                rel = ((back - w).norm(dim=-1) / w.norm(dim=-1)).max()
                assert rel < 1e-6
        else:  # at pi the axis sign may flip; the rotation is the same
            assert close(rotvec_to_rotmat(back), rotvec_to_rotmat(w.detach()), dtype, scale=100)
        # the same vector as so3's logarithm of the matrix (one convention at pi)
        r = rotvec_to_rotmat(w.detach())
        assert torch.allclose(
            quat_to_rotvec(rotmat_to_quat(r, scalar_first=first), scalar_first=first),
            rotmat_to_rotvec(r),
            atol=TOL[dtype]["atol"],
        )
        (grad,) = torch.autograd.grad(back.sum() + q.sum(), w)
        assert torch.isfinite(grad).all()
        r = quat_to_rotmat(rotvec_to_quat(w, scalar_first=first), scalar_first=first)
        (grad,) = torch.autograd.grad(rotmat_to_quat(r, scalar_first=first).sum(), w)
        assert torch.isfinite(grad).all()


def test_quaternion_gradcheck():
    for scale in (1e-5, 0.3, 2.0):  # series and closed forms
        w = rotvecs(4, 11, F64) * scale
        w.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a: rotvec_to_quat(a, scalar_first=True), (w,))
        assert torch.autograd.gradcheck(
            lambda a: quat_to_rotvec(rotvec_to_quat(a, scalar_first=False), scalar_first=False),
            (w,),
        )
    q = unit_quats(4, 12, F64).requires_grad_(True)
    with mfm.checks(values=False):  # gradcheck perturbs q off the unit sphere
        assert torch.autograd.gradcheck(lambda a: quat_to_rotmat(a, scalar_first=True), (q,))


def test_quat_validation():
    q = torch.tensor([0.0, 0.0, 0.0, 1.1])
    with pytest.raises(ValueError, match=r"unit quaternions.*normalize=True"):
        quat_to_rotmat(q, scalar_first=False)
    assert torch.allclose(quat_to_rotmat(q, scalar_first=False, normalize=True), torch.eye(3))
    with mfm.checks(values=False):  # checks off: no error, still normalised
        assert torch.allclose(quat_to_rotmat(q, scalar_first=False), torch.eye(3))
    with pytest.raises(ValueError, match="zero quaternion"):
        quat_to_rotmat(torch.zeros(2, 4), scalar_first=True, normalize=True)
    with pytest.raises(ValueError, match="non-finite"):
        quat_to_rotvec(torch.tensor([math.nan, 0.0, 0.0, 1.0]), scalar_first=True, normalize=True)
    with pytest.raises(TypeError, match="scalar_first"):
        quat_to_rotmat(torch.tensor([1.0, 0, 0, 0]))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="scalar_first must be True"):
        quat_to_rotmat(torch.tensor([1.0, 0, 0, 0]), scalar_first="wxyz")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        quat_to_rotmat(torch.ones(3), scalar_first=True)
    with pytest.raises(TypeError, match="floating-point"):
        quat_to_rotmat(torch.tensor([1, 0, 0, 0]), scalar_first=True)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        rotmat_to_quat([[1.0]], scalar_first=True)  # type: ignore[arg-type]


def test_rotmat_validation():
    with pytest.raises(ValueError, match="reflection"):
        rotmat_to_quat(torch.diag(torch.tensor([1.0, 1.0, -1.0])), scalar_first=True)
    with pytest.raises(ValueError, match="not orthonormal"):
        rotmat_to_quat(1.01 * torch.eye(3), scalar_first=True)
    bad = torch.eye(3).repeat(3, 1, 1)
    bad[1, 0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        rotmat_to_quat(bad, scalar_first=False)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        rotmat_to_quat(torch.eye(4), scalar_first=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_shapes_dtype_device(device, dtype):
    q = unit_quats(6, 1, dtype).reshape(2, 3, 4).to(device)
    r = quat_to_rotmat(q, scalar_first=True)
    assert r.shape == (2, 3, 3, 3) and r.dtype == dtype and r.device == q.device
    assert rotmat_to_quat(r, scalar_first=True).shape == (2, 3, 4)
    w = quat_to_rotvec(q, scalar_first=True)
    assert w.shape == (2, 3, 3) and w.device == q.device
    t = torch.zeros(2, 3, 3, dtype=dtype, device=device)
    m = rt_to_matrix(r, t)
    assert m.shape == (2, 3, 4, 4) and m.device == q.device
    assert se3_log_map_pytorch3d(to_pytorch3d_matrix(m)).shape == (2, 3, 6)
    assert se3_exp_map_pytorch3d(torch.zeros(2, 3, 6, dtype=dtype, device=device)).shape == (
        2,
        3,
        4,
        4,
    )
    # empty batches
    assert quat_to_rotmat(q[:0], scalar_first=True).shape == (0, 3, 3, 3)
    assert rotmat_to_quat(r[:0], scalar_first=False).shape == (0, 3, 4)
    assert matrix_to_rt(m[:0])[0].shape == (0, 3, 3, 3)


# ------------------------------------------------------------------------------- poses


@given(seed=seeds, dtype=dtypes, b=batch_sizes)
def test_rt_matrix_round_trip_and_action(seed, dtype, b):
    g = gen(seed)
    r = rotvec_to_rotmat(rotvecs(b, seed, dtype))
    t = torch.randn(b, 3, generator=g, dtype=F64).to(dtype)
    m = rt_to_matrix(r, t)
    r2, t2 = matrix_to_rt(m)
    assert torch.equal(r2, r) and torch.equal(t2, t)
    x = torch.randn(b, 3, generator=g, dtype=F64).to(dtype)
    xh = torch.cat([x, torch.ones(b, 1, dtype=dtype)], -1)
    want = (r @ x[..., None])[..., 0] + t
    assert close((m @ xh[..., None])[..., 0], torch.cat([want, xh[..., 3:]], -1), dtype)


@given(seed=seeds, dtype=dtypes, b=batch_sizes, first=st.booleans())
def test_pose_quat_trans_round_trip(seed, dtype, b, first):
    xyzw = unit_quats(b, seed, dtype)
    q = canonical_quat(swap(xyzw, True) if first else xyzw, scalar_first=first)
    t = torch.randn(b, 3, generator=gen(seed + 1), dtype=F64).to(dtype)
    m = pose_from_quat_trans(q, t, scalar_first=first)
    q2, t2 = pose_to_quat_trans(m, scalar_first=first)
    assert close(q2, q, dtype, scale=10) and torch.equal(t2, t)
    tum = torch.cat([t, xyzw], -1)
    assert close(pose_from_tum(tum), pose_from_quat_trans(xyzw, t, scalar_first=False), dtype)
    assert close(
        pose_to_tum(pose_from_tum(tum)),
        torch.cat([t, canonical_quat(xyzw, scalar_first=False)], -1),
        dtype,
        scale=10,
    )


def test_rt_to_matrix_broadcasts():
    r = rotvec_to_rotmat(rotvecs(4, 0, F64)).reshape(4, 1, 3, 3)
    t = torch.randn(5, 3, generator=gen(0), dtype=F64)
    m = rt_to_matrix(r, t)
    assert m.shape == (4, 5, 4, 4)
    assert torch.equal(m[2, 3, :3, :3], r[2, 0]) and torch.equal(m[2, 3, :3, 3], t[3])
    assert torch.equal(m[..., 3, :], torch.tensor([0, 0, 0, 1.0], dtype=F64).expand(4, 5, 4))
    with pytest.raises(ValueError, match="do not broadcast"):
        rt_to_matrix(r.reshape(4, 3, 3), t)
    with pytest.raises(ValueError, match="dtype"):
        rt_to_matrix(r, t.float())


def test_pose_validation():
    m = torch.eye(4)
    m[3, 0] = 1.0  # row-vector translation
    with pytest.raises(ValueError, match=r"bottom row \(0, 0, 0, 1\).*from_pytorch3d_matrix"):
        matrix_to_rt(m)
    refl = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="reflection"):
        matrix_to_rt(refl)
    shear = torch.eye(4)
    shear[0, 1] = 0.1
    with pytest.raises(ValueError, match="not orthonormal"):
        screw_log(shear)
    nan = torch.eye(4).repeat(2, 1, 1)
    nan[1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        matrix_to_rt(nan)
    with pytest.raises(ValueError, match="non-finite"):
        rt_to_matrix(torch.eye(3), torch.tensor([0.0, math.inf, 0.0]))
    with pytest.raises(ValueError, match="reflection"):
        rt_to_matrix(-torch.eye(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4, 4\)"):
        matrix_to_rt(torch.eye(3))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 7\)"):
        pose_from_tum(torch.zeros(8))
    # small float32 rounding passes
    r = rotvec_to_rotmat(rotvecs(100, 5, F32))
    matrix_to_rt(rt_to_matrix(r, torch.zeros(100, 3)))


# ------------------------------------------------------------------------------- screw motions


def v_by_quadrature(w: torch.Tensor, n: int = 24) -> torch.Tensor:
    """V(w) = integral_0^1 exp(s hat(w)) ds by Gauss-Legendre with torch.linalg.matrix_exp."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    s = torch.tensor((nodes + 1) / 2, dtype=F64)
    wt = torch.tensor(weights / 2, dtype=F64)
    k = torch.zeros(*w.shape[:-1], 3, 3, dtype=F64)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
    k = k - k.mT
    e = torch.linalg.matrix_exp(s[:, None, None, None] * k)  # (n, ..., 3, 3)
    return (wt[:, None, None, None] * e).sum(0)


@given(seed=seeds, b=batch_sizes, scale=st.sampled_from([1e-6, 0.1, 0.3, 1.0, 3.0]))
@example(seed=5, b=5, scale=3.0)  # an angle of 2 pi + 0.025: the inverse's entries near 200
def test_left_jacobian_against_quadrature(seed, b, scale):
    w = rotvecs(b, seed, F64) * scale
    v = so3_left_jacobian(w)
    assert torch.allclose(v, v_by_quadrature(w), atol=1e-12)
    eye = torch.eye(3, dtype=F64).expand(b, 3, 3)
    assert torch.allclose(so3_left_jacobian_inv(w) @ v, eye, atol=1e-12)
    # float32: same values to float32 precision on both sides of the series switch
    v32 = so3_left_jacobian(w.float())
    assert torch.allclose(v32.double(), v, atol=2e-6)
    # the inverse grows without bound towards angles of 2 pi (reached at scale 3): its float32
    # error is judged relative to its size
    err = (so3_left_jacobian_inv(w.float()).double() @ v - eye).abs().amax((-1, -2))
    size = so3_left_jacobian_inv(w).abs().amax((-1, -2)).clamp_min(1.0)
    assert bool((err <= 2e-6 * size).all()), (err, size)


@given(seed=seeds, b=batch_sizes, dtype=dtypes)
def test_screw_exp_is_matrix_exponential(seed, b, dtype):
    g = gen(seed)
    w = rotvecs(b, seed, F64) * 0.98  # angles below pi, where log inverts exp
    v = torch.randn(b, 3, generator=g, dtype=F64)
    xi = torch.zeros(b, 4, 4, dtype=F64)
    k = torch.zeros(b, 3, 3, dtype=F64)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
    xi[..., :3, :3] = k - k.mT
    xi[..., :3, 3] = v
    want = torch.linalg.matrix_exp(xi)
    got = screw_exp(w.to(dtype), v.to(dtype))
    assert got.dtype == dtype
    assert close(got.double(), want, dtype, scale=10)
    w2, v2 = screw_log(got)
    assert close(w2.double(), w, dtype, scale=10) and close(v2.double(), v, dtype, scale=10)


def test_screw_hand_computed():
    # half a turn about z while moving one unit along x: t = V v = (0, 2/pi, 0)
    m = screw_exp(
        torch.tensor([0.0, 0.0, math.pi], dtype=F64), torch.tensor([1.0, 0, 0], dtype=F64)
    )
    assert torch.allclose(m[:3, 3], torch.tensor([0.0, 2 / math.pi, 0.0], dtype=F64))
    assert torch.allclose(m[:3, :3], rot_z(math.pi), atol=1e-15)
    # pure translation twists are translations, pure rotation twists rotations
    m = screw_exp(torch.zeros(3, dtype=F64), torch.tensor([1.0, -2.0, 0.5], dtype=F64))
    assert torch.equal(
        m, rt_to_matrix(torch.eye(3, dtype=F64), torch.tensor([1.0, -2.0, 0.5], dtype=F64))
    )


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("angle", EDGE_ANGLES)
def test_screw_log_exp_at_edges(dtype, angle):
    w = rotvecs(5, 8, dtype, angle)
    v = torch.randn(5, 3, generator=gen(8), dtype=F64).to(dtype)
    w.requires_grad_(True)
    v.requires_grad_(True)
    m = screw_exp(w, v)
    w2, v2 = screw_log(m)
    m2 = screw_exp(w2, v2)
    assert close(m2, m, dtype, scale=100)  # exp(log(m)) = m even at pi
    if angle < 3.0:
        assert close(w2, w, dtype, scale=10) and close(v2, v, dtype, scale=10)
        if 0 < angle < 1e-3:  # small rotations keep their relative precision
            rel = ((w2 - w).norm(dim=-1) / w.norm(dim=-1)).max()
            assert rel < 1e-6
    gw, gv = torch.autograd.grad(w2.sum() + v2.sum() + m2.sum(), (w, v))
    assert torch.isfinite(gw).all() and torch.isfinite(gv).all()


def test_screw_log_gradient_at_identity_and_pi():
    for r in (torch.eye(3, dtype=F64), torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))):
        m = rt_to_matrix(r, torch.tensor([0.3, -0.2, 0.1], dtype=F64)).requires_grad_(True)
        w, v = screw_log(m)
        (g,) = torch.autograd.grad(w.sum() + v.sum(), m)
        assert torch.isfinite(g).all()
        (g,) = torch.autograd.grad(se3_log_map_pytorch3d(m.mT).sum(), m)
        assert torch.isfinite(g).all()


def test_screw_gradcheck():
    for scale in (1e-4, 0.5, 2.5):
        w = (rotvecs(3, 2, F64) * scale).requires_grad_(True)
        v = torch.randn(3, 3, generator=gen(2), dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(screw_exp, (w, v))
        assert torch.autograd.gradcheck(so3_left_jacobian, (w,))
        assert torch.autograd.gradcheck(so3_left_jacobian_inv, (w,))
        with mfm.checks(values=False):
            assert torch.autograd.gradcheck(lambda a, b: screw_log(screw_exp(a, b)), (w, v))


# ------------------------------------------------------------------------------- pytorch3d


def test_pytorch3d_matrix_fixture():
    theta = 0.7
    c, s = math.cos(theta), math.sin(theta)
    ours = rt_to_matrix(rot_z(theta), torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    # row-vector convention written out by hand: [x, 1] @ M = [R x + t, 1]
    row = torch.tensor([[c, s, 0, 0], [-s, c, 0, 0], [0, 0, 1, 0], [1, 2, 3, 1]], dtype=F64)
    assert torch.allclose(to_pytorch3d_matrix(ours), row)
    assert torch.allclose(from_pytorch3d_matrix(row), ours)
    x = torch.tensor([0.5, -1.0, 2.0, 1.0], dtype=F64)
    assert torch.allclose(x @ row, ours @ x)
    # the quaternion of the same rotation, scalar first
    q = to_pytorch3d_quaternion(rot_z(theta))
    assert torch.allclose(
        q, torch.tensor([math.cos(theta / 2), 0, 0, math.sin(theta / 2)], dtype=F64)
    )
    assert torch.allclose(from_pytorch3d_quaternion(3.0 * q), rot_z(theta))


@given(seed=seeds, dtype=dtypes, b=batch_sizes)
def test_pytorch3d_transposition(seed, dtype, b):
    g = gen(seed)
    w = rotvecs(b, seed, dtype)
    t = torch.randn(b, 3, generator=g, dtype=F64).to(dtype)
    m = rt_to_matrix(rotvec_to_rotmat(w), t)
    p = to_pytorch3d_matrix(m)
    assert torch.equal(p, m.mT) and p.is_contiguous()
    assert torch.equal(from_pytorch3d_matrix(p), m)
    x = torch.randn(b, 6, generator=g, dtype=F64).to(dtype)
    assert torch.equal(se3_exp_map_pytorch3d(x), screw_exp(x[..., 3:], x[..., :3]).mT)
    log = se3_log_map_pytorch3d(p)
    wl, vl = screw_log(m)
    assert torch.equal(log, torch.cat([vl, wl], -1))


def test_pytorch3d_exp_map_fixtures():
    # pure translation twist: the translation, in the last row
    m = se3_exp_map_pytorch3d(torch.tensor([[1.0, -2.0, 0.5, 0.0, 0.0, 0.0]], dtype=F64))
    want = torch.eye(4, dtype=F64)
    want[3, :3] = torch.tensor([1.0, -2.0, 0.5])
    assert torch.equal(m[0], want)
    # pure rotation twist about z by 0.7: R^T in the top-left block
    m = se3_exp_map_pytorch3d(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.7], dtype=F64))
    want = torch.eye(4, dtype=F64)
    want[:3, :3] = rot_z(0.7).T
    assert torch.allclose(m, want, atol=1e-15)
    # translation part is V^-1 t, not t
    x = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, math.pi], dtype=F64)
    assert torch.allclose(
        se3_exp_map_pytorch3d(x)[3, :3], torch.tensor([0, 2 / math.pi, 0], dtype=F64)
    )
    back = se3_log_map_pytorch3d(se3_exp_map_pytorch3d(x))
    assert torch.allclose(rotvec_to_rotmat(back[3:]), rot_z(math.pi), atol=1e-12)
    assert torch.allclose(se3_exp_map_pytorch3d(back), se3_exp_map_pytorch3d(x), atol=1e-12)


@given(seed=seeds, dtype=dtypes, b=batch_sizes)
@example(seed=0, dtype=F32, b=1)
def test_pytorch3d_exp_log_round_trips(seed, dtype, b):
    g = gen(seed)
    x = torch.cat([torch.randn(b, 3, generator=g, dtype=F64), rotvecs(b, seed, F64) * 0.99], -1).to(
        dtype
    )
    m = se3_exp_map_pytorch3d(x)
    assert close(se3_log_map_pytorch3d(m), x, dtype, scale=10)
    assert close(se3_exp_map_pytorch3d(se3_log_map_pytorch3d(m)), m, dtype, scale=10)
    # the row-vector matrix acts on row vectors as our matrix does on columns
    pts = torch.randn(b, 3, generator=g, dtype=F64).to(dtype)
    ph = torch.cat([pts, torch.ones(b, 1, dtype=dtype)], -1)
    ours = from_pytorch3d_matrix(m)
    assert close((ph[:, None, :] @ m)[:, 0], (ours @ ph[..., None])[..., 0], dtype)


def test_pytorch3d_validation():
    col = rt_to_matrix(torch.eye(3), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"last column.*column-vector convention"):
        from_pytorch3d_matrix(col)
    with pytest.raises(ValueError, match="last column"):
        se3_log_map_pytorch3d(col)
    with pytest.raises(ValueError, match="bottom row"):
        to_pytorch3d_matrix(col.mT)
    with pytest.raises(ValueError, match="reflection"):
        from_pytorch3d_matrix(torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 6\)"):
        se3_exp_map_pytorch3d(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="unit quaternions"):
        from_pytorch3d_quaternion(torch.tensor([2.0, 0, 0, 0]), normalize=False)


@pytest.mark.skipif(not HAS_PYTORCH3D, reason="pytorch3d is not installed")
def test_against_pytorch3d():  # pragma: no cover - runs only where pytorch3d is installed
    from pytorch3d import transforms as p3d

    g = gen(4)
    x = torch.cat([torch.randn(16, 3, generator=g, dtype=F64), rotvecs(16, 4, F64) * 0.9], -1)
    assert torch.allclose(se3_exp_map_pytorch3d(x), p3d.se3_exp_map(x), atol=1e-6)
    m = p3d.se3_exp_map(x)
    assert torch.allclose(se3_log_map_pytorch3d(m), p3d.se3_log_map(m), atol=1e-4)
    r = rotvec_to_rotmat(x[:, 3:])
    assert torch.allclose(to_pytorch3d_quaternion(r), p3d.matrix_to_quaternion(r), atol=1e-9)
    q = p3d.random_quaternions(16, dtype=F64)
    assert torch.allclose(from_pytorch3d_quaternion(q), p3d.quaternion_to_matrix(q), atol=1e-12)
    t = p3d.Transform3d(matrix=to_pytorch3d_matrix(rt_to_matrix(r, x[:, :3])), dtype=F64)
    pts = torch.randn(16, 5, 3, generator=g, dtype=F64)
    want = (r[:, None] @ pts[..., None])[..., 0] + x[:, None, :3]
    assert torch.allclose(t.transform_points(pts), want, atol=1e-12)
