"""Toy and synthetic data samplers, data on manifolds, functional data and readers for real files."""

from .functions import (
    FunctionData,
    gp_functions,
    random_fourier_fields,
    random_phase_sines,
    read_aemet_csv,
    read_curves_csv,
)
from .manifolds import (
    read_earth_csv,
    read_torsions_csv,
    so3_igso3_mixture,
    sphere_vmf_mixture,
    torus_wrapped_mixture,
)
from .readers import SPACES, ReadResult, SkippedRow, read_points
from .toys import (
    TOYS,
    ToySample,
    checkerboard,
    circles,
    eight_gaussians,
    moons,
    sample_toy,
    sample_toy_labeled,
    spirals,
)

__all__ = [
    "SPACES",
    "TOYS",
    "FunctionData",
    "ReadResult",
    "SkippedRow",
    "ToySample",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "gp_functions",
    "moons",
    "random_fourier_fields",
    "random_phase_sines",
    "read_aemet_csv",
    "read_curves_csv",
    "read_earth_csv",
    "read_points",
    "read_torsions_csv",
    "sample_toy",
    "sample_toy_labeled",
    "so3_igso3_mixture",
    "sphere_vmf_mixture",
    "spirals",
    "torus_wrapped_mixture",
]
