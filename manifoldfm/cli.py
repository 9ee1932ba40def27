"""The ``manifoldfm`` command.

``manifoldfm demo moons [--coupling ot|independent]`` trains a flow from 8 gaussians to the
two-moons data on the CPU, then writes a figure (data, samples, trajectories) and a JSON file
of metrics (W2 to held-out data, NFE, training time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["main"]

_COUPLINGS = ("ot", "independent")


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
    return parser


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
    torch.manual_seed(seed)  # parameter initialisation of the model
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
