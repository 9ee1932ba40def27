"""Riemannian manifolds, geodesic paths and manifold ODE steps, side by side.

Part 1, accuracy (``--part accuracy``, CPU, float32). For pairs of points at geodesic angles
1e-7 ... pi, the absolute and relative error of ``dist`` and ``logmap`` against a reference
computed from the same float32 inputs cast up (mpmath at 40 digits; a float64 reference with
careful formulas is computed alongside and their gap stored as a check). Libraries:

* ``S^2``: ours ``Sphere(2)``, geoopt ``Sphere()``, flow_matching ``Sphere()``;
* ``SO(3)``: ours ``SO3()``, roma (``rotmat_geodesic_distance`` and
  ``rotmat_to_rotvec(x^T y)``), and the naive formula ``acos((tr(x^T y) - 1) / 2)`` with
  ``log = theta / (2 sin theta) vee(x^T y - y^T x)`` (geoopt has no SO(3));
* ``T^2``: ours ``FlatTorus(2)``, flow_matching ``FlatTorus()`` (which has no ``dist``: the
  norm of its ``logmap`` is used).

Also the count of non-finite values of ``dist(x, x)``, ``logmap(x, x)`` and of the gradient of
``dist^2`` at identical and at antipodal points.

Part 2, speed (``--part speed``, ``B = 4096``, float32, ``--device cpu`` or ``cuda``):

* (a) one conditional sample ``(x_t, u_t)`` of the geodesic path with the CondOT schedule on
  ``S^2`` and ``T^2``: ours ``GeodesicPath(M).sample(x0, x1, t)`` against flow_matching's
  ``GeodesicProbPath(CondOTScheduler(), M).sample(x_0=x0, x_1=x1, t=t)`` (both given the same
  pre-drawn ``t``), after checking that both give the same ``(x_t, u_t)`` and that ours' ``u_t``
  is the time derivative of ``x_t``;
* (b) one ODE step with a cheap fixed field (a rotation field on ``S^2``, a smooth periodic
  field on ``T^2``; ``--fields mlp`` adds a small fixed MLP, ``--fields zero`` a field that
  returns zeros, which leaves the solvers' own cost), methods euler, midpoint and rk4:
  ours ``solve_ode(v, x0, steps=1, method=..., manifold=M, manifold_scheme=...)`` against
  flow_matching's ``RiemannianODESolver(M, v).sample(x0, None, method=..., time_grid=[0, 1])``
  with its default ``projx=True, proju=True``: the projection method (ambient Runge-Kutta
  stages, each stage point mapped back by ``projx``, each velocity by ``proju``), which is our
  ``manifold_scheme="projection"``; same number of velocity evaluations (1, 2, 4). Our
  default scheme ``expmap`` (Runge-Kutta in normal coordinates, full order on any manifold)
  is timed alongside.

Ratios are "their time / our time" (> 1: ours faster), from ``common.compare_timings``
(interleaved rounds, medians).

Usage::

    benchmarks/.venv/bin/python benchmarks/bench_manifolds.py                 # both parts, ~2 min
    benchmarks/.venv/bin/python benchmarks/bench_manifolds.py --part accuracy  # ~10 s
    benchmarks/.venv/bin/python benchmarks/bench_manifolds.py --part speed --device cuda
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geoopt
import roma
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    ToyMLP,
    compare_timings,
    machine_info,
    markdown_table,
    set_threads,
    summarize,
    write_json,
)
from flow_matching.path import GeodesicProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import RiemannianODESolver
from flow_matching.utils.manifolds import FlatTorus as FMFlatTorus
from flow_matching.utils.manifolds import Sphere as FMSphere

import manifoldfm
from manifoldfm.manifolds import SO3, FlatTorus, Sphere
from manifoldfm.paths import CondOT, GeodesicPath
from manifoldfm.solvers import solve_ode
from manifoldfm.solvers.steps import MANIFOLD_SCHEMES

try:  # the reference in extended precision; float64 with careful formulas otherwise
    import mpmath
except ImportError:  # pragma: no cover - mpmath ships with torch (through sympy)
    mpmath = None

PI = math.pi
F32, F64 = torch.float32, torch.float64

#: The geodesic angles of part 1 (label, value); the last row is exactly on the cut locus.
ANGLES: list[tuple[str, float]] = [
    ("1e-7", 1e-7),
    ("1e-5", 1e-5),
    ("1e-3", 1e-3),
    ("1e-1", 1e-1),
    ("1", 1.0),
    ("pi - 1e-3", PI - 1e-3),
    ("pi - 1e-5", PI - 1e-5),
    ("pi (cut locus)", PI),
]


# =============================================================================================
# Part 1: accuracy
# =============================================================================================


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _vee(a: Tensor) -> Tensor:
    """``w`` with ``hat(w) = (a - a^T) / 2`` (works for any dtype)."""
    return 0.5 * torch.stack(
        [a[..., 2, 1] - a[..., 1, 2], a[..., 0, 2] - a[..., 2, 0], a[..., 1, 0] - a[..., 0, 1]],
        dim=-1,
    )


def _rotvec_to_rotmat64(w: Tensor) -> Tensor:
    """Rodrigues' formula in float64 (used only to build test pairs at angles >= 1e-7)."""
    return roma.rotvec_to_rotmat(w)


