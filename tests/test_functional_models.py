"""Tests for manifoldfm.functional.models: FNO1d, FNO2d, PointSetOperator."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.functional.models import FNO1d, FNO2d, PointSetOperator

from .conftest import DEVICES
from .strategies import seeds


def _fno1(**kw):
    args = {"channels": 2, "width": 8, "modes": 4, "depth": 2, "time_dim": 8, "projection": 8}
    return FNO1d(**{**args, **kw})


def _fno2(**kw):
    args = {"channels": 1, "width": 6, "modes": (3, 3), "depth": 2, "time_dim": 8, "projection": 8}
    return FNO2d(**{**args, **kw})


def _pso(**kw):
    args = {"d": 2, "channels": 1, "width": 16, "heads": 2, "depth": 2, "time_dim": 8}
    return PointSetOperator(**{**args, **kw}).eval()


def _smooth1(batch: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    """A band-limited 2-channel periodic function on the grid ``i / n``, shape (B, 2, n)."""
    s = torch.arange(n, dtype=dtype) / n
    a = torch.arange(1, batch + 1, dtype=dtype)[:, None]
    c0 = torch.sin(2 * math.pi * s + a) + 0.5 * torch.cos(4 * math.pi * s + 0.3)
    c1 = 0.3 * a * torch.sin(6 * math.pi * s)
    return torch.stack([c0, c1], dim=1)


def _smooth2(batch: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    a = (torch.arange(h, dtype=dtype) / h)[:, None]
    b = (torch.arange(w, dtype=dtype) / w)[None, :]
    f = torch.sin(2 * math.pi * a) * torch.cos(2 * math.pi * b) + 0.5 * torch.sin(
        4 * math.pi * (a + b)
    )
    scale = torch.arange(1, batch + 1, dtype=dtype)[:, None, None, None]
    return scale * f[None, None]


def _rel(a: torch.Tensor, b: torch.Tensor, ref: torch.Tensor) -> float:
    """Max error relative to the variation of ``ref`` over the grid."""
    return float((a - b).abs().max() / (ref - ref.mean()).abs().max())


# ----------------------------------------------------------------------------- shapes


@given(
    batch=st.integers(1, 3),
    n=st.integers(1, 40),
    channels=st.integers(1, 3),
    out=st.sampled_from([None, 1, 3]),
    coords=st.sampled_from(["periodic", "linear", "none"]),
    seed=seeds,
)
@example(batch=1, n=1, channels=1, out=None, coords="periodic", seed=0)
@example(batch=2, n=7, channels=2, out=None, coords="linear", seed=0)  # n < 2 * modes: truncated
def test_fno1d_shapes(batch, n, channels, out, coords, seed):
    torch.manual_seed(seed)
    model = _fno1(channels=channels, out_channels=out, coordinates=coords)
    x = torch.randn(batch, channels, n, dtype=torch.float64)
    v = model.double()(x, torch.rand(batch, dtype=torch.float64))
    assert v.shape == (batch, channels if out is None else out, n)
    assert bool(torch.isfinite(v).all())


@given(batch=st.integers(1, 3), h=st.integers(1, 20), w=st.integers(1, 20), seed=seeds)
@example(batch=1, h=1, w=1, seed=0)
@example(batch=2, h=5, w=3, seed=0)  # odd sizes below 2 * modes
def test_fno2d_shapes(batch, h, w, seed):
    torch.manual_seed(seed)
    model = _fno2(channels=2, out_channels=3).double()
    x = torch.randn(batch, 2, h, w, dtype=torch.float64)
    v = model(x, torch.rand(batch, dtype=torch.float64))
    assert v.shape == (batch, 3, h, w)
    assert bool(torch.isfinite(v).all())


@given(
    batch=st.integers(1, 3),
    n=st.integers(1, 30),
    m=st.integers(1, 10),
    d=st.integers(1, 3),
    batched_points=st.booleans(),
    seed=seeds,
)
def test_point_set_shapes(batch, n, m, d, batched_points, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _pso(d=d, channels=2, out_channels=3, decoder_depth=1)
    shape = (batch, n, d) if batched_points else (n, d)
    points = torch.rand(shape, generator=g)
    x = torch.randn(batch, n, 2, generator=g)
    t = torch.rand(batch, generator=g)
    assert model(x, t, points=points).shape == (batch, n, 3)
    q = torch.rand((batch, m, d) if batched_points else (m, d), generator=g)
    assert model(x, t, points=points, query_points=q).shape == (batch, m, 3)


# ----------------------------------------------------------------------------- dtype / device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["fno1", "fno2", "pso"])
def test_dtype_device_preserved(kind, dtype, device):
    torch.manual_seed(0)
    if kind == "fno1":
        model, x, kw = _fno1(), torch.randn(2, 2, 16), {}
    elif kind == "fno2":
        model, x, kw = _fno2(), torch.randn(2, 1, 8, 6), {}
    else:
        model, x = _pso(decoder_depth=1), torch.randn(2, 9, 1)
        kw = {"points": torch.rand(9, 2, dtype=torch.float64), "query_points": torch.rand(4, 2)}
    model = model.to(device=device, dtype=dtype)
    x = x.to(device=device, dtype=dtype)
    for t in (0.0, 1.0, torch.tensor([0.25, 0.75], dtype=dtype, device=device)):
        v = model(x, t, **kw)
        assert v.dtype == dtype and v.device == x.device
        assert bool(torch.isfinite(v).all())


def test_double_converts_spectral_weights():
    model = _fno2().double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    model = model.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------- time


@pytest.mark.parametrize("kind", ["fno1", "fno2", "pso"])
def test_time_changes_output(kind):
    torch.manual_seed(0)
    if kind == "fno1":
        model, x, kw = _fno1(), torch.randn(1, 2, 16, dtype=torch.float64), {}
    elif kind == "fno2":
        model, x, kw = _fno2(), torch.randn(1, 1, 8, 8, dtype=torch.float64), {}
    else:
        model, x = _pso(), torch.randn(1, 9, 1, dtype=torch.float64)
        kw = {"points": torch.rand(9, 2, dtype=torch.float64)}
    model = model.double()
    with torch.no_grad():
        outs = [model(x, t, **kw) for t in (0.0, 0.3, 0.3001, 1.0)]
        again = model(x, torch.tensor([0.3], dtype=torch.float64), **kw)
    scale = float(outs[0].abs().max())
    for a, b in itertools.pairwise(outs):
        assert float((a - b).abs().max()) > 1e-4 * scale
    # A float time is the same as the broadcast tensor.
    torch.testing.assert_close(again, outs[1])


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_fno1d_resolution_consistency(dtype, tol):
    torch.manual_seed(1)
    model = FNO1d(channels=2, width=16, modes=8, depth=3).to(dtype)
    t = torch.tensor([0.3, 0.9], dtype=dtype)
    with torch.no_grad():
        fine, coarse = model(_smooth1(2, 64, dtype), t), model(_smooth1(2, 32, dtype), t)
        # The grid points i of 32 and 2 i of 64 are the same locations.
        err = _rel(coarse, fine[..., ::2], fine)
        assert err < tol
        # Controls the comparison can tell apart: a misaligned subsample and linear coordinates
        # (their jump at the wrap-around aliases).
        assert _rel(coarse, fine[..., 1::2], fine) > max(1e-5, 100 * err)
        torch.manual_seed(1)
        lin = FNO1d(channels=2, width=16, modes=8, depth=3, coordinates="linear").to(dtype)
        f_lin, c_lin = lin(_smooth1(2, 64, dtype), t), lin(_smooth1(2, 32, dtype), t)
        assert _rel(c_lin, f_lin[..., ::2], f_lin) > max(1e-5, 100 * err)
        # Modes above the coarse grid's Nyquist limit are dropped there; for a smooth input they
        # carry almost no energy, so the outputs still agree closely.
        torch.manual_seed(1)
        wide = FNO1d(channels=2, width=16, modes=24, depth=3).to(dtype)
        f_wide, c_wide = wide(_smooth1(2, 64, dtype), t), wide(_smooth1(2, 32, dtype), t)
        assert _rel(c_wide, f_wide[..., ::2], f_wide) < (1e-6 if dtype == torch.float64 else 1e-3)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_fno2d_resolution_consistency(dtype, tol):
    torch.manual_seed(1)
    model = FNO2d(channels=1, width=8, modes=(6, 5), depth=2).to(dtype)
    t = torch.tensor([0.3, 0.9], dtype=dtype)
    with torch.no_grad():
        fine, coarse = model(_smooth2(2, 48, 40, dtype), t), model(_smooth2(2, 24, 20, dtype), t)
        err = _rel(coarse, fine[..., ::2, ::2], fine)
        assert err < tol
        assert _rel(coarse, fine[..., 1::2, 1::2], fine) > max(1e-5, 100 * err)
        torch.manual_seed(1)
        lin = FNO2d(channels=1, width=8, modes=(6, 5), depth=2, coordinates="linear").to(dtype)
        f_lin = lin(_smooth2(2, 48, 40, dtype), t)
        c_lin = lin(_smooth2(2, 24, 20, dtype), t)
        assert _rel(c_lin, f_lin[..., ::2, ::2], f_lin) > max(1e-5, 100 * err)


@given(
    seed=seeds,
    modes=st.integers(1, 12),
    extra=st.integers(0, 8),
    factor=st.sampled_from([2, 3]),
    coords=st.sampled_from(["periodic", "none"]),
)
@example(seed=0, modes=12, extra=0, factor=2, coords="periodic")
def test_fno1d_resolution_property(seed, modes, extra, factor, coords):
    """Random init, random input with frequencies 0 to 2, coarse grid of 28 to 36 points.

    The outputs agree up to the aliasing of the harmonics created by the nonlinearities, which
    falls off exponentially with the grid size (about 2e-4 at 16 points, 1e-8 at 32).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _fno1(modes=modes, coordinates=coords).double()
    n = 28 + extra

    def f(m: int) -> torch.Tensor:
        s = torch.arange(m, dtype=torch.float64) / m
        k = torch.arange(3, dtype=torch.float64)[:, None]
        basis = torch.cat([torch.cos(2 * math.pi * k * s), torch.sin(2 * math.pi * k * s)])
        return coef @ basis

    coef = torch.randn(2, 2, 6, generator=g, dtype=torch.float64)
    t = torch.rand(2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        fine, coarse = model(f(factor * n), t), model(f(n), t)
        err = _rel(coarse, fine[..., ::factor], fine)
        assert err < 1e-6
        assert _rel(coarse, fine[..., 1::factor], fine) > max(1e-4, 100 * err)


@given(
    seed=seeds,
    shift=st.tuples(st.integers(-9, 9), st.integers(-9, 9)),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
)
@example(seed=0, shift=(1, 0), size=(12, 12))
def test_fno_circular_shift_equivariance(seed, shift, size):
    """Without coordinate channels every layer commutes with circular shifts of the grid."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t = torch.rand(2, generator=g, dtype=torch.float64)
    m1 = _fno1(coordinates="none").double()
    x = torch.randn(2, 2, size[0], generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        m1(torch.roll(x, shift[0], -1), t), torch.roll(m1(x, t), shift[0], -1)
    )
    m2 = _fno2(coordinates="none").double()
    y = torch.randn(2, 1, *size, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        m2(torch.roll(y, shift, (-2, -1)), t), torch.roll(m2(y, t), shift, (-2, -1))
    )
    # With coordinates the model sees where it is: a shift is not equivariant in general.
    if size[0] >= 4 and shift[0] % size[0]:
        m3 = _fno1().double()
        rolled = m3(torch.roll(x, shift[0], -1), t)
        assert not torch.allclose(rolled, torch.roll(m3(x, t), shift[0], -1), atol=1e-8)


@pytest.mark.parametrize(
    "k1, k2, kept",
    [
        (0, 2, True),
        (2, 0, True),
        (-2, 1, True),
        (3, 0, False),
        (-3, 1, False),
        (0, 3, False),
        (1, 5, False),
    ],
)
def test_spectral_conv_keeps_low_frequencies(k1, k2, kept):
    """A plane wave passes the spectral convolution iff -modes < k1 < modes and 0 <= |k2| < modes."""
    from manifoldfm.functional.models import _SpectralConv

    torch.manual_seed(0)
    conv = _SpectralConv(2, 3, (3, 3)).double()
    a = (torch.arange(16, dtype=torch.float64) / 16)[:, None]
    b = (torch.arange(12, dtype=torch.float64) / 12)[None, :]
    wave = torch.cos(2 * math.pi * (k1 * a + k2 * b))
    with torch.no_grad():
        out = conv(wave.expand(1, 2, 16, 12))
    assert out.shape == (1, 3, 16, 12)
    if kept:
        assert float(out.abs().max()) > 1e-3
        # The output is still a wave of the same frequency (complex weights can shift its phase).
        spec = torch.fft.fft2(out).abs()
        spec[..., k1 % 16, k2 % 12] = 0
        spec[..., -k1 % 16, -k2 % 12] = 0
        assert float(spec.max()) < 1e-9
    else:
        assert float(out.abs().max()) < 1e-12


def test_fno_batch_elements_independent():
    torch.manual_seed(0)
    model = _fno2().double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(model(x, t)[1:2], model(x[1:2], t[1:2]))


# ----------------------------------------------------------------------------- gradients


def _all_params_get_gradients(model, loss):
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, name


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_gradients_reach_all_parameters(t):
    torch.manual_seed(0)
    model = _fno1().double()
    x = torch.randn(2, 2, 16, dtype=torch.float64, requires_grad=True)
    _all_params_get_gradients(model, model(x, t).pow(2).sum())
    assert bool(torch.isfinite(x.grad).all())
    model = _fno2().double()
    _all_params_get_gradients(model, model(torch.randn(2, 1, 8, 6, dtype=torch.float64), t).sum())
    model = _pso(decoder_depth=1).double().train()
    x = torch.randn(2, 9, 1, dtype=torch.float64)
    points = torch.rand(9, 2, dtype=torch.float64)
    q = torch.rand(2, 4, 2, dtype=torch.float64)
    loss = model(x, t, points=points).pow(2).sum()
    loss = loss + model(x, t, points=points, query_points=q).pow(2).sum()
    _all_params_get_gradients(model, loss)


# ----------------------------------------------------------------------------- point sets


@given(n=st.integers(2, 24), batched=st.booleans(), seed=seeds, data=st.data())
def test_point_set_permutation_equivariance(n, batched, seed, data):
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _pso(decoder_depth=1).double()
    points = torch.rand((3, n, 2) if batched else (n, 2), generator=g, dtype=torch.float64)
    x = torch.randn(3, n, 1, generator=g, dtype=torch.float64)
    t = torch.rand(3, generator=g, dtype=torch.float64)
    q = torch.rand(5, 2, generator=g, dtype=torch.float64)
    v = model(x, t, points=points)
    v_perm = model(x[:, perm], t, points=points[..., perm, :])
    torch.testing.assert_close(v_perm, v[:, perm], atol=1e-10, rtol=1e-10)
    # Query readouts do not depend on the order of the input points...
    vq = model(x, t, points=points, query_points=q)
    vq_perm = model(x[:, perm], t, points=points[..., perm, :], query_points=q)
    torch.testing.assert_close(vq_perm, vq, atol=1e-10, rtol=1e-10)
    # ... nor on the other queries asked.
    torch.testing.assert_close(model(x, t, points=points, query_points=q[2:4]), vq[:, 2:4])
    # The model is not trivially permutation invariant (the outputs differ between points).
    assert float((v - v.mean(dim=1, keepdim=True)).detach().abs().max()) > 1e-6


@pytest.mark.parametrize("training", [False, True])
def test_point_set_padding_mask(training):
    torch.manual_seed(0)
    model = _pso(decoder_depth=1).double().train(training)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 10, 1, generator=g, dtype=torch.float64)
    points = torch.rand(3, 10, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 6:] = False
    mask[2] = False  # no real point at all
    v = model(x, t, points=points, mask=mask)
    # Padded points do not influence the real ones and get zero velocity.
    ref = model(x[:1, :6], t[:1], points=points[:1, :6])
    torch.testing.assert_close(v[:1, :6], ref)
    assert bool((v[0, 6:] == 0).all()) and bool((v[2] == 0).all())
    torch.testing.assert_close(v[1:2], model(x[1:2], t[1:2], points=points[1:2]))
    x_other = x.clone()
    x_other[0, 6:] = 100.0
    torch.testing.assert_close(model(x_other, t, points=points, mask=mask), v)
    q = torch.rand(4, 2, generator=g, dtype=torch.float64)
    vq = model(x, t, points=points, mask=mask, query_points=q)
    torch.testing.assert_close(
        vq[:1], model(x[:1, :6], t[:1], points=points[:1, :6], query_points=q)
    )
    assert bool(torch.isfinite(vq).all()) and bool((vq[2] == 0).all())
    assert float(vq[1].detach().abs().max()) > 0


# ----------------------------------------------------------------------------- bad input


def test_bad_input_fno():
    model = _fno1()
    with pytest.raises(ValueError, match=r"\(B, 2, n\).*\(2, 16\)"):
        model(torch.randn(2, 16), 0.5)
    with pytest.raises(ValueError, match=r"\(B, 2, n\).*\(2, 3, 16\)"):
        model(torch.randn(2, 3, 16), 0.5)
    with pytest.raises(ValueError, match=r"non-empty.*\(2, 2, 0\)"):
        model(torch.randn(2, 2, 0), 0.5)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        model(torch.randn(2, 2, 16), torch.rand(3))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(2, 2, 16, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match=r"\(B, 1, h, w\).*\(2, 1, 8\)"):
        _fno2()(torch.randn(2, 1, 8), 0.5)
    with pytest.raises(ValueError, match="coordinates"):
        FNO1d(coordinates="polar")
    with pytest.raises(ValueError, match="modes"):
        FNO2d(modes=(4, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modes"):
        FNO1d(modes=0)


def test_bad_input_point_set():
    model = _pso()
    x, pts = torch.randn(2, 9, 1), torch.rand(9, 2)
    with pytest.raises(ValueError, match=r"\(B, n_points, 1\).*\(2, 9\)"):
        model(x[..., 0], 0.5, points=pts)
    with pytest.raises(ValueError, match=r"\(9, 2\).*\(8, 2\)"):
        model(x, 0.5, points=pts[:8])
    with pytest.raises(ValueError, match=r"\(2, 9, 2\).*\(9, 3\)"):
        model(x, 0.5, points=torch.rand(9, 3))
    with pytest.raises(ValueError, match=r"\(2, 9, 2\).*\(3, 9, 2\)"):
        model(x, 0.5, points=torch.rand(3, 9, 2))
    with pytest.raises(ValueError, match=r"mask.*\(2, 9\).*\(2, 8\)"):
        model(x, 0.5, points=pts, mask=torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        model(x, 0.5, points=pts, mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match="decoder_depth"):
        model(x, 0.5, points=pts, query_points=pts)
    with pytest.raises(ValueError, match=r"query_points.*\(m, 2\).*\(4, 1\)"):
        _pso(decoder_depth=1)(x, 0.5, points=pts, query_points=torch.rand(4, 1))
    with pytest.raises(ValueError, match="divide"):
        PointSetOperator(width=10, heads=4)
    with pytest.raises(ValueError, match="dropout"):
        PointSetOperator(dropout=1.0)


# ----------------------------------------------------------------------------- training smoke


def _train(model, kind: str, steps: int = 50):
    """Fit FM from white noise to a fixed smooth function (a point mass in function space)."""
    g = torch.Generator().manual_seed(0)
    n = 32
    s = torch.arange(n, dtype=torch.float32) / n
    target = torch.sin(2 * math.pi * s) + 0.5 * torch.cos(4 * math.pi * s)
    path = mfm.AffinePath(mfm.CondOT())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        x1 = target.expand(16, 1, n) if kind == "grid" else target[:, None].expand(16, n, 1)
        x0 = torch.randn(x1.shape, generator=g)
        sample = path.sample(x0, x1, torch.rand(16, generator=g))
        kw = {} if kind == "grid" else {"points": s[:, None]}
        loss = mfm.cfm_loss(model(sample.xt, sample.t, **kw), sample)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("kind", ["grid", "points"])
def test_training_smoke_loss_decreases(kind):
    torch.manual_seed(0)
    if kind == "grid":
        model = FNO1d(channels=1, width=16, modes=8, depth=2, time_dim=16, projection=32)
    else:
        model = PointSetOperator(d=1, channels=1, width=32, heads=2, depth=1, time_dim=16)
    losses = _train(model, kind)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert math.isfinite(last) and last < 0.5 * first, (first, last)


@pytest.mark.parametrize("n", [365, 73, 22, 11, 26, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_matrix_route_equals_the_fft(n, dtype):
    """Grid sizes with a prime factor above 7 use DFT tables: same layer to rounding."""
    from manifoldfm.functional.models import _fft_friendly, _SpectralConv

    assert _fft_friendly(2**5 * 3 * 5 * 7) and not _fft_friendly(365)
    torch.manual_seed(0)
    layer = _SpectralConv(3, 4, (16,)).to(dtype)
    x = torch.randn(5, 3, n, dtype=dtype, requires_grad=True)
    k = min(16, n // 2 + 1)
    w = torch.view_as_complex(layer.weight)
    spec = torch.fft.rfft(x, norm="forward")[..., :k]
    ref = torch.fft.irfft(torch.einsum("bik,iok->bok", spec, w[..., :k]), n=n, norm="forward")
    out = layer._forward_dft(x, n, k)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    (ga,) = torch.autograd.grad(out.square().sum(), x)
    (gb,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(ga, gb, atol=10 * tol, rtol=10 * tol)


def test_point_set_operator_ignores_the_values_of_padded_points():
    # a padded point may hold anything, NaN too: the real points' outputs do not change
    model = _pso()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 1, generator=g)
    p = torch.rand(2, 6, 2, generator=g)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    ref = model(x, torch.full((2,), 0.3), points=p, mask=mask)
    x_bad, p_bad = x.clone(), p.clone()
    x_bad[0, 4:] = math.nan
    p_bad[0, 4:] = math.inf
    out = model(x_bad, torch.full((2,), 0.3), points=p_bad, mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
