"""Tests of read_points: every space and file format, auto-detection, validation, skipping."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manifoldfm.data import (
    SPACES,
    ReadResult,
    read_aemet_csv,
    read_curves_csv,
    read_earth_csv,
    read_points,
    read_torsions_csv,
)
from manifoldfm.rotations import pose_from_tum, quat_to_rotmat, rotmat_to_quat, rt_to_matrix

from .strategies import seeds


def _write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return quat_to_rotmat(q, scalar_first=False, normalize=True)


def _fmt(rows) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows)


# ------------------------------------------------------------------ result record


def test_result_record(tmp_path):
    res = read_points(_write(tmp_path, "a,b\n1,2\n3,4\n"), space="euclidean")
    assert isinstance(res, ReadResult)
    assert res.points.dtype == torch.float64
    assert res.points.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert res.space == "euclidean" and res.columns == ("a", "b")
    assert res.n_rows_read == 2 and res.skipped == () and res.grid is None
    assert res.source.endswith("data.csv")
    with pytest.raises(AttributeError):
        res.space = "sphere"  # type: ignore[misc]
    assert set(SPACES) == {"euclidean", "sphere", "torus", "so3", "se3", "functions"}


# ------------------------------------------------------------------ euclidean and functions


def test_euclidean_numeric_columns_and_selection(tmp_path):
    path = _write(tmp_path, "name,a,b,c\nx,1,2,3\ny,4,5,6\n")
    assert read_points(path, space="euclidean").columns == ("a", "b", "c")
    res = read_points(path, space="euclidean", columns=["c", 1])
    assert res.columns == ("c", "a") and res.points.tolist() == [[3.0, 1.0], [6.0, 4.0]]


@pytest.mark.parametrize("delimiter, text", [("\t", "a\tb\n1\t2\n"), (" ", "a  b\n1   2\n")])
def test_delimiter_sniffing(tmp_path, delimiter, text):
    res = read_points(_write(tmp_path, text), space="euclidean")
    assert res.columns == ("a", "b") and res.points.tolist() == [[1.0, 2.0]]
    res2 = read_points(_write(tmp_path, text, "b.txt"), space="euclidean", delimiter=delimiter)
    assert torch.equal(res.points, res2.points)


def test_headerless_comments_and_blank_lines(tmp_path):
    path = _write(tmp_path, "# a comment\n1 2 3\n\n4 5 6\n")
    res = read_points(path, space="euclidean", columns=[2, 0])
    assert res.columns == ("2", "0") and res.points.tolist() == [[3.0, 1.0], [6.0, 4.0]]
    with pytest.raises(ValueError, match="row 4, column '1'"):
        read_points(_write(tmp_path, "1,2\n3,4\n\n5,x\n", "b.csv"), space="euclidean")


@given(n_curves=st.integers(1, 4), n_points=st.integers(1, 6), seed=seeds)
@settings(max_examples=20, deadline=None)
def test_functions_match_existing_readers(tmp_path_factory, n_curves, n_points, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_curves, n_points, generator=g, dtype=torch.float64)
    d = tmp_path_factory.mktemp("f")
    head = ",".join(['""'] + [f'"X{j + 1}"' for j in range(n_points)])
    body = "\n".join(
        ",".join([f'"{i + 1}"'] + [repr(float(x)) for x in row]) for i, row in enumerate(v)
    )
    aemet = _write(d, head + "\n" + body + "\n", "aemet.csv")
    res = read_points(aemet, space="functions")
    ref = read_aemet_csv(aemet)
    assert torch.equal(res.points, ref.values) and torch.equal(res.grid, ref.points)
    assert res.labels == ref.labels
    curves = _write(d, _fmt(v.tolist()) + "\n", "curves.csv")
    res = read_points(curves, space="functions")
    assert torch.equal(res.points, read_curves_csv(curves).values)
    assert torch.equal(res.points, v)


# ------------------------------------------------------------------ sphere


@pytest.mark.parametrize(
    "lat, lon", [("lat", "lon"), ("lat_deg", "lon_deg"), ("Latitude", "Longitude")]
)
def test_sphere_latlon_auto_detection(tmp_path, lat, lon):
    path = _write(tmp_path, f"id,{lon},{lat}\n1,0,90\n2,90,0\n3,180,-90\n")
    res = read_points(path, space="sphere")
    assert res.columns == (lat, lon)
    expect = torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 0, -1]], dtype=torch.float64)
    assert torch.allclose(res.points, expect, atol=1e-12)


def test_sphere_latlon_radians(tmp_path):
    path = _write(tmp_path, f"lat,lon\n{math.pi / 2},0\n0,{math.pi / 2}\n")
    res = read_points(path, space="sphere", angle_unit="rad")
    assert torch.allclose(res.points, torch.tensor([[0.0, 0, 1], [0, 1, 0]]).double(), atol=1e-12)


@given(seed=seeds, n=st.integers(1, 8))
@settings(max_examples=20, deadline=None)
def test_sphere_matches_read_earth_csv(tmp_path_factory, seed, n):
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g, dtype=torch.float64) * 180 - 90
    lon = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    d = tmp_path_factory.mktemp("s")
    path = _write(d, "lat_deg,lon_deg\n" + _fmt(torch.stack([lat, lon], 1).tolist()) + "\n")
    res = read_points(path, space="sphere")
    assert torch.allclose(res.points, read_earth_csv(path), atol=1e-14)
    assert torch.allclose(res.points.norm(dim=1), torch.ones(n, dtype=torch.float64))
    x = res.points
    path = _write(d, "x,y,z\n" + _fmt(x.tolist()) + "\n", "xyz.csv")
    assert torch.allclose(read_points(path, space="sphere").points, x, atol=1e-14)
    assert torch.allclose(read_earth_csv(path), x, atol=1e-14)


def test_sphere_xyz_normalised_within_tolerance_else_error(tmp_path):
    path = _write(tmp_path, "x,y,z\n0,0,1.0005\n0,2,0\n")
    with pytest.raises(ValueError, match=r"row 3, columns 'x', 'y', 'z': norm 2"):
        read_points(path, space="sphere")
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        res = read_points(path, space="sphere", skip_bad_rows=True)
    assert res.points.tolist() == [[0.0, 0.0, 1.0]]
    assert [s.row for s in res.skipped] == [3]


def test_sphere_latitude_out_of_range(tmp_path):
    path = _write(tmp_path, "lat,lon\n10,0\n91,0\n")
    with pytest.raises(ValueError, match="row 3, column 'lat': latitude 91"):
        read_points(path, space="sphere")


def test_sphere_missing_columns_named(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"no latitude.*found \['a', 'b'\]"):
        read_points(path, space="sphere")
    with pytest.raises(ValueError, match=r"no column\(s\) 'lat', 'q'; found \['a', 'b'\]"):
        read_points(path, space="sphere", columns=["lat", "a", "q"])
    with pytest.raises(ValueError, match=r"reads 2 .* or 3 .* columns; 1 were selected"):
        read_points(path, space="sphere", columns=["a"])


# ------------------------------------------------------------------ torus


@given(seed=seeds, n=st.integers(1, 8), degrees=st.booleans())
@settings(max_examples=20, deadline=None)
def test_torus_matches_read_torsions_csv(tmp_path_factory, seed, n, degrees):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 * math.pi - math.pi
    if degrees:
        a = torch.rad2deg(a)
        a[0, 0] = 179.0  # makes auto-detection unambiguous
    d = tmp_path_factory.mktemp("t")
    path = _write(d, "resname,phi,psi\n" + "\n".join(f"ALA,{p!r},{q!r}" for p, q in a.tolist()))
    unit = "deg" if degrees else "rad"
    res = read_points(path, space="torus")
    assert res.columns == ("phi", "psi")
    assert torch.equal(res.points, read_torsions_csv(path, degrees=degrees))
    assert torch.equal(res.points, read_points(path, space="torus", angle_unit=unit).points)
    assert bool(((res.points >= 0) & (res.points < 2 * math.pi)).all())


def test_torus_auto_unit_threshold(tmp_path):
    # 6.28 < 2 pi is read as radians by "auto": the documented ambiguity
    path = _write(tmp_path, "a,b\n6.28,-1\n")
    auto = read_points(path, space="torus").points
    assert torch.allclose(auto, torch.tensor([[6.28, 2 * math.pi - 1]], dtype=torch.float64))
    deg = read_points(path, space="torus", angle_unit="deg").points
    assert torch.allclose(deg, torch.deg2rad(torch.tensor([[6.28, 359.0]], dtype=torch.float64)))
    path = _write(tmp_path, "a,b\n6.3,-1\n", "b.csv")
    assert torch.allclose(
        read_points(path, space="torus").points[0, 0],
        torch.tensor(0.10995574287564276, dtype=torch.float64),
    )


# ------------------------------------------------------------------ so3


def test_so3_quaternion_order_from_names(tmp_path):
    r = _rotations(5, 0)
    q = rotmat_to_quat(r, scalar_first=False)  # x, y, z, w
    # columns written in a scrambled order: names decide
    cols = [2, 3, 0, 1]
    head = ",".join(["qz", "qw", "qx", "qy"])
    path = _write(tmp_path, head + "\n" + _fmt(q[:, cols].tolist()) + "\n")
    res = read_points(path, space="so3")
    assert res.columns == ("qx", "qy", "qz", "qw")
    assert torch.allclose(res.points, r, atol=1e-12)
    with pytest.raises(ValueError, match="contradicts the column names"):
        read_points(path, space="so3", quaternion_order="wxyz")


@pytest.mark.parametrize("order", ["wxyz", "xyzw"])
def test_so3_unnamed_quaternions_need_order(tmp_path, order):
    r = _rotations(4, 1)
    q = rotmat_to_quat(r, scalar_first=order == "wxyz")
    path = _write(tmp_path, "q0,q1,q2,q3\n" + _fmt(q.tolist()) + "\n")
    with pytest.raises(ValueError, match="no quaternion columns"):
        read_points(path, space="so3")
    with pytest.raises(ValueError, match="quaternion_order='wxyz' or 'xyzw'"):
        read_points(path, space="so3", columns=["q0", "q1", "q2", "q3"])
    res = read_points(path, space="so3", columns=[0, 1, 2, 3], quaternion_order=order)
    assert torch.allclose(res.points, r, atol=1e-12)
    other = "xyzw" if order == "wxyz" else "wxyz"
    wrong = read_points(path, space="so3", columns=[0, 1, 2, 3], quaternion_order=other)
    assert not torch.allclose(wrong.points, r, atol=1e-3)  # why the order is never guessed


def test_so3_matrix_columns(tmp_path):
    r = _rotations(6, 2)
    names = [f"r{i}{j}" for i in range(3) for j in range(3)]
    path = _write(tmp_path, ",".join(names) + "\n" + _fmt(r.reshape(6, 9).tolist()) + "\n")
    res = read_points(path, space="so3")
    assert res.columns == tuple(names) and torch.allclose(res.points, r, atol=1e-12)


def test_so3_invalid_rotations(tmp_path):
    names = ",".join(f"r{i}{j}" for i in range(3) for j in range(3))
    rows = [[1, 0, 0, 0, 1, 0, 0, 0, 1], [1, 0, 0, 0, 1, 0, 0, 0, -1], [2, 0, 0, 0, 1, 0, 0, 0, 1]]
    path = _write(tmp_path, names + "\n" + _fmt(rows) + "\n")
    with pytest.raises(ValueError, match=r"row 3, columns 'r00'.*'r22': determinant -1"):
        read_points(path, space="so3")
    with pytest.warns(UserWarning, match="skipped 2 of 3"):
        res = read_points(path, space="so3", skip_bad_rows=True)
    assert [s.row for s in res.skipped] == [3, 4]
    assert "not orthonormal" in res.skipped[1].reason
    assert torch.allclose(res.points, torch.eye(3, dtype=torch.float64)[None])


def test_so3_non_unit_quaternion(tmp_path):
    path = _write(tmp_path, "qw,qx,qy,qz\n1,0,0,0\n1.0004,0,0,0\n0.5,0,0,0\n")
    with pytest.raises(ValueError, match=r"row 4, columns 'qx', 'qy', 'qz', 'qw': norm 0.5"):
        read_points(path, space="so3")
    res = read_points(path, space="so3", tol=0.6)
    assert torch.allclose(res.points, torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


# ------------------------------------------------------------------ se3


@given(seed=seeds, n=st.integers(1, 6))
@settings(max_examples=15, deadline=None)
def test_se3_tum_matches_pose_from_tum(tmp_path_factory, seed, n):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, 3, generator=g, dtype=torch.float64)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=1)
    stamps = torch.arange(n, dtype=torch.float64)[:, None] + 1e9
    tum = torch.cat([stamps, t, q], 1)
    d = tmp_path_factory.mktemp("p")
    path = _write(d, "t_s,tx,ty,tz,qx,qy,qz,qw\n" + _fmt(tum.tolist()) + "\n")
    ref = pose_from_tum(torch.cat([t, q], 1))
    res = read_points(path, space="se3")
    assert res.columns == ("tx", "ty", "tz", "qx", "qy", "qz", "qw")
    assert torch.allclose(res.points, ref, atol=1e-12)
    # the same numbers without names: TUM layout by column count, order given
    np.save(d / "tum.npy", tum.numpy())
    res = read_points(d / "tum.npy", space="se3", columns=list(range(8)), quaternion_order="xyzw")
    assert torch.allclose(res.points, ref, atol=1e-12)
    # space-separated TUM file with a comment header
    text = "# timestamp tx ty tz qx qy qz qw\n" + _fmt(tum.tolist()).replace(",", " ")
    res = read_points(
        _write(d, text, "tum.txt"), space="se3", columns=list(range(8)), quaternion_order="xyzw"
    )
    assert torch.allclose(res.points, ref, atol=1e-12)


def test_se3_matrix_layouts(tmp_path):
    r = _rotations(3, 3)
    t = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    m = rt_to_matrix(r, t)
    names = [f"r{i}{j}" for i in range(3) for j in range(3)] + ["x", "y", "z"]
    data = torch.cat([r.reshape(3, 9), t], 1)
    res = read_points(_write(tmp_path, ",".join(names) + "\n" + _fmt(data.tolist())), space="se3")
    assert torch.allclose(res.points, m, atol=1e-12)
    np.save(tmp_path / "m44.npy", m.numpy())
    assert torch.allclose(
        read_points(tmp_path / "m44.npy", space="se3").points
        if False
        else read_points(tmp_path / "m44.npy", space="se3", columns=list(range(16))).points,
        m,
        atol=1e-12,
    )
    np.save(tmp_path / "m34.npy", m[:, :3].numpy())
    res = read_points(tmp_path / "m34.npy", space="se3", columns=list(range(12)))
    assert torch.allclose(res.points, m, atol=1e-12)
    bad = m.clone()
    bad[1, 3, 0] = 0.5
    np.save(tmp_path / "bad.npy", bad.numpy())
    with pytest.raises(ValueError, match="row 2, columns '12', '13', '14', '15': the bottom row"):
        read_points(tmp_path / "bad.npy", space="se3", columns=list(range(16)))


def test_se3_missing_translation(tmp_path):
    path = _write(tmp_path, "qw,qx,qy,qz\n1,0,0,0\n")
    with pytest.raises(ValueError, match=r"no translation columns.*found \['qw'"):
        read_points(path, space="se3")


# ------------------------------------------------------------------ arrays


def test_npy_and_npz(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", a)
    res = read_points(tmp_path / "a.npy", space="euclidean", columns=[2])
    assert res.columns == ("2",) and res.points.dtype == torch.float64
    assert res.points[:, 0].tolist() == [2.0, 5.0, 8.0, 11.0]
    np.savez(tmp_path / "one.npz", x=a)
    assert torch.equal(
        read_points(tmp_path / "one.npz", space="euclidean").points, torch.from_numpy(a).double()
    )
    np.savez(tmp_path / "two.npz", x=a, y=a * 2)
    with pytest.raises(ValueError, match=r"holds 2 arrays \['x', 'y'\]; pass array="):
        read_points(tmp_path / "two.npz", space="euclidean")
    res = read_points(tmp_path / "two.npz", space="euclidean", array="y")
    assert res.points[1].tolist() == [6.0, 8.0, 10.0]
    with pytest.raises(ValueError, match=r"no array 'z'.*\['x', 'y'\]"):
        read_points(tmp_path / "two.npz", space="euclidean", array="z")
    r = _rotations(2, 4)
    np.save(tmp_path / "r.npy", r.numpy())
    assert torch.allclose(
        read_points(tmp_path / "r.npy", space="so3", columns=list(range(9))).points, r
    )


def test_npy_non_finite_row_named(tmp_path):
    a = np.ones((3, 2))
    a[2, 1] = np.nan
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(ValueError, match="row 3, column '1': nan is not a finite number"):
        read_points(tmp_path / "a.npy", space="euclidean")
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        res = read_points(tmp_path / "a.npy", space="euclidean", skip_bad_rows=True)
    assert res.points.shape == (2, 2) and res.skipped[0].row == 3


# ------------------------------------------------------------------ malformed files


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n3,abc\n", r"row 3, column 'b': 'abc' is not a number"),
        ("a,b\n1,2\n3,nan\n", r"row 3, column 'b': 'nan' is not a finite number"),
        ("a,b\n1,inf\n", r"row 2, column 'b': 'inf' is not a finite number"),
        ("a,b\n1,2\n3\n", r"row 3, column 'b': the row has 1 field\(s\) but the header"),
        ("a,b\n1,2,3\n", r"row 2, column 3 \(past the header\)"),
        ("a,b\n1,2\n\n4,\n", r"row 4, column 'b': '' is not a number"),
        ("", r"row 1: empty file"),
        ("# only a comment\n\n", r"row 1: empty file"),
        ("a,b\n", r"row 2: no data rows after the header"),
    ],
)
def test_malformed_files_name_row_and_column(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_points(
            _write(tmp_path, text),
            space="euclidean",
            columns=["a", "b"] if text.startswith("a") else None,
        )


def test_skip_bad_rows_reports_everything(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\nx,2\n3\n4,inf\n5,6\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = read_points(path, space="euclidean", skip_bad_rows=True)
    assert len(caught) == 1 and "skipped 3 of 5" in str(caught[0].message)
    assert res.points.tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert res.n_rows_read == 5
    assert [(s.row, s.column) for s in res.skipped] == [(3, "'a'"), (4, "'b'"), (5, "'b'")]
    with pytest.raises(ValueError, match=r"no valid data rows \(1 of 1 skipped\)"):
        read_points(
            _write(tmp_path, "a\nx\n", "b.csv"),
            space="euclidean",
            columns=["a"],
            skip_bad_rows=True,
        )


def test_clean_file_emits_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_points(_write(tmp_path, "a\n1\n"), space="euclidean", skip_bad_rows=True)


def test_bad_arguments(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(ValueError, match="space must be one of"):
        read_points(path, space="hyperbolic")
    with pytest.raises(ValueError, match="angle_unit"):
        read_points(path, space="torus", angle_unit="grad")
    with pytest.raises(ValueError, match="quaternion_order"):
        read_points(path, space="so3", quaternion_order="wzyx")
    with pytest.raises(TypeError, match="columns must be a sequence"):
        read_points(path, space="euclidean", columns="a")
    with pytest.raises(ValueError, match="position 5 is out of range"):
        read_points(path, space="euclidean", columns=[5])
    with pytest.raises(ValueError, match="selects a column twice"):
        read_points(path, space="euclidean", columns=["a", 0])
    with pytest.raises(ValueError, match=r"array= applies to .npz"):
        read_points(path, space="euclidean", array="x")


# ------------------------------------------------------------------ invariants


@given(seed=seeds, n=st.integers(1, 6), scale=st.floats(0.0, 1e-4))
@settings(max_examples=25, deadline=None)
def test_so3_outputs_are_rotations(tmp_path_factory, seed, n, scale):
    """Matrices within tol are projected onto SO(3); q and -q read as the same rotation."""
    g = torch.Generator().manual_seed(seed)
    r = _rotations(n, seed)
    # uniform noise within scale: |R^T R - I| <= 6 scale + scale^2 stays within tol = 1e-3
    noisy = r + scale * (2 * torch.rand(n, 3, 3, generator=g, dtype=torch.float64) - 1)
    d = tmp_path_factory.mktemp("r")
    names = ",".join(f"r{i}{j}" for i in range(3) for j in range(3))
    out = read_points(_write(d, names + "\n" + _fmt(noisy.reshape(n, 9).tolist())), space="so3")
    m = out.points
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(m.mT @ m, eye.expand(n, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(m), torch.ones(n, dtype=torch.float64), atol=1e-12)
    assert (m - r).abs().max() <= 10 * scale + 1e-12
    q = rotmat_to_quat(r, scalar_first=True)
    both = torch.cat([q, -q], 0)
    res = read_points(_write(d, "qw,qx,qy,qz\n" + _fmt(both.tolist()), "q.csv"), space="so3")
    assert torch.allclose(res.points[:n], res.points[n:], atol=1e-12)
    assert torch.allclose(res.points[:n], r, atol=1e-12)


@given(seed=seeds, n=st.integers(1, 6), shift=st.integers(-3, 3))
@settings(max_examples=25, deadline=None)
def test_torus_is_periodic(tmp_path_factory, seed, n, shift):
    """Angles that differ by whole turns are the same point of the torus."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, generator=g, dtype=torch.float64) * 360 - 180
    d = tmp_path_factory.mktemp("t")
    p1 = _write(d, "a,b,c\n" + _fmt(a.tolist()), "a.csv")
    p2 = _write(d, "a,b,c\n" + _fmt((a + 360 * shift).tolist()), "b.csv")
    x1 = read_points(p1, space="torus", angle_unit="deg").points
    x2 = read_points(p2, space="torus", angle_unit="deg").points
    diff = torch.remainder(x1 - x2 + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-9
    assert bool(((x2 >= 0) & (x2 < 2 * math.pi)).all())


def test_partial_quaternion_names_are_named(tmp_path):
    path = _write(tmp_path, "qw,qx,qy,tz\n1,0,0,0\n")
    with pytest.raises(ValueError, match=r"none for component\(s\) z; found \['qw', 'qx'"):
        read_points(path, space="so3")


def test_se3_bad_quaternion_row_skipped(tmp_path):
    text = "tx,ty,tz,qx,qy,qz,qw\n1,2,3,0,0,0,1\n1,2,3,0,0,0,3\n4,5,6,0,0,1,0\n"
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=r"row 3, columns 'qx', 'qy', 'qz', 'qw': norm 3"):
        read_points(path, space="se3")
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        res = read_points(path, space="se3", skip_bad_rows=True)
    assert res.points.shape == (2, 4, 4) and res.skipped[0].row == 3
    assert res.points[1, :3, 3].tolist() == [4.0, 5.0, 6.0]
    assert torch.allclose(res.points[1, :3, :3], torch.diag(torch.tensor([-1.0, -1, 1])).double())