def _pi_rotations() -> Tensor:
    """The nine rotations by pi whose matrices have entries in {0, +-1}: ``2 n n^T - I``."""
    eye = torch.eye(3, dtype=F64)
    axes = [eye[i] for i in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            axes += [eye[i] + eye[j], eye[i] - eye[j]]  # (e_i +- e_j) / sqrt 2, unnormalised
    mats = []
    for a in axes:
        n2 = float(a @ a)
        mats.append(2.0 * torch.outer(a, a) / n2 - eye)
    return torch.stack(mats)


def _wrap64(a: Tensor) -> Tensor:
    """Angles to [0, 2 pi) in float64."""
    return torch.remainder(a, 2 * PI)


def _to32_angles(a: Tensor) -> Tensor:
    """Cast float64 angles in [0, 2 pi) to float32, mapping the rounding onto 2 pi back to 0."""
    b = a.to(F32)
    return torch.where(b >= 2 * PI, torch.zeros_like(b), b)


def make_pairs(manifold: str, theta: float, cut: bool, n: int, g: torch.Generator):
    """``n`` float32 pairs ``(x, y)`` at geodesic angle ``theta`` (built in float64, rounded).

    On the cut locus the pairs are exact in float32: ``y = -x`` on the sphere, ``y = x P`` with
    ``P`` a signed-permutation rotation by pi on SO(3) (exact products), and on the torus
    every coordinate differs by the float32 value nearest to ``x + pi``.
    """
    if manifold == "S2":
        x = _unit(torch.randn(n, 3, generator=g, dtype=F64))
        e = torch.randn(n, 3, generator=g, dtype=F64)
        e = _unit(e - (e * x).sum(-1, keepdim=True) * x)
        if cut:
            x32 = x.to(F32)
            return x32, -x32
        y = math.cos(theta) * x + math.sin(theta) * e
        return x.to(F32), y.to(F32)
    if manifold == "SO3":
        q = _unit(torch.randn(n, 4, generator=g, dtype=F64))
        x = roma.unitquat_to_rotmat(q)
        if cut:
            pis = _pi_rotations()
            k = torch.randint(len(pis), (n,), generator=g)
            x32 = x.to(F32)
            return x32, x32 @ pis[k].to(F32)  # signed permutations: exact in float32
        axis = _unit(torch.randn(n, 3, generator=g, dtype=F64))
        y = x @ _rotvec_to_rotmat64(theta * axis)
        return x.to(F32), y.to(F32)
    if manifold == "T2":
        x = 2 * PI * torch.rand(n, 2, generator=g, dtype=F64)
        sign = torch.where(torch.rand(n, 2, generator=g, dtype=F64) < 0.5, -1.0, 1.0)
        y = _wrap64(x + sign * theta)
        return _to32_angles(x), _to32_angles(y)
    raise ValueError(manifold)


# ------------------------------------------------------------------ references


def reference_f64(manifold: str, x32: Tensor, y32: Tensor) -> tuple[Tensor, Tensor]:
    """Distance and logarithm (body frame on SO(3)) from the float32 inputs, float64 formulas.

    Sphere: both points normalised, angle ``atan2(|x x y|, <x, y>)`` (the products of float32
    numbers are exact in float64). SO(3): ``x^T y`` projected to the nearest rotation (SVD),
    angle ``atan2(|vee(R - R^T)|, tr R - 1)``. Torus: the float32 difference is exact in float64.
    """
    x, y = x32.to(F64), y32.to(F64)
    if manifold == "S2":
        x, y = _unit(x), _unit(y)
        c = (x * y).sum(-1)
        s = torch.linalg.vector_norm(torch.linalg.cross(x, y), dim=-1)
        theta = torch.atan2(s, c)
        p = y - c[:, None] * x
        pn = torch.linalg.vector_norm(p, dim=-1, keepdim=True)
        log = torch.where(pn > 0, theta[:, None] * p / pn.clamp_min(1e-300), torch.zeros_like(p))
        return theta, log
    if manifold == "SO3":
        m = x.mT @ y
        u, _, vh = torch.linalg.svd(m)
        r = u @ vh
        v = _vee(r)  # sin(theta) n
        s = torch.linalg.vector_norm(v, dim=-1)
        c = 0.5 * (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
        theta = torch.atan2(s, c)
        w = torch.where(s[:, None] > 0, theta[:, None] * v / s.clamp_min(1e-300)[:, None], 0 * v)
        return theta, w
    if manifold == "T2":
        d = torch.remainder(y - x + PI, 2 * PI) - PI
        return torch.linalg.vector_norm(d, dim=-1), d
    raise ValueError(manifold)


def reference_mp(manifold: str, x32: Tensor, y32: Tensor, dps: int = 40):
    """The same quantities in mpmath at ``dps`` digits (``None`` without mpmath)."""
    if mpmath is None:
        return None
    mp = mpmath.mp
    mp.dps = dps
    mpf = mpmath.mpf
    pi = mp.pi
    dists, logs = [], []
    for xa, ya in zip(x32.to(F64).tolist(), y32.to(F64).tolist()):
        if manifold == "S2":
            xv = [mpf(v) for v in xa]
            yv = [mpf(v) for v in ya]
            nx, ny = mp.sqrt(sum(v * v for v in xv)), mp.sqrt(sum(v * v for v in yv))
            xv, yv = [v / nx for v in xv], [v / ny for v in yv]
            c = sum(a * b for a, b in zip(xv, yv))
            cr = [
                xv[1] * yv[2] - xv[2] * yv[1],
                xv[2] * yv[0] - xv[0] * yv[2],
                xv[0] * yv[1] - xv[1] * yv[0],
            ]
            s = mp.sqrt(sum(v * v for v in cr))
            theta = mp.atan2(s, c)
            p = [b - c * a for a, b in zip(xv, yv)]
            pn = mp.sqrt(sum(v * v for v in p))
            log = [theta * v / pn for v in p] if pn > 0 else [mpf(0)] * 3
        elif manifold == "SO3":
            xm, ym = mp.matrix(xa), mp.matrix(ya)
            r = xm.T * ym
            for _ in range(100):  # Newton's iteration for the polar factor
                r_new = (r + mp.inverse(r).T) / 2
                done = mp.mnorm(r_new - r, 1) < mpf(10) ** (-dps + 5)
                r = r_new
                if done:
                    break
            v = [(r[2, 1] - r[1, 2]) / 2, (r[0, 2] - r[2, 0]) / 2, (r[1, 0] - r[0, 1]) / 2]
            s = mp.sqrt(sum(a * a for a in v))
            c = (r[0, 0] + r[1, 1] + r[2, 2] - 1) / 2
            theta = mp.atan2(s, c)
            log = [theta * a / s for a in v] if s > 0 else [mpf(0)] * 3
        else:
            d = [mpf(b) - mpf(a) for a, b in zip(xa, ya)]
            log = [a - 2 * pi * mp.floor((a + pi) / (2 * pi)) for a in d]
            theta = mp.sqrt(sum(a * a for a in log))
        dists.append(float(theta))
        logs.append([float(a) for a in log])
    return torch.tensor(dists, dtype=F64), torch.tensor(logs, dtype=F64)


# ------------------------------------------------------------------ the libraries


def _so3_naive(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    r = x.mT @ y
    c = (0.5 * (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)).clamp(-1.0, 1.0)
    theta = torch.acos(c)
    w = (theta / (2.0 * torch.sin(theta)))[..., None] * (2.0 * _vee(r))
    return theta, w


def _ours_so3_body(x: Tensor, u: Tensor) -> Tensor:
    """Body-frame vector ``w`` of our ambient tangent ``u = x hat(w)`` (solved in float64)."""
    return _vee(torch.linalg.solve(x.to(F64), u.to(F64)))


def library_ops(manifold: str) -> dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]]:
    """``{library: f(x, y) -> (dist, log)}``; ``log`` in the reference's coordinates."""
    if manifold == "S2":
        ours, geo, fm = Sphere(2), geoopt.Sphere(), FMSphere()
        return {
            "ours": lambda x, y: (ours.dist(x, y), ours.logmap(x, y)),
            "geoopt": lambda x, y: (geo.dist(x, y), geo.logmap(x, y)),
            "flow_matching": lambda x, y: (fm.dist(x, y), fm.logmap(x, y)),
        }
    if manifold == "SO3":
        so3 = SO3()
        return {
            "ours": lambda x, y: (so3.dist(x, y), so3.logmap(x, y)),
            "roma": lambda x, y: (
                roma.rotmat_geodesic_distance(x, y),
                roma.rotmat_to_rotvec(x.mT @ y),
            ),
            "naive acos": _so3_naive,
        }
    if manifold == "T2":
        tor, fmt = FlatTorus(2), FMFlatTorus()

        def fm_torus(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            log = fmt.logmap(x, y)
            return torch.linalg.vector_norm(log, dim=-1), log

        return {
            "ours": lambda x, y: (tor.dist(x, y), tor.logmap(x, y)),
            "flow_matching": fm_torus,
        }
    raise ValueError(manifold)


def _body(manifold: str, lib: str, x: Tensor, log: Tensor) -> Tensor:
    if manifold == "SO3" and lib == "ours":
        return _ours_so3_body(x, log)
    return log.to(F64)


def _log_error(
    manifold: str, cut: bool, x32: Tensor, log: Tensor, log_ref: Tensor, dist_ref: Tensor
) -> Tensor:
    """Error of ``log`` (float64, reference coordinates); on the cut locus the distance to the
    set of valid answers (every minimising geodesic)."""
    if not cut:
        return torch.linalg.vector_norm(log - log_ref, dim=-1)
    if manifold == "S2":  # any tangent vector of length dist_ref
        xh = _unit(x32.to(F64))
        radial = (log * xh).sum(-1)
        perp = torch.linalg.vector_norm(log - radial[:, None] * xh, dim=-1)
        return torch.sqrt(radial**2 + (perp - dist_ref) ** 2)
    if manifold == "SO3":  # +- pi n
        return torch.minimum(
            torch.linalg.vector_norm(log - log_ref, dim=-1),
            torch.linalg.vector_norm(log + log_ref, dim=-1),
        )
    # torus: each coordinate at (float32 resolution of) pi may go either way round
    alt = log_ref - 2 * PI * torch.sign(log_ref)
    err = torch.minimum((log - log_ref).abs(), (log - alt).abs())
    return torch.linalg.vector_norm(err, dim=-1)


def _reference_axis(manifold: str, x32: Tensor, y32: Tensor, log_ref: Tensor) -> Tensor:
    """At an exact rotation by pi the reference's own axis is undefined: take it from R + I."""
    if manifold != "SO3":
        return log_ref
    r = x32.to(F64).mT @ y32.to(F64)
    u, _, vh = torch.linalg.svd(r)
    nn_t = 0.5 * (u @ vh + torch.eye(3, dtype=F64))  # n n^T
    k = nn_t.diagonal(dim1=-2, dim2=-1).argmax(-1)
    col = nn_t[torch.arange(len(k)), :, k]
    return PI * _unit(col)


def _stats(err: Tensor, ref: Tensor) -> dict[str, Any]:
    """Max and median absolute and relative error over the finite outputs."""
    finite = torch.isfinite(err)
    out: dict[str, Any] = {"nonfinite": int((~finite).sum())}
    e = err[finite]
    r = ref[finite]
    pos = r > 0
    rel = e[pos] / r[pos]
    out["abs_max"] = float(e.max()) if e.numel() else math.nan
    out["abs_median"] = float(e.median()) if e.numel() else math.nan
    out["rel_max"] = float(rel.max()) if rel.numel() else math.nan
    out["rel_median"] = float(rel.median()) if rel.numel() else math.nan
    out["zero_reference"] = int((~pos).sum())
    return out


def _nonfinite_grad(f: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> int:
    """Number of points whose gradient of ``sum f(x, y)`` w.r.t. ``x`` or ``y`` is not finite."""
    xg = x.clone().requires_grad_(True)
    yg = y.clone().requires_grad_(True)
    try:
        out = f(xg, yg).sum()
        gx, gy = torch.autograd.grad(out, (xg, yg), allow_unused=True)
    except RuntimeError:
        return -1
    bad = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for gr in (gx, gy):
        if gr is not None:
            bad |= ~torch.isfinite(gr).reshape(x.shape[0], -1).all(-1)
    return int(bad.sum())


def nan_checks(manifold: str, n: int, g: torch.Generator) -> dict[str, dict[str, int]]:
    """Points (out of ``n``) with non-finite values at identical points and on the cut locus."""
    x, _ = make_pairs(manifold, 1.0, False, n, g)
    xc, yc = make_pairs(manifold, PI, True, n, g)
    out = {}
    for lib, op in library_ops(manifold).items():
        d, log = op(x, x.clone())
        log_ok = torch.isfinite(log).reshape(n, -1).all(-1)
        out[lib] = {
            "points": n,
            "dist(x,x) non-finite": int((~torch.isfinite(d)).sum()),
            "dist(x,x) max": float(d[torch.isfinite(d)].abs().max()),
            "logmap(x,x) non-finite": int((~log_ok).sum()),
            "|logmap(x,x)| max": float(
                log[torch.isfinite(log)].abs().max() if torch.isfinite(log).any() else math.nan
            ),
            "grad dist^2 at x=y non-finite": _nonfinite_grad(
                lambda a, b, op=op: op(a, b)[0] ** 2, x, x.clone()
            ),
            "grad dist^2 at cut non-finite": _nonfinite_grad(
                lambda a, b, op=op: op(a, b)[0] ** 2, xc, yc
            ),
            "grad |logmap|^2 at x=y non-finite": _nonfinite_grad(
                lambda a, b, op=op: (op(a, b)[1] ** 2).sum(-1), x, x.clone()
            ),
        }
    return out


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    g = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    ref_gap: dict[str, float] = {}
    for manifold in ("S2", "SO3", "T2"):
        rows = []
        gap = 0.0
        for label, theta in ANGLES:
            cut = theta == PI
            x32, y32 = make_pairs(manifold, theta, cut, args.pairs, g)
            d64, l64 = reference_f64(manifold, x32, y32)
            mp_ref = reference_mp(manifold, x32, y32)
            if mp_ref is None:
                dist_ref, log_ref = d64, l64
            else:
                dist_ref, log_ref = mp_ref
                scale = torch.where(dist_ref > 0, dist_ref, 1.0)
                gap = max(gap, float(((d64 - dist_ref).abs() / scale).max()))
                if not cut:
                    lg = torch.linalg.vector_norm(l64 - log_ref, dim=-1) / scale
                    gap = max(gap, float(lg.max()))
            if cut:
                log_ref = _reference_axis(manifold, x32, y32, log_ref)
            entry: dict[str, Any] = {
                "angle": label,
                "nominal": theta,
                "reference_dist_median": float(dist_ref.median()),
                "reference_dist_min": float(dist_ref.min()),
                "libraries": {},
            }
            for lib, op in library_ops(manifold).items():
                d, log = op(x32, y32)
                log64 = _body(manifold, lib, x32, log)
                d_err = (d.to(F64) - dist_ref).abs()
                l_err = _log_error(manifold, cut, x32, log64, log_ref, dist_ref)
                entry["libraries"][lib] = {
                    "dist": _stats(d_err, dist_ref),
                    "logmap": _stats(l_err, dist_ref),
                }
            rows.append(entry)
        results[manifold] = {"angles": rows, "nan_checks": nan_checks(manifold, args.pairs, g)}
        ref_gap[manifold] = gap
    return {
        "results": results,
        "reference": "mpmath (40 digits)" if mpmath is not None else "float64",
        "max_relative_gap_float64_vs_mpmath_reference": ref_gap,
        "seconds": time.perf_counter() - started,
    }


def _e(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if v == 0:
        return "0"
    return f"{v:.1e}"


def _cell(stats: dict[str, Any], key: str) -> str:
    s = _e(stats[key])
    if stats["nonfinite"]:
        s += f" ({stats['nonfinite']} NaN)"
    return s


MANIFOLD_TITLES = {"S2": "S^2", "SO3": "SO(3)", "T2": "T^2"}


def accuracy_tables(acc: dict[str, Any]) -> dict[str, str]:
    """Per manifold: a compact table of max relative errors, and a full table."""
    tables = {}
    for manifold, res in acc["results"].items():
        libs = list(res["angles"][0]["libraries"])
        header = ["angle", "ref. dist (median)"]
        for lib in libs:
            header += [f"{lib} dist", f"{lib} logmap"]
        rows = []
        for row in res["angles"]:
            cells = [row["angle"], f"{row['reference_dist_median']:.4g}"]
            for lib in libs:
                st = row["libraries"][lib]
                cells += [_cell(st["dist"], "rel_max"), _cell(st["logmap"], "rel_max")]
            rows.append(cells)
        tables[f"{manifold}_relative"] = markdown_table(header, rows)
        header = ["angle", "library", "dist abs", "dist rel", "logmap abs", "logmap rel"]
        rows = []
        for row in res["angles"]:
            for lib in libs:
                st = row["libraries"][lib]
                rows.append(
                    [
                        row["angle"],
                        lib,
                        _cell(st["dist"], "abs_max"),
                        _cell(st["dist"], "rel_max"),
                        _cell(st["logmap"], "abs_max"),
                        _cell(st["logmap"], "rel_max"),
                    ]
                )
        tables[f"{manifold}_full"] = markdown_table(header, rows)
    header = [
        "manifold",
        "library",
        "dist(x,x): value (max)",
        "dist(x,x)",
        "logmap(x,x)",
        "∇ dist² at x = y",
        "∇ |logmap|² at x = y",
        "∇ dist² on the cut locus",
    ]
    rows = []
    for manifold, res in acc["results"].items():
        for lib, c in res["nan_checks"].items():
            rows.append(
                [
                    MANIFOLD_TITLES[manifold],
                    lib,
                    _e(c["dist(x,x) max"]),
                    c["dist(x,x) non-finite"],
                    c["logmap(x,x) non-finite"],
                    c["grad dist^2 at x=y non-finite"],
                    c["grad |logmap|^2 at x=y non-finite"],
                    c["grad dist^2 at cut non-finite"],
                ]
            )
    tables["nonfinite"] = markdown_table(header, rows)
    return tables


# =============================================================================================
# Part 2: speed
# =============================================================================================


def _fm_time_grid(device: torch.device) -> Tensor:
    return torch.tensor([0.0, 1.0], device=device)


def path_candidates(name: str, x0: Tensor, x1: Tensor, t: Tensor) -> dict[str, Callable[[], Any]]:
    ours_m: Any
    if name == "S2":
        ours_m, fm_m = Sphere(2), FMSphere()
    else:
        ours_m, fm_m = FlatTorus(2), FMFlatTorus()
    ours = GeodesicPath(ours_m, CondOT())
    fm = GeodesicProbPath(CondOTScheduler(), fm_m)
    fns: dict[str, Callable[[], Any]] = {
        "ours": lambda: ours.sample(x0, x1, t),
        "ours, checks off": lambda: _nocheck(lambda: ours.sample(x0, x1, t)),
        "flow_matching": lambda: fm.sample(x_0=x0, x_1=x1, t=t),
    }
    if name == "S2":  # our path on a foreign manifold: forward-mode autodiff instead of closed form
        generic = GeodesicPath(geoopt.Sphere(), CondOT())
        fns["ours on geoopt.Sphere (jvp)"] = lambda: generic.sample(x0, x1, t)
    return fns


def _nocheck(fn: Callable[[], Any]) -> Any:
    with manifoldfm.checks(values=False):
        return fn()


def _wrapdiff(a: Tensor) -> Tensor:
    return torch.remainder(a + PI, 2 * PI) - PI


def check_paths(device: torch.device, n: int, seed: int) -> dict[str, Any]:
    """Ours and flow_matching agree on (x_t, u_t); ours' u_t is d x_t / dt (float64 FD)."""
    report: dict[str, Any] = {}
    for name in ("S2", "T2"):
        for dtype in (F64, F32):
            g = torch.Generator(device=device).manual_seed(seed)
            x0, x1 = _points(name, n, g, dtype, device)
            t = torch.rand(n, generator=g, dtype=dtype, device=device) * 0.98 + 0.01
            ours_m: Any = Sphere(2) if name == "S2" else FlatTorus(2)
            fm_m: Any = FMSphere() if name == "S2" else FMFlatTorus()
            s = GeodesicPath(ours_m, CondOT()).sample(x0, x1, t)
            f = GeodesicProbPath(CondOTScheduler(), fm_m).sample(x_0=x0, x_1=x1, t=t)
            dx = s.xt - f.x_t if name == "S2" else _wrapdiff(s.xt - f.x_t)
            entry = {
                "xt_max_abs_diff": float(dx.abs().max()),
                "ut_max_abs_diff": float((s.ut - f.dx_t).abs().max()),
            }
            if dtype == F64:
                h = 1e-6
                path = GeodesicPath(ours_m, CondOT())
                xp = path.sample(x0, x1, t + h).xt
                xm = path.sample(x0, x1, t - h).xt
                fd = (xp - xm) / (2 * h) if name == "S2" else _wrapdiff(xp - xm) / (2 * h)
                speed = ours_m.dist(x0, x1)
                entry["ut_vs_central_difference_max_abs"] = float((s.ut - fd).abs().max())
                entry["ut_speed_minus_dist_max_abs"] = float(
                    (torch.linalg.vector_norm(s.ut, dim=-1) - speed).abs().max()
                )
                if name == "S2":
                    entry["ut_radial_max_abs"] = float((s.ut * s.xt).sum(-1).abs().max())
            tol_xt = 1e-9 if dtype == F64 else 1e-4
            ok = entry["xt_max_abs_diff"] < tol_xt and entry["ut_max_abs_diff"] < tol_xt * 10
            if dtype == F64:
                ok = ok and entry["ut_vs_central_difference_max_abs"] < 1e-6
            entry["ok"] = bool(ok)
            report[f"{name} {str(dtype).removeprefix('torch.')}"] = entry
            if not ok:
                raise RuntimeError(f"geodesic paths disagree on {name} ({dtype}): {entry}")
    return report


def _points(name: str, n: int, g: torch.Generator, dtype: torch.dtype, device: torch.device):
    if name == "S2":
        m = Sphere(2)
        return (
            m.random_uniform(n, generator=g, dtype=dtype, device=device),
            m.random_uniform(n, generator=g, dtype=dtype, device=device),
        )
    m2 = FlatTorus(2)
    return (
        m2.random_uniform(n, generator=g, dtype=dtype, device=device),
        m2.random_uniform(n, generator=g, dtype=dtype, device=device),
    )


class RotationField:
    """``v(x, t) = (1 + t) x A^T`` with ``A`` a fixed skew matrix: tangent to S^2 everywhere."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        w = torch.tensor([0.3, -0.5, 0.8], dtype=dtype, device=device)
        z = torch.zeros((), dtype=dtype, device=device)
        self.at = torch.stack(
            [
                torch.stack([z, -w[2], w[1]]),
                torch.stack([w[2], z, -w[0]]),
                torch.stack([-w[1], w[0], z]),
            ]
        ).T.contiguous()

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return (x @ self.at) * (1.0 + t.reshape(-1, 1))


class TorusField:
    """``v(x, t) = (1 + t) (sin(x_2 + 0.5), cos(x_1))``: smooth and periodic."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.stack([torch.sin(x[:, 1] + 0.5), torch.cos(x[:, 0])], dim=-1) * (
            1.0 + t.reshape(-1, 1)
        )


class MLPField:
    """A small fixed MLP (``ToyMLP``: 3 hidden layers of 64 units) on the ambient coordinates
    (the sphere) or on ``(cos, sin)`` of the angles (the torus)."""

    def __init__(self, name: str, dtype: torch.dtype, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)  # initial weights only (benchmark script)
        self.torus = name == "T2"
        self.net = ToyMLP(4 if self.torus else 3).to(dtype=dtype, device=device)
        self.out = torch.nn.Linear(4, 2).to(dtype=dtype, device=device) if self.torus else None
        self.net.requires_grad_(False)
        if self.out is not None:
            self.out.requires_grad_(False)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.out is not None:
            feats = torch.cat([torch.cos(x), torch.sin(x)], dim=-1)
            return self.out(self.net(feats, t))
        return self.net(x, t)


def _zero_field(x: Tensor, t: Tensor) -> Tensor:
    """``v = 0``: a step then costs what the solver itself does (``--fields zero``)."""
    return torch.zeros_like(x)


def _field(kind: str, name: str, dtype: torch.dtype, device: torch.device, seed: int):
    if kind == "zero":
        return _zero_field
    if kind == "mlp":
        return MLPField(name, dtype, device, seed)
    return RotationField(dtype, device) if name == "S2" else TorusField()


def step_candidates(
    name: str, method: str, field: Any, x0: Tensor, schemes: tuple[str, ...]
) -> dict[str, Callable[[], Any]]:
    ours_m: Any = Sphere(2) if name == "S2" else FlatTorus(2)
    fm_m: Any = FMSphere() if name == "S2" else FMFlatTorus()

    def v(x: Tensor, t: Tensor) -> Tensor:
        return field(x, t)

    def fm_v(x: Tensor, t: Tensor) -> Tensor:
        return field(x, t)

    solver = RiemannianODESolver(fm_m, fm_v)
    grid = _fm_time_grid(x0.device)
    fns: dict[str, Callable[[], Any]] = {}
    for scheme in schemes:
        fns[f"ours {scheme}"] = lambda scheme=scheme: (
            solve_ode(v, x0, steps=1, method=method, manifold=ours_m, manifold_scheme=scheme).x
        )
    fns["ours projection, checks off"] = lambda: _nocheck(
        lambda: (
            solve_ode(
                v, x0, steps=1, method=method, manifold=ours_m, manifold_scheme="projection"
            ).x
        )
    )
    fns["flow_matching"] = lambda: solver.sample(
        x0, None, method=method, time_grid=grid, projx=True, proju=True
    )
    return fns


#: The operations of one projection-method step, timed one by one (``components``).
COMPONENTS = ("field v(x, t)", "proju", "projx", "expmap", "finiteness flag isfinite(x).all()")


def component_candidates(name: str, x: Tensor) -> dict[str, Callable[[], Any]]:
    """Each manifold operation of one step, ours and flow_matching's, on the same inputs."""
    ours_m: Any = Sphere(2) if name == "S2" else FlatTorus(2)
    fm_m: Any = FMSphere() if name == "S2" else FMFlatTorus()
    field = _field("rotation", name, x.dtype, x.device, 0)
    t = torch.full((x.shape[0],), 0.5, dtype=x.dtype, device=x.device)
    u = ours_m.proju(x, field(x, t))
    y = x + 0.1 * u  # an ambient point off the manifold (sphere) or out of range (torus)
    return {
        "field v(x, t)": lambda: field(x, t),
        "ours proju": lambda: ours_m.proju(x, u),
        "flow_matching proju": lambda: fm_m.proju(x, u),
        "ours projx": lambda: ours_m.projx(y),
        "flow_matching projx": lambda: fm_m.projx(y),
        "ours expmap": lambda: ours_m.expmap(x, u),
        "flow_matching expmap": lambda: fm_m.expmap(x, u),
        "finiteness flag isfinite(x).all()": lambda: torch.isfinite(x).all(),
    }


def check_steps(device: torch.device, n: int, seed: int) -> dict[str, Any]:
    """In float64, ours (projection scheme) and flow_matching take the same step for euler and
    midpoint; rk4 differs (classical RK4 vs flow_matching's 3/8 rule), so its gap is O(h^5)."""
    report = {}
    for name in ("S2", "T2"):
        g = torch.Generator(device=device).manual_seed(seed)
        x0, _ = _points(name, n, g, F64, device)
        field = _field("rotation", name, F64, device, seed)
        ours_m: Any = Sphere(2) if name == "S2" else FlatTorus(2)
        fm_m: Any = FMSphere() if name == "S2" else FMFlatTorus()
        solver = RiemannianODESolver(fm_m, lambda x, t, field=field: field(x, t))
        for method in ("euler", "midpoint", "rk4"):
            for h in (1.0, 0.1):
                ours = solve_ode(
                    field,
                    x0,
                    steps=1,
                    t1=h,
                    method=method,
                    manifold=ours_m,
                    manifold_scheme="projection",
                )
                fm = solver.sample(
                    x0,
                    None,
                    method=method,
                    time_grid=torch.tensor([0.0, h], dtype=F64, device=device),
                )
                diff = ours.x - fm if name == "S2" else _wrapdiff(ours.x - fm)
                report[f"{name} {method} h={h}"] = {
                    "max_abs_diff": float(diff.abs().max()),
                    "nfe_ours": ours.nfe,
                }
            if method != "rk4" and report[f"{name} {method} h=1.0"]["max_abs_diff"] > 1e-12:
                raise RuntimeError(f"one {method} step differs on {name}: {report}")
    return report


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    started = time.perf_counter()
    schemes = tuple(s for s in ("projection", *MANIFOLD_SCHEMES) if s in MANIFOLD_SCHEMES)
    schemes = tuple(dict.fromkeys(schemes))  # projection first, then expmap and any others
    checks = {
        "paths": check_paths(device, args.batch, args.seed),
        "steps": check_steps(device, 256, args.seed),
    }
    raw: dict[str, dict[str, list[float]]] = {}
    calls: dict[str, dict[str, int]] = {}
    configs: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("S2", "T2"):
        configs.append((f"path {name}", ("path", name)))
    for name in ("S2", "T2"):
        configs.append((f"components {name}", ("components", name)))
    for kind in args.fields:
        for name in ("S2", "T2"):
            for method in args.methods:
                configs.append((f"step {name} {method} {kind}", ("step", name, method, kind)))
    for pas in range(args.passes):
        for key, cfg in configs:
            g = torch.Generator(device=device).manual_seed(args.seed + pas)
            name = cfg[1]
            x0, x1 = _points(name, args.batch, g, F32, device)
            if cfg[0] == "path":
                t = torch.rand(args.batch, generator=g, device=device)
                fns = path_candidates(name, x0, x1, t)
            elif cfg[0] == "components":
                fns = component_candidates(name, x0)
            else:
                field = _field(cfg[3], name, F32, device, args.seed)
                fns = step_candidates(name, cfg[2], field, x0, schemes)
            tm = compare_timings(fns, device=device, rounds=args.rounds, warmup=args.warmup)
            for cand, st in tm.items():
                raw.setdefault(key, {}).setdefault(cand, []).extend(st["samples_us"])
                calls.setdefault(key, {})[cand] = st["calls_per_round"]
            print(
                f"pass {pas} {key}: "
                + ", ".join(f"{k} {v['median_us']:.0f}us" for k, v in tm.items()),
                flush=True,
            )
    results = []
    for key, cfg in configs:
        timings = {c: summarize(xs, calls_per_round=calls[key][c]) for c, xs in raw[key].items()}
        med = {c: v["median_us"] for c, v in timings.items()}
        entry: dict[str, Any] = {
            "config": key,
            "kind": cfg[0],
            "manifold": cfg[1],
            "timings": timings,
        }
        if cfg[0] != "components":
            ours_key = "ours" if cfg[0] == "path" else "ours projection"
            entry["ratio_flow_matching_over_ours"] = med["flow_matching"] / med[ours_key]
        if cfg[0] == "step":
            entry["method"], entry["field"] = cfg[2], cfg[3]
            entry["ratios_flow_matching_over"] = {
                c: med["flow_matching"] / m for c, m in med.items() if c != "flow_matching"
            }
        results.append(entry)
    return {
        "checks": checks,
        "schemes": list(schemes),
        "results": results,
        "seconds": time.perf_counter() - started,
    }


def _us(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def speed_tables(sp: dict[str, Any]) -> dict[str, str]:
    tables = {}
    path_rows = []
    for r in sp["results"]:
        if r["kind"] != "path":
            continue
        med = {c: v["median_us"] for c, v in r["timings"].items()}
        generic = med.get("ours on geoopt.Sphere (jvp)")
        path_rows.append(
            [
                MANIFOLD_TITLES[r["manifold"]],
                _us(med["ours"]),
                _us(med["ours, checks off"]),
                "n/a" if generic is None else _us(generic),
                _us(med["flow_matching"]),
                f"{r['ratio_flow_matching_over_ours']:.1f}x",
            ]
        )
    tables["paths"] = markdown_table(
        [
            "manifold",
            "ours (µs)",
            "ours, checks off (µs)",
            "ours on geoopt.Sphere, jvp (µs)",
            "flow_matching (µs)",
            "ours vs flow_matching",
        ],
        path_rows,
    )
    comp = {r["manifold"]: r["timings"] for r in sp["results"] if r["kind"] == "components"}
    rows = []
    for op in COMPONENTS:
        row = [op]
        for name in ("S2", "T2"):
            tm = comp.get(name, {})
            if op in tm:  # the same call for both (the field) or ours only (the flag)
                shared = op.startswith("field")
                row += [_us(tm[op]["median_us"]), "same" if shared else "none"]
            else:
                row += [_us(tm[f"{who} {op}"]["median_us"]) for who in ("ours", "flow_matching")]
        rows.append(row)
    tables["components"] = markdown_table(
        [
            "operation (µs)",
            "S^2 ours",
            "S^2 flow_matching",
            "T^2 ours",
            "T^2 flow_matching",
        ],
        rows,
    )
    schemes = sp["schemes"]
    for kind in sorted({r.get("field") for r in sp["results"] if r["kind"] == "step"}):
        rows = []
        for r in sp["results"]:
            if r["kind"] != "step" or r["field"] != kind:
                continue
            med = {c: v["median_us"] for c, v in r["timings"].items()}
            row = [MANIFOLD_TITLES[r["manifold"]], r["method"]]
            row += [_us(med[f"ours {s}"]) for s in schemes]
            row += [_us(med["ours projection, checks off"]), _us(med["flow_matching"])]
            row += [f"{r['ratios_flow_matching_over'][f'ours {s}']:.2f}x" for s in schemes]
            rows.append(row)
        header = ["manifold", "method"]
        header += [f"ours {s} (µs)" for s in schemes]
        header += ["ours projection, checks off (µs)", "flow_matching (µs)"]
        header += [f"ours {s} vs flow_matching" for s in schemes]
        tables[f"steps_{kind}"] = markdown_table(header, rows)
    return tables


# =============================================================================================


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=["accuracy", "speed", "both"], default="both")
    p.add_argument("--device", default="cpu", help="device of the speed part")
    p.add_argument("--pairs", type=int, default=256, help="pairs per angle (accuracy)")
    p.add_argument("--batch", type=int, default=4096, help="batch size (speed)")
    p.add_argument("--methods", nargs="+", default=["euler", "midpoint", "rk4"])
    p.add_argument(
        "--fields",
        nargs="+",
        choices=["rotation", "mlp", "zero"],
        default=["rotation", "mlp"],
        help="zero: a field that returns zeros, so that a step costs the solver's own work",
    )
    p.add_argument("--rounds", type=int, default=15, help="timed rounds per pass")
    p.add_argument("--passes", type=int, default=3, help="passes over all configurations")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-accuracy", type=Path, default=RESULTS / "manifolds_accuracy.json")
    p.add_argument("--out-speed", type=Path, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    if args.part in ("accuracy", "both"):
        load = os.getloadavg()
        acc = run_accuracy(args)
        tables = accuracy_tables(acc)
        write_json(
            args.out_accuracy,
            {
                "benchmark": "manifolds_accuracy",
                "machine": {**machine_info("cpu"), "load_average_at_start": load},
                "config": config,
                "note": "float32 inputs; errors against the reference computed from the same "
                "inputs cast up; max over the pairs of each angle; on the cut locus the error "
                "of logmap is the distance to the set of valid answers",
                **acc,
                "tables_markdown": tables,
            },
        )
        for key, table in tables.items():
            print(f"\n{key}\n{table}")
        print(f"\nwritten {args.out_accuracy} ({acc['seconds']:.0f} s)")

    if args.part in ("speed", "both"):
        device = torch.device(args.device)
        out = args.out_speed or RESULTS / f"manifolds_speed_{device.type}.json"
        load = os.getloadavg()
        sp = run_speed(args)
        tables = speed_tables(sp)
        write_json(
            out,
            {
                "benchmark": "manifolds_speed",
                "machine": {
                    **machine_info(device),
                    "load_average_at_start": load,
                    "load_average_at_end": os.getloadavg(),
                },
                "config": config,
                "note": "median time per call in microseconds over interleaved rounds; ratio = "
                "flow_matching's time / ours (> 1: ours faster)",
                **sp,
                "tables_markdown": tables,
            },
        )
        for key, table in tables.items():
            print(f"\n{key}\n{table}")
        print(f"\nwritten {out} ({sp['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
