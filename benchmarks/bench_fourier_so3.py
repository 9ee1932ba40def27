"""Fourier input bands on SO(3): ``fit`` on a synthetic IGSO(3) mixture, test NLL against the truth.

The data set is ``manifoldfm.data.so3_igso3_mixture`` (4 components, sigma 0.1, centres from
seed 0): 5000 training and 1000 test rotations. For each ``--fourier K`` the model is trained
with ``fit(space="so3", steps=--steps, fourier=K)`` (defaults otherwise) and scored by the mean
test NLL (RK4, 50 steps); the mixture's own NLL on the test set is the floor.

Example::

    benchmarks/.venv/bin/python benchmarks/bench_fourier_so3.py --fourier 0 6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import RESULTS, machine_info, set_threads, write_json

from manifoldfm.api import fit
from manifoldfm.data import so3_igso3_mixture


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fourier", nargs="+", type=int, default=[0, 6])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "fourier_so3_cpu.json"))
    args = p.parse_args(argv)
    set_threads(args.threads)
    mix = so3_igso3_mixture(k=4, sigma=0.1, generator=torch.Generator().manual_seed(0))
    x = mix.sample(6000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    train, test = x[:5000], x[5000:]
    truth = -float(mix.log_prob(test).mean())
    rows = []
    for k in args.fourier:
        start = time.perf_counter()
        res = fit(train, space="so3", steps=args.steps, fourier=k, progress=False, seed=0)
        nll = -float(res.fitted.log_prob(test, steps=50).mean())
        row = {
            "fourier": k,
            "test_nll": nll,
            "truth_nll": truth,
            "best_step": res.best_step,
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(row, flush=True)
    command = "benchmarks/.venv/bin/python benchmarks/bench_fourier_so3.py --fourier " + " ".join(
        map(str, args.fourier)
    )
    write_json(
        Path(args.out),
        {"rows": rows, "steps": args.steps, "command": command, "machine": machine_info()},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
