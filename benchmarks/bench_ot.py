"""Exact minibatch OT pairing, side by side: speed and pairing cost.

Compared on the same ``x0``, ``x1`` (float32), in one process, interleaved (median over rounds;
the two run back to back in every round, so the table also gives the median of the per-round
speed-ups, which drifts less with the load of a shared machine), each call *including* the
cost matrix:

* ours: ``manifoldfm.couplings.ExactOT()(x0, x1)``, an optimal permutation;
* TorchCFM: ``OTPlanSampler(method="exact").sample_plan(x0, x1)`` (``torch.cdist ** 2``, POT's
  network simplex, then ``B`` pairs resampled with replacement from the plan).

Inputs (``--data``): ``gauss`` (default) draws ``x0 ~ N(0, I)`` and ``x1 ~ N(0.5, I)`` in ``D``
dimensions (3072 is a CIFAR-10 image); ``toy`` uses, for ``D = 2``, the 8-gaussians source and
the two-moons target of the 2-D toys (and ``gauss`` for other ``D``). The network simplex is
faster on the toy data than on the Gaussians, so the speed-ups there are smaller.

Pairing cost: the mean squared distance ``|x0_k - x1_k|^2`` of the returned pairs, in float64;
``optimum`` is the minimum over permutations (SciPy on the float64 cost matrix), so
``ours / optimum = 1`` means an optimal permutation. TorchCFM's pairs are a random draw (with
replacement) from its optimal plan, so their cost is averaged over ``--draws`` draws: its
expectation is the optimum (the JSON also stores that expectation, the plan's cost), and the
draws scatter around it by about ``1 / sqrt(draws * B)`` relative, above or below. ``distinct x1`` counts the
different targets used (TorchCFM's resampling repeats some and drops about a third).

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_ot.py --device cpu
    benchmarks/.venv/bin/python benchmarks/bench_ot.py --device cuda   # adds B = 4096 rows
    benchmarks/.venv/bin/python benchmarks/bench_ot.py --data toy --sizes 256x2,1024x2 --out benchmarks/results/ot_cpu_toy.json
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    compare_timings,
    machine_info,
    markdown_table,
    set_threads,
    sync,
    write_json,
)
from scipy.optimize import linear_sum_assignment
from torchcfm.optimal_transport import OTPlanSampler

import manifoldfm.couplings.ot as ot_module
from manifoldfm.couplings import ExactOT
from manifoldfm.couplings._sinkhorn import approx_duals
from manifoldfm.data.toys import eight_gaussians, moons

OURS = "ours ExactOT"
#: on an accelerator: the same with the dual pre-reduction on the host (the CPU route)
OURS_HOST = "ours ExactOT, host duals"
THEIRS = "TorchCFM OTPlanSampler(exact)"
CPU_SIZES = "256x2,256x3072,1024x2,1024x3072"
CUDA_SIZES = CPU_SIZES + ",4096x2,4096x3072"


def make_batches(
    batch: int, dim: int, seed: int, device: str, data: str = "gauss"
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if dim == 2 and data == "toy":
        x0 = eight_gaussians(batch, generator=g)
        x1 = moons(batch, generator=g)
    else:
        x0 = torch.randn(batch, dim, generator=g)
        x1 = torch.randn(batch, dim, generator=g) + 0.5
    return x0.float().to(device), x1.float().to(device)


def pair_cost(a: torch.Tensor, b: torch.Tensor) -> float:
    d = a.double().reshape(a.shape[0], -1) - b.double().reshape(b.shape[0], -1)
    return float((d * d).sum(1).mean())


def _cost64_np(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    a = x0.double().cpu().reshape(x0.shape[0], -1)
    b = x1.double().cpu().reshape(x1.shape[0], -1)
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0).numpy()


def optimum(x0: torch.Tensor, x1: torch.Tensor) -> float:
    c = _cost64_np(x0, x1)
    reduced = c
    if c.shape[0] > 1024:
        # subtracting any row and column constants changes every permutation's cost by the
        # same amount, so the optimal permutation is the same; near-optimal duals make SciPy
        # 20x faster at 4096 in 2-D (29 s on the raw matrix on one CPU core)
        duals = approx_duals(c)
        if duals is not None:
            reduced = c - duals[0][:, None] - duals[1][None, :]
    r, k = linear_sum_assignment(reduced)
    return float(c[r, k].mean())


def _with_host_duals(ours: ExactOT, x0: torch.Tensor, x1: torch.Tensor) -> object:
    """``ours(x0, x1)`` with the pre-reduction of the assignment solver on the host."""
    solve = ot_module.solve_assignment
    ot_module.solve_assignment = functools.partial(solve, device_duals=False)
    try:
        return ours(x0, x1)
    finally:
        ot_module.solve_assignment = solve


def run_size(
    batch: int,
    dim: int,
    *,
    device: str,
    rounds: int,
    seed: int,
    time_theirs: bool,
    draws: int,
    data: str,
) -> dict[str, object]:
    x0, x1 = make_batches(batch, dim, seed, device, data)
    ours = ExactOT()
    sampler = OTPlanSampler(method="exact")
    np.random.seed(seed)  # noqa: NPY002 (TorchCFM resamples with NumPy's global generator)
    fns = {OURS: lambda: ours(x0, x1)}
    if device != "cpu":
        fns[OURS_HOST] = lambda: _with_host_duals(ours, x0, x1)
    if time_theirs:
        fns[THEIRS] = lambda: sampler.sample_plan(x0, x1)
    timings = compare_timings(fns, device=device, rounds=rounds, warmup=1, target_s=0.0)
    sync(device)
    paired = None
    if time_theirs:
        # both ran back to back in every round: the median of the per-round ratios is less
        # sensitive to the machine's speed drifting (other users) than the ratio of medians
        pairs = zip(timings[THEIRS]["samples_us"], timings[OURS]["samples_us"])
        paired = float(np.median([t / o for t, o in pairs]))
    pair = ours(x0, x1)
    row: dict[str, object] = {
        "batch": batch,
        "dim": dim,
        "timings": timings,
        "speedup_paired_median": paired,
        "ours_pair_cost": pair_cost(pair.x0, pair.x1),
        "ours_distinct_x1": int(pair.j.unique().numel()),
        "optimum_pair_cost": optimum(x0, x1),
    }
    if time_theirs:
        # their pairs are a random draw from the plan: average the cost over several draws
        # (its expectation is the plan's cost, the optimum) and count the distinct targets
        costs, distinct = [], []
        for _ in range(draws):
            a, b = sampler.sample_plan(x0, x1)
            costs.append(pair_cost(a, b))
            distinct.append(int(torch.unique(b, dim=0).shape[0]))
        row["theirs_pair_cost"] = float(np.mean(costs))
        # what the draws average to: the cost of their plan (their own float32 cost matrix,
        # evaluated exactly), i.e. the optimum up to their cost matrix's rounding
        plan = sampler.get_map(x0, x1)
        row["theirs_plan_expected_pair_cost"] = float(
            (plan * _cost64_np(x0, x1)).sum() / plan.sum()
        )
        row["theirs_pair_cost_draws"] = costs
        row["theirs_distinct_x1"] = float(np.mean(distinct))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes", default=None, help=f"BxD list (default {CPU_SIZES}; +4096 on cuda)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="gauss", choices=["gauss", "toy"])
    p.add_argument("--draws", type=int, default=30, help="TorchCFM draws averaged for its cost")
    p.add_argument(
        "--theirs-max-batch",
        type=int,
        default=2048,
        help="time TorchCFM only up to this batch size (its network simplex takes minutes at 4096)",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    sizes = args.sizes or (CUDA_SIZES if args.device == "cuda" else CPU_SIZES)
    rows = []
    for spec in sizes.split(","):
        batch, dim = (int(v) for v in spec.lower().split("x"))
        rows.append(
            run_size(
                batch,
                dim,
                device=args.device,
                rounds=args.rounds,
                seed=args.seed,
                time_theirs=batch <= args.theirs_max_batch,
                draws=args.draws,
                data=args.data,
            )
        )
        print(f"done {spec}", file=sys.stderr, flush=True)

    table = []
    for r in rows:
        t = r["timings"]
        ours_ms = t[OURS]["median_us"] / 1e3
        theirs_ms = t[THEIRS]["median_us"] / 1e3 if THEIRS in t else None
        opt = r["optimum_pair_cost"]
        table.append(
            [
                f"{r['batch']} x {r['dim']}",
                f"{ours_ms:.2f}",
                "n/a" if theirs_ms is None else f"{theirs_ms:.2f}",
                "n/a" if theirs_ms is None else f"{theirs_ms / ours_ms:.2f}x",
                "n/a" if theirs_ms is None else f"{r['speedup_paired_median']:.2f}x",
                f"{r['ours_pair_cost']:.4f} ({r['ours_pair_cost'] / opt:.6f})",
                "n/a"
                if "theirs_pair_cost" not in r
                else f"{r['theirs_pair_cost']:.4f} ({r['theirs_pair_cost'] / opt:.4f})",
                f"{r['ours_distinct_x1']} / "
                + ("n/a" if "theirs_distinct_x1" not in r else f"{r['theirs_distinct_x1']:.0f}"),
            ]
        )
    header = [
        "B x D",
        "ours ms",
        "TorchCFM ms",
        "speed-up",
        "per-round speed-up (median)",
        "pair cost ours (/ optimum)",
        "pair cost TorchCFM (/ optimum)",
        "distinct x1 ours / TorchCFM",
    ]
    md = markdown_table(header, table)
    print(md)
    host = [r for r in rows if OURS_HOST in r["timings"]]
    if host:
        md += "\n\n" + markdown_table(
            ["B x D", "ours ms (device duals)", "ours ms (host duals)"],
            [
                [
                    f"{r['batch']} x {r['dim']}",
                    f"{r['timings'][OURS]['median_us'] / 1e3:.2f}",
                    f"{r['timings'][OURS_HOST]['median_us'] / 1e3:.2f}",
                ]
                for r in host
            ],
        )
        print(md.split("\n\n")[-1])
    out = args.out or RESULTS / f"ot_{args.device}.json"
    write_json(
        out,
        {
            "benchmark": "exact minibatch OT pairing, cost matrix included",
            "command": " ".join(
                ["benchmarks/.venv/bin/python", "benchmarks/bench_ot.py", *(argv or sys.argv[1:])]
            ),
            "machine": machine_info(args.device),
            "rounds": args.rounds,
            "data": args.data,
            "rows": rows,
            "table_markdown": md,
        },
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
