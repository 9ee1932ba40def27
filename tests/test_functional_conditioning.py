"""Conditional sampling of functions (manifoldfm.functional.conditioning), with exact oracles.

The velocity fields are the exact marginal fields of small data sets of functions
(``EmpiricalMarginalVelocity``), whitened by the GP's Cholesky factor for a GP source, so no
training is needed and the conditional target is known.
"""

from __future__ import annotations

import gpytorch
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm import VP, AffinePath, CondOT, Cosine
from manifoldfm.functional import GPSource, WhiteNoise, grid_points
from manifoldfm.functional.conditioning import (
    GUIDANCES,
    ConditionalSample,
    condition_sample,
    conditional_noise,
)
from manifoldfm.paths.marginal import EmpiricalMarginalVelocity

from .conftest import DEVICES
from .strategies import seeds

F64 = torch.float64
N_POINTS = 32


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gp_source(n: int = N_POINTS, channels: int | None = None) -> GPSource:
    k = gpytorch.kernels.RBFKernel()
    k.lengthscale = 0.2
    return GPSource(k, grid_points(n), method="cholesky", jitter=1e-8, channels=channels)


class WhitenedOracle:
    """Exact marginal velocity for a GP source N(0, K): ``L u(L^-1 x, t)`` on whitened data."""

    def __init__(self, data: torch.Tensor, source: GPSource, path: AffinePath) -> None:
        k = source.covariance()
        k = k + 1e-8 * k.diagonal().mean() * torch.eye(k.shape[0], dtype=F64)
        self.lower = torch.linalg.cholesky(k)
        self.inner = EmpiricalMarginalVelocity(self._white(data.to(F64)), path)

    def _white(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve_triangular(self.lower, x.mT, upper=False).mT

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lower = self.lower.to(x.dtype)
        z = torch.linalg.solve_triangular(lower, x.mT, upper=False).mT
        return self.inner(z, t) @ lower.mT


def _gp_data(source: GPSource, k: int, seed: int) -> torch.Tensor:
    return source.sample(k, generator=_gen(seed), dtype=F64)


def _two_functions(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.linspace(0, 1, n, dtype=F64)
    f = torch.sin(torch.pi * s)
    return s, torch.stack([f, -f])


# ---------------------------------------------------------------------------------------------
# replacement guidance: exact at t = 1
# ---------------------------------------------------------------------------------------------


@given(
    seed=seeds,
    method=st.sampled_from(("euler", "midpoint", "heun", "rk4")),
    m=st.integers(min_value=1, max_value=8),
    dtype=st.sampled_from((F64, torch.float32)),
    resample=st.integers(min_value=0, max_value=1),
)
@example(seed=0, method="rk4", m=N_POINTS // 4, dtype=torch.float32, resample=1)
def test_replacement_reproduces_observations_exactly(seed, method, m, dtype, resample):
    source = _gp_source()
    path = AffinePath(CondOT())
    data = _gp_data(source, 20, seed)
    g = _gen(seed + 1)
    idx = torch.randperm(N_POINTS, generator=g)[:m]
    y = (data[0, idx] + 0.1 * torch.randn(m, generator=g, dtype=F64)).to(dtype)
    out = condition_sample(
        WhitenedOracle(data, source, path),
        source,
        path,
        observed_index=idx,
        observed_values=y,
        n=5,
        steps=6,
        method=method,
        resample=resample,
        generator=g,
    )
    assert torch.equal(out.x[:, idx], y.expand(5, m))
    assert torch.equal(out.residual, torch.zeros(5, dtype=dtype))
    assert bool(torch.isfinite(out.x).all())
    stages = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method]
    assert out.nfe == 6 * stages * (resample + 1)


@pytest.mark.parametrize("guidance", ["replacement", "replacement+gradient"])
@pytest.mark.parametrize("scheduler", [VP(), Cosine()], ids=["vp", "cosine"])
def test_replacement_exact_for_other_schedules(scheduler, guidance):
    s, data = _two_functions()
    path = AffinePath(scheduler)
    out = condition_sample(
        EmpiricalMarginalVelocity(data, path),
        WhiteNoise(s[:, None]),
        path,
        observed_index=[2, 9],
        observed_values=data[1, [2, 9]],
        n=4,
        steps=10,
        method="rk4",
        guidance=guidance,
        guidance_scale=5.0,
        generator=_gen(0),
    )
    assert torch.equal(out.x[:, [2, 9]], data[1, [2, 9]].expand(4, 2))
    assert bool(torch.isfinite(out.x).all())


def test_one_euler_step_by_hand():
    """One Euler step: unobserved x0 + v(x0, 0), observed sigma_1 x0 + alpha_1 y = y."""
    _s, data = _two_functions(8)
    path = AffinePath()
    v = EmpiricalMarginalVelocity(data, path)
    x0 = torch.randn(3, 8, generator=_gen(4), dtype=F64)
    y = torch.tensor([0.3, -0.2], dtype=F64)
    out = condition_sample(v, None, path, observed_index=[1, 6], observed_values=y, x0=x0, steps=1)
    want = x0 + v(x0, torch.zeros(3, dtype=F64))
    want[:, [1, 6]] = y
    torch.testing.assert_close(out.x, want, rtol=0, atol=1e-14)
    assert out.x0 is x0 and out.nfe == 1 and out.ts.tolist() == [0.0, 1.0]


def test_intermediate_states_lie_on_the_observation_path():
    """With steps=2 and a zero field, the observed coordinates at t = 1/2 are x0/2 + y/2."""
    x0 = torch.randn(2, 5, generator=_gen(1), dtype=F64)
    y = torch.tensor([1.0, 2.0], dtype=F64)
    seen = []

    def zero(x, t):
        seen.append(x[:, [0, 3]].clone())
        return torch.zeros_like(x)

    condition_sample(
        zero, None, AffinePath(), observed_index=[0, 3], observed_values=y, x0=x0, steps=2
    )
    torch.testing.assert_close(seen[1], 0.5 * x0[:, [0, 3]] + 0.5 * y)


# ---------------------------------------------------------------------------------------------
# posterior concentration with the oracle
# ---------------------------------------------------------------------------------------------


def _fraction_on(out: ConditionalSample, target: torch.Tensor, tol: float = 1e-2) -> float:
    return float(((out.x - target).abs().amax(1) < tol).double().mean())


@pytest.mark.parametrize(
    ("guidance", "scale", "at_least"),
    [("replacement+gradient", 20.0, 0.97), ("gradient", 20.0, 0.97)],
)
def test_oracle_posterior_concentrates_on_the_observed_function(guidance, scale, at_least):
    s, data = _two_functions()
    path = AffinePath()
    for which in (0, 1):
        out = condition_sample(
            EmpiricalMarginalVelocity(data, path),
            WhiteNoise(s[:, None]),
            path,
            observed_index=[7],
            observed_values=data[which, [7]],
            n=100,
            steps=40,
            guidance=guidance,
            guidance_scale=scale,
            generator=_gen(which),
        )
        assert _fraction_on(out, data[which]) >= at_least


def test_unguided_samples_split_between_the_functions():
    """Without guidance about half the samples land on each function: the guidance matters."""
    s, data = _two_functions()
    path = AffinePath()
    out = condition_sample(
        EmpiricalMarginalVelocity(data, path),
        WhiteNoise(s[:, None]),
        path,
        observed_index=[7],
        observed_values=data[1, [7]],
        n=200,
        steps=40,
        guidance="none",
        generator=_gen(0),
    )
    assert 0.3 < _fraction_on(out, data[1]) < 0.7
    assert 0.3 < _fraction_on(out, data[0]) < 0.7


def test_replacement_concentrates_when_the_data_agree_elsewhere_with_the_observation():
    """Functions that differ only at the observed points: replacement alone picks the right one."""
    s, base = _two_functions()
    data = torch.stack([base[0], base[0].clone()])
    data[1, 7] = -1.0
    path = AffinePath()
    out = condition_sample(
        EmpiricalMarginalVelocity(data, path),
        WhiteNoise(s[:, None]),
        path,
        observed_index=[7],
        observed_values=data[1, [7]],
        n=50,
        steps=40,
        generator=_gen(0),
    )
    assert _fraction_on(out, data[1]) == 1.0


def test_gp_source_conditioning_recovers_the_function():
    source = _gp_source()
    path = AffinePath()
    data = _gp_data(source, 2, 3)
    idx = torch.tensor([4, 15, 27])
    out = condition_sample(
        WhitenedOracle(data, source, path),
        source,
        path,
        observed_index=idx,
        observed_values=data[1, idx],
        n=50,
        steps=40,
        guidance="replacement+gradient",
        guidance_scale=20.0,
        generator=_gen(0),
    )
    assert torch.equal(out.x[:, idx], data[1, idx].expand(50, 3))
    assert _fraction_on(out, data[1], tol=1e-2) >= 0.95


@given(
    seed=seeds,
    scale=st.floats(min_value=0.0, max_value=30.0),
    steps=st.integers(min_value=1, max_value=12),
)
@example(seed=0, scale=0.0, steps=1)
def test_gradient_guidance_closed_form_for_a_zero_field(seed, scale, steps):
    """v = 0 on CondOT: x1_hat = x, so Euler relaxes x[O] to y by (1 - h scale) per step."""
    g = _gen(seed)
    x0 = torch.randn(3, 6, generator=g, dtype=F64)
    y = torch.randn(2, generator=g, dtype=F64)
    out = condition_sample(
        lambda x, t: torch.zeros_like(x),
        None,
        AffinePath(),
        observed_index=[4, 1],
        observed_values=y,
        x0=x0,
        steps=steps,
        guidance="gradient",
        guidance_scale=scale,
    )
    want = x0.clone()
    want[:, [4, 1]] = y + (1.0 - scale / steps) ** steps * (x0[:, [4, 1]] - y)
    torch.testing.assert_close(out.x, want, rtol=1e-10, atol=1e-10)
    assert out.nfe == steps


def test_gradient_scale_zero_is_unguided():
    s, data = _two_functions()
    path = AffinePath()
    kw = {
        "observed_index": [3],
        "observed_values": data[0, [3]],
        "n": 6,
        "steps": 5,
        "method": "heun",
    }
    v = EmpiricalMarginalVelocity(data, path)
    a = condition_sample(v, WhiteNoise(s[:, None]), path, guidance="none", generator=_gen(2), **kw)
    b = condition_sample(
        v,
        WhiteNoise(s[:, None]),
        path,
        guidance="gradient",
        guidance_scale=0.0,
        generator=_gen(2),
        **kw,
    )
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe == 10


# ---------------------------------------------------------------------------------------------
# shapes, dtypes, devices, reproducibility
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("guidance", GUIDANCES)
def test_shapes_dtype_device(device, dtype, guidance):
    source = _gp_source(12, channels=2)
    path = AffinePath()

    def v(x, t):
        assert x.dtype == dtype and x.device.type == device and t.shape == (x.shape[0],)
        return torch.tanh(x) - x * t[:, None, None]

    y = torch.randn(3, 2, dtype=dtype, device=device, generator=None)
    for values in (y, y.expand(4, 3, 2)):
        out = condition_sample(
            v,
            source,
            path,
            observed_index=torch.tensor([0, 5, 11], device=device),
            observed_values=values,
            n=4,
            steps=3,
            guidance=guidance,
            generator=torch.Generator(device=device).manual_seed(0),
        )
        for t in (out.x, out.x0, out.ts, out.residual):
            assert t.dtype == dtype and t.device.type == device
        assert out.x.shape == out.x0.shape == (4, 12, 2)
        assert out.ts.shape == (4,) and out.residual.shape == (4,)
        if "replacement" in guidance:
            assert torch.equal(out.x[:, [0, 5, 11]], values.expand(4, 3, 2))


def test_generator_reproducibility():
    source = _gp_source()
    path = AffinePath()
    data = _gp_data(source, 20, 0)
    v = WhitenedOracle(data, source, path)
    kw = {
        "observed_index": [1, 2],
        "observed_values": data[0, [1, 2]],
        "n": 4,
        "steps": 4,
        "resample": 1,
    }
    a = condition_sample(v, source, path, generator=_gen(7), **kw)
    b = condition_sample(v, source, path, generator=_gen(7), **kw)
    c = condition_sample(v, source, path, generator=_gen(8), **kw)
    assert torch.equal(a.x, b.x) and torch.equal(a.x0, b.x0)
    assert not torch.equal(a.x0, c.x0)


def test_result_is_frozen():
    out = condition_sample(
        lambda x, t: -x,
        WhiteNoise(torch.rand(4, 1)),
        AffinePath(),
        observed_index=[0],
        observed_values=torch.zeros(1),
        n=1,
        steps=1,
    )
    with pytest.raises(AttributeError):
        out.nfe = 3  # type: ignore[misc]


def test_nothing_observed_is_unguided_sampling():
    s, data = _two_functions()
    path = AffinePath()
    v = EmpiricalMarginalVelocity(data, path)
    kw = {"observed_index": torch.zeros(0, dtype=torch.long), "n": 3, "steps": 4}
    a = condition_sample(
        v,
        WhiteNoise(s[:, None]),
        path,
        observed_values=torch.zeros(0, dtype=F64),
        generator=_gen(0),
        **kw,
    )
    b = condition_sample(
        v,
        WhiteNoise(s[:, None]),
        path,
        observed_values=torch.zeros(0, dtype=F64),
        guidance="none",
        generator=_gen(0),
        **kw,
    )
    assert torch.equal(a.x, b.x) and torch.equal(a.residual, torch.zeros(3, dtype=F64))


# ---------------------------------------------------------------------------------------------
# resolution freedom: one field over any point set
# ---------------------------------------------------------------------------------------------


class PointSetOracle:
    """The exact field of two known functions, evaluated at whatever points are given."""

    def __init__(self, path: AffinePath) -> None:
        self.path = path

    def __call__(self, x, t, *, points):
        s = points[:, 0]
        data = torch.stack([torch.sin(torch.pi * s), -torch.sin(torch.pi * s)]).to(x.dtype)
        return EmpiricalMarginalVelocity(data, self.path)(x, t)


@pytest.mark.parametrize("n_points", [9, 33, 65])
def test_resolution_freedom_with_a_point_set_field(n_points):
    """The same observation (at s = 1/2) conditions the field on coarse and fine point sets."""
    path = AffinePath()
    points = torch.linspace(0, 1, n_points, dtype=F64)[:, None]
    mid = n_points // 2
    assert float(points[mid, 0]) == 0.5
    out = condition_sample(
        PointSetOracle(path),
        WhiteNoise(points),
        path,
        observed_index=[mid],
        observed_values=torch.tensor([-1.0], dtype=F64),
        n=40,
        steps=40,
        guidance="replacement+gradient",
        guidance_scale=20.0,
        cond={"points": points},
        generator=_gen(0),
    )
    target = -torch.sin(torch.pi * points[:, 0])
    assert _fraction_on(out, target) >= 0.95


# ---------------------------------------------------------------------------------------------
# conditional GP noise
# ---------------------------------------------------------------------------------------------


def test_conditional_noise_matches_the_gp_conditional():
    source = _gp_source(8)
    k = source.covariance()
    o, u = torch.tensor([1, 5]), torch.tensor([0, 2, 3, 4, 6, 7])
    xo = torch.tensor([0.7, -1.2], dtype=F64)
    x = conditional_noise(source, o, xo.expand(40_000, 2), generator=_gen(0))
    assert torch.equal(x[:, o], xo.expand(40_000, 2))
    a = k[u][:, o] @ torch.linalg.inv(k[o][:, o])
    mean = a @ xo
    cov = k[u][:, u] - a @ k[o][:, u]
    r = x[:, u] - mean
    torch.testing.assert_close(r.mean(0), torch.zeros(6, dtype=F64), rtol=0, atol=0.03)
    torch.testing.assert_close(r.mT @ r / r.shape[0], cov, rtol=0, atol=0.03)


def test_conditional_noise_after_a_marginal_draw_is_a_draw_of_the_source():
    """x_O from the marginal, then x_U from the conditional: the joint covariance K."""
    source = _gp_source(8, channels=2)
    k = source.covariance()
    o = [6, 0, 3]
    n = 40_000
    full = source.sample(n, generator=_gen(1), dtype=F64)
    x = conditional_noise(source, o, full[:, o], generator=_gen(2))
    assert x.shape == (n, 8, 2)
    for c in range(2):
        xc = x[..., c]
        torch.testing.assert_close(xc.mT @ xc / n, k, rtol=0, atol=0.04)
    # the channels are independent
    assert float((x[..., 0].mT @ x[..., 1] / n).abs().max()) < 0.04


def test_conditional_noise_white_and_float32():
    src = WhiteNoise(torch.rand(6, 1))
    x = conditional_noise(src, [2], torch.full((3, 1), 5.0), generator=_gen(0))
    assert x.dtype == torch.float32 and x.shape == (3, 6)
    assert torch.equal(x[:, 2], torch.full((3,), 5.0))
    gp = _gp_source(6)
    x = conditional_noise(gp, [0, 5], torch.zeros(2, 2), generator=_gen(0))
    assert x.dtype == torch.float32 and torch.equal(x[:, [0, 5]], torch.zeros(2, 2))


def test_conditional_noise_feeds_condition_sample():
    source = _gp_source()
    path = AffinePath()
    data = _gp_data(source, 5, 1)
    x0 = conditional_noise(source, [3], torch.zeros(6, 1, dtype=F64), generator=_gen(0))
    out = condition_sample(
        WhitenedOracle(data, source, path),
        source,
        path,
        observed_index=[3],
        observed_values=data[2, [3]],
        x0=x0,
        steps=5,
    )
    assert out.x0 is x0 and torch.equal(out.x[:, 3], data[2, 3].expand(6))


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _call(**over):
    kw = {"observed_index": [0, 2], "observed_values": torch.zeros(2), "n": 2, "steps": 2}
    kw.update(over)
    return condition_sample(lambda x, t: -x, WhiteNoise(torch.rand(4, 1)), AffinePath(), **kw)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"observed_index": [0, 4]}, r"out of range: \[4\] not in \[0, 4\)"),
        ({"observed_index": [-1, 2]}, r"out of range: \[-1\]"),
        ({"observed_index": [2, 2]}, r"duplicate indices: \[2\]"),
        ({"observed_index": torch.zeros(2, 1, dtype=torch.long)}, r"1-D, got shape \(2, 1\)"),
        ({"observed_values": torch.zeros(3)}, r"\(2,\).*\(2, 2\).*got \(3,\)"),
        ({"observed_values": torch.zeros(5, 2)}, r"got \(5, 2\)"),
        ({"observed_values": torch.tensor([0.0, float("nan")])}, "finite"),
        ({"method": "dopri5"}, "method must be one of"),
        ({"guidance": "repaint"}, "guidance must be one of"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"resample": -1}, "resample"),
        ({"n": 0}, "n must be >= 1"),
        ({"n": None}, "number of samples"),
        ({"x0": torch.zeros(3, 4), "n": 2}, "disagrees with x0"),
        ({"x0": torch.zeros(2, 4, dtype=F64)}, "dtype and device"),
    ],
)
def test_validation_errors(over, match):
    with pytest.raises(ValueError, match=match):
        _call(**over)


