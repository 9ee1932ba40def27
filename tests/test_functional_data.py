"""Tests of the functional data readers and synthetic random functions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manifoldfm.data import (
    FunctionData,
    gp_functions,
    random_fourier_fields,
    random_phase_sines,
    read_aemet_csv,
    read_curves_csv,
)
from manifoldfm.metrics import radial_power_spectrum

from .conftest import DEVICES
from .strategies import dtypes, seeds

# ------------------------------------------------------------------ readers


def _aemet_text(values: list[list[float]]) -> str:
    n_points = len(values[0])
    lines = [",".join(['""'] + [f'"X{j + 1}"' for j in range(n_points)])]
    for i, row in enumerate(values):
        lines.append(",".join([f'"{i + 1}"'] + [repr(v) for v in row]))
    return "\n".join(lines) + "\n"


@given(
    n_curves=st.integers(1, 5),
    n_points=st.integers(1, 8),
    seed=seeds,
)
def test_readers_round_trip(tmp_path_factory, n_curves, n_points, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_curves, n_points, generator=g, dtype=torch.float64)
    d = tmp_path_factory.mktemp("fn")
    aemet = d / "aemet.csv"
    aemet.write_text(_aemet_text(v.tolist()))
    curves = d / "curves.csv"
    curves.write_text("\n".join(",".join(repr(x) for x in row) for row in v.tolist()) + "\n")
    want_points = torch.linspace(0, 1, n_points, dtype=torch.float64)[:, None]
    for data, labels in (
        (read_aemet_csv(aemet), tuple(str(i + 1) for i in range(n_curves))),
        (read_curves_csv(curves), ()),
    ):
        assert isinstance(data, FunctionData)
        assert data.values.dtype == torch.float64 and data.points.dtype == torch.float64
        torch.testing.assert_close(data.values, v, atol=0, rtol=0)
        torch.testing.assert_close(data.points, want_points, atol=0, rtol=0)
        assert data.labels == labels


def test_readers_accept_blank_lines_bom_and_spaces(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('\ufeff"", "d1", "d2"\n\n"s1", 1.5 , -2\n"s2",3,4e-1\n\n', encoding="utf-8")
    data = read_aemet_csv(p)
    assert data.values.tolist() == [[1.5, -2.0], [3.0, 0.4]]
    assert data.labels == ("s1", "s2")
    q = tmp_path / "c.csv"
    q.write_text("1, 2\n\n3 ,4\n")
    assert read_curves_csv(q).values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "text,pattern",
    [
        ('"","X1","X2"\n"1",1,abc\n', r"row 2, column 3: 'abc' is not a number"),
        ('"","X1","X2"\n"1",1,2\n"2",NA,2\n', r"row 3, column 2: 'NA' is not a number"),
        ('"","X1","X2"\n"1",1,nan\n', r"row 2, column 3: 'nan' is not a finite number"),
        ('"","X1","X2"\n"1",inf,1\n', r"row 2, column 2: 'inf' is not a finite number"),
        ('"","X1","X2"\n"1",1,2\n"2",1\n', r"row 3 has 2 fields but the header \(row 1\) has 3"),
        ('"","X1","X2"\n"1",1,2,3\n', r"row 2 has 4 fields"),
        ('"","X1","X2"\n', r"no data rows"),
        ('"label"\n"1"\n', r"row 1 \(header\) has 1 field"),
        ("", r"empty file"),
    ],
)
def test_aemet_reader_errors_name_row_and_column(tmp_path, text, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=pattern) as info:
        read_aemet_csv(p)
    assert "bad.csv" in str(info.value)


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("1,2,3\n4,x,6\n", r"row 2, column 2: 'x' is not a number"),
        ("1,2,3\n4,5,NaN\n", r"row 2, column 3: 'NaN' is not a finite number"),
        ("1,2,3\n4,5\n", r"row 2 has 2 fields but the first row \(row 1\) has 3"),
        ("1,2\n\n4,5,6\n", r"row 3 has 3 fields"),
        (
            '"X1","X2"\n1,2\n',
            r"row 1, column 1: 'X1' is not a number \(the file must have no header",
        ),
        ("1,,3\n", r"row 1, column 2: '' is not a number"),
        ("\n\n", r"empty file"),
    ],
)
def test_curves_reader_errors_name_row_and_column(tmp_path, text, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_curves_csv(p)


# ------------------------------------------------------------------ random sums of sines


@given(n=st.integers(0, 6), n_points=st.integers(1, 30), seed=seeds, dtype=dtypes)
def test_random_phase_sines_shape_bounds_and_reproducibility(n, n_points, seed, dtype):
    x = torch.linspace(0, 1, n_points, dtype=dtype)
    f = random_phase_sines(n, x[:, None], n_terms=2, generator=torch.Generator().manual_seed(seed))
    assert f.shape == (n, n_points) and f.dtype == dtype
    assert bool((f.abs() <= 2 * 1.5 + 1e-5).all())
    again = random_phase_sines(n, x, n_terms=2, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(f, again, atol=0, rtol=0)


def test_random_phase_sines_statistics():
    """Mean 0 and variance K E[a^2] / 2 at every point (uniform phases)."""
    x = torch.linspace(0, 1, 7, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    f = random_phase_sines(40000, x, n_terms=3, amplitude=(0.5, 1.5), generator=g)
    ea2 = (0.5**2 + 0.5 * 1.5 + 1.5**2) / 3
    assert float(f.mean(0).abs().max()) < 0.03
    torch.testing.assert_close(
        f.var(0), torch.full((7,), 3 * ea2 / 2, dtype=f.dtype), atol=0.05, rtol=0
    )
    # A single term of fixed amplitude and frequency: a pure sinusoid through the phase.
    one = random_phase_sines(
        5, x, n_terms=1, frequency=(2.0, 2.0), amplitude=(1.0, 1.0), generator=g
    )
    recon = torch.sin(4 * math.pi * x[None, :] + torch.asin(one[:, :1]))
    # sin(w x + p) at x = 0 is sin p; the two branches of asin: check one of them matches.
    alt = torch.sin(4 * math.pi * x[None, :] + math.pi - torch.asin(one[:, :1]))
    ok = torch.isclose(recon, one, atol=1e-9).all(1) | torch.isclose(alt, one, atol=1e-9).all(1)
    assert bool(ok.all())


def test_random_phase_sines_seeds_differ_and_refusals():
    x = torch.linspace(0, 1, 10)
    a = random_phase_sines(3, x, generator=torch.Generator().manual_seed(0))
    b = random_phase_sines(3, x, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"\(10, 2\)"):
        random_phase_sines(3, torch.zeros(10, 2))
    with pytest.raises(ValueError, match="frequency"):
        random_phase_sines(3, x, frequency=(4.0, 1.0))
    with pytest.raises(ValueError, match="amplitude"):
        random_phase_sines(3, x, amplitude=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_terms"):
        random_phase_sines(3, x, n_terms=0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        random_phase_sines(-1, x)
    with pytest.raises(TypeError, match="floating"):
        random_phase_sines(2, torch.arange(5))
    with pytest.raises(TypeError, match="generator"):
        random_phase_sines(2, x, generator=0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ random Fourier fields


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_fourier_fields_shape_dtype_device_reproducible(device, dtype):
    g = torch.Generator(device=device).manual_seed(0)
    f = random_fourier_fields(4, (12, 10), channels=2, generator=g, dtype=dtype)
    assert f.shape == (4, 2, 12, 10) and f.dtype == dtype and f.device.type == device
    g2 = torch.Generator(device=device).manual_seed(0)
    again = random_fourier_fields(4, (12, 10), channels=2, generator=g2, dtype=dtype)
    torch.testing.assert_close(f, again, atol=0, rtol=0)
    assert torch.isfinite(f).all()


@given(modes=st.integers(1, 3), seed=seeds)
def test_random_fourier_fields_are_band_limited_and_periodic(modes, seed):
    size = 20
    f = random_fourier_fields(
        3, size, modes=modes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    spec = radial_power_spectrum(f)[0]
    cutoff = math.ceil(modes * math.sqrt(2)) + 1
    assert float(spec[cutoff:].abs().max()) < 1e-20 * max(1.0, float(spec.max()))
    assert float(spec[: modes + 1].sum()) > 0


def test_random_fourier_fields_statistics_and_refusals():
    g = torch.Generator().manual_seed(0)
    f = random_fourier_fields(4000, 8, modes=2, decay=1.0, generator=g, dtype=torch.float64)
    k = torch.arange(-2, 3, dtype=torch.float64)
    var = (1 + k[:, None] ** 2 + k[None, :] ** 2).pow(-1.0).sum()  # sum of s_k^2
    se = math.sqrt(float(var) / f.shape[0])  # standard error of the pointwise means
    assert float(f.mean(0).abs().max()) < 5 * se
    torch.testing.assert_close(f.var(0), torch.full_like(f[0], float(var)), atol=0, rtol=0.1)
    # Smoother for larger decay: less high-frequency power relative to the total.
    rough = radial_power_spectrum(random_fourier_fields(50, 16, decay=0.0, generator=g))[0]
    smooth = radial_power_spectrum(random_fourier_fields(50, 16, decay=4.0, generator=g))[0]
    assert float(smooth[4] / smooth.sum()) < float(rough[4] / rough.sum())
    with pytest.raises(ValueError, match="size"):
        random_fourier_fields(2, (4, 0))
    with pytest.raises(ValueError, match="size"):
        random_fourier_fields(2, (4, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modes"):
        random_fourier_fields(2, 4, modes=0)
    with pytest.raises(ValueError, match="decay"):
        random_fourier_fields(2, 4, decay=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        random_fourier_fields(2, 4, dtype=torch.int64)


def _matern52(r: torch.Tensor, ell: float) -> torch.Tensor:
    z = math.sqrt(5.0) * r / ell
    return (1 + z + z**2 / 3) * torch.exp(-z)


def test_gp_functions_mixture_covariance_and_reproducibility():
    """The covariance of a mixture of GPs is the weighted mean of their kernels."""
    s = torch.linspace(0, 1, 24, dtype=torch.float64)[:, None]
    g = torch.Generator().manual_seed(0)
    f = gp_functions(6000, s, (0.05, 0.4), std=2.0, generator=g)
    assert f.shape == (6000, 24) and f.dtype == torch.float64
    again = gp_functions(6000, s, (0.05, 0.4), std=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(f, again)
    emp = f.T @ f / f.shape[0]  # zero-mean processes
    r = (s - s.T).abs()
    target = 4.0 * 0.5 * (_matern52(r, 0.05) + _matern52(r, 0.4))
    # standard error of an entry of the empirical covariance: sqrt((C_ii C_jj + C_ij^2) / n)
    se = ((target.diagonal()[:, None] * target.diagonal()[None] + target**2) / 6000).sqrt()
    assert float(((emp - target).abs() / se).max()) < 5.0
    # the two processes differ: a lag-2 correlation far from the single-scale values
    lag = (f[:, :-2] * f[:, 2:]).mean() / 4.0
    assert abs(float(lag) - float(target[0, 2]) / 4.0) < 0.03
    assert abs(float(lag) - float(_matern52(r[0, 2], 0.4))) > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gp_functions_on_scattered_2d_points_and_refusals(dtype):
    pts = torch.rand(50, 2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    f = gp_functions(10, pts, 0.2, nu=1.5, generator=torch.Generator().manual_seed(2))
    assert f.shape == (10, 50) and f.dtype == dtype and torch.isfinite(f).all()
    assert gp_functions(0, pts).shape == (0, 50)
    from_tensor = gp_functions(4, pts, torch.tensor([0.2, 0.3]), generator=torch.Generator())
    assert from_tensor.shape == (4, 50)
    with pytest.raises(TypeError, match="length_scales"):
        gp_functions(3, pts, "0.2")  # type: ignore[arg-type]
    for kwargs, message in (
        ({"length_scales": ()}, "length_scales"),
        ({"length_scales": (0.1, -1.0)}, "length_scales"),
        ({"nu": 2.0}, "nu must be"),
        ({"std": 0.0}, "std must be"),
        ({"std": True}, "std must be"),
    ):
        with pytest.raises(ValueError, match=message):
            gp_functions(3, pts, **kwargs)
    with pytest.raises(TypeError, match="points"):
        gp_functions(3, [[0.0, 1.0]])  # type: ignore[arg-type]
