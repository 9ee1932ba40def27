"""Solvers on manifolds: convergence orders of both manifold schemes on S^2 and SO(3), dopri5
with the expmap scheme, states on the manifold, reversibility, D log_x, the geodesic random walk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from manifoldfm.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from manifoldfm.manifolds.base import check_tol
from manifoldfm.manifolds.so3 import hat, rotvec_to_rotmat
from manifoldfm.manifolds.torus import wrap_angle
from manifoldfm.solvers import solve_ode, solve_sde
from manifoldfm.solvers.steps import dlogmap

from .strategies import dtypes, seeds

F64 = torch.float64
FIXED = ("euler", "midpoint", "heun", "rk4")
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
SCHEMES = ("expmap", "projection")
STEPS = [8, 16, 32, 64]

S2, SO3_ = Sphere(2), SO3()

# ------------------------------------------------------------------------------ fields
# A body/space angular velocity that turns about e_3 at rate BETA: w(t) = Q(t) W0 with
# Q(t) = exp(t BETA hat(e_3)). Both flows below have closed forms but are no one-parameter
# subgroups, so no scheme integrates them exactly.
W0 = torch.tensor([0.3, -0.8, 0.5], dtype=F64)
E3 = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
BETA = 1.3


def _q(t: float | torch.Tensor, dtype=F64) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=dtype)
    return rotvec_to_rotmat(t[..., None] * BETA * E3.to(dtype))


def _omega(t: torch.Tensor) -> torch.Tensor:
    return (_q(t, t.dtype) @ W0.to(t.dtype)[:, None])[..., 0]


def rotation_field_s2(x, t):
    """v(x, t) = w(t) x x: a rigid rotation with a turning axis."""
    return torch.linalg.cross(_omega(t), x)


def rotation_flow_s2(x, s, e):
    """y = Q^T x obeys y' = (W0 - BETA e_3) x y, so x(e) = Q(e) exp((e - s)(W0 - BETA e_3)) Q(s)^T x(s)."""
    m = _q(e) @ rotvec_to_rotmat((e - s) * (W0 - BETA * E3)) @ _q(s).mT
    return x @ m.to(x.dtype).mT


def body_field_so3(r, t):
    """Left-invariant field with a turning body angular velocity: R' = R hat(w(t))."""
    return r @ hat(_omega(t))


def body_flow_so3(r, s, e):
    """S = R Q obeys S' = S hat(W0 + BETA e_3): R(e) = R(s) Q(s) exp((e - s) hat(W0 + BETA e_3)) Q(e)^T."""
    m = _q(s) @ rotvec_to_rotmat((e - s) * (W0 + BETA * E3)) @ _q(e).mT
    return r @ m.to(r.dtype)


_G = torch.Generator().manual_seed(7)
A_S2 = torch.randn(3, 3, generator=_G, dtype=F64)
C_S2 = torch.randn(3, 3, generator=_G, dtype=F64)


def gradient_like_field_s2(x, t):
    """A non-isometric, time-dependent field: its flow contracts and expands areas."""
    a, c = A_S2.to(x.dtype), C_S2.to(x.dtype)
    return S2.proju(x, 0.3 * (x @ a.T + torch.sin(x @ c.T) * (1.0 + t[:, None])))


def product_field(x, t):
    s, r = x[:, :3], x[:, 3:].reshape(-1, 3, 3)
    vr = body_field_so3(r, t) + r @ hat(s)  # couples the factors
    return torch.cat([gradient_like_field_s2(s, t), vr.reshape(-1, 9)], dim=1)


PRODUCT = Product(Sphere(2), SO3())


def slope(steps: list[int], errors: list[float]) -> float:
    return float(np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(np.asarray(errors)), 1)[0])


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).flatten(1).norm(dim=1).max().item()


def errors_by_steps(field, x0, manifold, method, scheme, target, t1=1.5, steps=STEPS):
    return [
        max_error(
            solve_ode(
                field, x0, steps=n, method=method, manifold=manifold, manifold_scheme=scheme, t1=t1
            ).x,
            target,
        )
        for n in steps
    ]


_REFERENCE: dict[str, torch.Tensor] = {}


