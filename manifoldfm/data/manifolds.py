"""Data on manifolds: synthetic mixtures on spheres and tori, readers for real CSV files.

**Synthetic.** :func:`sphere_vmf_mixture`, :func:`torus_wrapped_mixture` and
:func:`so3_igso3_mixture` return a
:class:`~manifoldfm.sources.Mixture` (exact ``sample`` and ``log_prob``, so a model's
log-likelihood can be compared with the truth). Component means are drawn from the generator
and kept well apart by greedy farthest-point selection among uniform candidates.

**Real.** :func:`read_earth_csv` reads points on the Earth (volcano or flood events) as unit
vectors of ``R^3`` and :func:`read_torsions_csv` reads dihedral angles (Ramachandran
``phi, psi`` or side-chain torsions) as points of the flat torus, with the ``csv`` module.
Malformed files raise ``ValueError`` naming the row (1-based, the header is row 1) and the
column.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._utils import check_positive
from ..manifolds import SO3, FlatTorus, Sphere
from ..manifolds.torus import wrap_angle, wrap_difference
from ..sources import IGSO3, Mixture, VonMisesFisher, WrappedNormal

__all__ = [
    "read_earth_csv",
    "read_torsions_csv",
    "so3_igso3_mixture",
    "sphere_vmf_mixture",
    "torus_wrapped_mixture",
]

#: Uniform candidates per component for the farthest-point selection of means.
_CANDIDATES_PER_COMPONENT = 64
_MIN_CANDIDATES = 256


# ---------------------------------------------------------------------------------------------
# synthetic mixtures
# ---------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k (number of components) must be >= 1, got {k}")
    return k


def _per_component(value: float | Sequence[float], k: int, name: str) -> list[float]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != k:
            raise ValueError(f"{name} must be a float or hold k = {k} values, got {len(value)}")
        return [float(v) for v in value]
    return [value] * k  # type: ignore[list-item]


def _farthest(cand: Tensor, k: int, dist: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Greedy farthest-point selection of ``k`` rows of ``cand`` (no host sync)."""
    chosen = [cand[0]]
    closest = dist(cand, cand[0])
    for _ in range(k - 1):
        j = torch.argmax(closest, dim=0, keepdim=True)
        nxt = cand.index_select(0, j)[0]
        chosen.append(nxt)
        closest = torch.minimum(closest, dist(cand, nxt))
    return torch.stack(chosen)


def _candidates(
    k: int, manifold: Sphere | FlatTorus | SO3, generator: torch.Generator | None
) -> Tensor:
    m = max(_MIN_CANDIDATES, _CANDIDATES_PER_COMPONENT * k)
    device = generator.device if generator is not None else torch.device("cpu")
    return manifold.random_uniform(m, generator=generator, dtype=torch.float64, device=device)


def _separated_mixture(
    k: int,
    value: float | Sequence[float],
    name: str,
    manifold: Sphere | FlatTorus | SO3,
    dist: Callable[[Tensor, Tensor], Tensor],
    component: Callable[[Tensor, float], Any],
    *,
    weights: Sequence[float] | None,
    generator: torch.Generator | None,
    allow_zero: bool = False,
) -> Mixture:
    """``k`` components ``component(centre, value)`` at greedily separated centres."""
    k = _check_k(k)
    values = [
        check_positive(v, name, allow_zero=allow_zero) for v in _per_component(value, k, name)
    ]
    centres = _farthest(_candidates(k, manifold, generator), k, dist)
    return Mixture([component(centres[i], values[i]) for i in range(k)], weights)


