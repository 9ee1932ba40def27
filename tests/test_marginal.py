"""Tests for the closed-form empirical marginal velocity (manifoldfm.paths.marginal)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from manifoldfm import VE, VP, AffinePath, CondOT, Cosine, Polynomial
from manifoldfm.losses import cfm_loss
from manifoldfm.paths.marginal import EmpiricalMarginalVelocity

from .conftest import DEVICES, TOL

SCHEDULERS = {
    "condot": CondOT(),
    "condot_smin": CondOT(sigma_min=0.1),
    "cosine": Cosine(),
    "poly2": Polynomial(2),
    "vp": VP(),
    "ve": VE(sigma_min=0.05, sigma_max=5.0),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_force(data, w, sched, std, x, t):
    """Independent reference: explicit Gaussian log-densities and a loop over the batch."""
    s = sched(t)
    out, post = [], []
    for b in range(x.shape[0]):
        a, sig, da, ds = s.alpha[b], s.sigma[b], s.d_alpha[b], s.d_sigma[b]
        dist = torch.distributions.Normal(a * data, sig * std)
        logp = dist.log_prob(x[b].expand_as(data)).sum(dim=1) + torch.log(w)
        p = torch.softmax(logp, dim=0)
        cond = (ds / sig) * (x[b] - a * data) + da * data
        out.append((p[:, None] * cond).sum(dim=0))
        post.append(p)
    return torch.stack(out), torch.stack(post)


@given(
    k=st.integers(1, 6),
    d=st.integers(1, 4),
    batch=st.integers(1, 5),
    name=st.sampled_from(sorted(SCHEDULERS)),
    std=st.sampled_from([0.5, 1.0, 2.0]),
    seed=st.integers(0, 2**16),
    weighted=st.booleans(),
)
@example(k=1, d=1, batch=1, name="condot", std=1.0, seed=0, weighted=False)
@example(k=3, d=2, batch=4, name="vp", std=1.0, seed=1, weighted=True)
def test_matches_brute_force(k, d, batch, name, std, seed, weighted):
    g = _gen(seed)
    data = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    w = (
        torch.rand(k, generator=g, dtype=torch.float64) + 0.1
        if weighted
        else torch.ones(k).double()
    )
    x = 2 * torch.randn(batch, d, generator=g, dtype=torch.float64)
    t = 0.02 + 0.96 * torch.rand(batch, generator=g, dtype=torch.float64)
    sched = SCHEDULERS[name]
    field = EmpiricalMarginalVelocity(
        data, AffinePath(sched), source_std=std, weights=w if weighted else None
    )
    ref_v, ref_p = _brute_force(data, w / w.sum(), sched, std, x, t)
    torch.testing.assert_close(field(x, t), ref_v, atol=1e-8, rtol=1e-8)
    post = field.posterior(x, t)
    torch.testing.assert_close(post, ref_p, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(post.sum(dim=1), torch.ones(batch).double(), **TOL[torch.float64])
    torch.testing.assert_close(field.x1_pred(x, t), post @ data, atol=1e-10, rtol=1e-8)


def test_importance_sampling_identity():
    """u_t(x) = E[u_t(x | x1) | x_t = x], estimated by self-normalised importance sampling."""
    g = _gen(11)
    data = 1.5 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    path = AffinePath(Cosine())
    field = EmpiricalMarginalVelocity(data, path, source_std=0.8)
    x = torch.tensor([[0.3, -0.4], [1.0, 1.0], [-2.0, 0.5]], dtype=torch.float64)
    n = 40000
    x1 = data[torch.randint(0, 6, (n,), generator=g)]  # proposal: the data distribution
    for tt in (0.2, 0.5, 0.8):
        s = path.scheduler(torch.tensor([tt], dtype=torch.float64))
        a, sig, da, ds = s.alpha, s.sigma, s.d_alpha, s.d_sigma
        for xb in x:
            logw = -((xb - a * x1) ** 2).sum(dim=1) / (2 * (sig * 0.8) ** 2)
            w = torch.softmax(logw, dim=0)
            cond = (ds / sig) * (xb - a * x1) + da * x1
            estimate = (w[:, None] * cond).sum(dim=0)
            exact = field(xb[None], torch.tensor([tt], dtype=torch.float64))[0]
            # Relative Monte Carlo error ~ 1/sqrt(n/K) ~ 1 %.
            torch.testing.assert_close(estimate, exact, atol=0.05, rtol=0.05)


def test_single_point_is_the_conditional_field():
    g = _gen(0)
    m = torch.randn(1, 3, generator=g, dtype=torch.float64)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64)
    for sched in SCHEDULERS.values():
        path = AffinePath(sched)
        s = path.sample(x0, m.expand(6, 3), t)
        torch.testing.assert_close(EmpiricalMarginalVelocity(m, path)(s.xt, t), s.ut)


def test_duplicated_points_equal_weights():
    g = _gen(1)
    data = torch.randn(3, 2, generator=g, dtype=torch.float64)
    dup = torch.cat([data, data[:1]], dim=0)  # point 0 twice
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    t = torch.rand(5, generator=g, dtype=torch.float64)
    a = EmpiricalMarginalVelocity(dup, AffinePath())
    b = EmpiricalMarginalVelocity(data, AffinePath(), weights=torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(a(x, t), b(x, t), **TOL[torch.float64])
    # A zero weight removes a point, also at t = 1 (nearest point of non-zero weight).
    c = EmpiricalMarginalVelocity(data, AffinePath(), weights=torch.tensor([0.0, 1.0, 1.0]))
    e = EmpiricalMarginalVelocity(data[1:], AffinePath())
    for tt in (t, torch.ones(5, dtype=torch.float64)):
        torch.testing.assert_close(c(x, tt), e(x, tt), **TOL[torch.float64])
        assert float(c.posterior(x, tt)[:, 0].max()) == 0.0


def test_time_zero_is_mean_minus_x():
    g = _gen(2)
    data = torch.randn(4, 2, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    x = torch.randn(3, 2, generator=g, dtype=torch.float64)
    field = EmpiricalMarginalVelocity(data, AffinePath(CondOT()), weights=w)
    torch.testing.assert_close(field(x, 0.0), (w / w.sum()) @ data - x, **TOL[torch.float64])


def test_chunking_does_not_change_results():
    g = _gen(3)
    data = torch.randn(7, 3, generator=g, dtype=torch.float64)
    x = torch.randn(11, 3, generator=g, dtype=torch.float64)
    t = torch.rand(11, generator=g, dtype=torch.float64)
    full = EmpiricalMarginalVelocity(data, AffinePath(Cosine()))
    for chunk in (1, 7, 20):
        small = EmpiricalMarginalVelocity(data, AffinePath(Cosine()), chunk_size=chunk)
        torch.testing.assert_close(small(x, t), full(x, t), **TOL[torch.float64])
        torch.testing.assert_close(
            small.posterior(x, t), full.posterior(x, t), **TOL[torch.float64]
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_endpoint_times_are_finite(dtype):
    g = _gen(4)
    data = 3 * torch.randn(5, 2, generator=g, dtype=dtype)
    x = 3 * torch.randn(64, 2, generator=g, dtype=dtype)
    nearest = data[torch.cdist(x, data).argmin(dim=1)]
    for name, sched in SCHEDULERS.items():
        field = EmpiricalMarginalVelocity(data, AffinePath(sched))
        for t in (0.0, 1e-7, 0.5, 1 - 1e-4, 1 - 1e-7, 1.0):
            v = field(x, t)
            assert bool(torch.isfinite(v).all()), (name, t)
            assert bool(torch.isfinite(field.posterior(x, t)).all()), (name, t)
    # t = 1 with exact endpoints: the nearest data point, velocity alpha'_1 * nearest.
    cond = EmpiricalMarginalVelocity(data, AffinePath(CondOT()))
    torch.testing.assert_close(cond.x1_pred(x, 1.0), nearest)
    torch.testing.assert_close(cond(x, 1.0), nearest)
    torch.testing.assert_close(
        cond.posterior(x, 1.0),
        torch.nn.functional.one_hot(torch.cdist(x, data).argmin(1), 5).to(dtype),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_device_and_point_shapes(dtype, device):
    g = _gen(5)
    data = torch.randn(4, 2, 3, generator=g, dtype=torch.float64)  # stored in float64 on CPU
    field = EmpiricalMarginalVelocity(data, AffinePath())
    x = torch.randn(6, 2, 3, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64)
    ref = field(x, t)
    out = field(x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype))
    assert out.shape == x.shape and out.dtype == dtype and out.device.type == device
    torch.testing.assert_close(out.cpu().double(), ref, **TOL[dtype])
    # The flat problem gives the same field.
    flat = EmpiricalMarginalVelocity(data.reshape(4, 6), AffinePath())
    torch.testing.assert_close(flat(x.reshape(6, 6), t).reshape(6, 2, 3), ref, **TOL[torch.float64])
    assert field(x[:0], t[:0]).shape == (0, 2, 3)
    assert field.posterior(x[:0], t[:0]).shape == (0, 4)


def test_minimises_the_cfm_loss():
    """E[<delta(x_t), u_t - v*(x_t)>] = 0 for any test function delta (v* is E[u_t | x_t])."""
    g = _gen(6)
    data = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5], [1.0, 2.0]], dtype=torch.float64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    n = 20000
    x1 = data[torch.multinomial(w, n, replacement=True, generator=g)]
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    path = AffinePath(Cosine())
    s = path.sample(x0, x1, t)
    oracle = EmpiricalMarginalVelocity(data, path, weights=w)
    v = oracle(s.xt, t)
    resid = s.ut - v
    tests = {
        "const": torch.ones_like(s.xt),
        "x": s.xt,
        "tx": t[:, None] * s.xt,
        "sin": torch.sin(s.xt.flip(1)),
    }
    for name, delta in tests.items():
        prod = (delta * resid).sum(dim=1)
        z = prod.mean() / (prod.std() / math.sqrt(n))
        assert abs(z.item()) < 4.0, name
        worse = cfm_loss(v + 0.2 * delta, s).item()
        assert cfm_loss(v, s).item() < worse, name
    # The test can fail: a field for the wrong source scale is detectably not the minimiser.
    wrong = EmpiricalMarginalVelocity(data, path, weights=w, source_std=1.5)(s.xt, t)
    prod = (s.xt * (s.ut - wrong)).sum(dim=1)
    assert abs((prod.mean() / (prod.std() / math.sqrt(n))).item()) > 10.0
    assert cfm_loss(v, s).item() < cfm_loss(wrong, s).item()


def _integrate(field, x, steps, method):
    ts = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
    for i in range(steps):
        t0, h = ts[i], ts[i + 1] - ts[i]
        if method == "euler":
            x = x + h * field(x, t0)
        else:
            k1 = field(x, t0)
            k2 = field(x + 0.5 * h * k1, t0 + 0.5 * h)
            k3 = field(x + 0.5 * h * k2, t0 + 0.5 * h)
            k4 = field(x + h * k3, t0 + h)  # evaluates t = 1 at the last step
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@pytest.mark.parametrize(
    ("name", "method", "tol"),
    [("condot", "euler", 1e-6), ("condot", "rk4", 0.05), ("cosine", "euler", 0.05)],
)
def test_flow_transports_source_to_weighted_data(name, method, tol):
    g = _gen(7)
    data = torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, -3.0], [1.0, 3.0]], dtype=torch.float64)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    field = EmpiricalMarginalVelocity(data, AffinePath(SCHEDULERS[name]), weights=w)
    n = 1000
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = _integrate(field, x0, 50, method)
    dist = torch.cdist(x1, data)
    # Every trajectory ends on a data point ...
    assert dist.min(dim=1).values.max().item() < tol
    # ... and the data points receive mass in proportion to their weights (std <= 0.016; equal
    # masses would be off by 0.15).
    freq = torch.bincount(dist.argmin(dim=1), minlength=4).double() / n
    assert (freq - w).abs().max().item() < 0.06


def test_bad_inputs():
    data = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"\(K, \*point_shape\)"):
        EmpiricalMarginalVelocity(torch.randn(3), AffinePath())
    with pytest.raises(ValueError, match="K >= 1"):
        EmpiricalMarginalVelocity(torch.randn(0, 2), AffinePath())
    with pytest.raises(TypeError, match="scheduler"):
        EmpiricalMarginalVelocity(data, object())
    with pytest.raises(ValueError, match=r"\(3,\)"):
        EmpiricalMarginalVelocity(data, AffinePath(), weights=torch.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        EmpiricalMarginalVelocity(data, AffinePath(), weights=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        EmpiricalMarginalVelocity(data, AffinePath(), weights=torch.zeros(3))
    with pytest.raises(ValueError, match="source_std"):
        EmpiricalMarginalVelocity(data, AffinePath(), source_std=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        EmpiricalMarginalVelocity(torch.tensor([[float("nan"), 0.0]]), AffinePath())
    field = EmpiricalMarginalVelocity(data, AffinePath())
    with pytest.raises(ValueError, match=r"\(B, \*\(2,\)\)"):
        field(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        field(torch.randn(4, 2), torch.full((4,), 1.5))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        field(torch.randn(4, 2), torch.rand(3))
    # A scheduler is accepted in place of the path.
    torch.testing.assert_close(
        EmpiricalMarginalVelocity(data, CondOT())(data, 0.3), field(data, 0.3)
    )
