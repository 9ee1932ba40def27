"""Where exact OT's time goes on an accelerator: cost matrix, device dual pre-reduction,
then the sparse certified solve (candidates to the host; per round the host solve, its duals
and the certificate on the device) and, for comparison, the dense route (reduced float64
matrix to the host, host assignment solver); three calls per size. On a CPU the "device" parts run in torch
on the host.

Usage::

    python3 benchmarks/profile_ot.py --device cuda > benchmarks/results/ot_cuda_profile.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.optimize import linear_sum_assignment

from manifoldfm.couplings import _assignment
from manifoldfm.couplings._sinkhorn import approx_duals_torch


class _Phases:
    """Wall time of the host solve (augmentations, then the duals' move) and of the rest of
    each round (transfers and the certificate on the device), per round of the sparse solve."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rounds: list[str] = []
        self._augment = _assignment._augment
        self._duals = _assignment._largest_column_duals
        self._end = 0.0

    def __enter__(self) -> _Phases:
        def augment(*args):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            if self.rounds:  # the rest of the last round: transfers and the certificate
                self.rounds[-1] += f" certificate {1e3 * (t - self._end):.1f}"
            out = self._augment(*args)
            self.rounds.append(f"augment {1e3 * (time.perf_counter() - t):.1f}")
            return out

        def duals(*args):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            out = self._duals(*args)
            self._end = time.perf_counter()
            self.rounds[-1] += f" duals {1e3 * (self._end - t):.1f}"
            return out

        _assignment._augment = augment
        _assignment._largest_column_duals = duals
        return self

    def __exit__(self, *exc: object) -> None:
        _assignment._augment = self._augment
        _assignment._largest_column_duals = self._duals
        if self.rounds:
            _sync(self.device)
            self.rounds[-1] += f" certificate {1e3 * (time.perf_counter() - self._end):.1f}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="1024x2,4096x2,4096x3072")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one batch per seed")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    for spec in args.sizes.split(","):
        n, d = (int(v) for v in spec.split("x"))
        for seed in args.seeds:
            _profile(n, d, seed, dev, args.reps)
    return 0


def _profile(n: int, d: int, seed: int, dev: torch.device, reps: int) -> None:
    spec = f"{n}x{d}" if seed == 0 else f"{n}x{d} seed {seed}"
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=g).to(dev)
    x1 = (torch.randn(n, d, generator=g) + 0.5).to(dev)
    for rep in range(reps):
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
        with _Phases(dev) as phases:
            cols = _assignment._sparse_certified(c.double(), f, gg)
        _sync(dev)
        ts = time.perf_counter()
        print(
            f"{spec} rep{rep}: sparse certified {1e3 * (ts - t2):.1f} ms "
            f"({'certified' if cols is not None else 'declined'}; rounds: "
            f"{'; '.join(phases.rounds)}); total with cost and duals "
            f"{1e3 * (ts - t0):.1f} ms",
            flush=True,
        )
        _sync(dev)
        t5 = time.perf_counter()
        r = c.double() - f[:, None]
        r -= gg[None, :]
        host = r.cpu().numpy()
        t6 = time.perf_counter()
        linear_sum_assignment(host)
        t7 = time.perf_counter()
        # the dense route's total: the same cost matrix and duals, then its own two steps
        ms = [1e3 * v for v in (t1 - t0, t2 - t1, t6 - t5, t7 - t6, (t2 - t0) + (t7 - t5))]
        print(
            f"{spec} rep{rep}: cost {ms[0]:.1f} ms, duals {ms[1]:.1f}, "
            f"dense route: reduce+D2H {ms[2]:.1f}, lsa {ms[3]:.1f}, total {ms[4]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
