"""Toy and synthetic data samplers."""

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
    "sample_toy",
    "sample_toy_labeled",
    "spirals",
]