def sphere_vmf_mixture(
    k: int = 4,
    concentration: float | Sequence[float] = 50.0,
    *,
    d: int = 2,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> Mixture:
    """A mixture of ``k`` von Mises-Fisher distributions on ``S^d`` with well-separated means.

    The means are chosen greedily, each the candidate farthest (in great-circle distance) from
    those already chosen, among ``max(256, 64 k)`` uniform points drawn from ``generator``.

    Args:
        k: the number of components (``>= 1``).
        concentration: ``kappa >= 0``, one float for all components or one per component.
        d: the sphere's dimension (points in ``R^{d+1}``).
        weights: positive mixture weights (default: equal).
        generator: random generator for the means (float64, on its device).

    Returns:
        A :class:`~manifoldfm.sources.Mixture` of :class:`~manifoldfm.sources.VonMisesFisher`.

    Example:
        >>> import torch
        >>> from manifoldfm.data import sphere_vmf_mixture
        >>> mix = sphere_vmf_mixture(k=3, concentration=30.0, generator=torch.Generator().manual_seed(0))
        >>> x = mix.sample(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        >>> x.shape, mix.log_prob(x).shape
        (torch.Size([100, 3]), torch.Size([100]))
    """
    sphere = Sphere(d)
    return _separated_mixture(
        k,
        concentration,
        "concentration",
        sphere,
        sphere.dist,
        VonMisesFisher,
        weights=weights,
        generator=generator,
        allow_zero=True,
    )


def torus_wrapped_mixture(
    k: int = 4,
    scale: float | Sequence[float] = 0.3,
    *,
    d: int = 2,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> Mixture:
    """A mixture of ``k`` wrapped normals on the flat torus ``T^d`` with well-separated means.

    The means are chosen greedily, each the candidate farthest (in the torus' geodesic
    distance) from those already chosen, among ``max(256, 64 k)`` uniform points drawn from
    ``generator``.

    Args:
        k: the number of components (``>= 1``).
        scale: the standard deviation of every angle, one float for all components or one per
            component (``> 0``).
        d: the number of angles.
        weights: positive mixture weights (default: equal).
        generator: random generator for the means (float64, on its device).

    Returns:
        A :class:`~manifoldfm.sources.Mixture` of :class:`~manifoldfm.sources.WrappedNormal`.

    Example:
        >>> import torch
        >>> from manifoldfm.data import torus_wrapped_mixture
        >>> mix = torus_wrapped_mixture(k=5, scale=0.2, generator=torch.Generator().manual_seed(0))
        >>> x = mix.sample(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        >>> x.shape, bool(((x >= 0) & (x < 2 * torch.pi)).all())
        (torch.Size([100, 2]), True)
    """
    torus = FlatTorus(d)

    def tdist(a: Tensor, b: Tensor) -> Tensor:
        return wrap_difference(a - b).norm(dim=-1)

    def component(mean: Tensor, s: float) -> WrappedNormal:
        return WrappedNormal(torus, mean, s)

    return _separated_mixture(
        k, scale, "scale", torus, tdist, component, weights=weights, generator=generator
    )


def so3_igso3_mixture(
    k: int = 4,
    sigma: float | Sequence[float] = 0.2,
    *,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> Mixture:
    """A mixture of ``k`` isotropic Gaussians on SO(3) (IGSO(3)) with well-separated centres.

    The centres are chosen greedily, each the candidate farthest (in rotation angle) from those
    already chosen, among ``max(256, 64 k)`` Haar-uniform rotations drawn from ``generator``.
    Sampling and ``log_prob`` are exact (those of :class:`~manifoldfm.sources.IGSO3`), so a
    model's log-likelihood on SO(3) can be compared with the truth.

    Args:
        k: the number of components (``>= 1``).
        sigma: the IGSO(3) scale (about the standard deviation of each coordinate of the
            rotation vector from the centre, for small ``sigma``), one float for all components
            or one per component (``> 0``).
        weights: positive mixture weights (default: equal).
        generator: random generator for the centres (float64, on its device).

    Returns:
        A :class:`~manifoldfm.sources.Mixture` of :class:`~manifoldfm.sources.IGSO3`.

    Example:
        >>> import torch
        >>> from manifoldfm.data import so3_igso3_mixture
        >>> mix = so3_igso3_mixture(k=3, sigma=0.15, generator=torch.Generator().manual_seed(0))
        >>> r = mix.sample(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        >>> r.shape, mix.log_prob(r).shape
        (torch.Size([100, 3, 3]), torch.Size([100]))
    """
    so3 = SO3()

    def component(centre: Tensor, s: float) -> IGSO3:
        return IGSO3(s, loc=centre)

    return _separated_mixture(
        k, sigma, "sigma", so3, so3.dist, component, weights=weights, generator=generator
    )


# ---------------------------------------------------------------------------------------------
# CSV readers
# ---------------------------------------------------------------------------------------------


def _rows(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped names) and ``(row number, cells)`` of the non-empty data rows."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{os.fspath(path)!s}: empty file (no header row)") from None
        except csv.Error as err:
            raise ValueError(f"{os.fspath(path)!s}: row 1: {err}") from None
        rows = []
        try:
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    rows.append((reader.line_num, cells))
        except csv.Error as err:
            raise ValueError(f"{os.fspath(path)!s}: row {reader.line_num}: {err}") from None
    return [h.strip() for h in header], rows


def _columns(path: str | os.PathLike[str], names: list[str], wanted: Sequence[str]) -> list[int]:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(
            f"{os.fspath(path)!s}: row 1 (header) has no column(s) "
            f"{', '.join(repr(c) for c in missing)}; found {names}"
        )
    return [names.index(c) for c in wanted]


def _cell(path: str | os.PathLike[str], row: int, cells: list[str], idx: int, name: str) -> str:
    if idx >= len(cells):
        raise ValueError(
            f"{os.fspath(path)!s}: row {row}, column {name!r}: missing value "
            f"(the row has {len(cells)} fields)"
        )
    return cells[idx].strip()


def _number(path: str | os.PathLike[str], row: int, cells: list[str], idx: int, name: str) -> float:
    text = _cell(path, row, cells, idx, name)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{os.fspath(path)!s}: row {row}, column {name!r}: {text!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise ValueError(
            f"{os.fspath(path)!s}: row {row}, column {name!r}: {text!r} is not a finite number"
        )
    return value


def read_earth_csv(path: str | os.PathLike[str]) -> Tensor:
    """Read points on the Earth as unit vectors of ``R^3`` (points of ``Sphere(2)``).

    The file has a header row with either ``lat_deg, lon_deg`` (degrees; used when present) or
    ``x, y, z`` (unit vectors, renormalised), other columns being ignored. Latitude and
    longitude map to ``(cos lat cos lon, cos lat sin lon, sin lat)``.

    Args:
        path: the CSV file.

    Returns:
        A float64 tensor of shape ``(N, 3)`` with unit rows, in file order.

    Raises:
        ValueError: no such columns, a missing, non-numeric or non-finite cell, a latitude
            outside ``[-90, 90]``, an ``x, y, z`` row whose norm is not within ``1e-3`` of 1, or
            no data rows; the message names the row (1-based, the header is row 1) and the
            column.

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_earth_csv
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "earth.csv"
        >>> _ = path.write_text("lat_deg,lon_deg\\n90,0\\n0,90\\n")
        >>> read_earth_csv(path).round(decimals=6)
        tensor([[0., 0., 1.],
                [0., 1., 0.]], dtype=torch.float64)
    """
    names, rows = _rows(path)
    if "lat_deg" in names and "lon_deg" in names:
        i_lat, i_lon = _columns(path, names, ("lat_deg", "lon_deg"))
        lat, lon = [], []
        for row, cells in rows:
            a = _number(path, row, cells, i_lat, "lat_deg")
            if not -90.0 <= a <= 90.0:
                raise ValueError(
                    f"{os.fspath(path)!s}: row {row}, column 'lat_deg': {a} is outside [-90, 90]"
                )
            lat.append(a)
            lon.append(_number(path, row, cells, i_lon, "lon_deg"))
        if not lat:
            raise ValueError(f"{os.fspath(path)!s}: no data rows")
        phi = torch.deg2rad(torch.tensor(lat, dtype=torch.float64))
        lam = torch.deg2rad(torch.tensor(lon, dtype=torch.float64))
        c = torch.cos(phi)
        return torch.stack([c * torch.cos(lam), c * torch.sin(lam), torch.sin(phi)], dim=1)
    if not all(c in names for c in ("x", "y", "z")):
        raise ValueError(
            f"{os.fspath(path)!s}: row 1 (header) needs columns 'lat_deg', 'lon_deg' or "
            f"'x', 'y', 'z'; found {names}"
        )
    idx = _columns(path, names, ("x", "y", "z"))
    pts = []
    for row, cells in rows:
        p = [_number(path, row, cells, i, n) for i, n in zip(idx, "xyz", strict=True)]
        r = math.sqrt(math.fsum(v * v for v in p))
        if not abs(r - 1.0) <= 1e-3:
            raise ValueError(
                f"{os.fspath(path)!s}: row {row}, columns 'x', 'y', 'z': norm {r:.6g} is not 1 "
                "(within 1e-3)"
            )
        pts.append([v / r for v in p])
    if not pts:
        raise ValueError(f"{os.fspath(path)!s}: no data rows")
    return torch.tensor(pts, dtype=torch.float64)


def _where_sets(where: Mapping[str, object] | None) -> dict[str, frozenset[str]]:
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise TypeError(f"where must be a mapping column -> value(s), got {type(where).__name__}")
    out = {}
    for col, val in where.items():
        if not isinstance(col, str):
            raise TypeError(f"where keys must be column names (str), got {col!r}")
        if isinstance(val, str):
            out[col] = frozenset([val.strip()])
        elif isinstance(val, (Sequence, set, frozenset)) and all(isinstance(v, str) for v in val):
            out[col] = frozenset(v.strip() for v in val)
        else:
            raise TypeError(
                f"where[{col!r}] must be a string or a collection of strings, got {val!r}"
            )
    return out


def read_torsions_csv(
    path: str | os.PathLike[str],
    columns: Sequence[str] = ("phi", "psi"),
    *,
    degrees: bool | None = None,
    where: Mapping[str, str | Sequence[str]] | None = None,
) -> Tensor:
    """Read dihedral angles as points of the flat torus ``T^k`` (angles in ``[0, 2 pi)``).

    Args:
        path: the CSV file (a header row, then one row per residue).
        columns: the angle columns, in the order of the output's coordinates.
        degrees: whether the file holds degrees; ``None`` (default) decides from the data:
            degrees if any selected value has ``|value| > 2 pi``, else radians.
        where: keep only rows whose cells equal the given strings, e.g.
            ``{"rama_class": "General"}`` or ``{"resname": ["ILE", "VAL"]}`` (cells and values
            compared after stripping spaces). Only kept rows are checked for numbers.

    Returns:
        A float64 tensor of shape ``(N, len(columns))`` wrapped to ``[0, 2 pi)``, in file order.

    Raises:
        ValueError: a missing column (``columns`` or ``where``), a missing, non-numeric or
            non-finite cell, or no (matching) data rows; the message names the row (1-based,
            the header is row 1) and the column.
        TypeError: ``columns`` given as one string, or a malformed ``where``.

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_torsions_csv
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "rama.csv"
        >>> _ = path.write_text("phi,psi,rama_class\\n-90,180,General\\n60,30,Glycine\\n")
        >>> read_torsions_csv(path, where={"rama_class": "General"})  # degrees detected
        tensor([[4.7124, 3.1416]], dtype=torch.float64)
    """
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a sequence of column names, got {columns!r}")
    cols = [str(c) for c in columns]
    if not cols:
        raise ValueError("columns must name at least one column")
    if degrees is not None and not isinstance(degrees, bool):
        raise TypeError(f"degrees must be True, False or None, got {degrees!r}")
    sets = _where_sets(where)
    names, rows = _rows(path)
    idx = _columns(path, names, cols)
    w_idx = dict(zip(sets, _columns(path, names, list(sets)), strict=True))
    values: list[list[float]] = []
    for row, cells in rows:
        if any(_cell(path, row, cells, w_idx[c], c) not in s for c, s in sets.items()):
            continue
        values.append([_number(path, row, cells, i, n) for i, n in zip(idx, cols, strict=True)])
    if not values:
        detail = f" matching where={dict(where)!r}" if where else ""
        raise ValueError(f"{os.fspath(path)!s}: no data rows{detail}")
    x = torch.tensor(values, dtype=torch.float64)
    if degrees is None:
        degrees = bool((x.abs() > 2.0 * math.pi).any())
    if degrees:
        x = torch.deg2rad(x)
    return wrap_angle(x)
