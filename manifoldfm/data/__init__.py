"""Toy and synthetic data samplers, data on manifolds and readers for real files."""

from .manifolds import (
    read_earth_csv,
    read_torsions_csv,
    sphere_vmf_mixture,
    torus_wrapped_mixture,
)
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
    "TOYS",
    "ToySample",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "moons",
    "read_earth_csv",
    "read_torsions_csv",
    "sample_toy",
    "sample_toy_labeled",
    "sphere_vmf_mixture",
    "spirals",
    "torus_wrapped_mixture",
]
