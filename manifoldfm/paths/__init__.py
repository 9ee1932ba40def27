"""Probability paths and schedulers."""

from .affine import AffinePath
from .base import PathSample, ProbPath
from .bridge import LinearGaussianPath, SchrodingerBridgePath
from .geodesic import GeodesicPath
from .marginal import EmpiricalMarginalVelocity
from .product import ProductPath
from .schedulers import (
    VE,
    VP,
    CondOT,
    Cosine,
    ExponentialRate,
    Polynomial,
    ScheduleOutput,
    Scheduler,
)
from .stochastic import StochasticGeodesicPath

__all__ = [
    "VE",
    "VP",
    "AffinePath",
    "CondOT",
    "Cosine",
    "EmpiricalMarginalVelocity",
    "ExponentialRate",
    "GeodesicPath",
    "LinearGaussianPath",
    "PathSample",
    "Polynomial",
    "ProbPath",
    "ProductPath",
    "ScheduleOutput",
    "Scheduler",
    "SchrodingerBridgePath",
    "StochasticGeodesicPath",
]
