"""Functional flow matching: noise over point sets and regular grids.

Functions over a continuous domain are carried as their values at an ``(n, d)`` point set;
regular grids given that way are recognised (:func:`detect_grid`) and used for fast exact
sampling. See :mod:`manifoldfm.functional.noise` and :mod:`manifoldfm.functional.grids`.
"""

from .grids import GridInfo, detect_grid, grid_points
from .noise import MAX_DENSE_POINTS, GPSource, WhiteNoise

__all__ = [
    "MAX_DENSE_POINTS",
    "GPSource",
    "GridInfo",
    "WhiteNoise",
    "detect_grid",
    "grid_points",
]
