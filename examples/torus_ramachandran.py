"""Riemannian flow matching on the flat torus T^2: uniform angles -> a Ramachandran density.

A ``ManifoldMLP`` velocity field (features ``cos``/``sin`` of the angles) is trained along the
geodesics of ``FlatTorus(2)`` (straight lines on the angles, wrapped at ``2 pi``) from the
uniform distribution to the data: by default a mixture of wrapped normals
(``manifoldfm.data.torus_wrapped_mixture``), or, with ``--data``, backbone dihedral angles
``(phi, psi)`` read from a CSV file by ``manifoldfm.data.read_torsions_csv`` (degrees or
radians, detected; wrapped to ``[0, 2 pi)``), e.g. one Ramachandran class (``--rama-class``) of
a PDB-derived table. A random test split is held out; the example reports its negative
log-likelihood in nats w.r.t. the area ``dphi dpsi`` (the uniform law scores
``log(4 pi^2) = 3.676``), for the synthetic mixture also the NLL of the same points under the
true density, the total mass of the model's density on a grid (close to 1), training time and
the number of function evaluations. Writes ``ramachandran.png`` (data, samples and model
density as Ramachandran plots, angles in degrees on ``[-180, 180)``) and ``metrics.json`` into
``--out``.

    python examples/torus_ramachandran.py
    python examples/torus_ramachandran.py --data ../shared/data/torus/ramachandran_pdb.csv \\
        --rama-class General --out outputs/rama_general
    python examples/torus_ramachandran.py --smoke --out /tmp/torus
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

import manifoldfm as mfm
from manifoldfm.data import read_torsions_csv, torus_wrapped_mixture
from manifoldfm.sources import Uniform


def to_degrees(x: Tensor) -> Tensor:
    """Angles in ``[0, 2 pi)`` (radians) to degrees in ``[-180, 180)``, the Ramachandran range."""
    centred = torch.remainder(x + math.pi, 2.0 * math.pi) - math.pi
    centred = torch.where(centred >= math.pi, centred - 2.0 * math.pi, centred)
    return torch.rad2deg(centred)


def angle_grid(n: int) -> tuple[Tensor, Tensor, float]:
    """A cell-centred ``n x n`` grid over ``[-pi, pi)^2``.

    Returns:
        ``(points, edges_deg, cell_area)``: the cell centres as torus points (angles wrapped to
        ``[0, 2 pi)``), shape ``(n * n, 2)`` in row-major ``(psi, phi)`` order (so a reshape to
        ``(n, n)`` has ``psi`` along the rows, as ``imshow`` expects), the cell edges in
        degrees ``(n + 1,)`` and the area of one cell in radians squared.
    """
    edges = torch.linspace(-math.pi, math.pi, n + 1, dtype=torch.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])
    psi, phi = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.remainder(torch.stack([phi.reshape(-1), psi.reshape(-1)], dim=-1), 2 * math.pi)
    return points, torch.rad2deg(edges), (2.0 * math.pi / n) ** 2


def load_data(
    args: argparse.Namespace, generator: torch.Generator
) -> tuple[Tensor, mfm.Mixture | None, str]:
    """The data set as float64 angles ``(N, 2)`` in ``[0, 2 pi)``, the true mixture, a name."""
    if args.data is not None:
        where = None if args.rama_class == "all" else {"rama_class": args.rama_class}
        x = read_torsions_csv(args.data, ("phi", "psi"), where=where)
        return x, None, f"{Path(args.data).stem} ({args.rama_class})"
    mix = torus_wrapped_mixture(args.k, args.scale, generator=generator)
    x = mix.sample(args.n, generator=generator, dtype=torch.float64)
    return x, mix, f"wrapped_mixture(k={args.k}, scale={args.scale:g})"


def train(
    model: torch.nn.Module,
    data: Tensor,
    torus: mfm.FlatTorus,
    args: argparse.Namespace,
    generator: torch.Generator,
) -> float:
    """Fit ``model`` by Riemannian CFM along torus geodesics from the uniform law; the last loss."""
    path = mfm.GeodesicPath(torus)
    source = Uniform(torus)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    loss = torch.zeros(())
    for _ in range(args.steps):
        idx = torch.randint(data.shape[0], (args.batch_size,), generator=generator)
        x1 = data[idx]
        x0 = source.sample(args.batch_size, generator=generator, dtype=data.dtype)
        s = path.sample(x0, x1, torch.rand(args.batch_size, generator=generator))
        loss = mfm.cfm_loss(model(s.xt, s.t), s, manifold=torus)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


def plot(
    path: Path,
    data: Tensor,
    samples: Tensor,
    log_density: Tensor,
    edges_deg: Tensor,
    title: str,
) -> None:
    """Ramachandran plots of the data, the generated samples and the model's log-density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    bins = edges_deg.numpy()
    panels = [(f"data: {title} ({data.shape[0]} points)", data), ("generated samples", samples)]
    for ax, (name, x) in zip(axes[:2], panels, strict=True):
        deg = to_degrees(x).numpy()
        ax.hist2d(deg[:, 0], deg[:, 1], bins=[bins, bins], cmap="viridis", norm=LogNorm(), cmin=1)
        ax.set_title(name, fontsize=10)
    ax = axes[2]
    floor = float(log_density.max()) - 12.0  # show twelve nats below the mode
    mesh = ax.pcolormesh(
        bins, bins, log_density.clamp(min=floor).numpy(), cmap="magma", shading="flat"
    )
    ax.set_title("model log-density (per rad$^2$)", fontsize=10)
    fig.colorbar(mesh, ax=ax)
    for ax in axes:
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xticks(range(-180, 181, 90))
        ax.set_yticks(range(-180, 181, 90))
        ax.set_xlabel(r"$\phi$ (degrees)")
        ax.set_ylabel(r"$\psi$ (degrees)")
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    """Train, sample, evaluate the test NLL and write ``ramachandran.png`` and ``metrics.json``."""
    g = torch.Generator().manual_seed(args.seed)
    torus = mfm.FlatTorus(2)
    source = Uniform(torus)
    data64, mix, name = load_data(args, g)
    perm = torch.randperm(data64.shape[0], generator=g)
    n_test = max(1, round(args.test_frac * data64.shape[0]))
    if n_test >= data64.shape[0]:
        raise ValueError(f"{data64.shape[0]} data points leave none for training")
    test64, train64 = data64[perm[:n_test]], data64[perm[n_test:]]
    train_x, test_x = train64.float(), test64.float()

    torch.manual_seed(args.seed)  # the weight initialisation
    model = mfm.nn.ManifoldMLP(torus, hidden=args.hidden, depth=args.depth)
    start = time.perf_counter()
    final_loss = train(model, train_x, torus, args, g)
    train_seconds = time.perf_counter() - start
    model.eval()

    with torch.no_grad():
        x0 = source.sample(args.n_samples, generator=g)
        sol = mfm.solve_ode(model, x0, steps=args.ode_steps, method="rk4", manifold=torus)
    lik = mfm.log_likelihood(
        model, test_x, source, steps=args.ode_steps, method="rk4", manifold=torus
    )
    grid_x, edges_deg, cell_area = angle_grid(args.grid)
    grid_logp = mfm.log_likelihood(
        model, grid_x.float(), source, steps=args.ode_steps, method="rk4", manifold=torus
    ).log_prob.double()

    metrics: dict[str, object] = {
        "data": name,
        "n_train": int(train_x.shape[0]),
        "n_test": int(test_x.shape[0]),
        "test_nll": float(-lik.log_prob.mean()),
        "uniform_nll": math.log(4.0 * math.pi**2),
    }
    if mix is not None:
        metrics["true_test_nll"] = float(-mix.log_prob(test64).mean())
    metrics.update(
        {
            "grid_mass": float(grid_logp.exp().sum() * cell_area),
            "final_loss": final_loss,
            "train_steps": args.steps,
            "train_seconds": round(train_seconds, 2),
            "nfe_sample": int(sol.nfe),
            "nfe_likelihood": int(lik.nfe),
        }
    )
    print(json.dumps(metrics, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot(
        args.out / "ramachandran.png",
        data64[perm[: args.n_samples]],
        sol.x.double(),
        grid_logp.reshape(args.grid, args.grid),
        edges_deg,
        name,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the example (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=None, help="CSV with phi, psi columns")
    p.add_argument(
        "--rama-class",
        default="General",
        help="keep rows of this rama_class (General, Glycine, Proline, Pre-Pro) or 'all'",
    )
    p.add_argument("--k", type=int, default=5, help="mixture components (synthetic data)")
    p.add_argument("--scale", type=float, default=0.3, help="wrapped-normal std (synthetic)")
    p.add_argument("--n", type=int, default=10000, help="synthetic data set size")
    p.add_argument("--test-frac", type=float, default=0.1, help="held-out fraction")
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--ode-steps", type=int, default=50, help="RK4 steps (sampling, likelihood)")
    p.add_argument("--n-samples", type=int, default=5000, help="generated samples to plot")
    p.add_argument("--grid", type=int, default=72, help="cells per angle of the density grid")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (small tensors: 1 is fastest)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/torus_ramachandran"))
    p.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.steps, args.batch_size, args.hidden = 400, 20, 64, 32
        args.ode_steps, args.n_samples, args.grid = 4, 200, 12
    if not 0.0 < args.test_frac < 1.0:
        p.error("--test-frac must be in (0, 1)")
    if args.threads < 1:
        p.error("--threads must be >= 1")

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args)
    finally:
        torch.set_num_threads(previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
