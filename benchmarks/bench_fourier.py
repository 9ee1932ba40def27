"""Fourier input bands on smooth synthetic densities: ``fit`` with and without, test NLL vs truth.

``--space so3``: an IGSO(3) mixture (``manifoldfm.data.so3_igso3_mixture``, 4 components, sigma
0.1, centres from seed 0); ``--space sphere``: a von Mises-Fisher mixture
(``manifoldfm.data.sphere_vmf_mixture``, 5 components, kappa 40, means from seed 0). 5000
points are drawn with seed 1: 4000 (sphere) or 5000 (so3) for training, the rest (so3: 1000
more) for the test. For each ``--fourier K`` the model is trained with
``fit(space=..., steps=--steps, fourier=K)`` (defaults otherwise; ``--steps`` unset: fit's
rule) and scored by the mean test NLL (RK4, 100 steps on the sphere, 50 on SO(3)); the
mixture's own NLL on the test set is the floor.

Example::

    benchmarks/.venv/bin/python benchmarks/bench_fourier.py --space so3 --steps 5000 --fourier 0 6
    benchmarks/.venv/bin/python benchmarks/bench_fourier.py --space sphere --fourier 8 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import RESULTS, machine_info, set_threads, write_json

from manifoldfm.api import fit
from manifoldfm.data import so3_igso3_mixture, sphere_vmf_mixture


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", choices=("so3", "sphere"), default="so3")
    p.add_argument("--fourier", nargs="+", type=int, default=[0, 6])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="default: results/fourier_<space>_cpu.json")
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.space == "so3":
        mix = so3_igso3_mixture(k=4, sigma=0.1, generator=torch.Generator().manual_seed(0))
        x = mix.sample(6000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        train, test, nll_steps = x[:5000], x[5000:], 50
    else:
        mix = sphere_vmf_mixture(5, 40.0, generator=torch.Generator().manual_seed(0))
        x = mix.sample(5000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        train, test, nll_steps = x[:4000], x[4000:], 100
    truth = -float(mix.log_prob(test).mean())
    rows = []
    for k in args.fourier:
        start = time.perf_counter()
        res = fit(train, space=args.space, steps=args.steps, fourier=k, progress=False, seed=0)
        nll = -float(res.fitted.log_prob(test, steps=nll_steps).mean())
        row = {
            "fourier": k,
            "test_nll": nll,
            "truth_nll": truth,
            "steps": res.config["steps_done"],
            "best_step": res.best_step,
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(row, flush=True)
    command = (
        f"benchmarks/.venv/bin/python benchmarks/bench_fourier.py --space {args.space}"
        + (f" --steps {args.steps}" if args.steps is not None else "")
        + " --fourier "
        + " ".join(map(str, args.fourier))
    )
    out = Path(args.out) if args.out else RESULTS / f"fourier_{args.space}_cpu.json"
    write_json(
        out, {"space": args.space, "rows": rows, "command": command, "machine": machine_info()}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
