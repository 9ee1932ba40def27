"""Sample quality of 2-D flow matching, side by side (the TorchCFM toy protocol).

Tasks: ``N(0, I) -> 8 gaussians``, ``N(0, I) -> moons``, ``8 gaussians -> moons``.
Methods:

* I-CFM: independent coupling, straight path blurred by a constant ``sigma`` (0.1);
* OT-CFM: exact minibatch OT coupling, same path;
* SB-CFM: entropic minibatch OT coupling with ``reg = 2 sigma_sb^2`` and the Brownian-bridge
  (Schrodinger-bridge) path of scale ``sigma_sb`` (1.0, the TorchCFM default).

Libraries (only the way training targets are drawn differs):

* ours: ``manifoldfm.couplings`` (``Independent``, ``ExactOT``, ``SinkhornOT``) and
  ``manifoldfm`` paths (``LinearGaussianPath``, ``SchrodingerBridgePath``), loss
  ``manifoldfm.losses.cfm_loss``;
* TorchCFM: ``ConditionalFlowMatcher``, ``ExactOptimalTransportConditionalFlowMatcher``,
  ``SchrodingerBridgeConditionalFlowMatcher(ot_method="sinkhorn")`` (the entropic coupling asked
  for by SB-CFM; its default is the exact plan), mean squared error;
* flow_matching: ``AffineProbPath(CondOTScheduler())``, mean squared error. It has no
  couplings and no noisy or bridge path: I-CFM uses its straight path (``sigma = 0``), OT-CFM
  pairs the batch with ``manifoldfm.couplings.ExactOT`` first and then uses its straight path,
  SB-CFM is not available ("n/a").

Shared by all: the ``ToyMLP`` of ``common.py`` (identical initial weights per seed), Adam
(lr 1e-3), batch size, number of steps, the same training batches ``(x0, x1)`` per seed (drawn
with ``manifoldfm.data`` / ``manifoldfm.sources`` from one generator), and one evaluation:
``manifoldfm.solvers.solve_ode`` (rk4, fixed steps) from held-out source points, exact W2
(``manifoldfm.metrics.wasserstein``) to held-out target points and the kinetic energy of the
trajectories (``manifoldfm.metrics.path_energy``).

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_toy2d.py --smoke      # 1 seed, 200 steps
    benchmarks/.venv/bin/python benchmarks/bench_toy2d.py              # full protocol
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ToyMLP, machine_info, markdown_table, set_threads, write_json
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from torchcfm.conditional_flow_matching import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
    SchrodingerBridgeConditionalFlowMatcher,
)

import manifoldfm
from manifoldfm.couplings import ExactOT, Independent, SinkhornOT
from manifoldfm.data import sample_toy
from manifoldfm.losses import cfm_loss
from manifoldfm.metrics import path_energy, wasserstein
from manifoldfm.solvers import solve_ode
from manifoldfm.sources import Gaussian

TASKS: dict[str, tuple[str, str]] = {
    "N(0,I) -> 8gaussians": ("gaussian", "eight_gaussians"),
    "N(0,I) -> moons": ("gaussian", "moons"),
    "8gaussians -> moons": ("eight_gaussians", "moons"),
}
METHODS = ("I-CFM", "OT-CFM", "SB-CFM")
LIBS = ("ours", "TorchCFM", "flow_matching")

Loss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def draw(name: str, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` points of the named distribution (float32), the same sampler for every library."""
    if name == "gaussian":
        return Gaussian(2).sample(n, generator=g, dtype=torch.float32)
    return sample_toy(name, n, generator=g, dtype=torch.float32)


