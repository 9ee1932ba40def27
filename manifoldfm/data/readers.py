"""One reader for data files on every supported space: :func:`read_points`.

:func:`read_points` reads a CSV (or tab- or space-separated) text file, a ``.npy`` array or one
array of a ``.npz`` archive and returns the points in the representation of the chosen space,
with a record of what was read (:class:`ReadResult`):

* ``euclidean``: any numeric columns, points ``(N, d)``;
* ``sphere``: latitude and longitude (degrees) or ``x, y, z`` (unit vectors), points
  ``(N, 3)`` (unit vectors, ``(cos lat cos lon, cos lat sin lon, sin lat)``);
* ``torus``: angle columns (degrees or radians), points ``(N, k)`` wrapped to ``[0, 2 pi)``;
* ``so3``: a quaternion (4 columns) or a row-major rotation matrix ``r00 .. r22`` (9),
  points ``(N, 3, 3)``;
* ``se3``: a translation and a quaternion (7 columns; 8 with a leading timestamp, the TUM
  RGB-D layout ``t_s, tx, ty, tz, qx, qy, qz, qw``), ``r00 .. r22`` and a translation, or a
  row-major 3x4 ``[R | t]`` (12) or 4x4 (16) matrix, points ``(N, 4, 4)``;
* ``functions``: one function per row, all numeric columns, values ``(N, n)`` with the
  evenly spaced points of ``[0, 1]`` in :attr:`ReadResult.grid`.

**Columns.** Without ``columns`` the layout is found from the header names (case-insensitive):

* ``sphere``: a latitude (``lat``, ``lat_deg``, ``latitude``) and a longitude (``lon``,
  ``lon_deg``, ``longitude``, ``lng``, ``long``) column, else ``x, y, z``;
* ``torus``: the dihedral columns among ``phi, psi, omega, chi1 .. chi5`` when the header has
  any, else every numeric column;
* ``so3``: quaternion columns ``qw, qx, qy, qz`` (also ``q_w`` or ``quat_w`` and so on; any
  order in the file, each component is read by its name), else ``r00, r01, .. r22``;
* ``se3``: translation ``tx, ty, tz`` (else ``x, y, z``) and the rotation columns of ``so3``;
* ``euclidean`` and ``functions``: every numeric column (a column with a name and at least one
  cell that reads as a number; a leading unnamed column, such as the row index written by R or
  pandas, is taken as row labels instead).

With ``columns`` (names or 0-based positions, in the order of the layout) the layout is given by
their number, as in the table above. ``.npy`` and ``.npz`` arrays have no names: their columns
are ``"0", "1", ...``; ``(N, 3, 3)``, ``(N, 3, 4)`` and ``(N, 4, 4)`` arrays are read as their
row-major 9, 12 and 16 columns.

**Quaternion order.** Quaternions are stored ``(w, x, y, z)`` by some tools and ``(x, y, z, w)``
by others (TUM RGB-D, scipy, ROS messages), and a quaternion read in the wrong order is still a
unit quaternion: it silently becomes another rotation, and no check can notice. So the order is
never guessed: it is taken from the column names when they say it (``qw, qx, qy, qz``), and must
be given as ``quaternion_order="wxyz"`` or ``"xyzw"`` otherwise (e.g. for arrays). A given order
that contradicts the names is an error.

**Angle units.** ``angle_unit="deg"`` or ``"rad"`` says what the file holds. ``"auto"`` means
degrees for latitude and longitude, and for torus angles degrees if any value has
``|value| > 2 pi + 1e-6``, else radians: a file in degrees whose angles all lie within
``[-6.28, 6.28]`` would be misread, so give the unit when it is known.

**Validation.** Every row is checked: the number of fields must match the header's, the selected
cells must be finite numbers, latitudes must lie within ``[-90, 90]`` degrees, unit vectors and
quaternions must have norm 1 within ``tol`` (then they are normalised), rotation matrices must be
orthonormal within ``tol`` with determinant ``+1`` (then they are projected onto the nearest
rotation), and 4x4 poses must end with the row ``0, 0, 0, 1``. A failure raises ``ValueError``
naming the file, the row (1-based, as in the file: the header is row 1; for arrays the array's
row) and the column. With ``skip_bad_rows=True`` such rows are left out, listed in
:attr:`ReadResult.skipped` and counted in a warning. Empty files and files without valid rows
always raise.

Blank lines and lines starting with ``#`` are ignored. A first line made only of numbers is
data, not a header; the columns are then named ``"0", "1", ...``.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import roma
import torch
from torch import Tensor

from ..manifolds.torus import wrap_angle
from ..rotations import quat_to_rotmat, rt_to_matrix

__all__ = ["SPACES", "ReadResult", "SkippedRow", "read_points"]

SPACES = ("euclidean", "sphere", "torus", "so3", "se3", "functions")
"""The spaces :func:`read_points` reads."""

_LAT = ("lat", "lat_deg", "latitude")
_LON = ("lon", "lon_deg", "longitude", "lng", "long")
_DIHEDRALS = ("phi", "psi", "omega", "chi1", "chi2", "chi3", "chi4", "chi5")
_MATRIX = tuple(f"r{i}{j}" for i in range(3) for j in range(3))
_AUTO_DEG_EPS = 1e-6


@dataclass(frozen=True, kw_only=True)
class SkippedRow:
    """A row left out by :func:`read_points` with ``skip_bad_rows=True``.

    Attributes:
        row: the row number (1-based, as in the file: the header is row 1).
        column: the column (or columns) at fault.
        reason: what is wrong.

    Example:
        >>> from manifoldfm.data import SkippedRow
        >>> SkippedRow(row=3, column="'x'", reason="'abc' is not a number").row
        3
    """

    row: int
    column: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ReadResult:
    """What :func:`read_points` read.

    Attributes:
        points: float64 points in the space's representation: ``(N, d)`` (euclidean),
            ``(N, 3)`` unit vectors (sphere), ``(N, k)`` angles in ``[0, 2 pi)`` (torus),
            ``(N, 3, 3)`` rotation matrices (so3), ``(N, 4, 4)`` homogeneous poses (se3),
            ``(N, n)`` function values, one function per row (functions).
        space: the space's name (one of :data:`SPACES`).
        columns: the columns used, in the order of the layout.
        n_rows_read: the number of data rows in the file (kept and skipped).
        skipped: the rows left out (only with ``skip_bad_rows=True``), in file order.
        source: the file read.
        grid: for ``functions``, the ``(n, 1)`` evenly spaced points of ``[0, 1]`` at which the
            functions are observed; ``None`` for the other spaces.
        labels: the row labels of kept rows where the file has a leading unnamed column, else
            ``()``.

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_points
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "f.csv"
        >>> _ = path.write_text("a,b,c\\n1,2,3\\n")
        >>> res = read_points(path, space="functions")
        >>> tuple(res.points.shape), res.grid[:, 0].tolist(), res.columns
        ((1, 3), [0.0, 0.5, 1.0], ('a', 'b', 'c'))
    """

    points: Tensor
    space: str
    columns: tuple[str, ...]
    n_rows_read: int
    skipped: tuple[SkippedRow, ...]
    source: str
    grid: Tensor | None = None
    labels: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


@dataclass
class _Table:
    names: list[str]
    rows: list[int]  # row numbers, one per data row
    cells: list[list[str]] | None  # text files
    array: np.ndarray | None  # arrays: (n, k) float64
    header_row: int | None  # the header's row number (text files with a header)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split(src: str, lines: list[tuple[int, str]], delimiter: str | None) -> list[list[str]]:
    if delimiter is None or delimiter == " ":
        # runs of blanks separate fields; a tab is a real delimiter (a cell may hold spaces,
        # and two tabs in a row are an empty cell)
        return [ln.split() for _, ln in lines]
    out = list(csv.reader([ln for _, ln in lines], delimiter=delimiter))
    if len(out) != len(lines):
        raise ValueError(f"{src}: a quoted field spans several lines, which is not supported")
    return out


def _read_text(path: str | os.PathLike[str], src: str, delimiter: str | None) -> _Table:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        text = fh.read()
    lines = [
        (i, ln)
        for i, ln in enumerate(text.splitlines(), start=1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"{src}: row 1: empty file (no header row and no data)")
    if delimiter is None:
        first = lines[0][1]
        delimiter = "," if "," in first else "\t" if "\t" in first else None
    elif not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character or None, got {delimiter!r}")
    cells = _split(src, lines, delimiter)
    rows = [i for i, _ in lines]
    head = [c.strip() for c in cells[0]]
    filled = [h for h in head if h]
    if filled and all(_is_number(h) for h in filled):
        # numbers (a blank cell among them is a missing value of a data row, not a header)
        names = [str(j) for j in range(len(head))]
        return _Table(names, rows, cells, None, None)
    if not cells[1:]:
        raise ValueError(f"{src}: row {rows[0] + 1}: no data rows after the header (row {rows[0]})")
    return _Table(head, rows[1:], cells[1:], None, rows[0])


def _read_array(path: str | os.PathLike[str], src: str, array: str | None, npz: bool) -> _Table:
    if not npz:
        return _from_array(np.asarray(np.load(path, allow_pickle=False)), src)
    with np.load(path, allow_pickle=False) as loaded:
        keys = list(loaded.keys())
        if array is None:
            if len(keys) != 1:
                raise ValueError(
                    f"{src}: the archive holds {len(keys)} arrays {keys}; pass array= to choose one"
                )
            array = keys[0]
        if array not in keys:
            raise ValueError(f"{src}: no array {array!r} in the archive; it holds {keys}")
        a = np.asarray(loaded[array])
    return _from_array(a, src)


def _from_array(a: np.ndarray, src: str) -> _Table:
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{src}: the array has dtype {a.dtype}; expected numbers")
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim == 3 and a.shape[1:] in ((3, 3), (3, 4), (4, 4)):
        a = a.reshape(a.shape[0], -1)
    elif a.ndim != 2:
        raise ValueError(
            f"{src}: an array of shape {tuple(a.shape)} is not a table; expected (N, k), "
            "(N, 3, 3), (N, 3, 4) or (N, 4, 4)"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{src}: row 1: empty array of shape {tuple(a.shape)}")
    a = a.astype(np.float64)
    names = [str(j) for j in range(a.shape[1])]
    return _Table(names, list(range(1, a.shape[0] + 1)), None, a, None)


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    kind: str  # values | latlon | xyz | angles | quat | matrix | tquat | rmat_t | m34 | m44
    idx: list[int]  # columns, in the layout's order (quaternions reordered to x, y, z, w)


def _quote(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _find(lower: list[str], candidates: Sequence[str]) -> int | None:
    for c in candidates:
        if c in lower:
            return lower.index(c)
    return None


def _quat_letter(name: str) -> str | None:
    n = name.strip().lower()
    for prefix in ("q", "q_", "quat_"):
        if n.startswith(prefix) and n[len(prefix) :] in ("w", "x", "y", "z"):
            return n[len(prefix) :]
    return None


def _order_arg(quaternion_order: str | None) -> str | None:
    if quaternion_order not in (None, "wxyz", "xyzw"):
        raise ValueError(
            f"quaternion_order must be 'wxyz', 'xyzw' or None, got {quaternion_order!r}"
        )
    return quaternion_order


def _quat_idx(src: str, names: list[str], idx: list[int], order: str | None) -> list[int]:
    """The four quaternion columns ``idx`` (in the file's or the selection's order) as x, y, z, w."""
    letters = [_quat_letter(names[i]) for i in idx]
    named = None not in letters and len(set(letters)) == 4
    if named:
        said = "".join(str(c) for c in letters)
        if order is not None and order != said:
            raise ValueError(
                f"{src}: quaternion_order={order!r} contradicts the column names "
                f"{_quote([names[i] for i in idx])} (order {said!r})"
            )
        by = dict(zip(letters, idx, strict=True))
        return [by["x"], by["y"], by["z"], by["w"]]
    if order is None:
        raise ValueError(
            f"{src}: the quaternion columns {_quote([names[i] for i in idx])} do not say their "
            "order; pass quaternion_order='wxyz' or 'xyzw' (a wrong order silently gives other "
            "rotations)"
        )
    return [idx[1], idx[2], idx[3], idx[0]] if order == "wxyz" else list(idx)


def _auto_quat(src: str, names: list[str], order: str | None) -> list[int] | None:
    found: dict[str, int] = {}
    for i, n in enumerate(names):
        c = _quat_letter(n)
        if c is not None and c not in found:
            found[c] = i
    if not found:
        return None
    missing = [c for c in "wxyz" if c not in found]
    if missing:
        raise ValueError(
            f"{src}: row 1 (header) has quaternion column(s) "
            f"{_quote([names[i] for i in found.values()])} but none for component(s) "
            f"{', '.join(missing)}; found {names}"
        )
    return _quat_idx(src, names, sorted(found.values()), order)


def _numeric_columns(table: _Table) -> list[int]:
    if table.array is not None:
        return list(range(len(table.names)))
    cells = table.cells or []
    out = []
    for j, name in enumerate(table.names):
        if not name:
            continue
        if any(j < len(r) and _is_number(r[j].strip()) for r in cells):
            out.append(j)
    return out


def _select(src: str, names: list[str], columns: Sequence[str | int]) -> list[int]:
    if isinstance(columns, (str, int)) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a sequence of names or positions, got {columns!r}")
    idx, missing = [], []
    for c in columns:
        if isinstance(c, bool) or not isinstance(c, (str, int)):
            raise TypeError(f"columns must hold names (str) or 0-based positions (int), got {c!r}")
        if isinstance(c, int):
            if not 0 <= c < len(names):
                raise ValueError(
                    f"{src}: column position {c} is out of range; the file has {len(names)} "
                    f"column(s) {names}"
                )
            idx.append(c)
        elif c in names:
            idx.append(names.index(c))
        else:
            missing.append(c)
    if missing:
        raise ValueError(f"{src}: row 1 (header) has no column(s) {_quote(missing)}; found {names}")
    if not idx:
        raise ValueError("columns must name at least one column")
    if len(set(idx)) != len(idx):
        raise ValueError(f"columns selects a column twice: {list(columns)!r}")
    return idx


_COUNTS = {
    "sphere": "2 (latitude, longitude) or 3 (x, y, z)",
    "so3": "4 (a quaternion) or 9 (a row-major rotation matrix)",
    "se3": (
        "7 (tx, ty, tz and a quaternion), 8 (a timestamp, tx, ty, tz and a quaternion: TUM), "
        "12 (a row-major 3x4 matrix [R | t]) or 16 (a row-major 4x4 matrix)"
    ),
}


def _layout_selected(
    src: str, space: str, names: list[str], idx: list[int], order: str | None
) -> _Layout:
    k = len(idx)
    if space in ("euclidean", "functions"):
        return _Layout("values", idx)
    if space == "torus":
        return _Layout("angles", idx)
    if space == "sphere" and k in (2, 3):
        return _Layout("latlon" if k == 2 else "xyz", idx)
    if space == "so3" and k in (4, 9):
        if k == 4:
            return _Layout("quat", _quat_idx(src, names, idx, order))
        return _Layout("matrix", idx)
    if space == "se3" and k in (7, 8, 12, 16):
        if k in (7, 8):
            t = idx[k - 7 : k - 4]
            return _Layout("tquat", t + _quat_idx(src, names, idx[k - 4 :], order))
        return _Layout("m34" if k == 12 else "m44", idx)
    raise ValueError(
        f"space {space!r} reads {_COUNTS[space]} columns; {k} were selected: "
        f"{_quote([names[i] for i in idx])}"
    )


def _layout_auto(src: str, space: str, table: _Table, order: str | None) -> _Layout:
    names = table.names
    if table.header_row is None and space in ("sphere", "so3", "se3"):
        # no names to go by (arrays, text without a header): the count of numeric columns
        # decides, as for columns= (e.g. the (N, 3, 3) arrays that `manifoldfm sample` writes)
        return _layout_selected(src, space, names, _numeric_columns(table), order)
    lower = [n.lower() for n in names]
    if space == "sphere":
        lat, lon = _find(lower, _LAT), _find(lower, _LON)
        if lat is not None and lon is not None:
            return _Layout("latlon", [lat, lon])
        xyz = [_find(lower, (c,)) for c in "xyz"]
        if None not in xyz:
            return _Layout("xyz", [int(i) for i in xyz if i is not None])
        raise ValueError(
            f"{src}: row 1 (header) has no latitude/longitude columns ({', '.join(_LAT)} / "
            f"{', '.join(_LON)}) nor x, y, z columns; found {names}; pass columns= to choose"
        )
    if space == "torus":
        dihedral = [i for i, n in enumerate(lower) if n in _DIHEDRALS]
        idx = dihedral or _numeric_columns(table)
        if not idx:
            raise ValueError(f"{src}: no numeric columns; found {names}")
        return _Layout("angles", idx)
    if space in ("so3", "se3"):
        q = _auto_quat(src, names, order)
        r = [_find(lower, (m,)) for m in _MATRIX]
        if q is None and None in r:
            raise ValueError(
                f"{src}: row 1 (header) has no quaternion columns (qw, qx, qy, qz) nor "
                f"rotation-matrix columns (r00 .. r22); found {names}; pass columns= with "
                "quaternion_order= to read other names"
            )
        ri = [int(i) for i in r if i is not None]
        if space == "so3":
            return _Layout("quat", q) if q is not None else _Layout("matrix", ri)
        t = [_find(lower, (c,)) for c in ("tx", "ty", "tz")]
        if None in t:
            t = [_find(lower, (c,)) for c in "xyz"]
        if None in t:
            raise ValueError(
                f"{src}: row 1 (header) has no translation columns (tx, ty, tz or x, y, z); "
                f"found {names}"
            )
        ti = [int(i) for i in t if i is not None]
        if q is not None:
            return _Layout("tquat", ti + q)
        return _Layout("rmat_t", ri + ti)
    idx = _numeric_columns(table)
    if not idx:
        raise ValueError(f"{src}: no numeric columns; found {names}")
    return _Layout("values", idx)


# ---------------------------------------------------------------------------------------------
# values and checks
# ---------------------------------------------------------------------------------------------


class _Bad:
    """Collects bad rows; :meth:`settle` raises at the first one unless skipping."""

    def __init__(self, src: str, skip: bool) -> None:
        self.src, self.skip = src, skip
        self.rows: list[SkippedRow] = []

    def add(self, row: int, column: str, reason: str) -> None:
        self.rows.append(SkippedRow(row=row, column=column, reason=reason))

    def settle(self) -> None:
        if self.rows and not self.skip:
            first = min(self.rows, key=lambda s: s.row)
            word = "columns" if "', '" in first.column else "column"
            raise ValueError(f"{self.src}: row {first.row}, {word} {first.column}: {first.reason}")


def _values(table: _Table, idx: list[int], bad: _Bad) -> tuple[Tensor, list[int]]:
    """``(n, len(idx))`` float64 values of the good rows, and the positions of those rows."""
    names = table.names
    if table.array is not None:
        a = table.array[:, idx]
        finite = np.isfinite(a)
        for p in np.nonzero(~finite.all(axis=1))[0].tolist():
            j = int(np.argmin(finite[p]))
            bad.add(table.rows[p], repr(names[idx[j]]), f"{a[p, j]} is not a finite number")
        keep = np.nonzero(finite.all(axis=1))[0].tolist()
        return torch.from_numpy(np.ascontiguousarray(a[keep])), keep
    out: list[list[float]] = []
    keep = []
    width = len(names)
    for p, (row, cells) in enumerate(zip(table.rows, table.cells or [], strict=True)):
        if len(cells) != width:
            col = (
                repr(names[len(cells)]) if len(cells) < width else f"{width + 1} (past the header)"
            )
            what = f"the header (row {table.header_row})" if table.header_row else "the first row"
            bad.add(row, col, f"the row has {len(cells)} field(s) but {what} has {width}")
            continue
        vals = []
        for j in idx:
            text = cells[j].strip()
            try:
                v = float(text)
            except ValueError:
                bad.add(row, repr(names[j]), f"{text!r} is not a number")
                break
            if not math.isfinite(v):
                bad.add(row, repr(names[j]), f"{text!r} is not a finite number")
                break
            vals.append(v)
        else:
            out.append(vals)
            keep.append(p)
    x = torch.tensor(out, dtype=torch.float64).reshape(len(out), len(idx))
    return x, keep


def _flag(
    mask: Tensor, detail: Tensor, rows: list[int], column: str, reason: str, bad: _Bad
) -> None:
    for p in torch.nonzero(mask).flatten().tolist():
        bad.add(rows[p], column, reason.format(float(detail[p])))


def _check_unit(
    v: Tensor, rows: list[int], column: str, tol: float, bad: _Bad, what: str
) -> tuple[Tensor, Tensor]:
    n = v.norm(dim=-1)
    off = (n - 1.0).abs() > tol
    _flag(off, n, rows, column, f"norm {{:.6g}} is not 1 (within {tol:g}): not a {what}", bad)
    return v / torch.where(n > 0, n, torch.ones_like(n))[:, None], ~off


def _check_rotation(
    r: Tensor, rows: list[int], column: str, tol: float, bad: _Bad
) -> tuple[Tensor, Tensor]:
    eye = torch.eye(3, dtype=r.dtype)
    err = (r.mT @ r - eye).abs().amax((-2, -1))
    det = torch.linalg.det(r)
    off = err > tol
    _flag(off, err, rows, column, f"not orthonormal (max |R^T R - I| = {{:.3g}} > {tol:g})", bad)
    refl = ~off & (det < 0)
    _flag(refl, det, rows, column, "determinant {:.6g}: a reflection, not a rotation", bad)
    ok = ~off & ~refl
    r = torch.where(ok[:, None, None], r, eye)
    return roma.special_procrustes(r), ok


def _cols(names: list[str], idx: list[int]) -> str:
    return _quote([names[i] for i in idx])


def _convert(
    layout: _Layout,
    x: Tensor,
    rows: list[int],
    names: list[str],
    angle_unit: str,
    tol: float,
    bad: _Bad,
) -> tuple[Tensor, Tensor]:
    """Points of the space and the mask of the rows that passed the checks."""
    kind, idx = layout.kind, layout.idx
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    label = _cols(names, idx)
    if kind == "values":
        return x, ok
    if kind == "angles":
        deg = angle_unit == "deg" or (
            angle_unit == "auto" and bool((x.abs() > 2.0 * math.pi + _AUTO_DEG_EPS).any())
        )
        return wrap_angle(torch.deg2rad(x) if deg else x), ok
    if kind == "latlon":
        lat, lon = x[:, 0], x[:, 1]
        limit = math.pi / 2 if angle_unit == "rad" else 90.0
        off = lat.abs() > limit
        unit = "radians" if angle_unit == "rad" else "degrees"
        _flag(
            off,
            lat,
            rows,
            repr(names[idx[0]]),
            f"latitude {{}} is outside the +-{limit:g} {unit}",
            bad,
        )
        ok = ~off
        if angle_unit != "rad":
            lat, lon = torch.deg2rad(lat), torch.deg2rad(lon)
        c = torch.cos(lat)
        return torch.stack([c * torch.cos(lon), c * torch.sin(lon), torch.sin(lat)], dim=1), ok
    if kind == "xyz":
        return _check_unit(x, rows, label, tol, bad, "unit vector")
    if kind == "quat":
        q, ok = _check_unit(x, rows, label, tol, bad, "unit quaternion")
        q = torch.where(ok[:, None], q, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype))
        return quat_to_rotmat(q, scalar_first=False, normalize=True), ok
    if kind == "matrix":
        return _check_rotation(x.reshape(-1, 3, 3), rows, label, tol, bad)
    if kind == "tquat":
        q, ok = _check_unit(x[:, 3:], rows, _cols(names, idx[3:]), tol, bad, "unit quaternion")
        q = torch.where(ok[:, None], q, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype))
        r = quat_to_rotmat(q, scalar_first=False, normalize=True)
        return rt_to_matrix(r, x[:, :3]), ok
    if kind == "rmat_t":
        r, ok = _check_rotation(x[:, :9].reshape(-1, 3, 3), rows, _cols(names, idx[:9]), tol, bad)
        return rt_to_matrix(r, x[:, 9:]), ok
    m = x.reshape(-1, 3 if kind == "m34" else 4, 4)
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    if kind == "m44":
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype)
        err = (m[:, 3] - bottom).abs().amax(-1)
        ok = err <= tol
        _flag(
            ~ok,
            err,
            rows,
            _cols(names, idx[12:]),
            f"the bottom row is not 0, 0, 0, 1 (off by {{:.3g}} > {tol:g})",
            bad,
        )
    r_idx = [idx[4 * i + j] for i in range(3) for j in range(3)]
    r, ok_r = _check_rotation(m[:, :3, :3], rows, _cols(names, r_idx), tol, bad)
    return rt_to_matrix(r, m[:, :3, 3]), ok & ok_r


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------


def read_points(
    path: str | os.PathLike[str],
    *,
    space: str,
    columns: Sequence[str | int] | None = None,
    angle_unit: str = "auto",
    quaternion_order: str | None = None,
    delimiter: str | None = None,
    array: str | None = None,
    tol: float = 1e-3,
    skip_bad_rows: bool = False,
) -> ReadResult:
    """Read a data file as points of a space (see the module docstring for the layouts).

    Args:
        path: a text file (CSV, tab- or space-separated; a header row with column names) or a
            ``.npy`` / ``.npz`` file.
        space: one of ``"euclidean", "sphere", "torus", "so3", "se3", "functions"``.
        columns: the columns to read, by name or 0-based position, in the order of the layout;
            ``None`` finds them from the header names.
        angle_unit: ``"deg"``, ``"rad"`` or ``"auto"`` (degrees for latitude and longitude;
            for torus angles, degrees if any ``|value| > 2 pi + 1e-6``). Give it when known.
        quaternion_order: ``"wxyz"`` or ``"xyzw"``; required unless the column names say the
            order (``qw, qx, qy, qz``).
        delimiter: the field separator; ``None`` takes ``","`` if the first line has one, else
            a tab if it has one, else runs of spaces.
        array: the array of a ``.npz`` archive (default: its only array).
        tol: tolerance of the unit-norm, orthonormality and bottom-row checks.
        skip_bad_rows: leave out malformed rows (listed in ``skipped``, with a warning) instead
            of raising.

    Returns:
        A :class:`ReadResult` with float64 ``points``.

    Raises:
        ValueError: a missing column (named, with the columns found), an unknown space or
            option, an empty file, no valid rows, or (without ``skip_bad_rows``) a malformed row:
            the message names the row (1-based, the header is row 1) and the column.
        TypeError: ``columns`` of the wrong type.

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_points
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "poses.csv"
        >>> _ = path.write_text("t_s,tx,ty,tz,qx,qy,qz,qw\\n0.0,1,2,3,0,0,0,1\\n")
        >>> res = read_points(path, space="se3")
        >>> tuple(res.points.shape), res.columns
        ((1, 4, 4), ('tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw'))
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.csv"
        >>> _ = path.write_text("name,latitude,longitude\\nNorth pole,90,0\\n")
        >>> read_points(path, space="sphere").points.round(decimals=6)
        tensor([[0., 0., 1.]], dtype=torch.float64)
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if angle_unit not in ("auto", "deg", "rad"):
        raise ValueError(f"angle_unit must be 'auto', 'deg' or 'rad', got {angle_unit!r}")
    order = _order_arg(quaternion_order)
    if not isinstance(skip_bad_rows, bool):
        raise TypeError(f"skip_bad_rows must be a bool, got {skip_bad_rows!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"tol must be a number, got {type(tol).__name__}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    src = os.fspath(path)
    suffix = os.path.splitext(src)[1].lower()
    if array is not None and suffix != ".npz":
        raise ValueError(f"array= applies to .npz files only, got {src}")
    if suffix in (".npy", ".npz"):
        table = _read_array(path, src, array, suffix == ".npz")
    else:
        table = _read_text(path, src, delimiter)
    names = table.names
    if columns is None:
        layout = _layout_auto(src, space, table, order)
    else:
        layout = _layout_selected(src, space, names, _select(src, names, columns), order)
    bad = _Bad(src, skip_bad_rows)
    x, keep = _values(table, layout.idx, bad)
    bad.settle()
    kept_rows = [table.rows[p] for p in keep]
    points, ok = _convert(layout, x, kept_rows, names, angle_unit, float(tol), bad)
    bad.settle()
    if not bool(ok.all()):
        points = points[ok]
        keep = [p for p, good in zip(keep, ok.tolist(), strict=True) if good]
    n_read = len(table.rows)
    skipped = tuple(sorted(bad.rows, key=lambda s: s.row))
    if not keep:
        raise ValueError(f"{src}: no valid data rows ({len(skipped)} of {n_read} skipped)")
    if skipped:
        first = skipped[0]
        warnings.warn(
            f"{src}: skipped {len(skipped)} of {n_read} data row(s) (first: row {first.row}, "
            f"column {first.column}: {first.reason}); see ReadResult.skipped",
            UserWarning,
            stacklevel=2,
        )
    labels: tuple[str, ...] = ()
    if table.cells is not None and names and names[0] == "" and table.header_row is not None:
        labels = tuple(table.cells[p][0].strip() for p in keep)
    grid = None
    if space == "functions":
        grid = torch.linspace(0.0, 1.0, points.shape[1], dtype=torch.float64)[:, None]
    return ReadResult(
        points=points,
        space=space,
        columns=tuple(names[i] for i in layout.idx),
        n_rows_read=n_read,
        skipped=skipped,
        source=src,
        grid=grid,
        labels=labels,
    )
