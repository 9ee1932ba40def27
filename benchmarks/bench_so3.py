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

Part ``igso3``: drawing IGSO(3)(sigma) rotations, ours ``IGSO3(sigma).sample(n)`` (angle
table per sigma, cached; the first call builds it and is timed separately) against the
precomputed-table approach of the protein-backbone codes: the angle CDF tabulated once in
NumPy from the character series truncated at ``l = 1000`` on 1000 angles (here for the one
sigma used), ``np.interp`` of uniforms through its inverse, a uniform axis, and SciPy's
``Rotation.from_rotvec`` to matrices. Accuracy: the Kolmogorov-Smirnov distance of 100,000
sampled angles to ours' exact angle CDF (``IGSO3.angle_cdf``, accurate to about 1e-10).

Part ``se3paths``: one draw of the conditional path on SE(3)^N frames ``(B, N, 4, 4)`` for
``(B, N) = (64, 256)``: ``GeodesicPath(SE3())``, ``ProductPath`` with the exponential rotation
schedule, and FoldFlow's stochastic path ``StochasticGeodesicPath`` on the rotations.

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_so3.py                       # both parts, CPU
    benchmarks/.venv/bin/python benchmarks/bench_so3.py --part speed --device cuda
    benchmarks/.venv/bin/python benchmarks/bench_so3.py --part igso3 se3paths
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

import manifoldfm as mfm
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
        device = torch.device(args.device)
        for lib in LIBS:
            # computed on --device (float32 kernels may differ there), compared on the host
            r = EXP[lib](w32.to(device)).double().cpu()
            # the skew part (R - R^T) / 2 = sinc(t) hat(w) carries the rotation; its relative
            # error shows small-angle accuracy (the diagonal 1 - t^2/2 rounds to 1 anyway)
            skew, skew_ref = r - r.mT, ref_r - ref_r.mT
            e_exp = (skew - skew_ref).flatten(1).norm(dim=1) / skew_ref.flatten(1).norm(dim=1)
            v = LOG[lib](r32.to(device)).double().cpu()
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


def _igso3_table_numpy(sigma: float, n_angles: int = 1000, l_max: int = 1000):
    """The precomputed-table approach: the angle CDF from the truncated character series."""
    w = np.linspace(0.0, np.pi, n_angles)
    ls = np.arange(l_max)[:, None]
    # f(w) (1 - cos w) / pi: the angle density (Haar angle density times the heat kernel)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (2 * ls + 1) * np.exp(-ls * (ls + 1) * sigma**2 / 2)
        ratio = np.sin((ls + 0.5) * w) / np.sin(w / 2)
    ratio[:, 0] = 2 * ls[:, 0] + 1  # the limit at w = 0
    pdf = (terms * ratio).sum(0) * (1 - np.cos(w)) / np.pi
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(w))])
    return w, cdf / cdf[-1]


