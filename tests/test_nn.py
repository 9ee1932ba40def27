"""Tests for manifoldfm.nn: time embedding, MLP velocity, classifier-free guidance."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm.nn import (
    ClassifierFreeGuidance,
    MLPVelocity,
    SinusoidalTimeEmbedding,
    drop_conditions,
)

from .conftest import DEVICES, TOL

# ----------------------------------------------------------------------------- time embedding


@given(dim=st.sampled_from([2, 4, 16, 64]), seed=st.integers(0, 2**16))
@example(dim=2, seed=0)
def test_time_embedding_deterministic_bounded(dim, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(7, generator=g, dtype=torch.float64)
    t[0], t[1] = 0.0, 1.0
    emb = SinusoidalTimeEmbedding(dim)
    e1, e2 = emb(t), emb(t.clone())
    assert e1.shape == (7, dim) and e1.dtype == torch.float64
    assert torch.equal(e1, e2)
    assert bool(e1.abs().max() <= 1.0)
    # cos^2 + sin^2 = 1 for each frequency.
    half = dim // 2
    torch.testing.assert_close(e1[:, :half] ** 2 + e1[:, half:] ** 2, torch.ones(7, half).double())
    assert list(emb.parameters()) == []


def test_time_embedding_distinguishes_times():
    emb = SinusoidalTimeEmbedding(64)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    e = emb(t)
    d = torch.cdist(e, e) + torch.eye(1001, dtype=torch.float64) * 1e9
    # Times 1e-3 apart have clearly different embeddings.
    assert float(d.min()) > 1e-2


def test_time_embedding_zero_time_and_float32():
    e = SinusoidalTimeEmbedding(6)(torch.zeros(2))
    assert e.dtype == torch.float32
    torch.testing.assert_close(e, torch.tensor([[1.0, 1, 1, 0, 0, 0]] * 2))


def test_time_embedding_bad_input():
    with pytest.raises(ValueError, match="even"):
        SinusoidalTimeEmbedding(5)
    with pytest.raises(ValueError, match="max_period"):
        SinusoidalTimeEmbedding(4, max_period=1.0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        SinusoidalTimeEmbedding(4)(torch.zeros(3, 1))
    with pytest.raises(TypeError, match="floating"):
        SinusoidalTimeEmbedding(4)(torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- MLP


def _model(**kw) -> MLPVelocity:
    torch.manual_seed(0)
    return MLPVelocity(3, hidden=16, depth=2, time_dim=8, **kw)


@given(batch=st.integers(0, 5), seed=st.integers(0, 2**16))
@example(batch=0, seed=0)
def test_mlp_shape_and_dtype(batch, seed):
    g = torch.Generator().manual_seed(seed)
    for dtype in (torch.float32, torch.float64):
        model = _model().to(dtype)
        x = torch.randn(batch, 3, generator=g, dtype=dtype)
        t = torch.rand(batch, generator=g, dtype=dtype)
        v = model(x, t)
        assert v.shape == x.shape and v.dtype == dtype


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_device_and_scalar_time(device):
    model = _model(num_classes=2, cond_dim=2).to(device)
    x = torch.randn(4, 3, device=device)
    v = model(
        x, 0.5, y=torch.tensor([0, 1, 2, 0], device=device), c=torch.ones(4, 2, device=device)
    )
    assert v.device == x.device
    torch.testing.assert_close(model(x, 0.5), model(x, torch.full((4,), 0.5, device=device)))


def test_mlp_conditions_change_output_and_defaults_are_null():
    model = _model(num_classes=3, cond_dim=2)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 3, generator=g), torch.rand(5, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1])
    c = torch.randn(5, 2, generator=g)
    assert not torch.allclose(model(x, t, y=y), model(x, t, y=(y + 1) % 3))
    assert not torch.allclose(model(x, t, c=c), model(x, t, c=2 * c))
    # Omitted conditions are the null ones.
    null = torch.full((5,), model.null_label)
    torch.testing.assert_close(model(x, t), model(x, t, y=null, c=torch.zeros(5, 2)))
    assert model.null_cond == {"y": 3, "c": 0.0}


def test_mlp_gradients_flow():
    model = _model(num_classes=2)
    x = torch.randn(4, 3, requires_grad=True)
    model(x, torch.rand(4), y=torch.tensor([0, 1, 1, 0])).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_mlp_bad_inputs():
    model = _model(num_classes=2, cond_dim=2)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        model(torch.randn(4, 2), torch.rand(4))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        model(x, torch.rand(3))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model(x, torch.rand(4), y=torch.tensor([0, 1, 3, 0]))
    with pytest.raises(TypeError, match="integer"):
        model(x, torch.rand(4), y=torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        model(x, torch.rand(4), c=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="num_classes=0"):
        _model()(x, torch.rand(4), y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="cond_dim=0"):
        _model()(x, torch.rand(4), c=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="activation"):
        MLPVelocity(2, activation="swish")
    with pytest.raises(ValueError, match="depth"):
        MLPVelocity(2, depth=0)
    with pytest.raises(ValueError, match="num_classes=0"):
        _ = _model().null_label


# ----------------------------------------------------------------------------- guidance


def _inputs(seed=0, batch=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    t = torch.rand(batch, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (batch,), generator=g)
    c = torch.randn(batch, 2, generator=g, dtype=torch.float64)
    return x, t, y, c


@given(seed=st.integers(0, 2**16), scale=st.floats(-2.0, 5.0))
@example(seed=0, scale=0.0)
@example(seed=0, scale=1.0)
def test_cfg_matches_two_separate_passes(seed, scale):
    model = _model(num_classes=3, cond_dim=2).double()
    x, t, y, c = _inputs(seed)
    guided = ClassifierFreeGuidance(model, scale)
    v_c = model(x, t, y=y, c=c)
    v_u = model(x, t, y=torch.full_like(y, 3), c=torch.zeros_like(c))
    torch.testing.assert_close(
        guided(x, t, y=y, c=c), v_u + scale * (v_c - v_u), **TOL[torch.float64]
    )


def test_cfg_endpoints_exact():
    model = _model(num_classes=3).double()
    x, t, y, _ = _inputs(1)
    v_c, v_u = model(x, t, y=y), model(x, t)
    torch.testing.assert_close(
        ClassifierFreeGuidance(model, 0.0)(x, t, y=y), v_u, **TOL[torch.float64]
    )
    torch.testing.assert_close(
        ClassifierFreeGuidance(model, 1.0)(x, t, y=y), v_c, **TOL[torch.float64]
    )


def test_cfg_single_forward_pass():
    calls = []

    def field(x, t, *, y=None):
        calls.append(x.shape[0])
        return x * (1.0 if y is None else (1.0 + y[:, None].to(x.dtype)))

    guided = ClassifierFreeGuidance(field, 3.0, null_cond={"y": 0})
    x, t = torch.ones(4, 2), torch.rand(4)
    y = torch.tensor([1, 2, 3, 4])
    out = guided(x, t, y=y)
    assert calls == [8]
    # v_u = x (label 0), v_c = (1 + y) x: v = x + 3 y x.
    torch.testing.assert_close(out, x * (1 + 3 * y[:, None].float()))
    calls.clear()
    torch.testing.assert_close(guided(x, t), x)  # no condition: one plain pass
    assert calls == [4]


def test_cfg_tensor_null_and_bad_inputs():
    def field(x, t, *, c=None):
        return x + c.sum(dim=1, keepdim=True)

    guided = ClassifierFreeGuidance(field, 2.0, null_cond={"c": torch.tensor([1.0, -1.0])})
    x, t = torch.zeros(3, 2), torch.rand(3)
    c = torch.ones(3, 2)
    # v_c = 2, v_u = 0: guided = 4.
    torch.testing.assert_close(guided(x, t, c=c), torch.full((3, 2), 4.0))
    with pytest.raises(ValueError, match="no null value"):
        ClassifierFreeGuidance(field, 1.0, null_cond={})(x, t, c=c)
    with pytest.raises(ValueError, match="batch size 3"):
        guided(x, t, c=torch.ones(2, 2))
    with pytest.raises(ValueError, match="null_cond is required"):
        ClassifierFreeGuidance(field, 1.0)
    with pytest.raises(ValueError, match="finite"):
        ClassifierFreeGuidance(field, float("nan"), null_cond={})
    with pytest.raises(ValueError, match="does not broadcast"):
        ClassifierFreeGuidance(field, 1.0, null_cond={"c": torch.zeros(3)})(x, t, c=c)


def test_cfg_is_module_and_moves_with_model():
    model = _model(num_classes=3)
    guided = ClassifierFreeGuidance(model, 1.5).double()
    assert next(model.parameters()).dtype == torch.float64
    assert sum(1 for _ in guided.parameters()) == sum(1 for _ in model.parameters())


# ----------------------------------------------------------------------------- condition dropping


@given(p=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
@example(p=0.0, seed=0)
@example(p=1.0, seed=0)
def test_drop_conditions_reproducible_and_extremes(p, seed):
    y = torch.arange(50) % 4
    a = drop_conditions(y, p, null=4, generator=torch.Generator().manual_seed(seed))
    b = drop_conditions(y, p, null=4, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b) and a.dtype == y.dtype
    kept = a != 4
    assert torch.equal(a[kept], y[kept])  # rows are either kept or replaced by null
    if p == 0.0:
        assert torch.equal(a, y)
    if p == 1.0:
        assert bool((a == 4).all())


def test_drop_conditions_rate_and_vectors():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4000, 3, generator=g) + 10.0
    out = drop_conditions(c, 0.3, null=0.0, generator=g)
    dropped = (out == 0).all(dim=1)
    assert bool(((out == c).all(dim=1) | dropped).all())
    assert abs(dropped.double().mean().item() - 0.3) < 0.03  # ~4.4 sigma
    vec = drop_conditions(c[:5], 1.0, null=torch.tensor([1.0, 2.0, 3.0]), generator=g)
    torch.testing.assert_close(vec, torch.tensor([[1.0, 2.0, 3.0]]).expand(5, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop_conditions(c, 1.5, null=0.0)
    with pytest.raises(ValueError, match="batch"):
        drop_conditions(torch.tensor(1), 0.5, null=0)
    with pytest.raises(ValueError, match="broadcast"):
        drop_conditions(c, 0.5, null=torch.zeros(2))
