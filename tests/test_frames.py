"""Protein backbone frames: atoms <-> frames, ideal geometry, masks, centring, PDB output.

The reference structure is an ideal alpha helix built here by NeRF (phi/psi = -57/-47 degrees,
trans peptides) with the library's ideal bond lengths and angles, so frames taken from it must
reproduce its N, CA and C atoms exactly.
"""

from __future__ import annotations

import io
import math

import pytest
import roma
import torch
from hypothesis import example, given

import manifoldfm as mfm
from manifoldfm import frames as fr
from manifoldfm.frames import (
    ANGSTROM_PER_NM,
    BACKBONE_ATOMS,
    centre,
    from_backbone,
    scale_translations,
    to_backbone,
    write_pdb,
)
from manifoldfm.manifolds import SE3
from manifoldfm.manifolds.so3 import rotvec_to_rotmat

from .conftest import DEVICES
from .strategies import dtypes, seeds

F64 = torch.float64
ANGLE_C_N_CA = 121.7  # degrees; only used to build the test helix


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _place(a, b, c, bond: float, angle_deg: float, torsion_deg: float) -> torch.Tensor:
    """Atom d with |cd| = bond, angle b-c-d and dihedral a-b-c-d (NeRF)."""
    bc = (c - b) / (c - b).norm()
    nrm = torch.linalg.cross(b - a, bc)
    nrm = nrm / nrm.norm()
    m = torch.linalg.cross(nrm, bc)
    th, ph = math.radians(angle_deg), math.radians(torsion_deg)
    return c + bond * (
        -math.cos(th) * bc + math.sin(th) * math.cos(ph) * m + math.sin(th) * math.sin(ph) * nrm
    )