def _igso3_numpy_sample(table, n: int, rng: np.random.Generator) -> torch.Tensor:
    w, cdf = table
    angle = np.interp(rng.random(n), cdf, w)
    axis = rng.standard_normal((n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return torch.from_numpy(Rotation.from_rotvec(axis * angle[:, None]).as_matrix())


def _ks(angles: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    a, _ = torch.sort(angles.double())
    n = a.shape[0]
    f = cdf(a)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def run_igso3(args: argparse.Namespace) -> dict[str, Any]:
    from manifoldfm.manifolds.so3 import rotation_angle

    device = torch.device(args.device)
    rows = []
    for sigma in args.sigmas:
        src = mfm.IGSO3(sigma)
        start = time.perf_counter()
        src.sample(1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        first_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        table = _igso3_table_numpy(sigma)
        table_ms = (time.perf_counter() - start) * 1e3
        rng = np.random.default_rng(args.seed)  # a local generator, not NumPy's global one
        for n in args.igso3_n:
            g = torch.Generator(device=device).manual_seed(args.seed)
            fns = {
                "ours": lambda n=n, g=g, src=src: src.sample(
                    n, generator=g, dtype=torch.float32, device=device
                ),
                # the table sampler draws on the host (as the table-based trainers do) and
                # hands the rotations to the device
                "table": lambda n=n, tab=table, rng=rng: _igso3_numpy_sample(tab, n, rng).to(
                    device=device, dtype=torch.float32
                ),
            }
            timings = compare_timings(fns, device=device, rounds=args.rounds, warmup=1)
            rows.append(
                {
                    "sigma": sigma,
                    "n": n,
                    "median_us": {k: v["median_us"] for k, v in timings.items()},
                    "timings": timings,
                }
            )
        g = torch.Generator().manual_seed(args.seed + 1)
        ours_angles = rotation_angle(src.sample(100_000, generator=g, dtype=torch.float64))
        table_angles = rotation_angle(_igso3_numpy_sample(table, 100_000, rng))
        rows[-1]["ks_ours"] = _ks(ours_angles, src.angle_cdf)
        rows[-1]["ks_table"] = _ks(table_angles, src.angle_cdf)
        rows[-1]["first_call_ms"] = first_ms
        rows[-1]["numpy_table_build_ms"] = table_ms
        print(
            f"IGSO3 sigma={sigma}: first call {first_ms:.1f} ms, numpy table {table_ms:.1f} ms, "
            f"KS ours {rows[-1]['ks_ours']:.4f} table {rows[-1]['ks_table']:.4f}",
            flush=True,
        )
    return {"device": str(torch.device(args.device)), "rows": rows}


def _se3_path_fns(
    se3: Any, b: int, n: int, dtype: torch.dtype, device: torch.device, seed: int
) -> dict[str, Callable[[], Any]]:
    g = torch.Generator(device=device).manual_seed(seed)
    x0 = se3.random(b, n, generator=g, dtype=dtype, device=device)
    x1 = se3.random(b, n, generator=g, dtype=dtype, device=device)
    t = torch.rand(b, generator=g, dtype=dtype, device=device)
    geo = mfm.GeodesicPath(se3)
    prod = mfm.ProductPath(
        [mfm.GeodesicPath(mfm.SO3(), mfm.ExponentialRate(10.0)), mfm.AffinePath(mfm.CondOT())],
        manifold=se3,
    )
    sfm = mfm.StochasticGeodesicPath(mfm.SO3(), g=0.1, sigma_min=0.01)
    r0, _ = se3.split(x0)
    r1, _ = se3.split(x1)
    return {
        "GeodesicPath(SE3)": lambda: geo.sample(x0, x1, t),
        "ProductPath(SO3 exp-rate, R^3 CondOT)": lambda: prod.sample(x0, x1, t),
        "StochasticGeodesicPath(SO3), rotations only": lambda: sfm.sample(r0, r1, t, generator=g),
    }


def run_se3paths(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    se3 = mfm.SE3()
    b, n = args.frames
    out = {}
    for dtype in (torch.float32, torch.float64):
        fns = _se3_path_fns(se3, b, n, dtype, device, args.seed)
        timings = compare_timings(fns, device=device, rounds=args.rounds, warmup=2)
        out[str(dtype).removeprefix("torch.")] = {k: v["median_us"] for k, v in timings.items()}
        print(f"SE(3)^N paths {dtype}: {out[str(dtype).removeprefix('torch.')]}", flush=True)
    return {"device": str(device), "batch": b, "frames": n, "median_us": out}


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
    if "igso3" in result:
        rows = []
        for r in result["igso3"]["rows"]:
            med = r["median_us"]
            rows.append(
                [
                    r["sigma"],
                    r["n"],
                    f"{med['ours']:,.0f}",
                    f"{med['table']:,.0f}",
                    f"{med['table'] / med['ours']:.2f}x",
                    f"{r['ks_ours']:.4f}" if "ks_ours" in r else "",
                    f"{r['ks_table']:.4f}" if "ks_table" in r else "",
                ]
            )
        t["igso3"] = markdown_table(
            [
                "sigma",
                "n",
                "ours (µs)",
                "table + SciPy (µs)",
                "ours vs table",
                "KS ours",
                "KS table",
            ],
            rows,
        )
    if "se3paths" in result:
        sp = result["se3paths"]
        names = list(next(iter(sp["median_us"].values())))
        rows = [
            [name] + [f"{sp['median_us'][d][name]:,.0f}" for d in sp["median_us"]] for name in names
        ]
        t["se3paths"] = markdown_table(
            [f"path, (B, N) = ({sp['batch']}, {sp['frames']})"]
            + [f"{d} (µs)" for d in sp["median_us"]],
            rows,
        )
    return t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--part",
        nargs="+",
        choices=["speed", "accuracy", "igso3", "se3paths", "all"],
        default=["speed", "accuracy"],
    )
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--igso3-n", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--frames", type=int, nargs=2, default=[64, 256], metavar=("B", "N"))
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
    parts = {"speed", "accuracy", "igso3", "se3paths"} if "all" in args.part else set(args.part)
    if "accuracy" in parts:
        result["accuracy"] = run_accuracy(args)
    if "speed" in parts:
        result["speed"] = run_speed(args)
    if "igso3" in parts:
        result["igso3"] = run_igso3(args)
    if "se3paths" in parts:
        result["se3paths"] = run_se3paths(args)
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
