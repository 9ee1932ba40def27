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


def _vmf_kde_log_prob(x: torch.Tensor, centres: torch.Tensor, kappa: float) -> torch.Tensor:
    """Log-density (w.r.t. the area) of the equal-weight vMF mixture at ``centres``."""
    # log C(kappa) + kappa <mu, x> with C = kappa / (4 pi sinh kappa), written stably
    log_c = math.log(kappa) - math.log(2 * math.pi) - math.log1p(-math.exp(-2 * kappa))
    logits = kappa * (x.double() @ centres.double().T - 1.0)
    return log_c + torch.logsumexp(logits, dim=1) - math.log(centres.shape[0])


def kde_nll(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor) -> dict:
    """A memorising baseline: a von Mises-Fisher kernel density estimate on the training
    points, its concentration picked on the validation split from a log grid."""
    grid = [10.0 ** (e / 4) for e in range(4, 29)]  # 10 .. 1e7
    vals = [-float(_vmf_kde_log_prob(val, train, k).mean()) for k in grid]
    best = grid[min(range(len(grid)), key=vals.__getitem__)]
    return {"concentration": best, "test_nll": -float(_vmf_kde_log_prob(test, train, best).mean())}


def run(data: torch.Tensor, seed: int, args: argparse.Namespace) -> dict:
    sphere = Sphere(2)
    tr, va, te = split(data.shape[0], seed)
    train, val, test = data[tr], data[va], data[te]
    torch.manual_seed(seed)
    dev = torch.device(args.device)
    g = torch.Generator(device=dev).manual_seed(seed + 1000)
    dtype = getattr(torch, args.dtype)
    train, val, test = (a.to(device=dev, dtype=dtype) for a in (train, val, test))
    model = ManifoldMLP(sphere, hidden=args.hidden, depth=args.depth).to(device=dev, dtype=dtype)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    path = mfm.GeodesicPath(sphere)
    source = Uniform(sphere)
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    best = (math.inf, 0)
    best_state = copy.deepcopy(ema.state_dict())
    start = time.perf_counter()
    curve = []
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, train.shape[0], (args.batch,), generator=g, device=dev)
        x1 = train[idx]
        x0 = source.sample(args.batch, generator=g, dtype=dtype)
        t = torch.rand(args.batch, generator=g, dtype=dtype, device=dev)
        s = path.sample(x0, x1, t)
        loss = mfm.cfm_loss(model(s.xt, s.t), s, manifold=sphere)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1.0 - args.ema)
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
    kde = kde_nll(train, val, test)
    return {
        "seed": seed,
        "kde_test_nll": kde["test_nll"],
        "kde_concentration": kde["concentration"],
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
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    name = args.data.stem
    data = read_earth_csv(args.data).to(torch.float64)
    runs: list[dict] = []
    for seed in args.seeds:
        print(f"{name}: seed {seed}", flush=True)
        runs.append(run(data, seed, args))
        print(
            f"  test NLL {runs[-1]['test_nll']:.3f} (vMF KDE {runs[-1]['kde_test_nll']:.3f})",
            flush=True,
        )
        out = _report(name, data, runs, args, argv)  # after every seed: partial runs survive
    return out


def _report(name: str, data: torch.Tensor, runs: list[dict], args, argv) -> dict:
    nlls = [r["test_nll"] for r in runs]
    summary = {
        "data": name,
        "n": int(data.shape[0]),
        "test_nll_mean": statistics.fmean(nlls),
        "test_nll_std": statistics.stdev(nlls) if len(nlls) > 1 else 0.0,
        "kde_test_nll_mean": statistics.fmean(r["kde_test_nll"] for r in runs),
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
