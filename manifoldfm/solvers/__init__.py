"""Solvers that integrate a velocity field: ODE (fixed-step and adaptive), SDE, likelihood."""

from .likelihood import DIVERGENCES, LogDensity, divergence, log_likelihood
from .ode import METHODS, solve_ode
from .results import LikelihoodResult, ODESolution, SDESolution
from .sde import ScorePath, solve_sde
from .steps import (
    DOPRI5,
    EULER,
    HEUN,
    MANIFOLD_SCHEMES,
    MIDPOINT,
    RK4,
    TABLEAUX,
    ButcherTableau,
    dlogmap,
    rk_step,
)

__all__ = [
    "DIVERGENCES",
    "DOPRI5",
    "EULER",
    "HEUN",
    "MANIFOLD_SCHEMES",
    "METHODS",
    "MIDPOINT",
    "RK4",
    "TABLEAUX",
    "ButcherTableau",
    "LikelihoodResult",
    "LogDensity",
    "ODESolution",
    "SDESolution",
    "ScorePath",
    "divergence",
    "dlogmap",
    "log_likelihood",
    "rk_step",
    "solve_ode",
    "solve_sde",
]