def test_type_errors_and_bad_fields():
    with pytest.raises(TypeError, match="integers"):
        _call(observed_index=torch.tensor([0.0]))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        _call(observed_values=[0.0, 0.0])
    with pytest.raises(TypeError, match="floating"):
        _call(observed_values=torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="AffinePath"):
        condition_sample(
            lambda x, t: x,
            WhiteNoise(torch.rand(4, 1)),
            object(),
            observed_index=[0],
            observed_values=torch.zeros(1),
            n=1,
            steps=1,
        )
    with pytest.raises(ValueError, match=r"x's shape \(2, 4\), got \(2, 3\)"):
        condition_sample(
            lambda x, t: x[:, :3],
            WhiteNoise(torch.rand(4, 1)),
            AffinePath(),
            observed_index=[0],
            observed_values=torch.zeros(1),
            n=2,
            steps=1,
        )
    with pytest.raises(ValueError, match="out of range"):
        conditional_noise(_gp_source(5), [5], torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"observed_noise must have shape \(n, 1\)"):
        conditional_noise(_gp_source(5), [1], torch.zeros(1))
    with pytest.raises(TypeError, match="GPSource or WhiteNoise"):
        conditional_noise(object(), [1], torch.zeros(1, 1))  # type: ignore[arg-type]


def test_conditional_noise_with_every_point_observed_returns_the_observations():
    source = _gp_source(8)
    xo = torch.randn(3, 8, generator=_gen(5), dtype=F64)
    x = conditional_noise(source, list(range(8)), xo, generator=_gen(6))
    assert torch.equal(x, xo)
