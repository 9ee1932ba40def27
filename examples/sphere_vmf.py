"""Riemannian flow matching on the sphere S^2: uniform noise -> a density on the globe.

A ``ManifoldMLP`` velocity field (fed the coordinates and ``--fourier`` Fourier bands of them,
8 by default, which lets it resolve sharp densities) is trained along geodesics of
``Sphere(2)`` from the uniform distribution to the data: by default a mixture of von Mises-Fisher distributions
(``manifoldfm.data.sphere_vmf_mixture``), or, with ``--data``, points on the Earth read from a
CSV file of ``lat_deg, lon_deg`` (``manifoldfm.data.read_earth_csv``), e.g. the volcano or
flood events of the Earth benchmark. A random test split is held out; the example reports its
negative log-likelihood in nats w.r.t. the area of the unit sphere (the uniform law scores
``log(4 pi) = 2.531``), for the synthetic mixture also the NLL of the same points under the
true density, the total mass of the model's density on a latitude-longitude grid (close to 1),
training time and the number of function evaluations. Writes ``sphere.png`` (data, samples and
model log-density in the Mollweide projection) and ``metrics.json`` into ``--out``.

    python examples/sphere_vmf.py
    python examples/sphere_vmf.py --data ../shared/data/sphere/volcano.csv --out outputs/volcano
    python examples/sphere_vmf.py --smoke --out /tmp/sphere
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
from manifoldfm.data import read_earth_csv, sphere_vmf_mixture
from manifoldfm.sources import Uniform


def lon_lat(x: Tensor) -> tuple[Tensor, Tensor]:
    """Longitude in ``[-pi, pi)`` and latitude in ``[-pi/2, pi/2]`` of unit vectors ``(N, 3)``.

    Both angles come from ``atan2`` (accurate near the poles, unlike ``arcsin(z)``).
    """
    lon = torch.atan2(x[:, 1], x[:, 0])
    lon = torch.where(lon >= math.pi, lon - 2.0 * math.pi, lon)
    lat = torch.atan2(x[:, 2], torch.hypot(x[:, 0], x[:, 1]))
    return lon, lat


def lon_lat_grid(n_lat: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A cell-centred latitude-longitude grid with ``n_lat x 2 n_lat`` cells.

    Returns:
        ``(points, lon_edges, lat_edges, area)``: the unit vectors of the cell centres
        ``(n_lat * 2 n_lat, 3)`` in row-major (latitude, longitude) order, the cell edges
        ``(2 n_lat + 1,)`` and ``(n_lat + 1,)`` in radians, and each cell's area (midpoint rule
        ``cos(lat) dlat dlon``), shape ``(n_lat * 2 n_lat,)``; the areas sum to about ``4 pi``.
    """
    n_lon = 2 * n_lat
    lon_edges = torch.linspace(-math.pi, math.pi, n_lon + 1, dtype=torch.float64)
    lat_edges = torch.linspace(-math.pi / 2, math.pi / 2, n_lat + 1, dtype=torch.float64)
    lon_c = 0.5 * (lon_edges[1:] + lon_edges[:-1])
    lat_c = 0.5 * (lat_edges[1:] + lat_edges[:-1])
    lat, lon = torch.meshgrid(lat_c, lon_c, indexing="ij")
    c = torch.cos(lat)
    points = torch.stack([c * torch.cos(lon), c * torch.sin(lon), torch.sin(lat)], dim=-1)
    area = (c * (math.pi / n_lat) * (2.0 * math.pi / n_lon)).reshape(-1)
    return points.reshape(-1, 3), lon_edges, lat_edges, area


def load_data(
    args: argparse.Namespace, generator: torch.Generator
) -> tuple[Tensor, mfm.Mixture | None, str]:
    """The data set as float64 unit vectors ``(N, 3)``, the true mixture (or ``None``), a name."""
    if args.data is not None:
        return read_earth_csv(args.data), None, Path(args.data).stem
    mix = sphere_vmf_mixture(args.k, args.concentration, generator=generator)
    x = mix.sample(args.n, generator=generator, dtype=torch.float64)
    return x, mix, f"vmf_mixture(k={args.k}, kappa={args.concentration:g})"


