"""manifoldfm: flow matching on Euclidean space, Riemannian manifolds and function spaces.

The public names are re-exported here; submodules ``nn``, ``metrics``, ``data``, ``frames``,
``rotations``, ``functional`` and ``testing`` are reachable as attributes (``manifoldfm.nn.MLPVelocity``).
"""

from . import api, data, frames, functional, metrics, nn, rotations
from ._utils import checks
from .api import FitResult, FittedModel, evaluate, fit, load, sample
from .couplings import CouplingResult, ExactOT, FrameCost, Independent, SinkhornOT, kabsch
from .losses import cfm_loss, quadrature_weights
from .manifolds import SE3, SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from .paths import (
    VE,
    VP,
    AffinePath,
    CondOT,
    Cosine,
    EmpiricalMarginalVelocity,
    ExponentialRate,
    GeodesicPath,
    LinearGaussianPath,
    PathSample,
    Polynomial,
    ProbPath,
    ProductPath,
    ScheduleOutput,
    Scheduler,
    SchrodingerBridgePath,
    StochasticGeodesicPath,
)
from .solvers import (
    LikelihoodResult,
    ODESolution,
    SDESolution,
    log_likelihood,
    solve_ode,
    solve_sde,
)
from .sources import (
    IGSO3,
    CentredGaussian,
    Gaussian,
    Mixture,
    Uniform,
    VonMisesFisher,
    WrappedNormal,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "IGSO3",
    "SE3",
    "SO3",
    "VE",
    "VP",
    "AffinePath",
    "CentredGaussian",
    "CondOT",
    "Cosine",
    "CouplingResult",
    "EmpiricalMarginalVelocity",
    "Euclidean",
    "ExactOT",
    "ExponentialRate",
    "FitResult",
    "FittedModel",
    "FlatTorus",
    "FrameCost",
    "Gaussian",
    "GeodesicPath",
    "Independent",
    "LikelihoodResult",
    "LinearGaussianPath",
    "Manifold",
    "Mixture",
    "ODESolution",
    "PathSample",
    "Polynomial",
    "ProbPath",
    "Product",
    "ProductPath",
    "SDESolution",
    "ScheduleOutput",
    "Scheduler",
    "SchrodingerBridgePath",
    "SinkhornOT",
    "Sphere",
    "StochasticGeodesicPath",
    "Uniform",
    "VonMisesFisher",
    "WrappedNormal",
    "__version__",
    "api",
    "cfm_loss",
    "checks",
    "data",
    "evaluate",
    "fit",
    "frames",
    "functional",
    "kabsch",
    "load",
    "log_likelihood",
    "metrics",
    "nn",
    "quadrature_weights",
    "rotations",
    "sample",
    "solve_ode",
    "solve_sde",
]