def fine_reference(name, field, x0, manifold, steps, t1=1.5):
    """A fine RK4 solution (projection scheme; its error is (steps / 64)^4 times below that of
    64 steps)."""
    if name not in _REFERENCE:
        _REFERENCE[name] = solve_ode(
            field,
            x0,
            steps=steps,
            method="rk4",
            manifold=manifold,
            manifold_scheme="projection",
            t1=t1,
        ).x
    return _REFERENCE[name]


# ------------------------------------------------------------------------ convergence
def test_closed_form_flows_solve_their_odes():
    """The references: d/dt of the closed-form flows equals the fields (central differences)."""
    x0 = S2.random_uniform(4, generator=torch.Generator().manual_seed(0), dtype=F64)
    r0 = SO3_.random_uniform(4, generator=torch.Generator().manual_seed(1), dtype=F64)
    t, h = 0.7, 1e-5
    tt = torch.full((4,), t, dtype=F64)
    for flow, field, p in (
        (rotation_flow_s2, rotation_field_s2, x0),
        (body_flow_so3, body_field_so3, r0),
    ):
        xt = flow(p, 0.0, t)
        deriv = (flow(p, 0.0, t + h) - flow(p, 0.0, t - h)) / (2 * h)
        torch.testing.assert_close(deriv, field(xt, tt), atol=1e-8, rtol=0)
        torch.testing.assert_close(flow(xt, t, 0.0), p, atol=1e-12, rtol=0)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("method", FIXED)
def test_order_rotation_field_on_the_sphere(method, scheme):
    x0 = S2.random_uniform(4, generator=torch.Generator().manual_seed(3), dtype=F64)
    errors = errors_by_steps(
        rotation_field_s2, x0, S2, method, scheme, rotation_flow_s2(x0, 0.0, 1.5)
    )
    assert slope(STEPS, errors) == pytest.approx(ORDER[method], abs=0.25)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("method", FIXED)
def test_order_body_velocity_on_so3(method, scheme):
    r0 = SO3_.random_uniform(4, generator=torch.Generator().manual_seed(4), dtype=F64)
    errors = errors_by_steps(body_field_so3, r0, SO3_, method, scheme, body_flow_so3(r0, 0.0, 1.5))
    assert slope(STEPS, errors) == pytest.approx(ORDER[method], abs=0.25)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("method", FIXED)
def test_order_non_isometric_field_on_the_sphere(method, scheme):
    x0 = S2.random_uniform(4, generator=torch.Generator().manual_seed(5), dtype=F64)
    ref = fine_reference("s2", gradient_like_field_s2, x0, S2, 512)
    errors = errors_by_steps(gradient_like_field_s2, x0, S2, method, scheme, ref)
    assert slope(STEPS, errors) == pytest.approx(ORDER[method], abs=0.25)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_order_rk4_on_a_product(scheme):
    x0 = PRODUCT.random_uniform(2, generator=torch.Generator().manual_seed(6), dtype=F64)
    ref = fine_reference("product", product_field, x0, PRODUCT, 128)
    errors = errors_by_steps(product_field, x0, PRODUCT, "rk4", scheme, ref, steps=STEPS[:3])
    assert slope(STEPS[:3], errors) == pytest.approx(4, abs=0.25)


def test_expmap_scheme_is_the_default_and_differs_from_projection():
    x0 = S2.random_uniform(4, generator=torch.Generator().manual_seed(8), dtype=F64)
    default = solve_ode(gradient_like_field_s2, x0, steps=8, method="rk4", manifold=S2).x
    expmap = solve_ode(
        gradient_like_field_s2, x0, steps=8, method="rk4", manifold=S2, manifold_scheme="expmap"
    ).x
    proj = solve_ode(
        gradient_like_field_s2, x0, steps=8, method="rk4", manifold=S2, manifold_scheme="projection"
    ).x
    torch.testing.assert_close(default, expmap, rtol=0, atol=0)
    assert max_error(expmap, proj) > 1e-8


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("manifold", "field", "flow"),
    [(S2, rotation_field_s2, rotation_flow_s2), (SO3_, body_field_so3, body_flow_so3)],
    ids=["sphere", "so3"],
)
def test_dopri5_meets_its_tolerance(manifold, field, flow, scheme):
    x0 = manifold.random_uniform(5, generator=torch.Generator().manual_seed(9), dtype=F64)
    nfes = []
    for tol in (1e-6, 1e-9):
        sol = solve_ode(
            field,
            x0,
            method="dopri5",
            manifold=manifold,
            manifold_scheme=scheme,
            atol=tol,
            rtol=tol,
            t1=1.5,
        )
        assert max_error(sol.x, flow(x0, 0.0, 1.5)) < 20 * tol
        nfes.append(sol.nfe)
    assert nfes[1] > nfes[0]  # the error control works: a tighter tolerance costs more steps


