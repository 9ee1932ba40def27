"""Functional data: readers for curve files and synthetic random functions.

**Real.** :func:`read_aemet_csv` reads the AEMET daily temperature curves (a header row, a
row-label column, then one value per day) and :func:`read_curves_csv` reads headerless files
with one curve per row (the gene-expression time courses used by Functional Flow Matching).
Both return a :class:`FunctionData` record: values ``(n_curves, n_points)`` in float64 and the
evenly spaced points in ``[0, 1]`` as ``(n_points, 1)``, the point-set layout of
:mod:`manifoldfm.functional`. Malformed files raise ``ValueError`` naming the file, the row
(1-based, counting every line of the file) and the column (1-based).

**Synthetic.** :func:`random_phase_sines` draws sums of sines with random amplitudes,
frequencies and phases at given 1-D points; :func:`random_fourier_fields` draws smooth periodic
2-D fields from a few random Fourier modes on a grid; :func:`gp_functions` draws functions from
a mixture of Matern Gaussian processes with different length scales (exactly, through
:class:`~manifoldfm.functional.GPSource`) on any point set. All take ``generator=`` and use no
global random state.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "FunctionData",
    "gp_functions",
    "random_fourier_fields",
    "random_phase_sines",
    "read_aemet_csv",
    "read_curves_csv",
]


@dataclass(frozen=True, kw_only=True)
class FunctionData:
    """Curves observed on a common set of points.

    Attributes:
        values: ``(n_curves, n_points)`` float64 values, one curve per row (file order).
        points: ``(n_points, 1)`` float64 points, evenly spaced over ``[0, 1]``
            (``torch.linspace(0, 1, n_points)``).
        labels: the row labels (first column) of files that have them, else ``()``.

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_curves_csv
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "curves.csv"
        >>> _ = path.write_text("1,2,3\\n4,5,6\\n")
        >>> data = read_curves_csv(path)
        >>> tuple(data.values.shape), data.points[:, 0].tolist(), data.labels
        ((2, 3), [0.0, 0.5, 1.0], ())
    """

    values: Tensor
    points: Tensor
    labels: tuple[str, ...] = ()


def _read_rows(path: str | os.PathLike[str]) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of the non-blank rows of a CSV file."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    rows.append((reader.line_num, cells))
        except csv.Error as err:
            raise ValueError(f"{os.fspath(path)!s}: row {reader.line_num}: {err}") from None
    return rows


def _parse(
    path: str | os.PathLike[str],
    row: int,
    cells: list[str],
    first: int,
    hint: str = "",
) -> list[float]:
    out = []
    for col, cell in enumerate(cells[first:], start=first + 1):
        text = cell.strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{os.fspath(path)!s}: row {row}, column {col}: {text!r} is not a number{hint}"
            ) from None
        if not math.isfinite(value):
            raise ValueError(
                f"{os.fspath(path)!s}: row {row}, column {col}: {text!r} is not a finite number"
            )
        out.append(value)
    return out


def _ragged(path: str | os.PathLike[str], row: int, got: int, want: int, what: str) -> ValueError:
    return ValueError(
        f"{os.fspath(path)!s}: row {row} has {got} fields but {what} has {want} "
        "(all rows must have the same length)"
    )


def _result(values: list[list[float]], labels: tuple[str, ...]) -> FunctionData:
    v = torch.tensor(values, dtype=torch.float64)
    points = torch.linspace(0.0, 1.0, v.shape[1], dtype=torch.float64)[:, None]
    return FunctionData(values=v, points=points, labels=labels)


def read_aemet_csv(path: str | os.PathLike[str]) -> FunctionData:
    """Read curves stored one per row after a header row and a row-label column.

    The layout of the AEMET data (daily mean temperatures of 73 Spanish weather stations,
    1980-2009, 365 values per station, from the R package ``fda.usc``): row 1 is a header
    (its names are not used), each further row is a label (e.g. the station number) and then
    the curve's values. Any number of values (>= 1) is accepted, the same on every row.

    Args:
        path: the CSV file.

    Returns:
        A :class:`FunctionData` with ``values`` ``(n_curves, n_points)``, ``points``
        ``(n_points, 1)`` evenly spaced over ``[0, 1]`` and the row ``labels``.

    Raises:
        ValueError: an empty file, no data rows, no value columns, a row whose length differs
            from the header's, or a non-numeric, NaN or infinite value; the message names the
            row (the header is row 1) and the column (the label column is column 1).

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_aemet_csv
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "aemet.csv"
        >>> _ = path.write_text('"","X1","X2"\\n"1",10.5,11\\n"2",-1,0.25\\n')
        >>> data = read_aemet_csv(path)
        >>> data.values.tolist(), data.labels
        ([[10.5, 11.0], [-1.0, 0.25]], ('1', '2'))
    """
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{os.fspath(path)!s}: empty file (expected a header row)")
    (head_row, header), data = rows[0], rows[1:]
    if len(header) < 2:
        raise ValueError(
            f"{os.fspath(path)!s}: row {head_row} (header) has {len(header)} field(s); expected "
            "a row-label column and at least one value column"
        )
    if not data:
        raise ValueError(f"{os.fspath(path)!s}: no data rows after the header")
    values, labels = [], []
    for row, cells in data:
        if len(cells) != len(header):
            raise _ragged(path, row, len(cells), len(header), f"the header (row {head_row})")
        labels.append(cells[0].strip())
        values.append(_parse(path, row, cells, 1))
    return _result(values, tuple(labels))


def read_curves_csv(path: str | os.PathLike[str]) -> FunctionData:
    """Read curves stored one per row, without a header or label column.

    The layout of the gene-expression time courses used by Functional Flow Matching
    (``genes_logdata_centered.csv``: 1028 curves of 60 points; ``expr_genes.csv``: 156 of 60).
    Every row must hold the same number of values.

    Args:
        path: the CSV file.

    Returns:
        A :class:`FunctionData` with ``values`` ``(n_curves, n_points)``, ``points``
        ``(n_points, 1)`` evenly spaced over ``[0, 1]`` and no labels.

    Raises:
        ValueError: an empty file, a row whose length differs from the first row's, or a
            non-numeric, NaN or infinite value; the message names the row and the column
            (both 1-based).

    Example:
        >>> import pathlib, tempfile
        >>> from manifoldfm.data import read_curves_csv
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "genes.csv"
        >>> _ = path.write_text("0.5,-0.25\\n1e-3,2\\n")
        >>> read_curves_csv(path).values.tolist()
        [[0.5, -0.25], [0.001, 2.0]]
    """
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{os.fspath(path)!s}: empty file (expected one curve per row)")
    first_row, first = rows[0]
    values = []
    for row, cells in rows:
        if len(cells) != len(first):
            raise _ragged(path, row, len(cells), len(first), f"the first row (row {first_row})")
        hint = " (the file must have no header row)" if row == first_row else ""
        values.append(_parse(path, row, cells, 0, hint))
    return _result(values, ())


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return n


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
        raise ValueError(f"{name} must satisfy 0 <= low <= high < inf, got {value!r}")
    return lo, hi


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def random_phase_sines(
    n: int,
    points: Tensor,
    *,
    n_terms: int = 3,
    frequency: tuple[float, float] = (1.0, 4.0),
    amplitude: tuple[float, float] = (0.5, 1.5),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random sums of sines at given 1-D points.

    Each function is ``f(x) = sum_{k=1}^{K} a_k sin(2 pi w_k x + phi_k)`` with independent
    amplitudes ``a_k ~ U(amplitude)``, frequencies ``w_k ~ U(frequency)`` (cycles per unit
    length) and phases ``phi_k ~ U(0, 2 pi)``. The uniform phase makes the process
    stationary with mean 0 and pointwise variance ``K E[a^2] / 2``, where
    ``E[a^2] = (lo^2 + lo hi + hi^2) / 3``.

    Args:
        n: number of functions.
        points: ``(n_points,)`` or ``(n_points, 1)`` points; they set the dtype and device.
        n_terms: number ``K`` of sines per function.
        frequency: range ``(low, high)`` of the frequencies, ``0 <= low <= high``.
        amplitude: range ``(low, high)`` of the amplitudes, ``0 <= low <= high``.
        generator: random stream (draws happen on its device, then move to ``points``').

    Returns:
        ``(n, n_points)`` values of ``points``' dtype and device.

    Example:
        >>> import torch
        >>> from manifoldfm.data import random_phase_sines
        >>> x = torch.linspace(0, 1, 50)[:, None]
        >>> f = random_phase_sines(8, x, generator=torch.Generator().manual_seed(0))
        >>> tuple(f.shape), bool(f.abs().max() <= 3 * 1.5)
        ((8, 50), True)
    """
    n = _check_n(n)
    n_terms = _check_count(n_terms, "n_terms")
    f_lo, f_hi = _check_range(frequency, "frequency")
    a_lo, a_hi = _check_range(amplitude, "amplitude")
    _check_generator(generator)
    if not isinstance(points, Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if not points.is_floating_point():
        raise TypeError(f"points must be floating point, got dtype {points.dtype}")
    if points.ndim == 2 and points.shape[1] == 1:
        x = points[:, 0]
    elif points.ndim == 1:
        x = points
    else:
        raise ValueError(
            f"points must be 1-D points of shape (n_points,) or (n_points, 1), "
            f"got {tuple(points.shape)}"
        )
    draw = generator.device if generator is not None else points.device
    u = torch.rand(3, n, n_terms, generator=generator, dtype=points.dtype, device=draw)
    u = u.to(points.device)
    amp = a_lo + (a_hi - a_lo) * u[0]
    freq = f_lo + (f_hi - f_lo) * u[1]
    phase = (2 * math.pi) * u[2]
    arg = (2 * math.pi) * freq[:, :, None] * x[None, None, :] + phase[:, :, None]
    return (amp[:, :, None] * torch.sin(arg)).sum(dim=1)


def random_fourier_fields(
    n: int,
    size: int | tuple[int, int],
    *,
    modes: int = 4,
    decay: float = 2.0,
    channels: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random smooth periodic 2-D fields made of a few Fourier modes on a regular grid.

    On the grid ``(y_i, x_j) = (i / H, j / W)`` of the unit torus each field is

        f(y, x) = sum_{|k_y|, |k_x| <= m} s_k (z_k cos(2 pi (k_y y + k_x x))
                                              + z'_k sin(2 pi (k_y y + k_x x))),

    with independent standard normal ``z_k, z'_k`` and the spectral decay
    ``s_k = (1 + k_y^2 + k_x^2)^(-decay / 2)``: a stationary Gaussian field whose power
    vanishes beyond wavenumber radius ``m sqrt(2)``. The constant mode ``k = 0`` is
    included.

    Args:
        n: number of fields.
        size: grid ``H`` (square) or ``(H, W)``.
        modes: largest wavenumber ``m`` per axis, ``>= 1``.
        decay: spectral decay exponent, ``>= 0`` (larger is smoother).
        channels: independent channels ``C``.
        generator: random stream.
        dtype: floating dtype (default ``torch.get_default_dtype()``).
        device: output device (default the generator's, else CPU).

    Returns:
        ``(n, C, H, W)`` fields.

    Example:
        >>> import torch
        >>> from manifoldfm.data import random_fourier_fields
        >>> f = random_fourier_fields(3, (16, 12), generator=torch.Generator().manual_seed(0))
        >>> tuple(f.shape)
        (3, 1, 16, 12)
    """
    n = _check_n(n)
    modes = _check_count(modes, "modes")
    channels = _check_count(channels, "channels")
    _check_generator(generator)
    if isinstance(size, int) and not isinstance(size, bool):
        h, w = size, size
    else:
        try:
            h, w = size  # type: ignore[misc]
        except (TypeError, ValueError) as err:
            raise ValueError(f"size must be an int or a pair (H, W), got {size!r}") from err
    for name, v in (("H", h), ("W", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"size must hold positive ints, got {name} = {v!r} in {size!r}")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not decay >= 0:
        raise ValueError(f"decay must be a number >= 0, got {decay!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype}")
    draw = generator.device if generator is not None else torch.device("cpu")
    out = draw if device is None else torch.device(device)
    k = torch.arange(-modes, modes + 1, dtype=dtype, device=out)
    ky, kx = (t.reshape(-1) for t in torch.meshgrid(k, k, indexing="ij"))
    scale = (1 + ky.square() + kx.square()).pow(-float(decay) / 2)
    y = torch.arange(h, dtype=dtype, device=out) / h
    x = torch.arange(w, dtype=dtype, device=out) / w
    theta = (2 * math.pi) * (
        ky[:, None, None] * y[None, :, None] + kx[:, None, None] * x[None, None, :]
    )
    z = torch.randn(2, n, channels, ky.numel(), generator=generator, dtype=dtype, device=draw)
    z = z.to(out) * scale
    return torch.einsum("nck,khw->nchw", z[0], torch.cos(theta)) + torch.einsum(
        "nck,khw->nchw", z[1], torch.sin(theta)
    )


def gp_functions(
    n: int,
    points: Tensor,
    length_scales: float | tuple[float, ...] = (0.05, 0.1, 0.2),
    *,
    nu: float = 2.5,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Functions drawn from a mixture of zero-mean Matern Gaussian processes.

    Each function picks one of ``length_scales`` uniformly at random and is an exact draw of
    the Matern-``nu`` process with that length scale and standard deviation ``std`` at
    ``points`` (:class:`~manifoldfm.functional.GPSource`: circulant embedding on regular grids,
    a cached float64 Cholesky factor otherwise). A mixture over length scales gives data whose
    smoothness varies from curve to curve, a harder target than a single process.

    Args:
        n: number of functions (``>= 0``).
        points: ``(n_points, d)`` points (``d`` in 1-3) or ``(n_points,)`` 1-D points; they set
            the dtype and device.
        length_scales: one length scale or several (each ``> 0``).
        nu: Matern smoothness, 0.5, 1.5 or 2.5.
        std: standard deviation of every value (``> 0``).
        generator: random stream (draws on its device, then moved to ``points``').

    Returns:
        ``(n, n_points)`` values of ``points``' dtype and device.

    Raises:
        ValueError: bad counts, length scales, ``nu`` or ``std``; points that are not a
            valid point set for :class:`~manifoldfm.functional.GPSource`.

    Example:
        >>> import torch
        >>> from manifoldfm.data import gp_functions
        >>> s = torch.linspace(0, 1, 64, dtype=torch.float64)[:, None]
        >>> f = gp_functions(500, s, (0.1, 0.3), generator=torch.Generator().manual_seed(0))
        >>> tuple(f.shape), round(float(f.var()), 1)
        ((500, 64), 1.0)
    """
    import gpytorch

    from ..functional import GPSource

    n = _check_n(n)
    _check_generator(generator)
    if isinstance(length_scales, Tensor):
        length_scales = tuple(length_scales.detach().cpu().reshape(-1).tolist())
    if isinstance(length_scales, (int, float)):
        length_scales = (length_scales,)
    if not isinstance(length_scales, (tuple, list)):
        raise TypeError(
            f"length_scales must be a number or a sequence of numbers, got {length_scales!r}"
        )
    scales = tuple(length_scales)
    if not scales or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in scales
    ):
        raise ValueError(f"length_scales must be positive numbers, got {length_scales!r}")
    if nu not in (0.5, 1.5, 2.5):
        raise ValueError(f"nu must be 0.5, 1.5 or 2.5, got {nu!r}")
    if isinstance(std, bool) or not (isinstance(std, (int, float)) and 0 < std < math.inf):
        raise ValueError(f"std must be a positive number, got {std!r}")
    if not isinstance(points, Tensor) or not points.is_floating_point():
        raise TypeError(f"points must be a floating torch.Tensor, got {points!r:.60}")
    pts = points[:, None] if points.ndim == 1 else points
    out = torch.empty(n, pts.shape[0], dtype=points.dtype, device=points.device)
    draw = generator.device if generator is not None else points.device
    which = torch.randint(len(scales), (n,), generator=generator, device=draw).to(points.device)
    for k, ell in enumerate(scales):  # a loop over the few processes, not over the batch
        idx = torch.nonzero(which == k).flatten()
        if idx.numel() == 0:
            continue
        kernel = gpytorch.kernels.MaternKernel(nu=nu)
        kernel.lengthscale = float(ell)
        source = GPSource(kernel, pts)
        draws = source.sample(idx.numel(), generator=generator, dtype=points.dtype)
        out[idx] = std * draws.to(points.device)
    return out
