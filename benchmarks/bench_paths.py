"""Speed of drawing one flow-matching training target ``(t, x_t, u_t)``, side by side.

Compared on the same ``x0``, ``x1`` (float32), in one process, interleaved:

* ours: ``t = torch.rand(B, generator=g)`` then ``AffinePath(CondOT()).sample(x0, x1, t)``;
  also ``LinearGaussianPath(sigma).sample(x0, x1, t, generator=g)`` (I-CFM with noise) and
  the CondOT row with value checks switched off (``manifoldfm.checks(values=False)``);
* TorchCFM: ``ConditionalFlowMatcher(sigma).sample_location_and_conditional_flow(x0, x1)``
  (draws its own ``t``), with ``sigma = 0`` and with the I-CFM ``sigma``;
* flow_matching: ``t`` drawn as ours, then
  ``AffineProbPath(scheduler=CondOTScheduler()).sample(x_0=x0, x_1=x1, t=t)``.

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_paths.py --device cpu
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    compare_timings,
    machine_info,
    markdown_table,
    set_threads,
    summarize,
    write_json,
)
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

import manifoldfm

OURS = "ours AffinePath(CondOT)"
OURS_NOCHECK = "ours AffinePath(CondOT), checks off"
TCFM = "TorchCFM CFM(sigma=0)"
FM = "flow_matching AffineProbPath(CondOT)"
OURS_NOISY = "ours LinearGaussianPath(sigma)"
TCFM_NOISY = "TorchCFM CFM(sigma)"


def candidates(x0: torch.Tensor, x1: torch.Tensor, sigma: float, seed: int) -> dict[str, object]:
    """The callables to time; each draws its own times and returns (t, xt, ut)."""
    batch, device = x0.shape[0], x0.device
    g = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)  # TorchCFM draws t and the noise from the global generator
    ours_path = manifoldfm.AffinePath(manifoldfm.CondOT())
    ours_noisy = manifoldfm.LinearGaussianPath(sigma)
    tcfm = ConditionalFlowMatcher(sigma=0.0)
    tcfm_noisy = ConditionalFlowMatcher(sigma=sigma)
    fm_path = AffineProbPath(scheduler=CondOTScheduler())

    def ours():
        t = torch.rand(batch, generator=g, device=device)
        s = ours_path.sample(x0, x1, t)
        return s.t, s.xt, s.ut

    def ours_nocheck():
        with manifoldfm.checks(values=False):
            t = torch.rand(batch, generator=g, device=device)
            s = ours_path.sample(x0, x1, t)
        return s.t, s.xt, s.ut

    def torchcfm():
        return tcfm.sample_location_and_conditional_flow(x0, x1)

    def flow_matching():
        t = torch.rand(batch, generator=g, device=device)
        s = fm_path.sample(x_0=x0, x_1=x1, t=t)
        return s.t, s.x_t, s.dx_t

    def ours_lg():
        t = torch.rand(batch, generator=g, device=device)
        s = ours_noisy.sample(x0, x1, t, generator=g)
        return s.t, s.xt, s.ut

    def torchcfm_noisy():
        return tcfm_noisy.sample_location_and_conditional_flow(x0, x1)

    return {
        OURS: ours,
        OURS_NOCHECK: ours_nocheck,
        TCFM: torchcfm,
        FM: flow_matching,
        OURS_NOISY: ours_lg,
        TCFM_NOISY: torchcfm_noisy,
    }


def _fmt(tm: dict) -> str:
    """Median time per call, in µs, with 3 significant figures at least."""
    m = tm["median_us"]
    return f"{m:.1f}" if m < 1000 else f"{m:,.0f}"


def check_agreement(x0: torch.Tensor, x1: torch.Tensor) -> None:
    """All three libraries must produce the same straight-line sample for the same t."""
    t = torch.rand(x0.shape[0], device=x0.device)
    ours = manifoldfm.AffinePath(manifoldfm.CondOT()).sample(x0, x1, t)
    fm = AffineProbPath(scheduler=CondOTScheduler()).sample(x_0=x0, x_1=x1, t=t)
    _, xt_c, ut_c = ConditionalFlowMatcher(0.0).sample_location_and_conditional_flow(x0, x1, t)
    for name, xt, ut in (("flow_matching", fm.x_t, fm.dx_t), ("TorchCFM", xt_c, ut_c)):
        if not (torch.allclose(ours.xt, xt, atol=1e-5) and torch.allclose(ours.ut, ut, atol=1e-5)):
            raise RuntimeError(f"ours and {name} disagree on (xt, ut)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[256, 4096])
    p.add_argument("--dim", type=int, nargs="+", default=[2, 3072])
    p.add_argument("--sigma", type=float, default=0.1, help="I-CFM noise for the noisy rows")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds per pass")
    p.add_argument("--passes", type=int, default=3, help="passes over all configurations")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    set_threads(args.threads)
    device = torch.device(args.device)
    out_path = args.out or RESULTS / f"paths_{device.type}.json"
    configs = [(b, d) for b in args.batch for d in args.dim]
    raw: dict[tuple[int, int], dict[str, list[float]]] = {c: {} for c in configs}
    calls: dict[tuple[int, int], dict[str, int]] = {c: {} for c in configs}
    load_before = os.getloadavg()
    # Several passes over all configurations: a burst of load from another process then
    # spoils a few rounds of each configuration instead of all rounds of one.
    for pas in range(args.passes):
        for batch, dim in configs:
            g = torch.Generator(device=device).manual_seed(args.seed)
            x0 = torch.randn(batch, dim, generator=g, device=device)
            x1 = torch.randn(batch, dim, generator=g, device=device)
            if pas == 0:
                check_agreement(x0, x1)
            timings = compare_timings(
                candidates(x0, x1, args.sigma, args.seed + pas),
                device=device,
                rounds=args.rounds,
                warmup=args.warmup,
            )
            for name, tm in timings.items():
                raw[batch, dim].setdefault(name, []).extend(tm["samples_us"])
                calls[batch, dim][name] = tm["calls_per_round"]
            med = {k: v["median_us"] for k, v in timings.items()}
            print(
                f"pass {pas} B={batch} D={dim}: "
                + ", ".join(f"{k} {v:.1f}us" for k, v in med.items()),
                flush=True,
            )
            del x0, x1

    results = []
    rows = []
    for batch, dim in configs:
        timings = {
            name: summarize(xs, calls_per_round=calls[batch, dim][name])
            for name, xs in raw[batch, dim].items()
        }
        med = {k: v["median_us"] for k, v in timings.items()}
        faster_anchor = min(med[TCFM], med[FM])
        entry = {
            "batch": batch,
            "dim": dim,
            "timings": timings,
            "speedup_vs_torchcfm": med[TCFM] / med[OURS],
            "speedup_vs_flow_matching": med[FM] / med[OURS],
            "speedup_vs_faster_anchor": faster_anchor / med[OURS],
            "noisy_speedup_vs_torchcfm": med[TCFM_NOISY] / med[OURS_NOISY],
        }
        results.append(entry)
        rows.append(
            [
                batch,
                dim,
                _fmt(timings[OURS]),
                _fmt(timings[OURS_NOCHECK]),
                _fmt(timings[TCFM]),
                _fmt(timings[FM]),
                f"{entry['speedup_vs_torchcfm']:.2f}x",
                f"{entry['speedup_vs_faster_anchor']:.2f}x",
                _fmt(timings[OURS_NOISY]),
                _fmt(timings[TCFM_NOISY]),
                f"{entry['noisy_speedup_vs_torchcfm']:.2f}x",
            ]
        )

    header = [
        "B",
        "D",
        "ours (µs)",
        "ours, checks off (µs)",
        "TorchCFM σ=0 (µs)",
        "flow_matching (µs)",
        "ours vs TorchCFM",
        "ours vs faster anchor",
        f"ours LinearGaussianPath σ={args.sigma} (µs)",
        f"TorchCFM σ={args.sigma} (µs)",
        "ours vs TorchCFM (σ>0)",
    ]
    table = markdown_table(header, rows)
    write_json(
        out_path,
        {
            "benchmark": "paths",
            "machine": {**machine_info(device), "load_average_at_start": load_before},
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "note": "median time per call in microseconds over interleaved rounds; "
            "speedup = their time / our time (> 1: ours faster)",
            "results": results,
            "table_markdown": table,
        },
    )
    print()
    print(table)
    print(f"\nwritten {out_path}")


if __name__ == "__main__":
    main()