def test_dopri5_fsal_on_a_manifold_reuses_the_last_stage():
    """With FSAL each accepted or rejected step costs 6 evaluations, plus the first one and the
    initial step-size probe."""
    x0 = S2.random_uniform(3, generator=torch.Generator().manual_seed(10), dtype=F64)
    sol = solve_ode(rotation_field_s2, x0, method="dopri5", manifold=S2, atol=1e-8, rtol=1e-8)
    assert (sol.nfe - 2) % 6 == 0


# ------------------------------------------------------------------- states stay on M
ON_M: list[Manifold] = [Sphere(2), Sphere(3), SO3(), FlatTorus(2), Product(Sphere(2), SO3())]


def smooth_field(manifold: Manifold, seed: int, dtype: torch.dtype):
    """A smooth time-dependent field (of the angles' cosines and sines on a torus)."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(manifold.point_shape)
    torus = isinstance(manifold, FlatTorus)
    w = torch.randn(2 * d if torus else d, d, generator=g, dtype=F64).to(dtype)

    def v(x, t):
        flat = x.reshape(x.shape[0], -1)
        if torus:
            flat = torch.cat([flat.cos(), flat.sin()], dim=1)
        return (2.0 * torch.sin(flat @ w + t[:, None])).reshape(x.shape)

    return v


@settings(max_examples=12)
@given(
    index=st.integers(0, len(ON_M) - 1),
    method=st.sampled_from(("midpoint", "rk4", "dopri5")),
    scheme=st.sampled_from(SCHEMES),
    seed=seeds,
    dtype=dtypes,
)
@example(index=2, method="rk4", scheme="expmap", seed=0, dtype=torch.float32)
def test_every_state_lies_on_the_manifold(index, method, scheme, seed, dtype):
    m = ON_M[index]
    x0 = m.random_uniform(5, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    kw = {"steps": 40} if method != "dopri5" else {"atol": 1e-4, "rtol": 1e-4}
    sol = solve_ode(
        smooth_field(m, seed, dtype),
        x0,
        method=method,
        manifold=m,
        manifold_scheme=scheme,
        save_trajectory=True,
        **kw,
    )
    assert sol.xs.dtype == dtype
    assert torch.isfinite(sol.xs).all()
    assert m._point_deviation(sol.xs).max().item() <= check_tol(dtype)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize("index", range(len(ON_M)), ids=[repr(m) for m in ON_M])
def test_backwards_integration_returns_to_the_start(index, method):
    m = ON_M[index]
    x0 = m.random_uniform(4, generator=torch.Generator().manual_seed(11), dtype=F64)
    v = smooth_field(m, 11, F64)
    kw = {"steps": 64} if method == "rk4" else {"atol": 1e-8, "rtol": 1e-8}
    fwd = solve_ode(v, x0, method=method, manifold=m, **kw)
    back = solve_ode(v, fwd.x, method=method, manifold=m, t0=1.0, t1=0.0, **kw)
    assert m.dist(fwd.x, x0).max().item() > 0.1  # it went somewhere
    assert m.dist(back.x, x0).max().item() < 1e-5


@pytest.mark.parametrize("method", (*FIXED, "dopri5"))
def test_euclidean_manifold_is_the_plain_solver(method):
    g = torch.Generator().manual_seed(12)
    x0 = torch.randn(4, 3, generator=g, dtype=F64)
    w = torch.randn(3, 3, generator=g, dtype=F64)

    def v(x, t):
        return torch.tanh(x @ w) * (1 + t[:, None])

    plain = solve_ode(v, x0, steps=8, method=method)
    on_r3 = solve_ode(v, x0, steps=8, method=method, manifold=Euclidean(3))
    torch.testing.assert_close(on_r3.x, plain.x, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("method", FIXED)
def test_torus_steps_are_wrapped_euclidean_steps(method):
    g = torch.Generator().manual_seed(13)
    x0 = FlatTorus(2).random_uniform(6, generator=g, dtype=F64)

    def v(x, t):  # 2 pi-periodic in each angle
        return torch.stack([torch.sin(x[:, 1] + t), 0.8 * torch.cos(x[:, 0])], dim=-1) * 3.0

    plain = solve_ode(v, x0, steps=10, method=method)
    torus = solve_ode(v, x0, steps=10, method=method, manifold=FlatTorus(2))
    assert (plain.x - x0).abs().max().item() > 1.0
    diff = torus.x - wrap_angle(plain.x)
    torch.testing.assert_close(
        torch.remainder(diff + math.pi, 2 * math.pi) - math.pi,
        torch.zeros_like(diff),
        atol=1e-12,
        rtol=0,
    )


@pytest.mark.parametrize("m", [SO3_, S2], ids=["so3", "sphere"])
def test_gradients_flow_through_the_expmap_scheme(m):
    p = m.random_uniform(2, generator=torch.Generator().manual_seed(14), dtype=F64)
    v = smooth_field(m, 16, F64)

    def loss(scale):
        x = solve_ode(lambda x, t: scale * v(x, t), p, steps=6, method="rk4", manifold=m).x
        return x.square().sum() + x.sum()

    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(scale), scale)
    eps = 1e-6
    fd = (loss(0.7 + eps) - loss(0.7 - eps)).item() / (2 * eps)
    assert grad.item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


# ------------------------------------------------------------------------- D log_x
DLOG: list[Manifold] = [
    Sphere(1),
    Sphere(2),
    Sphere(4),
    SO3(),
    FlatTorus(3),
    Euclidean(2),
    Product(Sphere(2), SO3(), FlatTorus(1)),
]


def _jvp_of_log(m: Manifold, x, y, u):
    return torch.func.jvp(lambda p: m._logmap(x, p), (y,), (u,))[1]


@given(index=st.integers(0, len(DLOG) - 1), seed=seeds, dtype=dtypes, scale=st.floats(0.0, 0.9))
@example(index=1, seed=0, dtype=F64, scale=0.0)
@example(index=3, seed=0, dtype=torch.float32, scale=1e-4)
def test_dlogmap_closed_forms_match_forward_mode_autodiff(index, seed, dtype, scale):
    m = DLOG[index]
    g = torch.Generator().manual_seed(seed)
    x = m.random(6, generator=g, dtype=dtype)
    u = m.proju(x, torch.randn(x.shape, generator=g, dtype=dtype))
    lead = (6,) + (1,) * len(m.point_shape)
    radius = m.injectivity_radius if math.isfinite(m.injectivity_radius) else 3.0
    u = u / m.norm(x, u).clamp_min(1e-12).reshape(lead) * (scale * radius)
    y = m.expmap(x, u)
    k = m.proju(y, torch.randn(y.shape, generator=g, dtype=dtype))
    got = dlogmap(m, x, y, k)
    want = _jvp_of_log(m, x, y, k)
    tol = 1e-9 if dtype == F64 else 5e-4
    torch.testing.assert_close(got, want, atol=tol * (1 + want.abs().max().item()), rtol=0)
    # The result is tangent at x; at y = x the differential is the identity.
    assert m._tangent_deviation(x, got).max().item() <= check_tol(dtype)
    torch.testing.assert_close(dlogmap(m, x, x, u), u, atol=10 * tol, rtol=0)


def test_dlogmap_of_duck_typed_manifolds():
    class Flat:
        def logmap(self, x, y):
            return y - x

    class Custom(Flat):
        def dlogmap(self, x, y, u):
            return 2 * u

    x, y, u = torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), 0.5)
    torch.testing.assert_close(dlogmap(Flat(), x, y, u), u)  # forward-mode autodiff
    torch.testing.assert_close(dlogmap(Custom(), x, y, u), 2 * u)  # the object's own


# --------------------------------------------------------------- geodesic random walk
def zero(x, t):
    return torch.zeros_like(x)


def _z(value: float, expected: float, samples: torch.Tensor) -> float:
    """How many standard errors the sample mean is from the expected value."""
    return abs(value - expected) / (samples.std().item() / math.sqrt(samples.numel()))


def test_brownian_motion_on_the_sphere_mixes_to_the_uniform_law():
    """On S^2, E<x_t, x_0> = exp(-t) (the l = 1 eigenvalue of the Laplacian is -2) and the
    second moments tend to I / 3: the walk with zero drift converges to the uniform law."""
    n, g = 4000, torch.Generator().manual_seed(20)
    x0 = S2.origin(n, dtype=F64)
    sol = solve_sde(
        zero, x0, diffusion=1.0, steps=200, t1=4.0, manifold=S2, generator=g, save_trajectory=True
    )
    for i in (25, 50, 100):  # t = 0.5, 1, 2
        c = sol.xs[i][:, 0]
        t = sol.ts[i].item()
        assert _z(c.mean().item(), math.exp(-t), c) < 4
        assert _z(c.square().mean().item(), 1 / 3 + 2 / 3 * math.exp(-3 * t), c.square()) < 4
    x = sol.x
    assert x.mean(0).abs().max().item() < 4 / math.sqrt(3 * n)
    second = x.T @ x / n
    torch.testing.assert_close(second, torch.eye(3, dtype=F64) / 3, atol=0.03, rtol=0)


def test_drift_and_noise_combine_on_the_sphere():
    """With the rotation field as drift, E[x_t] = exp(-t) (rotated x_0): the rotation commutes
    with the Brownian motion."""
    n, g = 4000, torch.Generator().manual_seed(21)
    x0 = torch.tensor([[0.6, 0.0, 0.8]], dtype=F64).expand(n, 3).clone()
    sol = solve_sde(
        rotation_field_s2, x0, diffusion=1.0, steps=100, t1=1.0, manifold=S2, generator=g
    )
    mean = sol.x.mean(0)
    expect = math.exp(-1.0) * rotation_flow_s2(x0[:1], 0.0, 1.0)[0]
    se = sol.x.std(0) / math.sqrt(n)
    assert ((mean - expect).abs() / se).max().item() < 4


def test_wrapped_normal_variance_on_the_torus_grows_as_the_integrated_diffusion():
    """On the flat torus the walk is exact: x_t - x_0 is a wrapped normal of variance
    int g^2, so E cos(k (x_t - x_0)) = exp(-k^2 int g^2 / 2) per angle."""
    n, g, t2 = 20000, torch.Generator().manual_seed(22), FlatTorus(2)
    x0 = t2.random_uniform(n, generator=g, dtype=F64)
    sol = solve_sde(
        zero,
        x0,
        diffusion=lambda t: 0.5 + t,
        steps=50,
        t1=1.0,
        manifold=t2,
        generator=g,
        save_trajectory=True,
    )
    for i in (10, 25, 50):
        t = sol.ts[i].item()
        var = ((0.5 + t) ** 3 - 0.125) / 3  # int_0^t (0.5 + s)^2 ds
        d = (sol.xs[i] - x0).flatten()
        for k in (1, 2):
            c = torch.cos(k * d)
            assert _z(c.mean().item(), math.exp(-k * k * var / 2), c) < 4
        s = torch.sin(d)
        assert _z(s.mean().item(), 0.0, s) < 4


def test_brownian_motion_on_so3_uses_the_bi_invariant_metric():
    """With tangent noise of identity covariance for <u, v> = tr(u^T v) / 2, the Laplacian acts
    on R as -2 R, so E[R_0^T R_t] = exp(-t) I (a noise twice too large would give exp(-2t))."""
    n, g = 4000, torch.Generator().manual_seed(23)
    r0 = SO3_.random_uniform(n, generator=g, dtype=F64)
    sol = solve_sde(zero, r0, diffusion=1.0, steps=100, t1=1.0, manifold=SO3_, generator=g)
    rel = r0.mT @ sol.x
    assert SO3_._point_deviation(sol.x).max().item() < 1e-9
    for i in range(3):
        c = rel[:, i, i]
        assert _z(c.mean().item(), math.exp(-1.0), c) < 4
    off = rel[:, 0, 1]
    assert _z(off.mean().item(), 0.0, off) < 4


def test_solvers_check_the_initial_state_once_at_the_boundary():
    import manifoldfm as mfm

    x = S2.random_uniform(4, generator=torch.Generator().manual_seed(0), dtype=F64)
    field = lambda x, t: torch.zeros_like(x)  # noqa: E731
    for solve in (
        lambda x0: solve_ode(field, x0, steps=2, manifold=S2),
        lambda x0: solve_sde(field, x0, diffusion=0.1, steps=2, manifold=S2),
    ):
        with mfm.checks(manifold=True), pytest.raises(ValueError, match=r"x0 .* is not on"):
            solve(2 * x)
        with pytest.raises(ValueError, match="x0"):  # shape: always checked
            solve(torch.ones(4, 2, dtype=F64))


def test_a_field_of_another_dtype_is_refused():
    x = S2.random_uniform(4, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    with pytest.raises(TypeError, match=r"dtype torch\.float32, got torch\.float64"):
        solve_ode(lambda x, t: torch.zeros_like(x, dtype=F64), x, steps=2, manifold=S2)


# ------------------------------------------------- the untracked fast path of fixed steps
# Where autograd records nothing, fixed-step solves on spheres and tori use the manifolds'
# untracked fast operations; with x0 requiring grad every operation is recorded and the
# general ones run. The two must agree to rounding and both stay on the manifold.
FAST_M: list[Manifold] = [Sphere(2), Sphere(3), FlatTorus(2), FlatTorus(3)]
FAST_TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def _gap(m: Manifold, a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest coordinate gap, angles compared on the circle."""
    d = a - b
    if isinstance(m, FlatTorus):
        d = torch.remainder(d + math.pi, 2 * math.pi) - math.pi
    return d.abs().max().item()