def _dihedral(a, b, c, d) -> torch.Tensor:
    """IUPAC dihedral angle a-b-c-d in degrees (atan2 form)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1u = b1 / b1.norm(dim=-1, keepdim=True)
    v = b0 - (b0 * b1u).sum(-1, keepdim=True) * b1u
    w = b2 - (b2 * b1u).sum(-1, keepdim=True) * b1u
    x = (v * w).sum(-1)
    y = (torch.linalg.cross(b1u, v) * w).sum(-1)
    return torch.rad2deg(torch.atan2(y, x))


def _angle(a, b, c) -> torch.Tensor:
    """Angle a-b-c in degrees (atan2 form)."""
    u, v = a - b, c - b
    return torch.rad2deg(torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(-1)))


def _helix(n_res: int, phi: float = -57.0, psi: float = -47.0, omega: float = 180.0):
    """(N, CA, C) of an ideal chain, each (n_res, 3) float64."""
    n = [torch.zeros(3, dtype=F64)]
    ca = [torch.tensor([fr.BOND_N_CA, 0.0, 0.0], dtype=F64)]
    th = math.radians(180.0 - fr.ANGLE_N_CA_C)
    c = [ca[0] + fr.BOND_CA_C * torch.tensor([math.cos(th), math.sin(th), 0.0], dtype=F64)]
    for _ in range(n_res - 1):
        n.append(_place(n[-1], ca[-1], c[-1], fr.BOND_C_N, fr.ANGLE_CA_C_N, psi))
        ca.append(_place(ca[-1], c[-1], n[-1], fr.BOND_N_CA, ANGLE_C_N_CA, omega))
        c.append(_place(c[-1], n[-1], ca[-1], fr.BOND_CA_C, fr.ANGLE_N_CA_C, phi))
    return torch.stack(n), torch.stack(ca), torch.stack(c)


def _random_rigid(seed: int, dtype=F64, shape=()):
    g = _gen(seed)
    q = torch.randn(*shape, 4, generator=g, dtype=F64)
    r = roma.unitquat_to_rotmat(q / q.norm(dim=-1, keepdim=True))
    t = 10.0 * torch.randn(*shape, 3, generator=g, dtype=F64)
    return r.to(dtype), t.to(dtype)


def _frames_of(r, t):
    f = torch.zeros((*r.shape[:-2], 4, 4), dtype=r.dtype)
    f[..., :3, :3] = r
    f[..., :3, 3] = t
    f[..., 3, 3] = 1.0
    return f


# ----------------------------------------------------------------------------- the test helix


def test_helix_builder_has_the_requested_geometry():
    n, ca, c = _helix(8)
    phi = _dihedral(c[:-1], n[1:], ca[1:], c[1:])
    psi = _dihedral(n[:-1], ca[:-1], c[:-1], n[1:])
    omega = _dihedral(ca[:-1], c[:-1], n[1:], ca[1:])
    assert torch.allclose(phi, torch.full_like(phi, -57.0), atol=1e-9)
    assert torch.allclose(psi, torch.full_like(psi, -47.0), atol=1e-9)
    assert torch.allclose(omega.abs(), torch.full_like(omega, 180.0), atol=1e-9)
    # An alpha helix: about 3.6 residues per turn, 1.5 Angstrom rise, CA(i)-CA(i+3) ~ 5 Angstrom.
    rise = (ca[4:] - ca[:-4]).norm(dim=-1)
    assert torch.all((rise > 5.8) & (rise < 6.6))


def test_ideal_constants():
    assert math.hypot(*fr.LOCAL_N) == pytest.approx(1.458, abs=1e-12)
    assert math.degrees(math.atan2(fr.LOCAL_N[1], fr.LOCAL_N[0])) == pytest.approx(111.0)
    assert fr.LOCAL_N[2] == 0.0 and fr.LOCAL_N[1] > 0
    assert fr.LOCAL_C == (1.525, 0.0, 0.0)
    # Within 0.005 Angstrom of AlphaFold's literature positions.
    assert math.dist(fr.LOCAL_N, (-0.525, 1.363, 0.0)) < 5e-3
    assert math.dist(fr.LOCAL_C, (1.526, 0.0, 0.0)) < 5e-3
    assert BACKBONE_ATOMS == ("N", "CA", "C", "O")
    assert ANGSTROM_PER_NM == 10.0


# ----------------------------------------------------------------------------- from_backbone


def test_frame_convention_c_on_x_axis_n_in_xy_plane():
    n, ca, c = _helix(6)
    f = from_backbone(n, ca, c)
    r, t = f[..., :3, :3], f[..., :3, 3]
    assert torch.equal(t, ca)
    c_loc = (r.mT @ (c - ca)[..., None])[..., 0]
    n_loc = (r.mT @ (n - ca)[..., None])[..., 0]
    assert torch.allclose(c_loc, torch.tensor([fr.BOND_CA_C, 0.0, 0.0], dtype=F64), atol=1e-12)
    assert torch.allclose(n_loc, torch.tensor(fr.LOCAL_N, dtype=F64), atol=1e-12)
    assert torch.all(f[..., 3, :] == torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64))


@given(seed=seeds, dtype=dtypes)
@example(seed=0, dtype=torch.float32)
def test_frames_are_proper_rotations(seed, dtype):
    g = _gen(seed)
    n, ca, c = (torch.randn(3, 5, 3, generator=g, dtype=F64).to(dtype) for _ in range(3))
    f = from_backbone(n, ca, c)
    assert f.dtype == dtype and f.shape == (3, 5, 4, 4)
    r = f[..., :3, :3]
    tol = 1e-10 if dtype == F64 else 1e-5
    eye = torch.eye(3, dtype=dtype)
    assert (r.mT @ r - eye).abs().max() < tol
    assert (torch.linalg.det(r) - 1).abs().max() < tol


@given(seed=seeds, dtype=dtypes)
@example(seed=1, dtype=F64)
def test_rigid_motion_equivariance(seed, dtype):
    n, ca, c = (x.to(dtype) for x in _helix(7))
    q, s = _random_rigid(seed, dtype)
    moved = [x @ q.mT + s for x in (n, ca, c)]
    expected = _frames_of(q, s) @ from_backbone(n, ca, c)
    tol = 1e-9 if dtype == F64 else 2e-4
    assert torch.allclose(from_backbone(*moved), expected, atol=tol, rtol=0)
    # and back: moving the frames moves the atoms
    atoms = to_backbone(from_backbone(n, ca, c))
    assert torch.allclose(to_backbone(expected), atoms @ q.mT + s, atol=tol, rtol=0)


def test_from_backbone_to_backbone_recovers_ideal_atoms():
    n, ca, c = _helix(12)
    atoms = to_backbone(from_backbone(n, ca, c))
    assert atoms.shape == (12, 4, 3)
    for k, x in enumerate((n, ca, c)):
        assert (atoms[:, k] - x).abs().max() < 1e-5
        assert (atoms[:, k] - x).abs().max() < 1e-12  # float64: exact up to rounding


@given(seed=seeds, dtype=dtypes)
@example(seed=3, dtype=torch.float32)
def test_to_backbone_from_backbone_round_trip(seed, dtype):
    r, t = _random_rigid(seed, dtype, shape=(2, 6))
    f = _frames_of(r, t)
    atoms = to_backbone(f)
    back = from_backbone(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :])
    tol = 1e-10 if dtype == F64 else 5e-5
    assert (back - f).abs().max() < tol


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("angle", [0.0, 1e-8, math.pi - 1e-6, math.pi])
def test_round_trip_at_rotation_angle_edges(angle, dtype):
    axis = torch.tensor([0.6, -0.8, 0.0], dtype=F64)
    r = rotvec_to_rotmat(angle * axis).to(dtype)
    f = _frames_of(r.expand(3, 3, 3), torch.tensor([0.0, 3.8, -7.6], dtype=dtype)[:, None] * 1.0)
    atoms = to_backbone(f)
    back = from_backbone(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :])
    tol = 1e-12 if dtype == F64 else 2e-6
    assert (back - f).abs().max() < tol
    assert torch.isfinite(atoms).all()


def test_gradients_are_finite_and_masked_residues_get_none():
    n, ca, c = (x.clone().requires_grad_(True) for x in _helix(5))
    mask = torch.tensor([True, True, False, True, True])
    with torch.no_grad():
        n[2] = float("nan")
        ca[2] = float("nan")
    f = from_backbone(n, ca, c, mask=mask)
    (f.square().sum() + to_backbone(f, mask=mask).square().sum()).backward()
    for x in (n, ca, c):
        assert torch.isfinite(x.grad).all()
        assert torch.all(x.grad[2] == 0)


# ----------------------------------------------------------------------------- to_backbone geometry


def test_to_backbone_bond_geometry():
    n, ca, c = _helix(10)
    atoms = to_backbone(from_backbone(n, ca, c))
    an, aca, ac, ao = atoms.unbind(-2)
    assert torch.allclose((an - aca).norm(dim=-1), torch.full((10,), 1.458, dtype=F64))
    assert torch.allclose((ac - aca).norm(dim=-1), torch.full((10,), 1.525, dtype=F64))
    assert torch.allclose(_angle(an, aca, ac), torch.full((10,), 111.0, dtype=F64))
    assert torch.allclose((ac - ao).norm(dim=-1), torch.full((10,), 1.231, dtype=F64))
    assert torch.allclose((an[1:] - ac[:-1]).norm(dim=-1), torch.full((9,), 1.329, dtype=F64))
    # O in the peptide plane, opposite N(i+1) and bisecting: CA-C-O = O-C-N(i+1).
    a1 = _angle(aca[:-1], ac[:-1], ao[:-1])
    a2 = _angle(ao[:-1], ac[:-1], an[1:])
    assert torch.allclose(a1, a2, atol=1e-9)
    assert torch.allclose(a1, torch.full_like(a1, 180.0 - 116.2 / 2), atol=1e-9)
    dih = _dihedral(an[:-1], aca[:-1], ac[:-1], ao[:-1])
    assert torch.allclose(dih, torch.full_like(dih, -47.0 + 180.0), atol=1e-9)
    assert (ao[:, None] - ao[None]).norm(dim=-1)[~torch.eye(10, dtype=torch.bool)].min() > 2.0


def test_terminal_oxygen_is_that_of_an_ideal_continuation():
    n, ca, c = _helix(6)
    longer = to_backbone(from_backbone(n, ca, c))
    short = to_backbone(from_backbone(n[:5], ca[:5], c[:5]), terminal_psi=-47.0)
    assert torch.allclose(short, longer[:5], atol=1e-10)
    default = to_backbone(from_backbone(n[:5], ca[:5], c[:5]))
    assert (default[4, 3] - longer[4, 3]).norm() > 0.5  # default psi 145 differs
    psi_o = _dihedral(default[4, 0], default[4, 1], default[4, 2], default[4, 3])
    assert float(psi_o) == pytest.approx(fr.DEFAULT_TERMINAL_PSI - 180.0, abs=1e-9)
    assert float((default[4, 3] - default[4, 2]).norm()) == pytest.approx(1.231)


def test_single_residue_and_chain_breaks():
    n, ca, c = _helix(6)
    f = from_backbone(n, ca, c)
    one = to_backbone(f[:1])
    assert one.shape == (1, 4, 3) and torch.isfinite(one).all()
    chains = torch.tensor([0, 0, 0, 1, 1, 1])
    split = to_backbone(f, chain_index=chains)
    joined = to_backbone(f)
    assert torch.allclose(split[2], to_backbone(f[:3])[2])  # O of residue 2 is terminal
    assert not torch.allclose(split[2, 3], joined[2, 3])
    assert torch.equal(split[[0, 1, 3, 4, 5]], joined[[0, 1, 3, 4, 5]])


def test_straight_ca_c_n_falls_back_to_terminal_oxygen():
    # Residue 1 placed so that N(1) lies on the extension of CA(0) -> C(0).
    f = torch.eye(4, dtype=F64).repeat(2, 1, 1)
    n1 = torch.tensor([fr.BOND_CA_C + 1.329, 0.0, 0.0], dtype=F64)
    f[1, :3, 3] = n1 - torch.tensor(fr.LOCAL_N, dtype=F64)
    atoms = to_backbone(f)
    assert torch.allclose(atoms[0], to_backbone(f[:1])[0])
    assert torch.isfinite(atoms).all()


# ----------------------------------------------------------------------------- masks


def test_masks_ignore_residues_and_give_identity_or_zeros():
    n, ca, c = _helix(6)
    mask = torch.tensor([[True, True, True, False, True, True], [True] * 6])
    bad = [x.expand(2, 6, 3).clone() for x in (n, ca, c)]
    bad[0][0, 3] = float("nan")
    bad[2][0, 3] = bad[1][0, 3]  # also degenerate: ignored when masked
    f = from_backbone(*bad, mask=mask)
    ref = from_backbone(n, ca, c)
    assert torch.equal(f[0, 3], torch.eye(4, dtype=F64))
    keep = mask[0]
    assert torch.allclose(f[0, keep], ref[keep]) and torch.allclose(f[1], ref)

    atoms = to_backbone(f, mask=mask)
    assert torch.equal(atoms[0, 3], torch.zeros(4, 3, dtype=F64))
    # Residue 2 is followed by a masked residue: its O is terminal.
    assert torch.allclose(atoms[0, 2], to_backbone(ref[:3])[2])
    assert torch.allclose(atoms[1], to_backbone(ref))
    # Masked frames may hold anything (NaN): outputs ignore them.
    f_nan = f.clone()
    f_nan[0, 3] = float("nan")
    assert torch.equal(to_backbone(f_nan, mask=mask), atoms)
    assert torch.equal(from_backbone(n, ca, c, mask=torch.ones(6)), ref)  # float masks


def test_all_masked_is_well_defined():
    n, ca, c = (torch.full((3, 3), float("nan"), dtype=F64) for _ in range(3))
    mask = torch.zeros(3, dtype=torch.bool)
    f = from_backbone(n, ca, c, mask=mask)
    assert torch.equal(f, torch.eye(4, dtype=F64).expand(3, 4, 4))
    assert torch.equal(to_backbone(f, mask=mask), torch.zeros(3, 4, 3, dtype=F64))
    centred, com = centre(f, mask)
    assert torch.equal(com, torch.zeros(3, dtype=F64)) and torch.equal(centred, f)


# ----------------------------------------------------------------------------- centring, units


@given(seed=seeds, dtype=dtypes)
@example(seed=2, dtype=F64)
def test_centre_masked_com_is_zero(seed, dtype):
    g = _gen(seed)
    x = (5.0 + 3.0 * torch.randn(2, 7, 3, generator=g, dtype=F64)).to(dtype)
    mask = torch.rand(2, 7, generator=g) < 0.6
    mask[:, 0] = True
    centred, com = centre(x, mask)
    tol = 1e-12 if dtype == F64 else 1e-5
    new_com = (centred * mask[..., None]).sum(-2) / mask.sum(-1, keepdim=True)
    assert new_com.abs().max() < tol
    assert torch.all(centred[~mask] == 0)
    assert torch.allclose(centred[mask] + com[:, None].expand(2, 7, 3)[mask], x[mask], atol=tol)
    # Frames: translations centred the same way, rotations untouched.
    r, _ = _random_rigid(seed, dtype, shape=(2, 7))
    f = _frames_of(r, x)
    cf, com_f = centre(f, mask)
    assert torch.equal(com_f, com) and torch.equal(cf[..., :3, 3], centred)
    assert torch.equal(cf[mask][:, :3, :3], r[mask])
    assert torch.equal(cf[~mask], torch.eye(4, dtype=dtype).expand(int((~mask).sum()), 4, 4))
    unmasked, com_all = centre(x)
    assert torch.allclose(com_all, x.mean(-2)) and unmasked.mean(-2).abs().max() < 10 * tol


def test_scale_translations_converts_units():
    r, t = _random_rigid(5, shape=(4,))
    f = _frames_of(r, t)
    nm = scale_translations(f, 1 / ANGSTROM_PER_NM)
    assert torch.allclose(nm[..., :3, 3], t / 10) and torch.equal(nm[..., :3, :3], r)
    assert torch.allclose(scale_translations(nm, ANGSTROM_PER_NM), f)
    mask = torch.tensor([True, False, True, True])
    assert torch.equal(scale_translations(f, 2.0, mask=mask)[1], torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="factor"):
        scale_translations(f, 0.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_and_device_preserved(device, dtype):
    n, ca, c = (x.to(dtype=dtype, device=device) for x in _helix(4))
    mask = torch.tensor([True, True, False, True], device=device)
    f = from_backbone(n, ca, c, mask=mask)
    outs = [f, to_backbone(f, mask=mask), *centre(f, mask), scale_translations(f, 0.1)]
    for out in outs:
        assert out.dtype == dtype and out.device.type == torch.device(device).type


# ----------------------------------------------------------------------------- errors


def test_errors_name_residues_and_shapes():
    n, ca, c = (x.expand(2, 5, 3).clone() for x in _helix(5))
    nan_n = n.clone()
    nan_n[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"not finite at residue\(s\) \[\(1, 3\)\]"):
        from_backbone(nan_n, ca, c)
    col = n.clone()
    col[0, 2] = ca[0, 2] + 0.7 * (c[0, 2] - ca[0, 2])  # N on the line CA-C
    with pytest.raises(ValueError, match=r"collinear.*\[\(0, 2\)\]"):
        from_backbone(col, ca, c)
    same = c.clone()
    same[1, 4] = ca[1, 4]  # C on CA
    with pytest.raises(ValueError, match=r"coincident.*\[\(1, 4\)\]"):
        from_backbone(n, ca, same)
    with pytest.raises(ValueError, match="same shape"):
        from_backbone(n, ca[:, :4], c)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        from_backbone(n[..., :2], ca[..., :2], c[..., :2])
    with pytest.raises(ValueError, match="at least one residue"):
        from_backbone(n[:, :0], ca[:, :0], c[:, :0])
    with pytest.raises(ValueError, match="mask must have shape"):
        from_backbone(n, ca, c, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        from_backbone(n.long(), ca.long(), c.long())
    # Checks off: no sync, finite output for degenerate input is not promised but no raise.
    with mfm.checks(values=False):
        from_backbone(col, ca, c)

    f = from_backbone(n, ca, c)
    with pytest.raises(ValueError, match="at least one residue"):
        to_backbone(f[:, :0])
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 4, 4\)"):
        to_backbone(f[0, 0])
    with pytest.raises(ValueError, match="chain_index"):
        to_backbone(f, chain_index=torch.zeros(5))
    sheared = f.clone()
    sheared[0, 1, 0, 1] += 0.1
    with pytest.raises(ValueError, match=r"not rigid motions.*\[\(0, 1\)\]"):
        to_backbone(sheared)
    with pytest.raises(ValueError, match=r"frames \(\.\.\., N, 4, 4\) or coordinates"):
        centre(torch.zeros(4, 2))


# ----------------------------------------------------------------------------- PDB


def _parse(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        if line[:6] == "ATOM  ":
            rows.append(
                {
                    "serial": int(line[6:11]),
                    "name": line[12:16],
                    "resname": line[17:20],
                    "chain": line[21],
                    "resseq": int(line[22:26]),
                    "xyz": (float(line[30:38]), float(line[38:46]), float(line[46:54])),
                    "occ": float(line[54:60]),
                    "b": float(line[60:66]),
                    "element": line[76:78],
                }
            )
    return rows


@given(seed=seeds)
@example(seed=0)
def test_pdb_round_trip(seed):
    r, t = _random_rigid(seed, shape=(5,))
    atoms = to_backbone(_frames_of(r, t))
    mask = torch.tensor([True, True, False, True, True])
    buf = io.StringIO()
    write_pdb(buf, atoms, sequence="MKVXA", chain="B", mask=mask)
    text = buf.getvalue()
    rows = _parse(text)
    assert len(rows) == 16
    assert [row["serial"] for row in rows] == list(range(1, 17))
    assert [row["name"] for row in rows[:4]] == [" N  ", " CA ", " C  ", " O  "]
    assert [row["element"] for row in rows[:4]] == [" N", " C", " C", " O"]
    assert [row["resseq"] for row in rows[::4]] == [1, 2, 4, 5]
    assert [row["resname"] for row in rows[::4]] == ["MET", "LYS", "UNK", "ALA"]
    assert all(row["chain"] == "B" and row["occ"] == 1.0 and row["b"] == 0.0 for row in rows)
    xyz = torch.tensor([row["xyz"] for row in rows], dtype=F64)
    assert (xyz - atoms[mask].reshape(-1, 3)).abs().max() <= 5e-4 + 1e-12
    lines = text.splitlines()
    assert lines[-2] == "TER      17      ALA B   5" and lines[-1] == "END"
    assert all(len(line) == 78 for line in lines if line.startswith("ATOM"))


def test_pdb_dict_models_and_paths(tmp_path):
    n, ca, c = _helix(3)
    path = tmp_path / "bb.pdb"
    write_pdb(path, {"CA": ca, "N": n, "C": c}, sequence=["GLY", "ALA", "SER"])
    rows = _parse(path.read_text())
    assert [row["name"].strip() for row in rows[:3]] == ["N", "CA", "C"]
    assert torch.allclose(torch.tensor(rows[4]["xyz"], dtype=F64), ca[1], atol=5e-4)
    two = torch.stack([to_backbone(from_backbone(n, ca, c))] * 2)
    two[1] += 1.0
    buf = io.StringIO()
    write_pdb(buf, two)
    text = buf.getvalue()
    assert text.count("MODEL") == 2 and text.count("ENDMDL") == 2 and text.count("TER") == 2
    rows = _parse(text)
    assert len(rows) == 24 and rows[12]["serial"] == 1 and rows[0]["resname"] == "GLY"
    xyz = torch.tensor([row["xyz"] for row in rows], dtype=F64).reshape(2, 3, 4, 3)
    assert (xyz - two).abs().max() <= 5e-4 + 1e-12


def test_pdb_errors():
    atoms = to_backbone(torch.eye(4, dtype=F64).expand(2, 4, 4))
    buf = io.StringIO()
    with pytest.raises(ValueError, match="sequence has 3"):
        write_pdb(buf, atoms, sequence="AAA")
    with pytest.raises(ValueError, match="unknown one-letter"):
        write_pdb(buf, atoms, sequence="AB")
    with pytest.raises(ValueError, match="chain"):
        write_pdb(buf, atoms, chain="AB")
    with pytest.raises(ValueError, match="shape"):
        write_pdb(buf, atoms[..., :2])
    with pytest.raises(ValueError, match="keys"):
        write_pdb(buf, {"CB": atoms[:, 1]})
    far = atoms.clone()
    far[0, 0, 0] = -1000.0
    with pytest.raises(ValueError, match="does not fit"):
        write_pdb(buf, far)
    nan = atoms.clone()
    nan[1] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        write_pdb(buf, nan)
    write_pdb(buf, nan, mask=torch.tensor([True, False]))  # masked NaN is fine
    assert buf.getvalue().count("ATOM") == 4


def test_frames_are_se3_points_and_interpolate_to_valid_backbones():
    se3 = SE3()
    n, ca, c = _helix(6)
    f0 = from_backbone(n, ca, c)
    q, s = _random_rigid(7)
    f1 = from_backbone(*(x @ q.mT + s for x in _helix(6, phi=-120.0, psi=130.0)))
    assert se3.check_point_on_manifold(f0) and se3.check_point_on_manifold(f1)
    r, t = se3.split(f0)
    assert torch.equal(r, f0[..., :3, :3]) and torch.equal(t, ca)
    mid = se3.expmap(f0, 0.5 * se3.logmap(f0, f1))
    atoms = to_backbone(mid)
    back = from_backbone(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :])
    assert (back - mid).abs().max() < 1e-12
    assert torch.allclose(
        (atoms[:, 2] - atoms[:, 3]).norm(dim=-1), torch.full((6,), 1.231, dtype=F64)
    )


def test_to_backbone_names_non_finite_frames_without_manifold_checks():
    frames = torch.eye(4, dtype=torch.float64).expand(2, 5, 4, 4).clone()
    frames[1, 2, 1, 3] = float("nan")  # a NaN translation
    with (
        mfm.checks(manifold=False),
        pytest.raises(ValueError, match=r"non-finite values at residue\(s\) \[\(1, 2\)\]"),
    ):
        to_backbone(frames)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2] = False  # the same residue masked out: nothing to complain about
    assert bool(torch.isfinite(to_backbone(frames.nan_to_num(), mask=mask)).all())
    with mfm.checks(manifold=False):
        atoms = to_backbone(torch.where(mask[..., None, None], frames, 0.0), mask=mask)
    assert bool(torch.isfinite(atoms).all())
