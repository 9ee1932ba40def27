"""Published-result protocols run through ``manifoldfm.fit`` (the API the ``fit`` command wraps).

Each row trains with :func:`manifoldfm.api.fit` on a file of ``--data-dir`` (the shared data
folder), per seed, and measures what the literature reports:

* ``volcano``, ``flood`` (S^2) and ``rama-<class>`` (T^2, one Ramachandran class),
  ``ile4`` (T^4, isoleucine phi/psi/chi1/chi2): random 80/10/10 train/validation/test split
  per seed (``fit`` gets the 90 % of train + validation and holds out its own 10 % with
  ``val_fraction = 1/9``), test negative log-likelihood in nats w.r.t. the Riemannian volume
  (``FittedModel.log_prob``: RK4, ``--nll-steps`` steps, exact divergence);
* ``aemet``, ``genes`` (functions): the Functional Flow Matching protocol of the authors' code:
  train on all curves (AEMET min-max rescaled to ``[-3, 3]``; the genes file as it is), then
  compare ``--n-gen`` generated curves with the data by the pointwise mean / variance /
  autocovariance / density MSE (:func:`manifoldfm.metrics.functional_statistics`);
* ``moons`` (R^2): the 2-D protocol of the foundation issue: a standard Gaussian to two moons
  (10 000 training points), W2 between 2 000 generated and 2 000 held-out points.

``--steps``, ``--hidden``, ``--depth``, ``--batch-size``, ``--lr``, ``--coupling``,
``--patience``, ``--select``, ``--fourier`` override ``fit``'s defaults (``None``: the defaults, i.e. "no hand tuning").

Example::

    benchmarks/.venv/bin/python benchmarks/reproduce.py --data-dir ../shared/data \
        --rows volcano flood --seeds 0 1 2 3 4 --tag default
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, machine_info, set_threads, write_json

from manifoldfm.api import evaluate, fit
from manifoldfm.data import (
    read_aemet_csv,
    read_curves_csv,
    read_earth_csv,
    read_torsions_csv,
    sample_toy,
)
from manifoldfm.metrics import functional_statistics, wasserstein

RAMA_CLASSES = ("General", "Glycine", "Proline", "Pre-Pro")
ROWS = ("volcano", "flood", *(f"rama-{c}" for c in RAMA_CLASSES), "ile4", "aemet", "genes", "moons")


def load_row(row: str, data_dir: Path) -> tuple[str, torch.Tensor]:
    """The space and the float64 data of a row."""
    if row in ("volcano", "flood"):
        return "sphere", read_earth_csv(data_dir / "sphere" / f"{row}.csv")
    if row.startswith("rama-"):
        cls = row.removeprefix("rama-")
        x = read_torsions_csv(
            data_dir / "torus" / "ramachandran_pdb.csv", where={"rama_class": cls}
        )
        return "torus", x
    if row == "ile4":
        cols = ("phi", "psi", "chi1", "chi2")
        return "torus", read_torsions_csv(
            data_dir / "torus" / "isoleucine_4torus.csv", cols, degrees=False
        )
    if row == "aemet":
        v = read_aemet_csv(data_dir / "functional" / "aemet.csv").values.double()
        lo, hi = float(v.min()), float(v.max())
        return "functions", 6.0 * (v - lo) / (hi - lo) - 3.0
    if row == "genes":
        return "functions", read_curves_csv(
            data_dir / "functional" / "expr_genes.csv"
        ).values.double()
    if row == "moons":
        g = torch.Generator().manual_seed(12345)
        return "euclidean", sample_toy("moons", 12_000, generator=g).double()
    raise ValueError(f"unknown row {row!r}; choose from {ROWS}")


#: fit arguments the command line may override (None: fit's defaults)
OVERRIDES = (
    "steps",
    "hidden",
    "depth",
    "batch_size",
    "lr",
    "patience",
    "length_scale",
    "select",
    "fourier",
)


def split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of train+validation (90 %) and test (10 %) from ``seed``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + seed))
    n_test = round(0.1 * n)
    return perm[n_test:], perm[:n_test]


def run_seed(row: str, space: str, x: torch.Tensor, seed: int, args: argparse.Namespace) -> dict:
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    if overrides.get("patience") == 0:
        overrides["patience"] = None
    functions = space == "functions"
    if space == "euclidean":
        train, test = x[:10_000], x[10_000:]
    elif functions:
        train, test = x, x
    else:
        tr, te = split(x.shape[0], seed)
        train, test = x[tr], x[te]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        res = fit(
            train,
            space=space,
            out=run,
            coupling=args.coupling,
            val_fraction=0.1 if (functions or space == "euclidean") else 1 / 9,
            seed=seed,
            device=args.device,
            progress=False,
            **overrides,
        )
        fit_s = time.perf_counter() - start
        out: dict[str, Any] = {
            "seed": seed,
            "n_train_fit": res.config["n_train"],
            "n_val": res.config["n_val"],
            "n_test": int(test.shape[0]),
            "hidden": res.config["hidden"],
            "depth": res.config["depth"],
            "steps_done": res.config["steps_done"],
            "best_step": res.best_step,
            "select": res.config["select"],
            "fourier": res.config.get("fourier"),
            "stopped_early": res.stopped_early,
            "fit_seconds": round(fit_s, 1),
        }
        fm = res.fitted
        g = torch.Generator().manual_seed(seed)
        if functions:
            gen = fm.sample(args.n_gen, steps=args.ode_steps, generator=g).double().cpu()
            out.update(functional_statistics(gen, x).as_dict())
            # floor: the statistics between two random halves of the data
            half = torch.randperm(x.shape[0], generator=g)
            a, b = x[half[: x.shape[0] // 2]], x[half[x.shape[0] // 2 :]]
            floor = functional_statistics(a, b).as_dict()
            out.update({f"floor_{k}": v for k, v in floor.items() if v is not None})
        elif space == "euclidean":
            m = evaluate(
                run,
                test[:2000],
                steps=args.ode_steps,
                nll_steps=args.nll_steps,
                device=args.device,
            )
            out.update(w2=m["w2"], mmd=m["mmd"], nll=m["nll"])
            out["floor_w2"] = float(wasserstein(train[:2000], test[:2000]))
        else:
            lp = fm.log_prob(test, steps=args.nll_steps)
            out["test_nll"] = -float(lp.mean())
    out["total_seconds"] = round(time.perf_counter() - start, 1)
    return out


def summarise(per_seed: list[dict]) -> dict:
    keys = [
        k
        for k, v in per_seed[0].items()
        if isinstance(v, float) and k.endswith(("nll", "mse", "w2", "mmd"))
    ]
    out = {}
    for k in keys:
        vals = [r[k] for r in per_seed if r.get(k) is not None and math.isfinite(r[k])]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out[k] = {"mean": statistics.fmean(vals), "std": sd, "n": len(vals)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="the shared data folder")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="0: never stop early")
    p.add_argument("--length-scale", type=float, default=None)
    p.add_argument("--select", choices=("loss", "nll", "last"), default=None)
    p.add_argument("--fourier", type=int, default=None, help="Fourier bands of the features")
    p.add_argument("--coupling", choices=("independent", "ot"), default="independent")
    p.add_argument("--nll-steps", type=int, default=100, help="RK4 steps of the test NLL")
    p.add_argument("--ode-steps", type=int, default=100, help="RK4 steps of sampling")
    p.add_argument("--n-gen", type=int, default=500, help="generated curves (functions)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default="default", help="name of the settings, in the file name")
    p.add_argument("--device", default="cpu", help="device of training and evaluation")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="folder of the JSON")
    args = p.parse_args(argv)
    set_threads(args.threads)
    for row in args.rows:
        space, x = load_row(row, args.data_dir)
        per_seed = []
        for seed in args.seeds:
            r = run_seed(row, space, x, seed, args)
            per_seed.append(r)
            print(row, r, flush=True)
        settings = {
            k: getattr(args, k) for k in (*OVERRIDES, "coupling", "nll_steps", "ode_steps", "n_gen")
        }
        result = {
            "row": row,
            "space": space,
            "n_points": int(x.shape[0]),
            "settings": settings,
            "summary": summarise(per_seed),
            "per_seed": per_seed,
            "machine": machine_info(args.device),
            "command": "benchmarks/.venv/bin/python benchmarks/reproduce.py --data-dir "
            f"../shared/data --rows {row} --seeds {' '.join(map(str, args.seeds))}"
            + "".join(
                f" --{k.replace('_', '-')} {v}"
                for k, v in settings.items()
                if v is not None and k in OVERRIDES
            )
            + (" --coupling ot" if args.coupling == "ot" else "")
            + ("" if args.device == "cpu" else f" --device {args.device}")
            + f" --tag {args.tag}",
        }
        write_json(args.out_dir / f"reproduce_{row}_{args.tag}.json", result)
        print(row, result["summary"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