def _fast_and_general(m, method, scheme, seed, dtype, steps=5, t1=1.0, field=None):
    x0 = m.random_uniform(7, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    v = smooth_field(m, seed, dtype) if field is None else field
    kw = {"steps": steps, "method": method, "manifold": m, "manifold_scheme": scheme, "t1": t1}
    with torch.no_grad():
        fast = solve_ode(v, x0, save_trajectory=True, **kw)
    tracked = solve_ode(v, x0.clone().requires_grad_(True), save_trajectory=True, **kw)
    assert tracked.xs.requires_grad and not fast.xs.requires_grad
    return fast, tracked.xs.detach()


@settings(max_examples=30)
@given(
    index=st.integers(0, len(FAST_M) - 1),
    method=st.sampled_from(FIXED),
    scheme=st.sampled_from(SCHEMES),
    seed=seeds,
    dtype=dtypes,
)
@example(index=0, method="rk4", scheme="expmap", seed=0, dtype=torch.float32)
@example(index=2, method="euler", scheme="projection", seed=0, dtype=torch.float64)
def test_fast_steps_equal_the_general_steps_and_stay_on_the_manifold(
    index, method, scheme, seed, dtype
):
    m = FAST_M[index]
    fast, general = _fast_and_general(m, method, scheme, seed, dtype)
    assert fast.xs.dtype == dtype
    assert _gap(m, fast.xs, general) <= FAST_TOL[dtype]
    # every state, after every step, on the manifold
    assert m._point_deviation(fast.xs).max().item() <= check_tol(dtype)
    if isinstance(m, FlatTorus):  # angles in [0, 2 pi), as wrap_angle gives
        assert fast.xs.min().item() >= 0.0 and fast.xs.max().item() < 2 * math.pi


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_fast_steps_with_a_zero_field_and_with_steps_near_the_cut_locus(scheme, dtype):
    """Zero velocity (steps of length 0) and steps of length just under pi on the sphere."""
    m = Sphere(2)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    fast, general = _fast_and_general(m, "rk4", scheme, 3, dtype, field=zero)
    assert _gap(m, fast.x, fast.xs[0]) <= 4 * torch.finfo(dtype).eps
    assert _gap(m, fast.xs, general) <= FAST_TOL[dtype]
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=dtype)
    speed = (math.pi - 1e-3) / axis.norm()

    def turn(x, t):  # a rigid rotation by pi - 1e-3 over the unit time
        return speed * torch.linalg.cross(axis.expand_as(x), x)

    fast, general = _fast_and_general(m, "euler", scheme, 3, dtype, steps=1, field=turn)
    assert torch.isfinite(fast.x).all()
    assert _gap(m, fast.xs, general) <= 50 * FAST_TOL[dtype]
    assert m._point_deviation(fast.x).max().item() <= check_tol(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("m", [Sphere(2), FlatTorus(2)], ids=["sphere", "torus"])
def test_gradients_through_the_solver_stay_finite_at_the_edges(m, scheme, dtype):
    """Grad enabled and x0 requiring grad: the general operations, finite gradients for a
    zero field (steps of length 0) and for a step of length just under pi."""
    x0 = m.random_uniform(5, generator=torch.Generator().manual_seed(4), dtype=dtype)
    d = m.point_shape[0]
    u = m.proju(x0, torch.randn(5, d, generator=torch.Generator().manual_seed(5), dtype=dtype))
    u = u / u.norm(dim=-1, keepdim=True) * (math.pi - 1e-6)
    for scale in (0.0, 1.0):
        x = x0.clone().requires_grad_(True)
        w = torch.tensor(scale, dtype=dtype, requires_grad=True)
        field = lambda y, t: w * m.proju(y, u)  # noqa: B023, E731
        for method in ("euler", "rk4"):
            sol = solve_ode(field, x, steps=1, method=method, manifold=m, manifold_scheme=scheme)
            gx, gw = torch.autograd.grad(sol.x.sin().sum(), (x, w))
            assert torch.isfinite(gx).all() and torch.isfinite(gw).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sphere_fast_operations_match_the_general_ones(dtype):
    s = Sphere(2)
    g = torch.Generator().manual_seed(6)
    x = s.random_uniform(200, generator=g, dtype=dtype)
    aux = s._fast_aux(x)
    tol = 8 * torch.finfo(dtype).eps
    # projection: the zero vector goes to e_0, NaN stays NaN, other rows are normalised
    y = torch.randn(200, 3, generator=g, dtype=dtype) * torch.logspace(-8, 8, 200, dtype=dtype)[
        :, None
    ].to(dtype)
    y[0] = 0.0
    y[1] = math.nan
    # the CPU's row-sum route and the accelerators' norm kernel, both run here
    for route in (aux, aux._replace(ones=None, norm_kernel=True)):
        out = s._projx_inplace(y.clone(), route)
        torch.testing.assert_close(out[0], torch.tensor([1.0, 0.0, 0.0], dtype=dtype))
        assert torch.isnan(out[1]).all()
        assert (out[2:] - s._projx(y[2:])).abs().max().item() <= tol
    # tangent projection and exponential map, from u = 0 to a half turn
    u = s.proju(x, torch.randn(200, 3, generator=g, dtype=dtype))
    assert (s._proju_fast(x, u + 2 * x, aux) - s._proju(x, u + 2 * x)).abs().max() <= 4 * tol
    for length in (0.0, 1e-20, 1e-9, 1e-3, 0.5, 2.0, math.pi - 1e-3):
        w = u / u.norm(dim=-1, keepdim=True) * length
        assert (s._expmap_fast(x, w, aux) - s._expmap(x, w)).abs().max() <= 4 * tol
    # D log_x(y), from y = x to most of a half turn
    k = torch.randn(200, 3, generator=g, dtype=dtype)
    for length in (0.0, 1e-9, 1e-3, 0.3, 2.0):
        y = s._expmap(x, u / u.norm(dim=-1, keepdim=True) * length)
        ky = s._proju(y, k)
        ref = s._dlogmap(x, y, ky)
        err = (s._dlogmap_fast(x, y, ky, aux) - ref).abs().max()
        assert err <= 64 * tol * (1 + ref.abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [5, 5000])  # both of the fast wrap's branches
def test_torus_fast_wrap_matches_wrap_angle(n, dtype):
    t = FlatTorus(1)
    y = torch.randn(n, 1, generator=torch.Generator().manual_seed(7), dtype=dtype) * 10.0
    two_pi = float(torch.tensor(2 * math.pi, dtype=dtype))
    y[:4, 0] = torch.tensor([-1e-9, 0.0, two_pi, -two_pi], dtype=dtype)
    out = t._projx_inplace(y.clone(), None)
    assert out.min().item() >= 0.0 and out.max().item() < 2 * math.pi
    gap = torch.remainder(out - wrap_angle(y) + math.pi, 2 * math.pi) - math.pi
    assert gap.abs().max().item() <= 8 * torch.finfo(dtype).eps * 10.0
    assert torch.isnan(t._projx_inplace(torch.full((n, 1), math.nan, dtype=dtype), None)).all()


def test_sphere_row_sums_avoid_reduced_precision_matmuls():
    from manifoldfm.manifolds.sphere import _exact_cpu_matmul

    assert _exact_cpu_matmul(torch.float64) and not _exact_cpu_matmul(torch.float16)
    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        assert not _exact_cpu_matmul(torch.float32)
        assert Sphere(2)._fast_aux(torch.zeros(1, 3)).ones is None  # sums instead
        assert Sphere(2)._fast_aux(torch.zeros(1, 3, dtype=F64)).ones is not None
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
    assert _exact_cpu_matmul(torch.float32) == (before in ("none", "ieee"))
    # other devices: sums, and the nudge made on the device itself
    aux = Sphere(2)._fast_aux(torch.zeros(1, 3, device="meta"))
    assert aux.ones is None and aux.nudge.device.type == "meta" and aux.nudge.shape == (3,)
    assert aux.norm_kernel and not Sphere(2)._fast_aux(torch.zeros(1, 3)).norm_kernel


@pytest.mark.parametrize("m", [Sphere(2), FlatTorus(2)], ids=["sphere", "torus"])
def test_non_finite_states_are_named_on_the_fast_path(m):
    import manifoldfm as mfm

    x0 = m.random_uniform(3, generator=torch.Generator().manual_seed(8), dtype=F64)

    def blows_up(x, t):
        return torch.where(t[:, None] > 0.5, torch.full_like(x, math.inf), torch.zeros_like(x))

    with torch.no_grad():
        with pytest.raises(ValueError, match=r"non-finite at step 7 \(t = 0\.7, previous t = 0\.6"):
            solve_ode(blows_up, x0, steps=10, manifold=m, manifold_scheme="projection")
        with mfm.checks(manifold=False), pytest.raises(ValueError, match="x0 holds non-finite"):
            solve_ode(blows_up, torch.full_like(x0, math.nan), steps=3, manifold=m)


@pytest.mark.parametrize("m", [Sphere(2), FlatTorus(2)], ids=["sphere", "torus"])
def test_fast_operations_run_exactly_where_autograd_records_nothing(m, monkeypatch):
    calls: list[str] = []
    for name in ("_proju_fast", "_projx_inplace", "_expmap_fast", "_dlogmap_fast"):
        original = getattr(type(m), name)

        def counted(self, *args, _name=name, _original=original):
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(type(m), name, counted)
    x0 = m.random_uniform(4, generator=torch.Generator().manual_seed(9), dtype=F64)
    v = smooth_field(m, 9, F64)
    for scheme, used in (
        ("projection", {"_proju_fast", "_projx_inplace"}),
        ("expmap", {"_proju_fast", "_expmap_fast", "_projx_inplace", "_dlogmap_fast"}),
    ):
        calls.clear()
        solve_ode(v, x0, steps=2, method="midpoint", manifold=m, manifold_scheme=scheme)
        assert set(calls) == used  # grad enabled, but nothing requires grad
        calls.clear()
        solve_ode(v, x0.requires_grad_(True), steps=2, method="midpoint", manifold=m)
        x0.requires_grad_(False)
        assert calls == []
