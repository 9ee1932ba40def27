"""Shared test configuration: hypothesis profiles, dtype tolerances, the gpu marker."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import manifoldfm as mfm

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Test tensors are small: one intra-op thread is faster and immune to oversubscription.
torch.set_num_threads(1)

#: Absolute/relative tolerances per dtype used across the suite.
TOL: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"atol": 1e-9, "rtol": 1e-9},
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _strict_checks():
    """Every test runs with value and on-manifold checks on."""
    with mfm.checks(values=True, manifold=True):
        yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
