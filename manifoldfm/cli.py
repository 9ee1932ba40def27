"""The ``manifoldfm`` command.

``manifoldfm demo moons [--coupling ot|independent]`` trains a flow from 8 gaussians to the
two-moons data on the CPU, then writes a figure (data, samples, trajectories) and a JSON file
of metrics (W2 to held-out data, NFE, training time).

``manifoldfm fit DATA --space S --out RUN`` trains a model on a data file (see
:func:`manifoldfm.api.fit`); ``manifoldfm sample RUN -n N --out FILE`` writes samples
(``.npy`` or ``.csv``, by the extension, readable by :func:`~manifoldfm.data.read_points`) and a
plot (``FILE`` with the suffix ``.png``); ``manifoldfm evaluate RUN DATA --out FILE.json``
writes the metrics of :func:`manifoldfm.api.evaluate`. Under ``torchrun`` (``torchrun
--nproc_per_node=K -m manifoldfm fit ...``) ``fit`` trains on ``K`` processes with
``DistributedDataParallel`` and only rank 0 writes and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["main", "plot_points", "write_points"]

_COUPLINGS = ("ot", "independent")
_METRIC = {"loss": "loss", "nll": "NLL"}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manifoldfm",
        description="Flow matching on Euclidean space, manifolds and function spaces.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="train a small flow and write a figure and metrics")
    demo.add_argument("task", choices=("moons",), help="the demo to run")
    demo.add_argument(
        "--coupling",
        choices=_COUPLINGS,
        default="ot",
        help="pairing of source and data samples in each batch (default: ot)",
    )
    demo.add_argument("--steps", type=int, default=3000, help="training steps (default: 3000)")
    demo.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    demo.add_argument(
        "--ode-steps", type=int, default=50, help="rk4 steps when sampling (default: 50)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/demo_moons"),
        help="output folder (default: outputs/demo_moons)",
    )
    demo.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: 1; the demo's small tensors gain nothing from more)",
    )
    demo.add_argument("--smoke", action="store_true", help="a few training steps, for CI")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_fit_parsers(sub)
    return parser


def _add_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the data file (see manifoldfm.data.read_points)")
    g.add_argument("--columns", default=None, help="comma-separated column names or positions")
    g.add_argument("--angle-unit", choices=("auto", "deg", "rad"), default="auto")
    g.add_argument("--quaternion-order", choices=("wxyz", "xyzw"), default=None)
    g.add_argument("--delimiter", default=None, help="field separator (default: detected)")
    g.add_argument("--array", default=None, help="array name in a .npz file")
    g.add_argument("--skip-bad-rows", action="store_true", help="leave out invalid rows")


def _read_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"angle_unit": args.angle_unit, "skip_bad_rows": args.skip_bad_rows}
    if args.columns:
        kw["columns"] = [
            int(c) if c.strip().isdigit() else c.strip() for c in args.columns.split(",")
        ]
    for name in ("quaternion_order", "delimiter", "array"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return kw


def _add_fit_parsers(sub: Any) -> None:
    from .api import SPACES

    fit = sub.add_parser("fit", help="train a model on a data file")
    fit.add_argument("data", type=Path, help="data file (CSV, .npy or .npz)")
    fit.add_argument("--space", required=True, choices=SPACES, help="the data's space")
    fit.add_argument("--out", type=Path, required=True, help="run folder for the checkpoint")
    fit.add_argument(
        "--steps", type=int, default=None, help="training steps (default: from the data)"
    )
    fit.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    fit.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    fit.add_argument(
        "--hidden", type=int, default=None, help="hidden width (default: from the data)"
    )
    fit.add_argument(
        "--depth", type=int, default=None, help="hidden layers (default: from the data)"
    )
    fit.add_argument("--ema", type=float, default=0.999, help="EMA decay (default: 0.999)")
    fit.add_argument("--coupling", choices=("independent", "ot"), default="independent")
    fit.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (0.1)")
    fit.add_argument("--eval-every", type=int, default=None, help="steps between evaluations")
    fit.add_argument(
        "--patience",
        type=int,
        default=0,
        help="evaluations without improvement before stopping (default 0: never stop early)",
    )
    fit.add_argument(
        "--select",
        choices=("loss", "nll", "last"),
        default=None,
        help="weights kept: lowest validation NLL (default on so3 and on spheres and tori of "
        "at most 4 coordinates), lowest validation loss (default elsewhere), or last",
    )
    fit.add_argument(
        "--val-nll-every",
        type=int,
        default=None,
        help="record the validation NLL every N evaluations (default: every evaluation when "
        "the weights are selected by NLL, else never)",
    )
    fit.add_argument(
        "--fourier",
        type=int,
        default=None,
        help="Fourier bands of the network's input features (default: 8 on sphere, else 0)",
    )
    fit.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    fit.add_argument("--device", default="cpu", help="training device (default: cpu)")
    fit.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    fit.add_argument(
        "--length-scale",
        type=float,
        default=None,
        help="functions: length scale of the GP noise on [0, 1] (default: 0.02)",
    )
    fit.add_argument("--resume", action="store_true", help="continue from the run folder")
    fit.add_argument("--overwrite", action="store_true", help="replace a run already in the folder")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_read_options(fit)

    smp = sub.add_parser("sample", help="draw samples from a trained model")
    smp.add_argument("run", type=Path, help="run folder written by fit")
    smp.add_argument("-n", type=int, required=True, help="number of samples")
    smp.add_argument("--out", type=Path, required=True, help="output file (.npy or .csv)")
    smp.add_argument("--steps", type=int, default=100, help="ODE steps (default: 100)")
    smp.add_argument("--method", default="rk4", help="ODE method (default: rk4)")
    smp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    smp.add_argument("--device", default="cpu", help="device (default: cpu)")
    smp.add_argument(
        "--grid-size", type=int, default=None, help="functions: points of the output grid"
    )
    smp.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")

    ev = sub.add_parser("evaluate", help="compare a trained model with data")
    ev.add_argument("run", type=Path, help="run folder written by fit")
    ev.add_argument("data", type=Path, help="data file (held-out points)")
    ev.add_argument(
        "--out", type=Path, default=None, help="JSON file of the metrics (and FILE.png, a plot)"
    )
    ev.add_argument("--max-points", type=int, default=2000, help="data points used (2000)")
    ev.add_argument("--steps", type=int, default=100, help="ODE steps of sampling (100)")
    ev.add_argument("--nll-steps", type=int, default=50, help="ODE steps of the NLL (50)")
    ev.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ev.add_argument("--device", default="cpu", help="device (default: cpu)")
    _add_read_options(ev)


def _columns(space: str, dim: int) -> list[str]:
    if space == "sphere" and dim == 3:
        return ["x", "y", "z"]
    if space == "so3":
        return [f"r{i}{j}" for i in range(3) for j in range(3)]
    if space == "se3":
        return ["tx", "ty", "tz"] + [f"r{i}{j}" for i in range(3) for j in range(3)]
    prefix = "angle" if space == "torus" else "f" if space == "functions" else "x"
    return [f"{prefix}{i}" for i in range(dim)]


def write_points(file: Path, points: torch.Tensor, space: str) -> None:
    """Write points to ``.npy`` (their array) or ``.csv`` (columns that
    :func:`~manifoldfm.data.read_points` reads back: ``x, y, z`` on S^2, ``r00 .. r22`` on so3,
    ``tx, ty, tz, r00 .. r22`` on se3, ``angle0, ..`` (radians) on tori, ``f0, ..`` (one
    function per row) for functions, ``x0, ..`` otherwise).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from manifoldfm.cli import write_points
        >>> from manifoldfm.data import read_points
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f = Path(d) / "p.csv"
        ...     write_points(f, torch.eye(3), "sphere")
        ...     read_points(f, space="sphere").points.shape
        torch.Size([3, 3])
    """
    import numpy as np

    x = points.detach().cpu().double()
    suffix = file.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise ValueError(f"the output file must end in .npy or .csv, got {file.name!r}")
    file.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(file, x.numpy())
        return
    if space == "so3":
        table = x.reshape(-1, 9)
    elif space == "se3":
        table = torch.cat([x[:, :3, 3], x[:, :3, :3].reshape(-1, 9)], dim=1)
    else:
        table = x.reshape(x.shape[0], -1)
    names = _columns(space, int(x.shape[-1]) if space not in ("so3", "se3") else 0)
    np.savetxt(file, table.numpy(), delimiter=",", header=",".join(names), comments="", fmt="%.10g")


def _lon_lat(v: torch.Tensor) -> tuple[Any, Any]:
    """Longitude and latitude (radians, NumPy) of the directions of ``(N, 3)`` vectors, by atan2."""
    lon = torch.atan2(v[:, 1], v[:, 0])
    lat = torch.atan2(v[:, 2], torch.hypot(v[:, 0], v[:, 1]))
    return lon.numpy(), lat.numpy()


def plot_points(
    file: Path,
    points: torch.Tensor,
    space: str,
    *,
    title: str = "",
    reference: torch.Tensor | None = None,
) -> None:
    """A plot suited to the space: a scatter of the first two coordinates (euclidean), an
    equal-area Mollweide map (S^2), the square of the first two angles (tori), the histogram
    of rotation angles against the uniform (Haar) density ``(1 - cos a) / pi`` beside an
    equal-area map of the rotation axes (so3; se3 adds the translations in 3-D with the body
    x axes of 60 poses as arrows), or up to 20 curves over the grid ``i / n`` with the
    pointwise mean and a band of two standard deviations (functions). With ``reference`` (e.g. held-out data), it is
    drawn in grey under the points (``manifoldfm evaluate`` plots data against samples).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from manifoldfm.cli import plot_points
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f = Path(d) / "p.png"
        ...     plot_points(f, torch.randn(50, 2), "euclidean", reference=torch.randn(40, 2))
        ...     f.stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import math

    import matplotlib.pyplot as plt

    sets = [(points.detach().cpu().double(), "samples", "C1")]
    if reference is not None:
        sets.insert(0, (reference.detach().cpu().double(), "data", "0.55"))
    x = sets[-1][0]
    if space == "sphere" and x.shape[1] == 3:
        fig = plt.figure(figsize=(8, 4.5))
        ax = fig.add_subplot(111, projection="mollweide")
        for y, name, color in sets:
            lon, lat = _lon_lat(y)
            ax.scatter(lon, lat, s=2, alpha=0.5, color=color, label=name)
        ax.grid(True)
    elif space in ("so3", "se3"):
        from .manifolds.so3 import rotmat_to_rotvec

        panels = 3 if space == "se3" else 2
        fig = plt.figure(figsize=(4.6 * panels, 4.2))
        ax = fig.add_subplot(1, panels, 1)
        ax_axes = fig.add_subplot(1, panels, 2, projection="mollweide")
        for y, name, color in sets:
            w = rotmat_to_rotvec(y[:, :3, :3])
            ang = w.norm(dim=-1)
            ax.hist(
                ang.numpy(),
                bins=50,
                range=(0, math.pi),
                density=True,
                alpha=0.5,
                color=color,
                label=name,
            )
            keep = ang > 1e-6  # the axis of the identity is undefined
            lon, lat = _lon_lat(w[keep])  # the axis direction
            ax_axes.scatter(lon, lat, s=2, alpha=0.5, color=color)
        a = torch.linspace(0, math.pi, 200)
        ax.plot(a.numpy(), ((1 - torch.cos(a)) / math.pi).numpy(), "k--", label="uniform (Haar)")
        ax.set_xlabel("rotation angle (rad)")
        ax_axes.grid(True)
        ax_axes.set_xticklabels([])
        ax_axes.tick_params(labelsize=7)
        ax_axes.set_title("rotation axes", fontsize=9)
        if space == "se3":
            ax_t = fig.add_subplot(1, 3, 3, projection="3d")
            for y, _name, color in sets:
                t = y[:, :3, 3]
                ax_t.scatter(*t.T.numpy(), s=2, alpha=0.4, color=color)
            # the poses themselves: the body x axis of up to 60 samples as short arrows
            y = sets[-1][0][:60]
            spread = float(sets[-1][0][:, :3, 3].std(0).norm())
            spread = spread if math.isfinite(spread) and spread > 0 else 1.0
            ax_t.quiver(
                *y[:, :3, 3].T.numpy(),
                *y[:, :3, 0].T.numpy(),
                length=0.15 * spread,
                color="k",
                lw=0.6,
            )
            ax_t.set_title("translations, body x axes", fontsize=9)
    elif space == "functions":
        fig, ax = plt.subplots(figsize=(7, 4))
        for y, name, color in sets:
            s = (torch.arange(y.shape[1]) / y.shape[1]).numpy()  # the periodic grid i / n
            for row in y[:20]:
                ax.plot(s, row.numpy(), lw=0.7, alpha=0.5, color=color)
            m = y.mean(0).numpy()
            sd = y.std(0).numpy() if y.shape[0] > 1 else 0 * m
            ax.plot(s, m, color=color, lw=2.5, label=f"{name}: mean +- 2 std")
            ax.fill_between(s, m - 2 * sd, m + 2 * sd, color=color, alpha=0.12)
        ax.set_xlabel("s")
    elif space == "torus":
        fig, ax = plt.subplots(figsize=(5, 5))
        for y, name, color in sets:
            if y.shape[1] >= 2:
                ax.scatter(
                    y[:, 0].numpy(), y[:, 1].numpy(), s=2, alpha=0.5, color=color, label=name
                )
                ax.set_xlim(0, 2 * math.pi)
                ax.set_ylim(0, 2 * math.pi)
                ax.set_aspect("equal")
                ax.set_xlabel("angle 0 (rad)")
                ax.set_ylabel("angle 1 (rad)")
            else:
                ax.hist(
                    y[:, 0].numpy(),
                    bins=50,
                    range=(0, 2 * math.pi),
                    density=True,
                    alpha=0.5,
                    color=color,
                    label=name,
                )
                ax.set_xlabel("angle (rad)")
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        for y, name, color in sets:
            if y.shape[1] >= 2:
                ax.scatter(
                    y[:, 0].numpy(), y[:, 1].numpy(), s=2, alpha=0.5, color=color, label=name
                )
                ax.set_aspect("equal")
            else:
                ax.hist(y[:, 0].numpy(), bins=50, density=True, alpha=0.5, color=color, label=name)
    if reference is not None or space in ("so3", "se3", "functions"):
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=110)
    plt.close(fig)


