"""Likelihood on manifolds: the Riemannian divergence against closed forms, densities w.r.t. the
Riemannian volume (a closed-form pushforward on S^2, total mass 1 on S^2, T^2 and SO(3)),
Hutchinson's estimate, schemes and methods, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.manifolds import SO3, FlatTorus, Manifold, Product, Sphere
from manifoldfm.manifolds.so3 import hat
from manifoldfm.solvers import divergence, log_likelihood, solve_ode

from .strategies import dtypes, seeds

F64 = torch.float64
S2, T2, SO3_ = Sphere(2), FlatTorus(2), SO3()


class Uniform:
    """The uniform law w.r.t. the Riemannian volume (a local stand-in for a source)."""

    def __init__(self, manifold: Manifold) -> None:
        self.log_volume = math.log(manifold.volume)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:1], -self.log_volume, dtype=x.dtype, device=x.device)


def rademacher(k: int, batch: int, dim: int, seed: int, dtype=F64) -> torch.Tensor:
    bits = torch.randint(0, 2, (k, batch, dim), generator=torch.Generator().manual_seed(seed))
    return bits.to(dtype) * 2 - 1


# ------------------------------------------------------------------- the divergence
@given(d=st.integers(1, 5), seed=seeds, dtype=dtypes)
def test_divergence_of_a_projected_constant_field_on_spheres(d, seed, dtype):
    """div_{S^d} proju(x, a) = -d <a, x> (the gradient of the height <a, x> is an eigenfunction
    of the Laplacian with eigenvalue -d)."""
    sphere = Sphere(d)
    g = torch.Generator().manual_seed(seed)
    x = sphere.random_uniform(7, generator=g, dtype=dtype).requires_grad_(True)
    a = torch.randn(d + 1, generator=g, dtype=F64).to(dtype)
    got = divergence(sphere.proju(x, a.expand_as(x)), x, manifold=sphere)
    want = -d * (x.detach() @ a)
    tol = 1e-10 if dtype == F64 else 1e-4
    torch.testing.assert_close(got, want, atol=tol * (1 + a.abs().max().item()), rtol=0)
    # The ambient (Euclidean) divergence of the same field differs: -(d + 2) <a, x>.
    plain = divergence(sphere.proju(x, a.expand_as(x)), x)
    torch.testing.assert_close(plain, -(d + 2) * (x.detach() @ a), atol=10 * tol, rtol=0)


@given(seed=seeds, dtype=dtypes)
def test_divergence_on_so3_closed_forms(seed, dtype):
    """On SO(3): the tangent part of a constant matrix A has divergence -tr(A^T R) (matrix
    entries of R are Laplacian eigenfunctions, eigenvalue -2, and grad f = 2 proju(R, A) for
    f = tr(A^T R) in the metric tr(u^T v) / 2); left- and right-invariant fields are Killing
    fields, divergence-free."""
    g = torch.Generator().manual_seed(seed)
    r = SO3_.random_uniform(6, generator=g, dtype=dtype).requires_grad_(True)
    a = torch.randn(3, 3, generator=g, dtype=F64).to(dtype)
    w = torch.randn(3, generator=g, dtype=F64).to(dtype)
    tol = 1e-10 if dtype == F64 else 1e-4
    got = divergence(SO3_.proju(r, a.expand_as(r)), r, manifold=SO3_)
    torch.testing.assert_close(got, -(a * r.detach()).sum((-2, -1)), atol=tol * 10, rtol=0)
    for field in (r @ hat(w), hat(w) @ r):
        torch.testing.assert_close(
            divergence(field, r, manifold=SO3_), torch.zeros(6, dtype=dtype), atol=tol, rtol=0
        )


def test_divergence_on_the_torus_and_a_product():
    g = torch.Generator().manual_seed(1)
    prod = Product(Sphere(2), FlatTorus(2))
    x = prod.random_uniform(5, generator=g, dtype=F64).requires_grad_(True)
    s, ang = x[:, :3], x[:, 3:]
    a = torch.randn(3, generator=g, dtype=F64)
    field = torch.cat([S2.proju(s, a.expand_as(s)), torch.sin(ang)], dim=1)
    got = divergence(field, x, manifold=prod)
    want = -2 * (s.detach() @ a) + torch.cos(ang.detach()).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # Tori are intrinsic coordinates: the plain divergence.
    y = T2.random_uniform(5, generator=g, dtype=F64).requires_grad_(True)
    torch.testing.assert_close(
        divergence(torch.sin(y), y, manifold=T2), torch.cos(y.detach()).sum(-1), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("manifold", [S2, SO3_], ids=["sphere", "so3"])
def test_hutchinson_with_tangent_probes_is_unbiased(manifold):
    g = torch.Generator().manual_seed(2)
    x = manifold.random_uniform(4, generator=g, dtype=F64).requires_grad_(True)
    a = torch.randn(x.shape[1:], generator=g, dtype=F64)

    def out():  # divergence() frees the graph: one evaluation per call
        return manifold.proju(x, a.expand_as(x) + torch.sin(3 * x))

    exact = divergence(out(), x, manifold=manifold)
    k = 2000
    probes = rademacher(k, 4, math.prod(x.shape[1:]), seed=3)
    est = divergence(out(), x, manifold=manifold, probes=probes)
    single = torch.stack(
        [divergence(out(), x, manifold=manifold, probes=probes[i : i + 1]) for i in range(200)]
    )
    se = single.std(0) / math.sqrt(k)  # the standard error of the mean of k probes
    assert ((est - exact).abs() / se).max().item() < 4
    if manifold is S2:
        # On the sphere, probes not projected on the tangent space would be biased. (On SO3
        # the normal part of the Jacobian of R skew(R^T v) has zero trace, so they would not.)
        ambient = divergence(out(), x, probes=probes)
        assert ((ambient - exact).abs() / se).max().item() > 10


# --------------------------------------------------------------- the log-likelihood
def polar_field(x, t):
    """proju(x, e_z): in stereographic coordinates from the south pole, a dilation by e^-t."""
    e_z = torch.zeros_like(x)
    e_z[:, 2] = 1.0
    return S2.proju(x, e_z)


def polar_log_density(y: torch.Tensor, t: float) -> torch.Tensor:
    """log-density w.r.t. the area of the uniform law pushed by the flow of polar_field for t.

    With r = tan(theta / 2) (theta the polar angle) the flow is r -> lam r, lam = e^-t, and the
    area element is 4 / (1 + r^2)^2 dA, so p_t = lam^2 (1 + r^2)^2 / (lam^2 + r^2)^2 / (4 pi).
    """
    theta = torch.atan2(y[:, :2].norm(dim=-1), y[:, 2])
    r2 = torch.tan(theta / 2) ** 2
    lam2 = math.exp(-2 * t)
    return -math.log(4 * math.pi) + math.log(lam2) + 2 * torch.log1p(r2) - 2 * torch.log(lam2 + r2)


@settings(max_examples=10)
@given(seed=seeds, dtype=dtypes, method=st.sampled_from(("rk4", "dopri5")))
@example(seed=0, dtype=F64, method="rk4")
def test_pushforward_of_the_uniform_law_on_the_sphere_in_closed_form(seed, dtype, method):
    g = torch.Generator().manual_seed(seed)
    y = S2.random_uniform(64, generator=g, dtype=dtype)
    y = y[y[:, 2] > -0.9]  # stay away from the south pole, where the density vanishes
    kw = {"steps": 32} if method == "rk4" else {"atol": 1e-9, "rtol": 1e-9}
    res = log_likelihood(polar_field, y, Uniform(S2), manifold=S2, method=method, **kw)
    tol = 1e-6 if dtype == F64 else 2e-3
    torch.testing.assert_close(res.log_prob, polar_log_density(y, 1.0), atol=tol, rtol=0)
    assert res.log_prob.dtype == dtype
    assert S2._point_deviation(res.x0).max().item() < 1e-5


@pytest.mark.parametrize("manifold", [S2, SO3_, T2, Product(Sphere(2), FlatTorus(1))], ids=repr)
def test_zero_field_gives_the_source_density(manifold):
    x = manifold.random_uniform(3, generator=torch.Generator().manual_seed(4), dtype=F64)
    res = log_likelihood(lambda x, t: 0.0 * x, x, Uniform(manifold), steps=2, manifold=manifold)
    torch.testing.assert_close(
        res.log_prob, torch.full((3,), -math.log(manifold.volume), dtype=F64)
    )
    torch.testing.assert_close(res.x0, x)


# Smooth fields that are neither rotations nor gradients of simple functions.
_G = torch.Generator().manual_seed(5)
A_S2 = torch.randn(3, 3, generator=_G, dtype=F64)
C_S2 = torch.randn(3, 3, generator=_G, dtype=F64)
A_SO3 = torch.randn(9, 9, generator=_G, dtype=F64)


def sphere_field(x, t):
    return S2.proju(x, 0.3 * (x @ A_S2.T + torch.sin(x @ C_S2.T) * (1 + t[:, None])))


def torus_field(x, t):  # 2 pi-periodic in each angle
    a, b = x[:, 0], x[:, 1]
    return torch.stack(
        [torch.sin(b + t) + 0.5 * torch.cos(a), 0.8 * torch.cos(a) + 0.3 * torch.sin(2 * b)], -1
    )


def so3_field(r, t):
    flat = r.reshape(-1, 9)
    return SO3_.proju(r, 0.3 * torch.tanh(flat @ A_SO3.T + t[:, None]).reshape(r.shape))


@pytest.mark.parametrize(
    ("manifold", "field", "n"),
    [(S2, sphere_field, 4000), (T2, torus_field, 4000), (SO3_, so3_field, 1500)],
    ids=["sphere", "torus", "so3"],
)
def test_the_density_integrates_to_one(manifold, field, n):
    """Monte Carlo over uniform points: vol * mean(exp(log p)) = integral of p = 1, within four
    standard errors; the Euclidean divergence of the same field misses by far."""
    x = manifold.random_uniform(n, generator=torch.Generator().manual_seed(6), dtype=F64)
    res = log_likelihood(field, x, Uniform(manifold), steps=12, manifold=manifold)
    mass = res.log_prob.exp() * manifold.volume
    se = mass.std().item() / math.sqrt(n)
    assert res.log_prob.std().item() > 0.3  # the flow is far from volume-preserving
    assert abs(mass.mean().item() - 1.0) < 4 * se
    if manifold is S2:  # on T^2 and SO3 the Euclidean divergence of proju(x, v) is the same
        with mfm.checks(manifold=False):  # the Euclidean solver drifts off the sphere
            wrong = log_likelihood(field, x, Uniform(manifold), steps=12).log_prob.exp()
        assert abs(wrong.mean().item() * manifold.volume - 1.0) > 10 * se


def test_hutchinson_and_exact_log_likelihood_agree_in_expectation():
    """The probes do not change the trajectory, so the Hutchinson log-density is an unbiased
    estimate of the exact one: averaged over independent copies of each point it agrees."""
    x = S2.random_uniform(20, generator=torch.Generator().manual_seed(7), dtype=F64)
    exact = log_likelihood(sphere_field, x, Uniform(S2), steps=12, manifold=S2)
    copies = 50
    hutch = log_likelihood(
        sphere_field,
        x.repeat(copies, 1),
        Uniform(S2),
        steps=12,
        manifold=S2,
        divergence="hutchinson",
        generator=torch.Generator().manual_seed(8),
    )
    diff = hutch.log_prob.reshape(copies, 20) - exact.log_prob
    assert diff.abs().max().item() > 1e-3  # a noisy estimate ...
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(diff.numel())  # unbiased
    torch.testing.assert_close(hutch.x0[:20], exact.x0)


def test_schemes_and_methods_agree():
    x = S2.random_uniform(8, generator=torch.Generator().manual_seed(9), dtype=F64)
    runs = [
        log_likelihood(sphere_field, x, Uniform(S2), steps=32, manifold=S2, manifold_scheme=s)
        for s in ("expmap", "projection")
    ]
    runs.append(
        log_likelihood(
            sphere_field, x, Uniform(S2), method="dopri5", atol=1e-9, rtol=1e-9, manifold=S2
        )
    )
    for r in runs[1:]:
        torch.testing.assert_close(r.log_prob, runs[0].log_prob, atol=1e-6, rtol=0)
        torch.testing.assert_close(r.x0, runs[0].x0, atol=1e-6, rtol=0)
    back = solve_ode(sphere_field, x, steps=32, method="rk4", manifold=S2, t0=1.0, t1=0.0)
    torch.testing.assert_close(runs[0].x0, back.x, atol=1e-12, rtol=0)


def test_bad_input_raises():
    x = S2.random_uniform(3, generator=torch.Generator().manual_seed(10), dtype=F64)
    src = Uniform(S2)
    with mfm.checks(manifold=True), pytest.raises(ValueError, match="not on"):
        log_likelihood(sphere_field, 2 * x, src, steps=2, manifold=S2)
    with pytest.raises(ValueError, match="manifold_scheme"):
        log_likelihood(sphere_field, x, src, steps=2, manifold=S2, manifold_scheme="geodesic")
    with pytest.raises(TypeError, match="proju"):
        log_likelihood(sphere_field, x, src, steps=2, manifold=object())
    with pytest.raises(ValueError, match="does not depend on x"):
        log_likelihood(lambda x, t: x.detach(), x, src, steps=2, manifold=S2)
    nan_field = lambda x, t: x * float("nan")  # noqa: E731
    for on in (True, False):  # the solver's own finiteness check, with or without the others
        with mfm.checks(manifold=on), pytest.raises(ValueError, match="non-finite"):
            log_likelihood(nan_field, x, src, steps=2, manifold=S2)


@pytest.mark.parametrize(
    ("manifold", "field"),
    [(S2, sphere_field), (T2, torus_field), (SO3_, so3_field)],
    ids=["sphere", "torus", "so3"],
)
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_float32_likelihood_matches_float64(manifold, field, divergence):
    """float32 points give float32 log-densities equal to the float64 ones to float32 accuracy
    (Hutchinson with the same probes: the generator draws them in each dtype from one seed)."""
    x64 = manifold.random_uniform(64, generator=torch.Generator().manual_seed(8), dtype=F64)
    x32 = x64.float()

    def field32(x, t):  # the float64 field's coefficients, evaluated in float32
        return field(x.double(), t.double()).float()

    out = {}
    for name, x, v in (("64", x64, field), ("32", x32, field32)):
        g = torch.Generator().manual_seed(9)
        res = log_likelihood(
            v, x, Uniform(manifold), steps=8, manifold=manifold, divergence=divergence, generator=g
        )
        out[name] = res
        assert res.log_prob.dtype == x.dtype and res.x0.dtype == x.dtype
        assert torch.isfinite(res.log_prob).all()
    tol = 2e-3 if divergence == "exact" else 5e-2
    torch.testing.assert_close(out["32"].log_prob.double(), out["64"].log_prob, atol=tol, rtol=0)
