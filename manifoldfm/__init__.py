"""manifoldfm: flow matching on Euclidean space, Riemannian manifolds and function spaces."""

from ._utils import checks
from .paths import (
    VE,
    VP,
    AffinePath,
    CondOT,
    Cosine,
    LinearGaussianPath,
    PathSample,
    Polynomial,
    ProbPath,
    ScheduleOutput,
    Scheduler,
    SchrodingerBridgePath,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "VE",
    "VP",
    "AffinePath",
    "CondOT",
    "Cosine",
    "LinearGaussianPath",
    "PathSample",
    "Polynomial",
    "ProbPath",
    "ScheduleOutput",
    "Scheduler",
    "SchrodingerBridgePath",
    "__version__",
    "checks",
]
