"""Where exact OT's time goes on an accelerator: cost matrix, device dual pre-reduction,
reduced float64 matrix to the host, host assignment solver (three calls per size).

Usage::

    python3 benchmarks/profile_ot.py --device cuda > benchmarks/results/ot_cuda_profile.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.optimize import linear_sum_assignment

from manifoldfm.couplings._sinkhorn import approx_duals_torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="1024x2,4096x2,4096x3072")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    for spec in args.sizes.split(","):
        n, d = (int(v) for v in spec.split("x"))
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(n, d, generator=g).to(dev)
        x1 = (torch.randn(n, d, generator=g) + 0.5).to(dev)
        for rep in range(args.reps):
            _sync(dev)
            t0 = time.perf_counter()
            c = torch.cdist(x0, x1) ** 2
            _sync(dev)
            t1 = time.perf_counter()
            duals = approx_duals_torch(c)
            if duals is None:
                raise RuntimeError(f"no duals at {spec}")
            f, gg = duals
            _sync(dev)
            t2 = time.perf_counter()
            r = c.double() - f[:, None]
            r -= gg[None, :]
            host = r.cpu().numpy()
            t3 = time.perf_counter()
            linear_sum_assignment(host)
            t4 = time.perf_counter()
            ms = [1e3 * v for v in (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)]
            print(
                f"{n}x{d} rep{rep}: cost {ms[0]:.1f} ms, duals {ms[1]:.1f}, "
                f"reduce+D2H {ms[2]:.1f}, lsa {ms[3]:.1f}, total {ms[4]:.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
