"""Results keep the inputs' dtype whatever torch's default dtype is."""

from __future__ import annotations

import pytest
import torch

from manifoldfm.api import fit
from manifoldfm.manifolds import SE3, SO3, FlatTorus, Sphere


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("manifold", [Sphere(2), SO3(), SE3(), FlatTorus(2)], ids=repr)
def test_float32_points_stay_float32_under_a_float64_default(manifold, float64_default):
    g = torch.Generator().manual_seed(0)
    x = manifold.random(4, generator=g, dtype=torch.float32)
    y = manifold.random(4, generator=g, dtype=torch.float32)
    u = manifold.logmap(x, y)
    assert u.dtype == torch.float32
    assert manifold.expmap(x, u).dtype == torch.float32
    assert manifold.dist(x, y).dtype == torch.float32
    # identical points: the zero-distance branch (the safe division's fill) keeps the dtype too
    assert manifold.logmap(x, x).dtype == torch.float32
    assert torch.isfinite(manifold.logmap(x, x)).all()


def test_fit_se3_in_float32_under_a_float64_default(float64_default):
    x = SE3().random(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = fit(x, space="se3", steps=2, batch_size=8, hidden=8, depth=1, progress=False)
    assert next(res.model.parameters()).dtype == torch.float32
