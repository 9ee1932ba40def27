"""Likelihood by the instantaneous change of variables: exact for affine flows, Hutchinson
unbiased with fixed probes, normalised for a nonlinear 2-D flow, dtype/device, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.solvers import LikelihoodResult, divergence, log_likelihood
from manifoldfm.sources import Gaussian

from .conftest import DEVICES

Z = 4.5  # z-score tolerance of the statistical checks


def affine_flow(seed: int, dim: int, dtype=torch.float64, device="cpu"):
    """v(x, t) = A x + b pushes N(0, I) at t = 0 to N(c, e^A e^A^T) at t = 1, with
    c = int_0^1 e^{A s} ds b (top-right block of expm([[A, b], [0, 0]]))."""
    g = torch.Generator().manual_seed(seed)
    A = 0.5 * torch.randn(dim, dim, generator=g, dtype=torch.float64)
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    block = torch.zeros(dim + 1, dim + 1, dtype=torch.float64)
    block[:dim, :dim], block[:dim, dim] = A, b
    c = torch.linalg.matrix_exp(block)[:dim, dim]
    E = torch.linalg.matrix_exp(A)
    target = torch.distributions.MultivariateNormal(c, E @ E.T)
    A_, b_ = A.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)

    def v(x, t):
        return x @ A_.T + b_

    return v, target, A, g


def draw(target, n: int, g: torch.Generator):
    """n samples of a MultivariateNormal from a seeded generator."""
    z = torch.randn(n, target.loc.shape[0], generator=g, dtype=torch.float64)
    return target.loc + z @ target.scale_tril.T


# ------------------------------------------------------------------------ exactness
@pytest.mark.parametrize(("method", "steps"), [("rk4", 40), ("dopri5", None)])
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 4))
@example(seed=0, dim=1)
def test_affine_flow_likelihood_is_the_gaussian_density(method, steps, seed, dim):
    v, target, A, g = affine_flow(seed, dim)
    x1 = draw(target, 16, g)
    res = log_likelihood(v, x1, Gaussian(dim), steps=steps, method=method, atol=1e-9, rtol=1e-9)
    assert isinstance(res, LikelihoodResult)
    torch.testing.assert_close(res.log_prob, target.log_prob(x1), rtol=0, atol=1e-6)
    # the divergence of A x + b is tr A everywhere
    torch.testing.assert_close(res.delta_logp, -A.trace().expand(16), rtol=0, atol=1e-10)
    torch.testing.assert_close(res.log_prob, res.log_prob_source + res.delta_logp)
    torch.testing.assert_close(res.log_prob_source, Gaussian(dim).log_prob(res.x0))


def test_nfe_and_shapes_of_the_result():
    v, target, _, g = affine_flow(1, 6)
    x1 = draw(target, 5, g).reshape(5, 3, 2)

    def v_shaped(x, t):
        assert x.shape == (5, 3, 2) and t.shape == (5,)
        return v(x.reshape(5, 6), t).reshape(5, 3, 2)

    res = log_likelihood(v_shaped, x1, Gaussian((3, 2)), steps=10)
    flat = log_likelihood(v, x1.reshape(5, 6), Gaussian(6), steps=10)
    assert res.nfe == 40 and res.x0.shape == (5, 3, 2)
    for r in (res.log_prob, res.log_prob_source, res.delta_logp):
        assert r.shape == (5,)
    torch.testing.assert_close(res.log_prob, flat.log_prob)
    torch.testing.assert_close(res.x0.reshape(5, 6), flat.x0)


def test_likelihood_round_trips_the_samples():
    """x0 is the data sent back to the source: the forward ODE takes it back to x1."""
    v, target, _, g = affine_flow(2, 3)
    x1 = draw(target, 8, g)
    res = log_likelihood(v, x1, Gaussian(3), steps=30)
    fwd = mfm.solvers.solve_ode(v, res.x0, steps=30, method="rk4")
    torch.testing.assert_close(fwd.x, x1, rtol=0, atol=1e-8)


# ------------------------------------------------------------------------ Hutchinson
def test_hutchinson_is_unbiased():
    v, target, _, g = affine_flow(3, 3)
    n = 1000
    g = torch.Generator().manual_seed(0)
    x1 = draw(target, n, g)
    res = log_likelihood(
        v, x1, Gaussian(3), steps=8, divergence="hutchinson", generator=g, n_probes=1
    )
    err = res.log_prob - target.log_prob(x1)
    assert err.std().item() > 0.05  # the estimate is random (so the check can fail)
    assert abs(err.mean().item()) < Z * err.std().item() / math.sqrt(n)


def test_hutchinson_uses_the_same_probes_along_the_trajectory():
    """For v = A x in 2-D with probe e: e^T A e = tr A + (A12 + A21) e1 e2, so with one probe
    kept along the path, delta_logp takes one of two values; fresh probes per step would
    average them."""
    A = torch.tensor([[0.3, 0.8], [-0.2, -0.1]], dtype=torch.float64)
    x1 = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = log_likelihood(
        lambda x, t: x @ A.T,
        x1,
        Gaussian(2),
        steps=6,
        divergence="hutchinson",
        generator=torch.Generator().manual_seed(1),
    )
    tr, off = A.trace().item(), (A[0, 1] + A[1, 0]).item()
    d = res.delta_logp
    hits = torch.isclose(d, torch.tensor(-(tr + off), dtype=d.dtype), atol=1e-12) | torch.isclose(
        d, torch.tensor(-(tr - off), dtype=d.dtype), atol=1e-12
    )
    assert bool(hits.all())
    frac = torch.isclose(d, torch.tensor(-(tr + off), dtype=d.dtype), atol=1e-12).double().mean()
    assert 0.35 < frac.item() < 0.65


def test_hutchinson_is_exact_for_a_diagonal_jacobian():
    a = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64)
    x1 = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"steps": 10, "generator": torch.Generator().manual_seed(2)}
    hut = log_likelihood(lambda x, t: x * a, x1, Gaussian(3), divergence="hutchinson", **kw)
    ex = log_likelihood(lambda x, t: x * a, x1, Gaussian(3), steps=10)
    torch.testing.assert_close(hut.log_prob, ex.log_prob, rtol=0, atol=1e-12)


def test_more_probes_reduce_the_variance():
    v, target, _, g = affine_flow(4, 4)
    x1 = draw(target, 300, g)

    def spread(n_probes: int) -> float:
        res = log_likelihood(
            v,
            x1,
            Gaussian(4),
            steps=4,
            divergence="hutchinson",
            n_probes=n_probes,
            generator=torch.Generator().manual_seed(3),
        )
        return res.delta_logp.std().item()

    ratio = spread(1) / spread(9)
    assert 2.2 < ratio < 4.0  # ~ sqrt(9) = 3


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_hutchinson_is_reproducible_with_a_generator(seed):
    v, target, _, g = affine_flow(5, 3)
    x1 = draw(target, 6, g)
    kw = {"steps": 4, "divergence": "hutchinson"}
    a = log_likelihood(v, x1, Gaussian(3), generator=torch.Generator().manual_seed(seed), **kw)
    b = log_likelihood(v, x1, Gaussian(3), generator=torch.Generator().manual_seed(seed), **kw)
    torch.testing.assert_close(a.log_prob, b.log_prob, rtol=0, atol=0)


# ---------------------------------------------------------- nonlinear 2-D, normalised
MUS = torch.tensor([[1.5, 0.0], [-1.5, 0.5]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
SD = 0.5


def mixture_velocity(x, t):
    """Exact CondOT marginal velocity from N(0, I) to sum_k w_k N(mu_k, SD^2 I)."""
    t = t[:, None]
    var = (1 - t) ** 2 + t * t * SD * SD
    mus = MUS.to(x)
    d = x[:, None, :] - t[:, None] * mus[None]
    logits = WEIGHTS.to(x).log()[None] - 0.5 * d.square().sum(-1) / var
    gamma = torch.softmax(logits, dim=-1)
    u = mus[None] + ((t * SD * SD - (1 - t)) / var)[:, None] * d
    return (gamma[..., None] * u).sum(1)


def mixture_log_prob(x):
    d = x[:, None, :] - MUS.to(x)[None]
    comp = -0.5 * d.square().sum(-1) / SD**2 - math.log(2 * math.pi * SD**2)
    return torch.logsumexp(WEIGHTS.to(x).log()[None] + comp, dim=-1)


def test_nonlinear_flow_density_integrates_to_one():
    n = 48
    xs = torch.linspace(-4.0, 4.0, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    res = log_likelihood(mixture_velocity, grid, Gaussian(2), steps=16)
    h = (xs[1] - xs[0]).item()
    assert res.log_prob.exp().sum().item() * h * h == pytest.approx(1.0, abs=2e-3)
    # and it is the mixture density, pointwise
    assert (res.log_prob - mixture_log_prob(grid)).abs().max().item() < 5e-3


# ------------------------------------------------------------------ autograd contexts
def test_works_under_no_grad_and_returns_detached_results():
    v, target, _, g = affine_flow(6, 2)
    x1 = draw(target, 4, g).requires_grad_(True)
    with torch.no_grad():
        res = log_likelihood(v, x1, Gaussian(2), steps=10)
    torch.testing.assert_close(res.log_prob, target.log_prob(x1.detach()), rtol=0, atol=1e-6)
    assert not res.log_prob.requires_grad and not res.x0.requires_grad


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 5))
def test_divergence_matches_the_jacobian_trace(seed, dim):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    x = torch.randn(3, dim, generator=g, dtype=torch.float64, requires_grad=True)

    def f(y):
        return torch.tanh(y @ W.T) * y

    div = divergence(f(x), x)
    for i in range(3):  # loop over the batch only in the reference
        J = torch.autograd.functional.jacobian(f, x[i : i + 1].detach())[0, :, 0, :]
        assert div[i].item() == pytest.approx(J.trace().item(), abs=1e-10)


def test_cond_is_forwarded():
    def v(x, t, *, rate):
        return rate * x

    x1 = torch.zeros(2, 2, dtype=torch.float64)
    res = log_likelihood(v, x1, Gaussian(2), steps=8, cond={"rate": -1.0})
    assert res.delta_logp.tolist() == pytest.approx([2.0, 2.0])


# ---------------------------------------------------------------------- dtype/device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("div", ["exact", "hutchinson"])
def test_dtype_and_device_are_preserved(dtype, device, div):
    v, target, _, g = affine_flow(7, 2, dtype=dtype, device=device)

    def v_dev(x, t):
        assert t.dtype == dtype and t.device == x.device
        return v(x, t)

    x1 = draw(target, 6, g).to(dtype=dtype, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    res = log_likelihood(v_dev, x1, Gaussian(2), steps=20, divergence=div, generator=g)
    for out in (res.log_prob, res.x0, res.log_prob_source, res.delta_logp):
        assert out.dtype == dtype and out.device == x1.device
    if div == "exact":
        want = target.log_prob(x1.double().cpu())
        tol = 1e-4 if dtype == torch.float32 else 1e-6
        torch.testing.assert_close(res.log_prob.double().cpu(), want, rtol=0, atol=tol)


# ------------------------------------------------------------------------- bad input
X1 = torch.zeros(3, 2, dtype=torch.float64)


def _v(x, t):
    return -x


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 4, "method": "rk5"}, ValueError, "euler, midpoint, heun, rk4, dopri5"),
        ({"steps": 4, "divergence": "approx"}, ValueError, "exact, hutchinson"),
        ({"steps": 4, "n_probes": 3}, ValueError, "hutchinson.* only"),
        ({"steps": 4, "divergence": "hutchinson", "n_probes": 0}, ValueError, "n_probes"),
        ({"steps": 4, "divergence": "hutchinson", "n_probes": 1.0}, TypeError, "n_probes"),
        ({"steps": 4, "generator": 3}, TypeError, "generator"),
        ({"steps": 4, "t0": 1.0}, ValueError, "differ"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({}, ValueError, "steps"),
        ({"steps": 4, "cond": 1}, TypeError, "cond"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        log_likelihood(_v, X1, Gaussian(2), **kwargs)


def test_bad_source_and_fields_raise():
    with pytest.raises(TypeError, match="log_prob"):
        log_likelihood(_v, X1, object(), steps=2)

    class BadSource:
        def log_prob(self, x):
            return x

    with pytest.raises(ValueError, match=r"source.log_prob must return shape \(3,\)"):
        log_likelihood(_v, X1, BadSource(), steps=2)
    with pytest.raises(ValueError, match="no_grad"):
        log_likelihood(lambda x, t: -x.detach(), X1, Gaussian(2), steps=2)
    with pytest.raises(ValueError, match="must return x's shape"):
        log_likelihood(lambda x, t: x[:, :1], X1, Gaussian(2), steps=2)
    with pytest.raises(ValueError, match="non-finite"):
        log_likelihood(_v, X1 + math.nan, Gaussian(2), steps=2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        log_likelihood(_v, X1, Gaussian(3), steps=2)


def test_likelihood_handles_an_empty_batch():
    x1 = torch.zeros(0, 3, dtype=torch.float64)
    res = log_likelihood(lambda x, t: -x, x1, Gaussian(3), steps=4)
    assert res.log_prob.shape == (0,)
    x = torch.zeros(0, 3, requires_grad=True)
    assert divergence(2 * x, x).shape == (0,)


def test_likelihood_names_inference_mode_and_constant_fields():
    x1 = torch.zeros(2, 2, dtype=torch.float64)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        log_likelihood(lambda x, t: -x, x1, Gaussian(2), steps=4)
    # under no_grad the divergence's own graph is still built
    with torch.no_grad():
        res = log_likelihood(lambda x, t: -x, x1, Gaussian(2), steps=4)
    assert torch.isfinite(res.log_prob).all()
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"c \+ 0 \* x"):
        log_likelihood(lambda x, t: b.expand_as(x), x1, Gaussian(2), steps=4)
    # written as the message says, a translation has divergence 0: the density moves with it
    res = log_likelihood(lambda x, t: b + 0 * x, x1, Gaussian(2), steps=4)
    torch.testing.assert_close(res.log_prob, Gaussian(2).log_prob(x1 - b))


def test_likelihood_asks_for_steps_by_its_own_arguments():
    x1 = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"needs the number of steps \(steps=\.\.\.\)$"):
        log_likelihood(lambda x, t: -x, x1, Gaussian(2), method="rk4")
