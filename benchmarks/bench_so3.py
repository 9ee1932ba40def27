"""SO(3) exponential and logarithm: throughput and float32 accuracy against roma and SciPy.

Part ``speed`` (float32 and float64, ``B`` rotations, CPU or CUDA): the time of

* ``exp``: rotation vectors ``(B, 3)`` -> matrices ``(B, 3, 3)``: ours
  ``manifoldfm.manifolds.so3.rotvec_to_rotmat``, ``roma.rotvec_to_rotmat`` and SciPy's
  ``Rotation.from_rotvec(w).as_matrix()`` (on the host, including the torch <-> NumPy copies;
  SciPy computes in float64 whatever the input);
* ``log``: matrices -> rotation vectors: ours ``rotmat_to_rotvec``, ``roma.rotmat_to_rotvec``
  and SciPy's ``Rotation.from_matrix(R).as_rotvec()``.

Part ``accuracy`` (float32 inputs, 256 per angle, angles from 1e-7 to pi): the relative error
of ``exp`` in its skew part ``(R - R^T) / 2 = sinc(t) hat(w)``, which carries the rotation
(the diagonal ``1 - t^2 / 2`` of a small rotation rounds to 1 in float32 in every library),
and of ``log`` (``|w - w_ref| / |w_ref|``). References from the same float32 inputs cast up, in mpmath at 40
digits: Rodrigues' formula for ``exp``; for ``log``, the input matrices are ``exp`` of float32
rotation vectors rounded to float32, and the reference is the rotation vector the matrix was
made from (the rounding of the matrix moves the rotation by about float32's eps, which sets
the floor every library shares).

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_so3.py                       # both parts, CPU
    benchmarks/.venv/bin/python benchmarks/bench_so3.py --part speed --device cuda
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch
from common import RESULTS, compare_timings, machine_info, markdown_table, set_threads, write_json
from scipy.spatial.transform import Rotation

from manifoldfm.manifolds.so3 import rotmat_to_rotvec, rotvec_to_rotmat

try:
    import mpmath
except ImportError:  # pragma: no cover - mpmath ships with torch (through sympy)
    mpmath = None

ANGLES = (
    ("1e-7", 1e-7),
    ("1e-5", 1e-5),
    ("1e-3", 1e-3),
    ("1e-1", 1e-1),
    ("1", 1.0),
    ("pi - 1e-3", math.pi - 1e-3),
    ("pi - 1e-5", math.pi - 1e-5),
)
LIBS = ("ours", "roma", "scipy")


def _scipy_exp(w: torch.Tensor) -> torch.Tensor:
    m = Rotation.from_rotvec(w.detach().cpu().double().numpy()).as_matrix()
    return torch.from_numpy(m).to(device=w.device, dtype=w.dtype)


def _scipy_log(r: torch.Tensor) -> torch.Tensor:
    v = Rotation.from_matrix(r.detach().cpu().double().numpy()).as_rotvec()
    return torch.from_numpy(v).to(device=r.device, dtype=r.dtype)


EXP: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ours": rotvec_to_rotmat,
    "roma": roma.rotvec_to_rotmat,
    "scipy": _scipy_exp,
}
LOG: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ours": rotmat_to_rotvec,
    "roma": roma.rotmat_to_rotvec,
    "scipy": _scipy_log,
}


def _rotvecs(n: int, g: torch.Generator, angle: float | None = None) -> torch.Tensor:
    axis = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    if angle is None:
        angle_t = math.pi * torch.rand(n, 1, generator=g, dtype=torch.float64)
    else:
        angle_t = torch.full((n, 1), angle, dtype=torch.float64)
    return axis * angle_t


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    rows = []
    for dtype in (torch.float32, torch.float64):
        for b in args.batch:
            g = torch.Generator().manual_seed(args.seed)
            w = _rotvecs(b, g).to(device=device, dtype=dtype)
            r = rotvec_to_rotmat(w)
            for op, table, arg in (("exp", EXP, w), ("log", LOG, r)):
                fns = {lib: (lambda f=table[lib], a=arg: f(a)) for lib in LIBS}
                timings = compare_timings(fns, device=device, rounds=args.rounds, warmup=2)
                med = {lib: timings[lib]["median_us"] for lib in LIBS}
                rows.append(
                    {
                        "op": op,
                        "dtype": str(dtype).removeprefix("torch."),
                        "batch": b,
                        "median_us": med,
                        "timings": timings,
                    }
                )
                print(
                    f"{op} {dtype} B={b}: " + ", ".join(f"{lib} {med[lib]:.1f}us" for lib in LIBS),
                    flush=True,
                )
    return {"device": str(device), "rows": rows}


def _mp_rodrigues(w: np.ndarray) -> list[list[Any]]:
    mp = mpmath.mp
    wx, wy, wz = (mp.mpf(float(c)) for c in w)
    t = mp.sqrt(wx * wx + wy * wy + wz * wz)
    k = mp.matrix([[0, -wz, wy], [wz, 0, -wx], [-wy, wx, 0]])
    a = mp.sin(t) / t
    b = (1 - mp.cos(t)) / (t * t)
    m = mp.eye(3) + a * k + b * (k * k)
    return [[m[i, j] for j in range(3)] for i in range(3)]


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    if mpmath is None:
        raise SystemExit("the accuracy part needs mpmath")
    mpmath.mp.dps = 40
    out: dict[str, Any] = {}
    g = torch.Generator().manual_seed(args.seed)
    for label, angle in ANGLES:
        w32 = _rotvecs(args.pairs, g, angle).float()
        ref = [_mp_rodrigues(v) for v in w32.double().numpy()]
        ref_minus_i = torch.tensor(
            [
                [[float(m[i][j] - (1 if i == j else 0)) for j in range(3)] for i in range(3)]
                for m in ref
            ],
            dtype=torch.float64,
        )
        ref_r = ref_minus_i + torch.eye(3, dtype=torch.float64)
        r32 = ref_r.float()  # the exact rotation of w32, rounded to float32
        row: dict[str, Any] = {}
        for lib in LIBS:
            r = EXP[lib](w32).double()
            # the skew part (R - R^T) / 2 = sinc(t) hat(w) carries the rotation; its relative
            # error shows small-angle accuracy (the diagonal 1 - t^2/2 rounds to 1 anyway)
            skew, skew_ref = r - r.mT, ref_r - ref_r.mT
            e_exp = (skew - skew_ref).flatten(1).norm(dim=1) / skew_ref.flatten(1).norm(dim=1)
            v = LOG[lib](r32).double()
            w64 = w32.double()
            e_log = (v - w64).norm(dim=1) / w64.norm(dim=1)
            row[lib] = {
                "exp_rel_median": float(e_exp.median()),
                "exp_rel_max": float(e_exp.max()),
                "log_rel_median": float(e_log.median()),
                "log_rel_max": float(e_log.max()),
                "nonfinite": int((~torch.isfinite(r)).any(dim=(1, 2)).sum())
                + int((~torch.isfinite(v)).any(dim=1).sum()),
            }
        out[label] = row
        print(
            f"angle {label}: "
            + ", ".join(
                f"{lib} exp {row[lib]['exp_rel_median']:.1e} log {row[lib]['log_rel_median']:.1e}"
                for lib in LIBS
            ),
            flush=True,
        )
    return out


def tables(result: dict[str, Any]) -> dict[str, str]:
    t: dict[str, str] = {}
    if "speed" in result:
        rows = []
        for r in result["speed"]["rows"]:
            med = r["median_us"]
            rows.append(
                [r["op"], r["dtype"], r["batch"]]
                + [f"{med[lib]:,.1f}" for lib in LIBS]
                + [f"{med['roma'] / med['ours']:.2f}x", f"{med['scipy'] / med['ours']:.2f}x"]
            )
        t["speed"] = markdown_table(
            [
                "op",
                "dtype",
                "B",
                "ours (µs)",
                "roma (µs)",
                "scipy (µs)",
                "ours vs roma",
                "ours vs scipy",
            ],
            rows,
        )
    if "accuracy" in result:
        rows = []
        for label, row in result["accuracy"].items():
            rows.append(
                [label]
                + [f"{row[lib]['exp_rel_median']:.1e}" for lib in LIBS]
                + [f"{row[lib]['log_rel_median']:.1e}" for lib in LIBS]
            )
        t["accuracy"] = markdown_table(
            ["angle"] + [f"exp {lib}" for lib in LIBS] + [f"log {lib}" for lib in LIBS], rows
        )
    return t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["speed", "accuracy", "both"], default="both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[4096, 262144])
    p.add_argument("--pairs", type=int, default=256, help="rotations per angle (accuracy)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "SO(3) exp/log: speed and float32 accuracy vs roma and SciPy",
        "machine": machine_info(args.device),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if args.part in ("accuracy", "both"):
        result["accuracy"] = run_accuracy(args)
    if args.part in ("speed", "both"):
        result["speed"] = run_speed(args)
    result["seconds"] = time.perf_counter() - start
    result["tables_markdown"] = tables(result)
    for name, table in result["tables_markdown"].items():
        print(f"\n{name}\n{table}")
    path = args.out or RESULTS / f"so3_{torch.device(args.device).type}.json"
    write_json(path, result)
    print(f"\nwritten {path} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
