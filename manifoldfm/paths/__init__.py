"""Probability paths and schedulers."""

from .affine import AffinePath
from .base import PathSample, ProbPath
from .bridge import LinearGaussianPath, SchrodingerBridgePath
from .marginal import EmpiricalMarginalVelocity
from .schedulers import VE, VP, CondOT, Cosine, Polynomial, ScheduleOutput, Scheduler

__all__ = [
    "VE",
    "VP",
    "AffinePath",
    "CondOT",
    "Cosine",
    "EmpiricalMarginalVelocity",
    "LinearGaussianPath",
    "PathSample",
    "Polynomial",
    "ProbPath",
    "ScheduleOutput",
    "Scheduler",
    "SchrodingerBridgePath",
]
