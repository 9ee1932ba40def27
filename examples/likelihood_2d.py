"""Exact log-likelihoods of a trained flow: N(0, I) -> moons, density on a grid.

Trains a CFM model, then evaluates log p(x) by the instantaneous change of variables
(``manifoldfm.log_likelihood``) on held-out data and on a grid. The grid integral of the
density should be close to one; the exact and Hutchinson divergences are compared on the test
set. Writes ``density.png`` and ``metrics.json`` into ``--out``.

    python examples/likelihood_2d.py
    python examples/likelihood_2d.py --smoke --out /tmp/lik
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import manifoldfm as mfm
from manifoldfm.data.toys import moons


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--ode-steps", type=int, default=40, help="RK4 steps of the likelihood ODE")
    p.add_argument("--grid", type=int, default=80, help="grid points per axis for the density plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/likelihood_2d"))
    p.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.ode_steps, args.grid = 20, 4, 16

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = mfm.nn.MLPVelocity(2, hidden=128, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = mfm.AffinePath(mfm.CondOT())
    start = time.perf_counter()
    for _ in range(args.steps):
        x1 = moons(args.batch_size, generator=g)
        x0 = torch.randn(args.batch_size, 2, generator=g)
        s = path.sample(x0, x1, torch.rand(args.batch_size, generator=g))
        loss = mfm.cfm_loss(model(s.xt, s.t), s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_seconds = time.perf_counter() - start
    model.eval()

    source = mfm.Gaussian((2,))
    test = moons(500, generator=g)
    exact = mfm.log_likelihood(model, test, source, steps=args.ode_steps, method="rk4")
    hutch = mfm.log_likelihood(
        model,
        test,
        source,
        steps=args.ode_steps,
        method="rk4",
        divergence="hutchinson",
        n_probes=4,
        generator=g,
    )

    # the moons live in about [-4, 5] x [-2.5, 2]; the grid leaves a margin around them
    extent = (-6.0, 7.0, -4.0, 3.5)
    ax_x = torch.linspace(extent[0], extent[1], args.grid)
    ax_y = torch.linspace(extent[2], extent[3], args.grid)
    xx, yy = torch.meshgrid(ax_x, ax_y, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    logp = mfm.log_likelihood(model, grid, source, steps=args.ode_steps, method="rk4").log_prob
    cell = float((ax_x[1] - ax_x[0]) * (ax_y[1] - ax_y[0]))
    mass = float(logp.exp().sum() * cell)

    metrics = {
        "train_seconds": round(train_seconds, 2),
        "test_nll_exact": float(-exact.log_prob.mean()),
        "test_nll_hutchinson": float(-hutch.log_prob.mean()),
        "grid_mass": mass,
        "nfe": int(exact.nfe),
    }
    print(json.dumps(metrics, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    axes[0].scatter(*test.numpy().T, s=3, color="tab:gray")
    axes[0].set_title("held-out moons")
    im = axes[1].imshow(
        logp.exp().reshape(args.grid, args.grid).numpy(),
        origin="lower",
        extent=extent,
        cmap="magma",
    )
    axes[1].set_title(f"model density (grid mass {mass:.3f})")
    fig.colorbar(im, ax=axes[1])
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(args.out / "density.png", dpi=110)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
