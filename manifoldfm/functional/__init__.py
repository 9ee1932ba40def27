"""Functional flow matching: noise over point sets and regular grids, and neural operators.

Functions over a continuous domain are carried as their values at an ``(n, d)`` point set;
regular grids given that way are recognised (:func:`detect_grid`) and used for fast exact
sampling. See :mod:`manifoldfm.functional.noise`, :mod:`manifoldfm.functional.grids` and
:mod:`manifoldfm.functional.models` (Fourier neural operators, a point-set transformer).
"""

from .conditioning import GUIDANCES, ConditionalSample, condition_sample, conditional_noise
from .grids import GridInfo, detect_grid, grid_points
from .models import FNO1d, FNO2d, PointSetOperator
from .noise import MAX_DENSE_POINTS, GPSource, WhiteNoise

__all__ = [
    "GUIDANCES",
    "MAX_DENSE_POINTS",
    "ConditionalSample",
    "FNO1d",
    "FNO2d",
    "GPSource",
    "GridInfo",
    "PointSetOperator",
    "WhiteNoise",
    "condition_sample",
    "conditional_noise",
    "detect_grid",
    "grid_points",
]
