"""Gaussian-process noise for functional flow matching: sampling time and variance accuracy.

For each case (Matern-5/2 kernel on ``[0, 1]^d``; length scale 0.02 in 1-D, 0.05 on the 2-D
grids), ``--samples`` functions (256) in float32 are drawn by

* ``GPSource(kernel, points, method="fft")``: circulant embedding on the regular grid;
* ``GPSource(kernel, points, method="cholesky")``: the exact float64 Cholesky factor;
* gpytorch's default ``MultivariateNormal(0, kernel(points)).sample()``, which above 800 points
  uses a rank-100 Lanczos root of the covariance (an approximation).

Reported: the one-off cost (building the source or the distribution and the first draw), the
median time of one further draw of ``--samples`` functions (``common.compare_timings``; the
factors are cached by then), the pointwise variance of the samples over the target variance
(mean over 16 draws, with its standard error), and the variance that the sampler implies
exactly (from its factor: 1 is exact).

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_gp.py                         # all cases, CPU
    benchmarks/.venv/bin/python benchmarks/bench_gp.py --cases 64x64 --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gpytorch
import torch
from common import RESULTS, compare_timings, machine_info, markdown_table, set_threads, write_json

from manifoldfm.functional import GPSource, grid_points

CASES: dict[str, tuple[int | tuple[int, int], float]] = {
    "1-D n=1000": (1000, 0.02),
    "1-D n=4000": (4000, 0.02),
    "64x64": ((64, 64), 0.05),
    "128x128": ((128, 128), 0.05),
}
METHODS = ("fft", "cholesky", "gpytorch")


def _kernel(lengthscale: float) -> gpytorch.kernels.Kernel:
    k = gpytorch.kernels.MaternKernel(nu=2.5)
    k.lengthscale = lengthscale
    return k


def _sampler(
    method: str, points: torch.Tensor, lengthscale: float, samples: int, device: torch.device
) -> tuple[Callable[[int], torch.Tensor], float, str]:
    """A draw function ``seed -> (samples, n)``, the implied variance and a description."""
    n = points.shape[0]
    if method == "gpytorch":
        k = _kernel(lengthscale).to(device)
        pts = points.to(device=device, dtype=torch.float32)
        with torch.no_grad():
            mvn = gpytorch.distributions.MultivariateNormal(torch.zeros(n, device=device), k(pts))

            def draw(seed: int) -> torch.Tensor:
                torch.manual_seed(seed)  # gpytorch draws from the global generator
                with torch.no_grad():
                    return mvn.sample(torch.Size([samples]))

            draw(0)
            root = mvn.lazy_covariance_matrix.root_decomposition().root.to_dense()
        implied = float(root.double().square().sum(-1).mean())
        return draw, implied, f"root of rank {root.shape[-1]}"
    # the points on the device: the factor (or the embedding's spectrum) is computed there
    src = GPSource(_kernel(lengthscale), points.to(device), method=method)

    def draw_ours(seed: int) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seed)
        return src.sample(samples, generator=g, dtype=torch.float32, device=device)

    draw_ours(0)
    if method == "cholesky":
        implied = float(src._dense.square().sum(-1).mean())  # the cached float64 factor
        info = f"jitter {src.jitter_used:g}"
    else:
        info = f"embedding {tuple(src.embedding_shape)}"
        lam = src._sqrt_eig.square() * torch.tensor(src.embedding_shape).prod()
        implied = float(torch.fft.ifftn(lam.to(torch.complex128)).real.reshape(-1)[0])
    return draw_ours, implied, info


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    rows = []
    for name in args.cases:
        shape, lengthscale = CASES[name]
        points = grid_points(shape, dtype=torch.float64)
        draws = {}
        for method in args.methods:
            start = time.perf_counter()
            draw, implied, info = _sampler(method, points, lengthscale, args.samples, device)
            first_s = time.perf_counter() - start
            v = torch.tensor([float(draw(1000 + r).double().square().mean()) for r in range(16)])
            draws[method] = draw
            rows.append(
                {
                    "case": name,
                    "method": method,
                    "info": info,
                    "first_s": first_s,
                    "variance_ratio": float(v.mean()),
                    "variance_ratio_se": float(v.std() / 4.0),
                    "implied_variance": implied,
                }
            )
            print(f"{name} {method} ({info}): first {first_s:.2f} s", flush=True)
        seeds = iter(range(10**6))
        fns = {m: (lambda d=d, s=seeds: d(next(s))) for m, d in draws.items()}
        timings = compare_timings(fns, device=device, rounds=args.rounds, warmup=1, target_s=0.0)
        for row in rows:
            if row["case"] == name:
                row["sample_ms"] = timings[row["method"]]["median_us"] / 1e3
        print(
            f"{name}: " + ", ".join(f"{m} {timings[m]['median_us'] / 1e3:.1f} ms" for m in fns),
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    start = time.perf_counter()
    rows = run(args)
    table = markdown_table(
        [
            "case",
            "method",
            "setup + first draw (s)",
            f"one draw of {args.samples} (ms)",
            "variance / target",
            "implied variance",
        ],
        [
            [
                r["case"],
                f"{r['method']} ({r['info']})",
                f"{r['first_s']:.2f}",
                f"{r['sample_ms']:,.1f}",
                f"{r['variance_ratio']:.4f} ± {r['variance_ratio_se']:.4f}",
                f"{r['implied_variance']:.6f}",
            ]
            for r in rows
        ],
    )
    result = {
        "benchmark": "GP noise: sampling time and variance accuracy",
        "machine": machine_info(args.device),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "table_markdown": table,
    }
    print("\n" + table)
    path = args.out or RESULTS / f"gp_{torch.device(args.device).type}.json"
    write_json(path, result)
    print(f"\nwritten {path} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
