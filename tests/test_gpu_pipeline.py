"""A whole Riemannian flow-matching pipeline on CUDA agrees with the same pipeline on the CPU.

Every stage (source sampling, OT pairing, geodesic path, model, loss and gradients, manifold
ODE solve, SDE solve, Riemannian likelihood) runs on the device of its inputs, keeps it, and
gives the CPU's numbers up to float32 round-off. The pipeline itself runs on the CPU in the
default suite (``test_pipeline_runs_on_cpu``) so that a break in it shows without a GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from manifoldfm import (
    SO3,
    ExactOT,
    FlatTorus,
    GeodesicPath,
    Product,
    Sphere,
    Uniform,
    cfm_loss,
    log_likelihood,
    solve_ode,
    solve_sde,
)
from manifoldfm.nn import ManifoldMLP

MANIFOLDS = [Sphere(2), FlatTorus(2), SO3(), Product(Sphere(2), FlatTorus(1))]
IDS = ["sphere", "torus", "so3", "product"]


def _pipeline(manifold, model, device: str) -> dict[str, torch.Tensor]:
    """Run every stage on ``device`` from the same CPU-drawn inputs; return the outputs."""
    gen = torch.Generator().manual_seed(0)
    source = Uniform(manifold)
    x0 = source.sample(64, generator=gen, dtype=torch.float32).to(device)
    x1 = source.sample(64, generator=gen, dtype=torch.float32).to(device)
    t = torch.rand(64, generator=gen).to(device)
    model = copy.deepcopy(model).to(device)

    pair = ExactOT(cost=manifold)(x0, x1)
    s = GeodesicPath(manifold).sample(pair.x0, pair.x1, t)
    loss = cfm_loss(model(s.xt, s.t), s, manifold=manifold)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])

    with torch.no_grad():
        ode = solve_ode(model, x0, steps=8, method="rk4", manifold=manifold)
        sde = solve_sde(
            model,
            x0,
            diffusion=0.3,
            steps=8,
            manifold=manifold,
            score=lambda x, t: torch.zeros_like(x),
            generator=torch.Generator(device=device).manual_seed(1),
        )
    ll = log_likelihood(model, ode.x[:16], source, steps=8, manifold=manifold)
    out = {
        "j": pair.j,
        "xt": s.xt,
        "ut": s.ut,
        "loss": loss.detach(),
        "grad": grad,
        "ode": ode.x,
        "sde": sde.x,
        "ll": ll.log_prob,
    }
    for name, value in out.items():
        assert value.device.type == torch.device(device).type, name
        if value.is_floating_point():
            assert value.dtype == torch.float32, name
            assert torch.isfinite(value).all(), name
    for name in ("xt", "ode", "sde"):
        manifold.assert_check_point_on_manifold(out[name])
    return out


def _model(manifold):
    torch.manual_seed(0)
    return ManifoldMLP(manifold, hidden=32, depth=2)


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=IDS)
def test_pipeline_runs_on_cpu(manifold):
    out = _pipeline(manifold, _model(manifold), "cpu")
    assert sorted(out["j"].tolist()) == list(range(64))


@pytest.mark.gpu
@pytest.mark.parametrize("manifold", MANIFOLDS, ids=IDS)
def test_pipeline_on_cuda_matches_cpu(manifold):
    model = _model(manifold)
    cpu = _pipeline(manifold, model, "cpu")
    gpu = _pipeline(manifold, model, "cuda")
    # the optimal pairing is unique for continuous random data: same permutation
    assert torch.equal(cpu["j"], gpu["j"].cpu())
    for name in ("xt", "ut", "loss", "grad", "ode", "ll"):
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=2e-4, atol=2e-4, msg=name)
    # different generators on the two devices: only the law is shared, so check the support
    assert gpu["sde"].shape == cpu["sde"].shape