def train(
    model: torch.nn.Module,
    data: Tensor,
    sphere: mfm.Sphere,
    args: argparse.Namespace,
    generator: torch.Generator,
) -> float:
    """Fit ``model`` by Riemannian CFM along geodesics from the uniform law; the last loss."""
    path = mfm.GeodesicPath(sphere)
    source = Uniform(sphere)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    loss = torch.zeros(())
    for _ in range(args.steps):
        idx = torch.randint(data.shape[0], (args.batch_size,), generator=generator)
        x1 = data[idx]
        x0 = source.sample(args.batch_size, generator=generator, dtype=data.dtype)
        s = path.sample(x0, x1, torch.rand(args.batch_size, generator=generator))
        loss = mfm.cfm_loss(model(s.xt, s.t), s, manifold=sphere)
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
    lon_edges: Tensor,
    lat_edges: Tensor,
    title: str,
) -> None:
    """Data, generated samples and model log-density side by side in the Mollweide projection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 3.8))
    panels = [(f"data: {title} ({data.shape[0]} points)", data), ("generated samples", samples)]
    for i, (name, x) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1, projection="mollweide")
        lon, lat = lon_lat(x)
        ax.scatter(lon.numpy(), lat.numpy(), s=2, alpha=0.5, color="tab:blue" if i else "k")
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_xticklabels([])
    ax = fig.add_subplot(1, 3, 3, projection="mollweide")
    mesh = ax.pcolormesh(
        lon_edges.numpy(),
        lat_edges.numpy(),
        log_density.clamp(min=float(log_density.max()) - 12.0).numpy(),  # 12 nats below the mode
        cmap="magma",
        shading="flat",
        rasterized=True,
    )
    ax.set_title("model log-density (per unit area)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    fig.colorbar(mesh, ax=ax, shrink=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    """Train, sample, evaluate the test NLL and write ``sphere.png`` and ``metrics.json``."""
    g = torch.Generator().manual_seed(args.seed)
    sphere = mfm.Sphere(2)
    source = Uniform(sphere)
    data64, mix, name = load_data(args, g)
    perm = torch.randperm(data64.shape[0], generator=g)
    n_test = max(1, round(args.test_frac * data64.shape[0]))
    if n_test >= data64.shape[0]:
        raise ValueError(f"{data64.shape[0]} data points leave none for training")
    test64, train64 = data64[perm[:n_test]], data64[perm[n_test:]]
    train_x, test_x = train64.float(), test64.float()

    torch.manual_seed(args.seed)  # the weight initialisation
    model = mfm.nn.ManifoldMLP(sphere, hidden=args.hidden, depth=args.depth, fourier=args.fourier)
    start = time.perf_counter()
    final_loss = train(model, train_x, sphere, args, g)
    train_seconds = time.perf_counter() - start
    model.eval()

    with torch.no_grad():
        x0 = source.sample(args.n_samples, generator=g)
        sol = mfm.solve_ode(model, x0, steps=args.ode_steps, method="rk4", manifold=sphere)
    lik = mfm.log_likelihood(
        model, test_x, source, steps=args.ode_steps, method="rk4", manifold=sphere
    )
    grid_x, lon_edges, lat_edges, area = lon_lat_grid(args.grid)
    grid_logp = mfm.log_likelihood(
        model, grid_x.float(), source, steps=args.ode_steps, method="rk4", manifold=sphere
    ).log_prob.double()
    density = grid_logp.exp()

    metrics: dict[str, object] = {
        "data": name,
        "n_train": int(train_x.shape[0]),
        "n_test": int(test_x.shape[0]),
        "test_nll": float(-lik.log_prob.mean()),
        "uniform_nll": math.log(4.0 * math.pi),
    }
    if mix is not None:
        metrics["true_test_nll"] = float(-mix.log_prob(test64).mean())
    metrics.update(
        {
            "grid_mass": float((density * area).sum()),
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
        args.out / "sphere.png",
        data64[perm[: args.n_samples]],
        sol.x.double(),
        grid_logp.reshape(args.grid, 2 * args.grid),
        lon_edges,
        lat_edges,
        name,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the example (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=None, help="CSV with lat_deg, lon_deg columns")
    p.add_argument("--k", type=int, default=5, help="mixture components (synthetic data)")
    p.add_argument("--concentration", type=float, default=40.0, help="vMF kappa (synthetic)")
    p.add_argument("--n", type=int, default=10000, help="synthetic data set size")
    p.add_argument("--test-frac", type=float, default=0.1, help="held-out fraction")
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument(
        "--fourier", type=int, default=8, help="Fourier bands of the coordinates (0: none)"
    )
    p.add_argument("--ode-steps", type=int, default=50, help="RK4 steps (sampling, likelihood)")
    p.add_argument("--n-samples", type=int, default=3000, help="generated samples to plot")
    p.add_argument("--grid", type=int, default=60, help="latitude cells of the density grid")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (small tensors: 1 is fastest)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/sphere_vmf"))
    p.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.steps, args.batch_size, args.hidden = 400, 20, 64, 32
        args.ode_steps, args.n_samples, args.grid = 4, 200, 8
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