def run_moons_demo(
    *,
    coupling: str = "ot",
    steps: int = 3000,
    batch_size: int = 256,
    ode_steps: int = 50,
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train 8 gaussians -> moons with conditional flow matching and evaluate it.

    Args:
        coupling: ``"ot"`` (exact minibatch OT, OT-CFM) or ``"independent"`` (I-CFM).
        steps: training steps.
        batch_size: samples per step.
        ode_steps: RK4 steps for sampling.
        seed: seed of every random draw (training and evaluation).
        out: folder for ``metrics.json`` and ``moons.png``; nothing is written when ``None``.
        progress: show a tqdm progress bar.

    Returns:
        The metrics: ``w2`` (exact W2 to 2000 held-out points), ``nfe``, ``train_seconds``,
        ``path_energy``, ``final_loss``, plus the settings.

    Example:
        >>> from manifoldfm.cli import run_moons_demo
        >>> m = run_moons_demo(steps=20, ode_steps=4, progress=False)
        >>> m["coupling"], m["nfe"]
        ('ot', 16)
    """
    from tqdm.auto import tqdm

    from .couplings import ExactOT, Independent
    from .data.toys import eight_gaussians, moons
    from .losses import cfm_loss
    from .metrics import path_energy, wasserstein
    from .nn import MLPVelocity
    from .paths import AffinePath
    from .solvers import solve_ode

    if coupling not in _COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {', '.join(_COUPLINGS)}")
    if steps < 1 or batch_size < 2 or ode_steps < 1:
        raise ValueError(
            f"steps, batch_size and ode_steps must be positive, got {steps}, {batch_size}, {ode_steps}"
        )
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG untouched
        torch.manual_seed(seed)
        model = MLPVelocity(2, hidden=128, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-5)
    path = AffinePath()
    pairing = ExactOT() if coupling == "ot" else Independent()

    start = time.perf_counter()
    loss_value = float("nan")
    bar = tqdm(range(steps), desc=f"training ({coupling})", disable=not progress, leave=False)
    for _ in bar:
        x0 = eight_gaussians(batch_size, generator=g)
        x1 = moons(batch_size, generator=g)
        pair = pairing(x0, x1, generator=g)
        t = torch.rand(batch_size, generator=g)
        sample = path.sample(pair.x0, pair.x1, t)
        loss = cfm_loss(model(sample.xt, sample.t), sample)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    train_seconds = time.perf_counter() - start

    model.eval()
    n_test = 2000
    with torch.no_grad():
        x0 = eight_gaussians(n_test, generator=g)
        sol = solve_ode(model, x0, steps=ode_steps, method="rk4", save_trajectory=True)
        test = moons(n_test, generator=g)
        w2 = float(wasserstein(sol.x, test))
        energy = float(path_energy(sol.xs, sol.ts))
    metrics: dict[str, Any] = {
        "task": "8gaussians->moons",
        "coupling": coupling,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "w2": w2,
        "nfe": int(sol.nfe),
        "path_energy": energy,
        "final_loss": loss_value,
        "train_seconds": round(train_seconds, 3),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _plot(
            out / "moons.png",
            test,
            sol.x,
            sol.xs,
            title=f"8 gaussians -> moons ({coupling}), W2={w2:.3f}",
        )
    return metrics


def _plot(
    file: Path, data: torch.Tensor, samples: torch.Tensor, xs: torch.Tensor, *, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, gen, traj = data.numpy(), samples.numpy(), xs[:, :200].numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    axes[0].scatter(*pts.T, s=2, alpha=0.5, color="tab:gray")
    axes[0].set_title("held-out data")
    axes[1].scatter(*gen.T, s=2, alpha=0.5, color="tab:blue")
    axes[1].set_title("samples")
    axes[2].plot(traj[..., 0], traj[..., 1], color="tab:olive", alpha=0.3, lw=0.6)
    axes[2].scatter(*traj[0].T, s=3, color="black", label="source")
    axes[2].scatter(*traj[-1].T, s=3, color="tab:blue", label="t = 1")
    axes[2].set_title("trajectories")
    axes[2].legend(loc="upper right", fontsize=8)
    for ax in axes:
        ax.set_aspect("equal")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``manifoldfm`` command; returns the exit status.

    Example:
        >>> from manifoldfm.cli import main
        >>> main(["--version"])  # doctest: +ELLIPSIS
        manifoldfm ...
        0
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"manifoldfm {__version__}")
        return 0
    if args.command == "sample" and args.n < 1:  # before the model is loaded
        parser.error(f"-n must be >= 1, got {args.n}")
    if args.command == "evaluate" and args.out is not None and args.out.suffix.lower() == ".png":
        # the metrics would be written over the plot, which goes to --out with .png
        parser.error(
            f"--out names the metrics file (FILE.json), its plot going beside it as FILE.png; "
            f"got {args.out}"
        )
    if args.command in ("fit", "sample", "evaluate"):
        return _run_api(args)
    if args.command != "demo":
        parser.print_help()
        return 2
    steps = 30 if args.smoke else args.steps
    ode_steps = 5 if args.smoke else args.ode_steps
    if steps < 1 or args.batch_size < 2 or ode_steps < 1 or args.threads < 1:
        parser.error("--steps, --ode-steps, --threads must be >= 1 and --batch-size >= 2")
    torch.set_num_threads(args.threads)
    metrics = run_moons_demo(
        coupling=args.coupling,
        steps=steps,
        batch_size=args.batch_size,
        ode_steps=ode_steps,
        seed=args.seed,
        out=args.out,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'moons.png'}")
    return 0


def _run_api(args: argparse.Namespace) -> int:
    from . import api

    if args.command == "fit":
        res = api.fit(
            args.data,
            space=args.space,
            out=args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            hidden=args.hidden,
            depth=args.depth,
            ema=args.ema,
            coupling=args.coupling,
            val_fraction=args.val_fraction,
            eval_every=args.eval_every,
            patience=args.patience if args.patience > 0 else None,
            val_nll_every=args.val_nll_every,
            select=args.select,
            fourier=args.fourier,
            seed=args.seed,
            device=args.device,
            dtype=getattr(torch, args.dtype),
            progress=not args.no_progress and sys.stderr.isatty(),
            resume=args.resume,
            overwrite=args.overwrite,
            length_scale=args.length_scale,
            read_kwargs=_read_kwargs(args),
        )
        if int(os.environ.get("RANK", "0")) != 0:  # torchrun: one report, from rank 0
            return 0
        c = res.config
        print(
            f"trained {c['steps_done']} steps on {c['n_train']} points ({args.space}); "
            + (
                f"last weights, validation loss {res.best_val:.4f}"
                if c["select"] == "last"
                else f"best validation {_METRIC[c['select']]} {res.best_val:.4f} "
                f"at step {res.best_step}"
            )
            + (" (stopped early)" if res.stopped_early else "")
        )
        print(f"wrote {args.out / 'model.pt'} and {args.out / 'config.json'}")
        return 0
    if args.command == "sample":
        fm = api.load(args.run, device=args.device)
        g = torch.Generator(device=torch.device(args.device)).manual_seed(args.seed)
        start = time.perf_counter()
        x = fm.sample(
            args.n, steps=args.steps, method=args.method, generator=g, grid_size=args.grid_size
        )
        seconds = time.perf_counter() - start
        write_points(args.out, x, fm.space)
        info = {
            "run": str(args.run),
            "space": fm.space,
            "n": args.n,
            "steps": args.steps,
            "method": args.method,
            "seed": args.seed,
            "grid_size": args.grid_size,
            "device": str(args.device),
            "seconds": round(seconds, 3),
            "version": fm.config.get("version"),
        }
        args.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        msg = f"wrote {args.n} samples to {args.out}, {args.out.with_suffix('.json')}"
        if not args.no_plot:
            png = args.out.with_suffix(".png")
            plot_points(png, x, fm.space, title=f"{args.n} samples ({fm.space})")
            msg += f" and {png}"
        print(msg)
        return 0
    metrics = api.evaluate(
        args.run,
        args.data,
        max_points=args.max_points,
        steps=args.steps,
        nll_steps=args.nll_steps,
        seed=args.seed,
        device=args.device,
        read_kwargs=_read_kwargs(args),
        plot=args.out.with_suffix(".png") if args.out is not None else None,
    )
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
