"""Regular grids as point sets: construction, detection in any order, layout conversion."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manifoldfm.functional import GridInfo, detect_grid, grid_points

from .strategies import seeds


@st.composite
def grids(draw):
    d = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=d, max_size=d)))
    low = draw(st.lists(st.floats(-5.0, 5.0), min_size=d, max_size=d))
    width = draw(st.lists(st.floats(0.1, 10.0), min_size=d, max_size=d))
    high = [lo + w for lo, w in zip(low, width, strict=True)]
    return shape, low, high


@given(grids(), seeds, st.sampled_from([torch.float64, torch.float32]))
def test_detects_permuted_meshgrids(spec, seed, dtype):
    shape, low, high = spec
    pts = grid_points(shape, low, high, dtype=dtype)
    n, d = pts.shape
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    g = detect_grid(pts[perm])
    assert g is not None
    assert g.shape == shape and g.ndim == d and g.size == n
    # order lists the permuted points in row-major grid order; index is its inverse
    assert torch.equal(pts[perm][g.order], pts)
    assert torch.equal(g.order[g.index], torch.arange(n))
    for k in range(d):
        assert g.start[k] == pytest.approx(float(pts[:, k].min()))
        if shape[k] > 1:
            assert g.step[k] == pytest.approx((high[k] - low[k]) / (shape[k] - 1), rel=1e-5)


@given(grids(), seeds, st.integers(1, 3))
def test_layout_round_trip(spec, seed, channels):
    shape, low, high = spec
    pts = grid_points(shape, low, high, dtype=torch.float64)
    n = pts.shape[0]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    g = detect_grid(pts[perm])
    assert g is not None
    x = torch.randn(4, n, generator=gen, dtype=torch.float64)
    assert torch.equal(g.from_grid(g.to_grid(x)), x)
    xc = torch.randn(4, n, channels, generator=gen, dtype=torch.float64)
    grid_c = g.to_grid(xc)
    assert grid_c.shape == (4, channels, *shape)
    assert torch.equal(g.from_grid(grid_c), xc)
    # the first coordinate as a function, in grid layout, is the meshgrid's first axis
    coord = g.to_grid(pts[perm][:, 0][None])[0]
    axes = [torch.linspace(lo, hi, s, dtype=torch.float64) for lo, hi, s in zip(low, high, shape)]
    mesh = torch.meshgrid(*axes, indexing="ij")[0]
    torch.testing.assert_close(coord, mesh)
    for got, want in zip(g.axes(dtype=torch.float64), axes, strict=True):
        torch.testing.assert_close(got, want)


def test_grid_points_order_and_bounds():
    pts = grid_points((2, 3), low=(0.0, -1.0), high=(1.0, 1.0), dtype=torch.float64)
    assert pts.shape == (6, 2) and pts.dtype == torch.float64
    assert pts.tolist() == [[0, -1], [0, 0], [0, 1], [1, -1], [1, 0], [1, 1]]
    assert grid_points(5).shape == (5, 1)
    with pytest.raises(ValueError, match="high must exceed low"):
        grid_points(3, low=1.0, high=0.0)
    with pytest.raises(ValueError, match="shape entries"):
        grid_points((3, 0))
    with pytest.raises(ValueError, match="sequence of 2"):
        grid_points((3, 3), low=(0.0, 0.0, 0.0))


def test_non_grids_are_not_detected():
    pts = grid_points((4, 5), dtype=torch.float64)
    assert detect_grid(pts[:-1]) is None  # a point missing
    assert detect_grid(torch.cat([pts, pts[:1]])) is None  # a duplicate
    uneven = torch.tensor([[0.0], [0.1], [0.3], [0.4]], dtype=torch.float64)
    assert detect_grid(uneven) is None
    jittered = pts.clone()
    jittered[3, 1] += 1e-4
    assert detect_grid(jittered) is None
    scattered = torch.rand(20, 2, generator=torch.Generator().manual_seed(0))
    assert detect_grid(scattered) is None


def test_float32_linspace_rounding_is_tolerated():
    axes = [torch.linspace(0.3, 7.1, 33), torch.linspace(-2.0, 2.0, 17)]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    g = detect_grid(pts)
    assert g is not None and g.shape == (33, 17)


def test_single_point_axis():
    pts = torch.stack([torch.linspace(0, 1, 5), torch.zeros(5)], dim=1)
    g = detect_grid(pts)
    assert g is not None and g.shape == (5, 1) and g.step[1] == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        detect_grid(torch.zeros(5))
    with pytest.raises(TypeError, match="floating"):
        detect_grid(torch.zeros(5, 1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        detect_grid([[0.0], [1.0]])  # type: ignore[arg-type]
    g = detect_grid(grid_points((2, 3)))
    assert isinstance(g, GridInfo)
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        g.to_grid(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        g.from_grid(torch.zeros(2, 3, 2))
