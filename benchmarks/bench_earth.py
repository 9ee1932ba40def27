"""Earth-science data on S^2 (volcano, flood): the Riemannian flow-matching NLL protocol.

Protocol of the literature: random 80/10/10 train/validation/test splits over 5 seeds, test
negative log-likelihood in nats w.r.t. the sphere's area (uniform = log(4 pi) = 2.531).

Recipe: uniform source on S^2, geodesic CondOT path, independent pairs, a
``ManifoldMLP(Sphere(2))`` velocity, Adam with a cosine learning-rate decay, an exponential
moving average (EMA) of the weights; the validation NLL (RK4, exact divergence) picks the best
EMA checkpoint; the test NLL is computed with adaptive Dormand-Prince (atol = rtol = 1e-5) and
the exact Riemannian divergence.

Example::

    benchmarks/.venv/bin/python benchmarks/bench_earth.py \
        --data ../shared/data/sphere/volcano.csv --seeds 0 1 2 3 4 --steps 8000
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from pathlib import Path

import torch
from common import RESULTS, machine_info, set_threads, write_json

import manifoldfm as mfm
from manifoldfm.data import read_earth_csv
from manifoldfm.manifolds import Sphere
from manifoldfm.nn import ManifoldMLP
from manifoldfm.solvers import log_likelihood
from manifoldfm.sources import Uniform

#: Published test NLL (mean, std over 5 seeds) for comparison.
PUBLISHED = {
    "volcano": {"Riemannian FM (Chen & Lipman 2024)": "-7.93 ± 1.67", "RDM": "-6.61"},
    "flood": {"Riemannian FM (Chen & Lipman 2024)": "0.42", "RDM": "0.43"},
}


def split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random 80/10/10 split of ``range(n)`` from ``seed``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = round(0.8 * n), round(0.1 * n)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


@torch.no_grad()
def nll(model, x, *, method: str, steps: int | None = None) -> float:
    """Mean negative log-likelihood (nats, w.r.t. the area) of the points ``x``."""
    sphere = Sphere(2)
    kw = {"steps": steps} if steps is not None else {}
    res = log_likelihood(
        model, x, Uniform(sphere), manifold=sphere, method=method, atol=1e-5, rtol=1e-5, **kw
    )
    return -float(res.log_prob.mean())


def run(data: torch.Tensor, seed: int, args: argparse.Namespace) -> dict:
    sphere = Sphere(2)
    tr, va, te = split(data.shape[0], seed)
    train, val, test = data[tr], data[va], data[te]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1000)
    dev = torch.device(args.device)
    train, val, test = train.to(dev), val.to(dev), test.to(dev)
    model = ManifoldMLP(sphere, hidden=args.hidden, depth=args.depth).double().to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    path = mfm.GeodesicPath(sphere)
    source = Uniform(sphere)
    best = (math.inf, 0)
    best_state = copy.deepcopy(ema.state_dict())
    start = time.perf_counter()
    curve = []
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, train.shape[0], (args.batch,), generator=g)
        x1 = train[idx.to(dev)]
        x0 = source.sample(args.batch, generator=g, dtype=x1.dtype).to(dev)
        t = torch.rand(args.batch, generator=g, dtype=x1.dtype).to(dev)
        s = path.sample(x0, x1, t)
        loss = mfm.cfm_loss(model(s.xt, s.t), s, manifold=sphere)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - args.ema)
        if step % args.eval_every == 0 or step == args.steps:
            v = nll(ema, val, method="rk4", steps=args.val_steps)
            curve.append((step, round(v, 4)))
            if v < best[0]:
                best = (v, step)
                best_state = copy.deepcopy(ema.state_dict())
            print(
                f"  seed {seed} step {step}: loss {float(loss.detach()):.3f} val NLL {v:.3f}",
                flush=True,
            )
    train_s = time.perf_counter() - start
    ema.load_state_dict(best_state)
    start = time.perf_counter()
    test_nll = nll(ema, test, method="dopri5")
    eval_s = time.perf_counter() - start
    return {
        "seed": seed,
        "n_train": int(train.shape[0]),
        "n_val": int(val.shape[0]),
        "n_test": int(test.shape[0]),
        "best_val_nll": best[0],
        "best_step": best[1],
        "test_nll": test_nll,
        "train_s": train_s,
        "test_eval_s": eval_s,
        "val_curve": curve,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="CSV with lat_deg, lon_deg columns")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--val-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device of training and evaluation")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    name = args.data.stem
    data = read_earth_csv(args.data).to(torch.float64)
    runs = []
    for seed in args.seeds:
        print(f"{name}: seed {seed}", flush=True)
        runs.append(run(data, seed, args))
        print(f"  test NLL {runs[-1]['test_nll']:.3f}", flush=True)
    nlls = [r["test_nll"] for r in runs]
    summary = {
        "data": name,
        "n": int(data.shape[0]),
        "test_nll_mean": statistics.fmean(nlls),
        "test_nll_std": statistics.stdev(nlls) if len(nlls) > 1 else 0.0,
        "train_s_mean": statistics.fmean(r["train_s"] for r in runs),
        "published": PUBLISHED.get(name, {}),
    }
    out = {
        "benchmark": "Earth data on S^2, test NLL (nats), 80/10/10 splits",
        "command": "benchmarks/.venv/bin/python benchmarks/bench_earth.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "machine": machine_info(args.device),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": runs,
    }
    path = args.out or RESULTS / f"earth_{name}.json"
    write_json(path, out)
    print(
        f"{name}: test NLL {summary['test_nll_mean']:.3f} ± {summary['test_nll_std']:.3f} "
        f"over {len(nlls)} seeds; wrote {path}"
    )
    return out


if __name__ == "__main__":
    main()