@pytest.mark.parametrize("space", ["sphere", "so3", "se3"])
def test_arrays_without_names_are_read_by_their_column_count(space, tmp_path):
    # what `manifoldfm sample --out x.npy` writes ((N, 3), (N, 3, 3), (N, 4, 4)) reads back
    # without columns=: an array has no header to go by
    from manifoldfm.manifolds import SE3, SO3, Sphere

    m = {"sphere": Sphere(2), "so3": SO3(), "se3": SE3()}[space]
    g = torch.Generator().manual_seed(2)
    draw = m.random if space == "se3" else m.random_uniform  # SE(3) has no uniform law
    x = draw(6, generator=g, dtype=torch.float64)
    np.save(tmp_path / "x.npy", x.numpy())
    assert torch.allclose(read_points(tmp_path / "x.npy", space=space).points, x, atol=1e-12)


def test_a_first_row_of_numbers_with_a_blank_is_data_not_a_header(tmp_path):
    # "1,,3" is a data row with a missing value: named as such, not taken for a header (which
    # silently lost the row and the blank column)
    path = tmp_path / "x.csv"
    path.write_text("1,,3\n4,5,6\n7,8,9\n")
    with pytest.raises(ValueError, match=r"row 1, column '1': '' is not a number"):
        read_points(path, space="euclidean")


def test_tab_separated_cells_may_hold_spaces_and_be_empty(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("city\tx\ty\nNew York\t1\t2\nSao Paulo\t3\t4\n")
    res = read_points(path, space="euclidean")
    assert res.points.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    path.write_text("x\ty\tz\n1\t\t3\n4\t5\t6\n")
    with pytest.raises(ValueError, match=r"row 2, column 'y': '' is not a number"):
        read_points(path, space="euclidean")