def _mse(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return torch.mean((v - u) ** 2)


def make_loss(lib: str, method: str, sigma: float, sigma_sb: float, g: torch.Generator) -> Loss:
    """The library's way of turning a batch ``(x0, x1)`` into a flow-matching loss."""
    if lib == "ours":
        coupling = {
            "I-CFM": Independent(),
            "OT-CFM": ExactOT(),
            "SB-CFM": SinkhornOT(reg=2 * sigma_sb**2),
        }[method]
        path = (
            manifoldfm.SchrodingerBridgePath(sigma_sb)
            if method == "SB-CFM"
            else manifoldfm.LinearGaussianPath(sigma)
        )

        def ours(model, x0, x1):
            c = coupling(x0, x1, generator=g)
            t = torch.rand(x0.shape[0], generator=g)
            s = path.sample(c.x0, c.x1, t, generator=g)
            return cfm_loss(model(s.xt, s.t), s)

        return ours

    if lib == "TorchCFM":
        fm = {
            "I-CFM": lambda: ConditionalFlowMatcher(sigma=sigma),
            "OT-CFM": lambda: ExactOptimalTransportConditionalFlowMatcher(sigma=sigma),
            "SB-CFM": lambda: SchrodingerBridgeConditionalFlowMatcher(
                sigma=sigma_sb, ot_method="sinkhorn"
            ),
        }[method]()

        def torchcfm(model, x0, x1):
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
            return _mse(model(xt, t), ut)

        return torchcfm

    if lib == "flow_matching":
        if method == "SB-CFM":
            raise NotImplementedError("flow_matching has no Schrodinger-bridge path")
        path_fm = AffineProbPath(scheduler=CondOTScheduler())
        pair = ExactOT() if method == "OT-CFM" else None

        def flow_matching(model, x0, x1):
            if pair is not None:
                c = pair(x0, x1, generator=g)
                x0, x1 = c.x0, c.x1
            t = torch.rand(x0.shape[0], generator=g)
            s = path_fm.sample(x_0=x0, x_1=x1, t=t)
            return _mse(model(s.x_t, s.t), s.dx_t)

        return flow_matching

    raise ValueError(lib)


def run_one(
    task: str, method: str, lib: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Train one model and evaluate it; all randomness derives from ``seed``."""
    src, tgt = TASKS[task]
    # The same initial weights and the same data batches for every library (given the seed).
    torch.manual_seed(seed)  # also TorchCFM's draws of t and noise
    np.random.seed(seed)  # noqa: NPY002  (TorchCFM samples its OT plan with the global RNG)
    model = ToyMLP(2, width=args.width, depth=args.depth)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g_data = torch.Generator().manual_seed(1_000 + seed)
    g_lib = torch.Generator().manual_seed(2_000 + seed)
    loss_fn = make_loss(lib, method, args.sigma, args.sigma_sb, g_lib)

    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        for _ in range(args.steps):
            x0 = draw(src, args.batch, g_data)
            x1 = draw(tgt, args.batch, g_data)
            loss = loss_fn(model, x0, x1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        train_s = time.perf_counter() - start
    tail = torch.stack(losses[-max(1, args.steps // 10) :]).mean().item()

    # Evaluation: identical for every library.
    g_eval = torch.Generator().manual_seed(10_000 + seed)
    x_start = draw(src, args.n_test, g_eval)
    x_test = draw(tgt, args.n_test, g_eval)
    model.eval()
    with torch.no_grad():
        sol = solve_ode(
            lambda x, t: model(x, t),
            x_start,
            steps=args.ode_steps,
            method=args.ode_method,
            save_trajectory=True,
        )
    finite = bool(torch.isfinite(sol.x).all())
    return {
        "task": task,
        "method": method,
        "library": lib,
        "seed": seed,
        "w2": float(wasserstein(sol.x, x_test)) if finite else math.nan,
        "path_energy": float(path_energy(sol.xs, sol.ts)) if finite else math.nan,
        "train_s": train_s,
        "final_loss": tail,
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught}),
    }


def references(
    args: argparse.Namespace, seeds: list[int], tasks: list[str]
) -> dict[str, dict[str, float]]:
    """Noise floor of W2 (two independent target samples) and W2^2 between the evaluation sets.

    ``W2^2(source, target)`` is the kinetic energy of the optimal transport between the two
    distributions, the least energy of any flow between them (estimated on finite samples, so
    a trained flow, whose samples are not exactly the target, can come in slightly below it).
    """
    out = {}
    for task in tasks:
        src, tgt = TASKS[task]
        floor, least = [], []
        for seed in seeds:
            g_eval = torch.Generator().manual_seed(10_000 + seed)
            x_start = draw(src, args.n_test, g_eval)
            x_test = draw(tgt, args.n_test, g_eval)
            other = draw(tgt, args.n_test, torch.Generator().manual_seed(30_000 + seed))
            floor.append(float(wasserstein(other, x_test)))
            least.append(float(wasserstein(x_start, x_test)) ** 2)
        out[task] = {
            "w2_noise_floor_mean": statistics.mean(floor),
            "w2_noise_floor_std": statistics.stdev(floor) if len(floor) > 1 else 0.0,
            "least_energy_w2sq_mean": statistics.mean(least),
        }
    return out


def _ms(xs: list[float], fmt: str) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "nan"
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt)}"


def summarize_runs(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per (task, method, library)."""
    out = []
    for task in TASKS:
        for method in METHODS:
            for lib in LIBS:
                sel = [
                    r
                    for r in runs
                    if r["task"] == task and r["method"] == method and r["library"] == lib
                ]
                if not sel:
                    continue
                entry: dict[str, Any] = {"task": task, "method": method, "library": lib}
                if sel[0].get("n/a"):
                    entry["n/a"] = sel[0]["n/a"]
                    out.append(entry)
                    continue
                for key in ("w2", "path_energy", "train_s"):
                    xs = [r[key] for r in sel]
                    entry[f"{key}_mean"] = statistics.mean(xs)
                    entry[f"{key}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
                entry["seeds"] = len(sel)
                out.append(entry)
    return out


def table(runs: list[dict[str, Any]], refs: dict[str, dict[str, float]]) -> str:
    """One markdown row per (task, method, library): mean ± std over seeds."""
    rows = []
    for task in TASKS:
        for method in METHODS:
            for lib in LIBS:
                sel = [
                    r
                    for r in runs
                    if r["task"] == task and r["method"] == method and r["library"] == lib
                ]
                if not sel:
                    continue
                if sel[0].get("n/a"):
                    rows.append([task, method, lib, "n/a", "n/a", "n/a"])
                    continue
                rows.append(
                    [
                        task,
                        method,
                        lib,
                        _ms([r["w2"] for r in sel], ".3f"),
                        _ms([r["path_energy"] for r in sel], ".2f"),
                        _ms([r["train_s"] for r in sel], ".1f"),
                    ]
                )
        ref = refs.get(task)
        if ref:
            rows.append(
                [
                    task,
                    "reference",
                    "(data)",
                    f"floor {ref['w2_noise_floor_mean']:.3f}",
                    f"W2²(src, tgt) {ref['least_energy_w2sq_mean']:.2f}",
                    "",
                ]
            )
    header = ["task", "method", "library", "W2 to test set", "path energy", "train time (s)"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="1 seed, 200 steps, 500 test points")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="training steps (default 2000)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--sigma", type=float, default=0.1, help="I-CFM / OT-CFM path noise")
    p.add_argument("--sigma-sb", type=float, default=1.0, help="SB-CFM bridge scale")
    p.add_argument("--n-test", type=int, default=None, help="held-out points (default 2000)")
    p.add_argument("--ode-steps", type=int, default=100)
    p.add_argument("--ode-method", default="rk4")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the ops are tiny, and on a shared 2-core machine a "
        "second thread made them 5-15x slower)",
    )
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--libs", nargs="+", default=list(LIBS), choices=list(LIBS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds = 1
        args.steps = args.steps or 200
        args.n_test = args.n_test or 500
    args.steps = args.steps or 2000
    args.n_test = args.n_test or 2000
    out_path = args.out or RESULTS / ("toy2d_smoke.json" if args.smoke else "toy2d_cpu.json")

    set_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    seeds = list(range(args.seeds))
    tasks = {k: TASKS[k] for k in args.tasks}
    machine = machine_info("cpu")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    runs: list[dict[str, Any]] = []
    total = time.perf_counter()

    def save(complete: bool, refs: dict[str, Any] | None = None) -> str:
        md = table(runs, refs or {})
        write_json(
            out_path,
            {
                "benchmark": "toy2d",
                "complete": complete,
                "machine": machine,
                "config": config,
                "total_s": time.perf_counter() - total,
                "references": refs or {},
                "summary": summarize_runs(runs, args),
                "runs": runs,
                "table_markdown": md,
            },
        )
        return md

    # Seeds outermost: an interrupted run still holds complete seeds, and load from other
    # processes spreads over all libraries alike.
    for seed in seeds:
        for task in tasks:
            for method in args.methods:
                for lib in args.libs:
                    if lib == "flow_matching" and method == "SB-CFM":
                        runs.append(
                            {
                                "task": task,
                                "method": method,
                                "library": lib,
                                "seed": seed,
                                "n/a": "no Schrodinger-bridge path in flow_matching",
                            }
                        )
                        continue
                    r = run_one(task, method, lib, seed, args)
                    runs.append(r)
                    print(
                        f"seed {seed} {task:22s} {method:6s} {lib:13s} W2 {r['w2']:.3f} "
                        f"energy {r['path_energy']:.2f} train {r['train_s']:.1f}s"
                        + (f" warnings: {r['warnings']}" if r["warnings"] else ""),
                        flush=True,
                    )
                    save(complete=False)
    refs = references(args, seeds, list(tasks))
    md = save(complete=True, refs=refs)
    print()
    print(md)
    print(f"\ntotal {time.perf_counter() - total:.0f}s")
    print(f"written {out_path}")


if __name__ == "__main__":
    main()
