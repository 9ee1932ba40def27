"""Regular grids given as point sets: construction, detection, and layout conversion.

Functions over a domain are carried as values at an ``(n, d)`` point set. When that point set
is a *regular grid* (a Cartesian product of evenly spaced coordinates along each axis, listed
in any order, e.g. from ``torch.meshgrid`` and ``reshape``), :func:`detect_grid` recognises
it and returns a :class:`GridInfo` with the grid's shape, origin and spacing and the
permutation between the order of the points and the row-major ("C") order of the grid.

Two layouts of a batch of functions are used (see the conventions page):

* point layout ``(B, n_points)`` (one channel) or ``(B, n_points, C)``, in the order of the
  point set;
* grid layout ``(B, *grid_shape)`` or ``(B, C, *grid_shape)``.

:meth:`GridInfo.to_grid` and :meth:`GridInfo.from_grid` convert between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GridInfo", "detect_grid", "grid_points"]


@dataclass(frozen=True, kw_only=True)
class GridInfo:
    """A regular grid recognised in an ``(n, d)`` point set.

    Grid point ``(i_1, ..., i_d)`` sits at ``start[k] + i_k * step[k]`` along axis ``k``;
    grid points are numbered in row-major order (the last axis varies fastest), as
    ``torch.meshgrid(..., indexing="ij")`` followed by ``reshape(-1, d)`` lists them.

    Attributes:
        shape: the number of grid points along each axis.
        start: the first coordinate along each axis.
        step: the spacing along each axis (``1.0`` for an axis with a single coordinate).
        order: ``(n,)`` long tensor: ``points[order]`` lists the points in grid order.
        index: ``(n,)`` long tensor, the inverse of ``order``: point ``j`` is grid point
            ``index[j]`` (row-major flat index).

    Example:
        >>> import torch
        >>> from manifoldfm.functional import detect_grid, grid_points
        >>> pts = grid_points((3, 4))
        >>> g = detect_grid(pts.flip(0))  # the same grid listed backwards
        >>> g.shape, g.step
        ((3, 4), (0.5, 0.3333333333333333))
        >>> bool(torch.equal(pts.flip(0)[g.order], pts))
        True
    """

    shape: tuple[int, ...]
    start: tuple[float, ...]
    step: tuple[float, ...]
    order: Tensor
    index: Tensor

    @property
    def ndim(self) -> int:
        """The number of axes ``d``."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of grid points."""
        return math.prod(self.shape)

    def axes(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> tuple[Tensor, ...]:
        """The coordinates along each axis, ``start + step * arange(size)``.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import detect_grid, grid_points
            >>> tuple(tuple(a.tolist()) for a in detect_grid(grid_points((2, 3))).axes())
            ((0.0, 1.0), (0.0, 0.5, 1.0))
        """
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return tuple(
            (start + step * torch.arange(s, dtype=torch.float64, device=device)).to(dtype)
            for s, start, step in zip(self.shape, self.start, self.step, strict=True)
        )

    def to_grid(self, x: Tensor) -> Tensor:
        """Point layout to grid layout.

        ``(B, n)`` becomes ``(B, *shape)`` and ``(B, n, C)`` becomes ``(B, C, *shape)``.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import detect_grid, grid_points
            >>> g = detect_grid(grid_points((2, 3)))
            >>> g.to_grid(torch.zeros(5, 6)).shape, g.to_grid(torch.zeros(5, 6, 2)).shape
            (torch.Size([5, 2, 3]), torch.Size([5, 2, 2, 3]))
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        n = self.size
        if x.ndim not in (2, 3) or x.shape[1] != n:
            raise ValueError(
                f"x must have shape (B, {n}) or (B, {n}, C) for a grid of shape {self.shape}, "
                f"got {tuple(x.shape)}"
            )
        order = self.order.to(x.device)
        if x.ndim == 2:
            return x[:, order].reshape(x.shape[0], *self.shape)
        return x[:, order].transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.shape)

    def from_grid(self, x: Tensor) -> Tensor:
        """Grid layout to point layout (the inverse of :meth:`to_grid`).

        ``(B, *shape)`` becomes ``(B, n)`` and ``(B, C, *shape)`` becomes ``(B, n, C)``.

        Example:
            >>> import torch
            >>> from manifoldfm.functional import detect_grid, grid_points
            >>> g = detect_grid(grid_points((2, 3)).flip(0))
            >>> x = torch.arange(12.0).reshape(2, 6)
            >>> bool(torch.equal(g.from_grid(g.to_grid(x)), x))
            True
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        d = self.ndim
        index = self.index.to(x.device)
        if x.ndim == d + 1 and tuple(x.shape[1:]) == self.shape:
            return x.reshape(x.shape[0], -1)[:, index]
        if x.ndim == d + 2 and tuple(x.shape[2:]) == self.shape:
            return x.reshape(x.shape[0], x.shape[1], -1)[:, :, index].transpose(1, 2)
        grid = ", ".join(map(str, self.shape))
        raise ValueError(f"x must have shape (B, {grid}) or (B, C, {grid}), got {tuple(x.shape)}")


def grid_points(
    shape: int | Sequence[int],
    low: float | Sequence[float] = 0.0,
    high: float | Sequence[float] = 1.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The points of a regular grid on a box, shape ``(prod(shape), d)``, in row-major order.

    Args:
        shape: points per axis (an int for a 1-D grid).
        low: the first coordinate, one number for every axis or one per axis.
        high: the last coordinate (included), one number or one per axis.
        dtype: floating dtype (default: ``torch.get_default_dtype()``).
        device: the device (default: CPU).

    Example:
        >>> from manifoldfm.functional import grid_points
        >>> tuple(tuple(p) for p in grid_points((2, 3)).tolist()[:4])
        ((0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (1.0, 0.0))
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or not shape:
        raise TypeError(f"shape must be an int or a non-empty sequence of ints, got {shape!r}")
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"shape entries must be ints >= 1, got {tuple(shape)}")
    d = len(shape)
    lows = _per_axis(low, d, "low")
    highs = _per_axis(high, d, "high")
    for lo, hi in zip(lows, highs, strict=True):
        if not hi > lo:
            raise ValueError(f"high must exceed low on every axis, got low={lows}, high={highs}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    axes = [
        torch.linspace(lo, hi, s, dtype=torch.float64, device=device)
        for lo, hi, s in zip(lows, highs, shape, strict=True)
    ]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, d).to(dtype)


def _per_axis(value: float | Sequence[float], d: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = (float(value),) * d
    elif isinstance(value, Sequence) and len(value) == d:
        out = tuple(float(v) for v in value)
    else:
        raise ValueError(f"{name} must be a number or a sequence of {d} numbers, got {value!r}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def detect_grid(points: Tensor, *, rtol: float | None = None) -> GridInfo | None:
    """Recognise a regular grid in an ``(n, d)`` point set; ``None`` when it is not one.

    The points form a grid when the distinct coordinates along each axis are evenly spaced
    (up to ``rtol`` times the axis' largest absolute coordinate or its spacing, whichever is
    larger) and the points are exactly their Cartesian product, each once, in any order.
    A recognised grid is treated as exactly regular, with spacing
    ``(last - first) / (count - 1)`` per axis.

    Args:
        points: ``(n, d)`` floating tensor.
        rtol: relative tolerance of the even spacing (default ``1e-9`` for float64 points,
            ``1e-5`` otherwise).

    Returns:
        a :class:`GridInfo`, or ``None`` for scattered points (and for duplicated points).

    Example:
        >>> import torch
        >>> from manifoldfm.functional import detect_grid, grid_points
        >>> detect_grid(grid_points((4, 5))).shape
        (4, 5)
        >>> detect_grid(torch.tensor([[0.0], [0.1], [0.3]])) is None
        True
    """
    if not isinstance(points, Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 1:
        raise ValueError(f"points must have shape (n, d) with n, d >= 1, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"points must have a floating dtype, got {points.dtype}")
    if rtol is None:
        rtol = 1e-9 if points.dtype == torch.float64 else 1e-5
    n, d = points.shape
    p = points.detach().to(torch.float64)
    shape: list[int] = []
    start: list[float] = []
    step: list[float] = []
    flat = torch.zeros(n, dtype=torch.long, device=p.device)
    for k in range(d):
        u = torch.unique(p[:, k])  # sorted
        m = int(u.numel())
        if n % m != 0:
            return None
        u_lo, u_hi = float(u[0]), float(u[-1])
        if m == 1:
            h = 1.0
        else:
            h = (u_hi - u_lo) / (m - 1)
            ideal = u_lo + h * torch.arange(m, dtype=torch.float64, device=p.device)
            scale = max(abs(u_lo), abs(u_hi), h)
            if float((u - ideal).abs().max()) > rtol * scale:
                return None
        flat = flat * m + torch.searchsorted(u, p[:, k].contiguous())
        shape.append(m)
        start.append(u_lo)
        step.append(h)
    if math.prod(shape) != n:
        return None
    if not bool(torch.bincount(flat, minlength=n).eq(1).all()):
        return None
    order = torch.argsort(flat)
    return GridInfo(
        shape=tuple(shape), start=tuple(start), step=tuple(step), order=order, index=flat
    )
