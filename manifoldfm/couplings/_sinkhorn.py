"""Entropic optimal transport solvers (private).

* :func:`sinkhorn`: Sinkhorn with epsilon scaling, absorption of the scalings into log-domain
  potentials (so it stays finite for any regularisation however small next to the costs) and
  over-relaxation at the target regularisation, in torch on the cost's device.
* :func:`approx_duals`: a few stages of kernel Sinkhorn with absorption of the scalings into the
  log potentials (Schmitzer 2019), in NumPy float32 on the host. It gives approximate OT dual
  potentials cheaply; the exact assignment solver uses them to pre-reduce the cost matrix.

References:
    M. Cuturi. Sinkhorn distances: lightspeed computation of optimal transport. NeurIPS 2013.
    B. Schmitzer. Stabilized sparse scaling algorithms for entropy regularized transport
    problems. SIAM J. Sci. Comput. 41(3), 2019.
    J. Feydy et al. Interpolating between optimal transport and MMD using Sinkhorn divergences.
    AISTATS 2019 (epsilon scaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["SinkhornState", "approx_duals", "approx_duals_torch", "sinkhorn"]


@dataclass(frozen=True)
class SinkhornState:
    """Dual potentials of an entropic plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / reg)``."""

    f: Tensor
    g: Tensor
    reg: float
    iterations: int
    marginal_error: float  # L1 error of the column marginal (rows are exact)
    converged: bool


def sinkhorn(
    cost: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    reg: float,
    *,
    max_iter: int,
    tol: float,
    scaling: float = 0.5,
    stage_iter: int = 10,
    omega: float = 1.8,
    check_every: int = 10,
    absorb_at: float = 40.0,
) -> SinkhornState:
    """Stabilised Sinkhorn with epsilon scaling and over-relaxation.

    Potentials are kept in the log domain: ``f = f0 + eps log u``, ``g = g0 + eps log v``,
    where the anchors ``f0, g0`` define the kernel ``K = exp((f0 + g0 - C) / eps)`` and the
    scalings ``u, v`` are updated by matrix-vector products (``u = 1 / K (b v)``,
    ``v = 1 / K^T (a u)``). Whenever ``|log u|`` or ``|log v|`` exceeds ``absorb_at``, and at
    every change of ``eps``, the scalings are absorbed into the anchors and the kernel is
    recomputed, so nothing overflows or underflows however small ``reg`` is next to the costs.
    ``eps`` starts at the cost range and is multiplied by ``scaling`` every ``stage_iter``
    iterations until it reaches ``reg``; there the updates are over-relaxed
    (``log u <- (1 - omega) log u + omega log u_new``, which speeds up the slow small-``reg``
    regime several-fold) and fall back to plain updates if the marginal error ever grows.
    Stops when the L1 error of the column marginal is at most ``tol`` (checked every
    ``check_every`` iterations, one host sync each) or after ``max_iter`` iterations in all.

    Args:
        cost: ``(n, m)`` float64 cost matrix.
        log_a, log_b: log marginal weights, shapes ``(n,)`` and ``(m,)`` (``-inf`` allowed in
            ``log_b``).
        reg: target regularisation, > 0, in the units of ``cost``.
        max_iter: maximum total number of iterations (one row and one column update each).
        tol: tolerance on the L1 column-marginal error.

    Returns:
        A :class:`SinkhornState` whose ``f`` was computed last from ``g``, so the row
        marginals are exact.

    References:
        A. Thibault, L. Chizat, C. Dossal, N. Papadakis. Overrelaxed Sinkhorn-Knopp algorithm
        for regularized optimal transport. Algorithms 14(5), 2021.
    """
    if cost.device.type == "cpu":
        # on the host everything runs in single-threaded NumPy: a few hundred small
        # operations per solve, each of which would wake (and, on a busy machine, stall on)
        # torch's thread pool
        with np.errstate(all="ignore"):
            out = _sinkhorn_loop(
                _NUMPY,
                cost.detach().numpy(),
                log_a.detach().numpy(),
                log_b.detach().numpy(),
                reg,
                max_iter=max_iter,
                tol=tol,
                scaling=scaling,
                stage_iter=stage_iter,
                omega=omega,
                check_every=check_every,
                absorb_at=absorb_at,
            )
        f, g, it, err = out
        f, g = torch.from_numpy(f), torch.from_numpy(g)
    else:
        f, g, it, err = _sinkhorn_loop(
            _TORCH,
            cost,
            log_a,
            log_b,
            reg,
            max_iter=max_iter,
            tol=tol,
            scaling=scaling,
            stage_iter=stage_iter,
            omega=omega,
            check_every=check_every,
            absorb_at=absorb_at,
        )
    return SinkhornState(f=f, g=g, reg=reg, iterations=it, marginal_error=err, converged=err <= tol)


class _Ops:
    """The handful of array operations the Sinkhorn loop needs, for NumPy or torch arrays."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.is_torch = xp is torch

    def mv(self, kern: Any, x: Any) -> Any:  # kern @ x
        return kern @ x if self.is_torch else np.einsum("ij,j->i", kern, x)

    def mtv(self, kern: Any, x: Any) -> Any:  # kern.T @ x
        return kern.T @ x if self.is_torch else np.einsum("ij,i->j", kern, x)

    def lse_rows(self, z: Any) -> Any:  # logsumexp over the last axis
        if self.is_torch:
            return torch.logsumexp(z, dim=1)
        top = z.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        return np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]

    def scalar(self, x: Any) -> float:
        return float(x)


_NUMPY = _Ops(np)
_TORCH = _Ops(torch)


def _sinkhorn_loop(
    ops: _Ops,
    cost: Any,
    log_a: Any,
    log_b: Any,
    reg: float,
    *,
    max_iter: int,
    tol: float,
    scaling: float,
    stage_iter: int,
    omega: float,
    check_every: int,
    absorb_at: float,
) -> tuple[Any, Any, int, float]:
    xp = ops.xp
    a = xp.exp(log_a)
    b = xp.exp(log_b)
    f = cost[:, 0] * 0.0
    # the c-transform of zero: f + g - C <= 0 with a zero in every column
    g = cost.min(0)[0] if ops.is_torch else cost.min(axis=0)
    span = ops.scalar(cost.max() - cost.min())
    eps = max(reg, span)
    it = 0
    err = math.inf
    while True:
        final = eps <= reg
        kern = xp.exp((f[:, None] + g[None, :] - cost) / eps)
        log_u = f * 0.0
        log_v = g * 0.0
        om = omega if final else 1.0
        last_err = math.inf
        k = 0
        while it < max_iter:
            lu_new = -xp.log(ops.mv(kern, b * xp.exp(log_v)))
            log_u = lu_new if om == 1.0 else log_u + om * (lu_new - log_u)
            lv_new = -xp.log(ops.mtv(kern, a * xp.exp(log_u)))
            it += 1
            k += 1
            if not final:
                log_v = lv_new
                if k >= stage_iter:
                    break
                continue
            if k % check_every == 0 or it >= max_iter:
                # column sums with (u, v) are b v (K^T a u) = b exp(log_v - lv_new)
                err = ops.scalar(xp.abs(b * xp.exp(log_v - lv_new) - b).sum())
                if not math.isfinite(err):
                    # an over-relaxed step went astray: restart from the anchors, plainly
                    log_u = f * 0.0
                    log_v = g * 0.0
                    om, last_err = 1.0, math.inf
                    continue
                if err <= tol:
                    break
                if err > last_err:
                    om = 1.0
                last_err = err
                big = max(ops.scalar(xp.abs(log_u).max()), ops.scalar(xp.abs(lv_new).max()))
                if big > absorb_at:
                    log_v = lv_new
                    break
            log_v = lv_new if om == 1.0 else log_v + om * (lv_new - log_v)
        f = f + eps * log_u
        g = g + eps * log_v
        if final and (err <= tol or it >= max_iter):
            break
        if not final:
            eps = max(eps * scaling, reg)
        if it >= max_iter:
            break
    # one exact row update so that the rows of the plan sum to a
    f = -reg * ops.lse_rows((g[None, :] - cost) / reg + log_b[None, :])
    return f, g, it, err


#: Duals larger than this many times a typical cost entry are refused: ``C - f - g`` in float64
#: would round away the differences that decide the assignment (a few huge entries, such as
#: penalties of forbidden pairs, can inflate the duals so).
_DUALS_MAX_RATIO = 1024.0
#: ... and duals larger than this many times the size of the small entries of a row (see
#: :func:`_scales`): where most entries are penalties, the typical entry is a penalty and
#: the first test passes duals of a penalty's size, whose float64 rounding in ``C - f - g``
#: (a few units at 1e17) would swamp the costs that decide the assignment. At this ratio
#: the rounding stays below ``2e-10`` of the small entries. Measured: 1.0-160 on Gaussian,
#: uniform, spherical and permuted batches of 256 and 1024 points in 2 to 3072 dimensions
#: (the small entries shrink with the batch in 2-D), 7e12-1e18 with 60-90 % penalties.
_DUALS_MAX_SMALL_RATIO = 1e6
#: The rows sampled for the small-entry size, and the rank of the entry taken in each.
_SMALL_ROWS = 8
_SMALL_RANK = 8


def _scales(sub: np.ndarray) -> tuple[float, float, float]:
    """``(spread, typical, small)`` of a float64 sample of rows of the cost matrix.

    ``spread`` sets the regularisation schedule: the standard deviation, or the interquartile
    range / 1.349 when smaller (a few huge entries must not make the schedule start far above
    the costs that matter; the two agree on Gaussian-like costs). ``typical`` is the size of a
    typical entry, ``|median| + spread``, and ``small`` the median over a few rows of the size
    of their 8th smallest entry: the yardsticks of the duals' size.
    """
    rows = sub[:: max(1, sub.shape[0] // _SMALL_ROWS)]
    rank = min(_SMALL_RANK, rows.shape[1]) - 1
    kth = np.partition(rows, rank, axis=1)[:, rank]
    np.abs(kth, out=kth)
    kth.sort()  # the median by hand: np.median costs more than the partition here
    small = float(kth[kth.size // 2])
    flat = sub.ravel()
    flat = flat[:: max(1, flat.size // 1024)]  # ~1000 entries: 40 us, not 140 (percentile)
    std = float(flat.std())
    k = flat.size
    part = np.partition(flat, [k // 4, k // 2, (3 * k) // 4])
    q25, q50, q75 = float(part[k // 4]), float(part[k // 2]), float(part[(3 * k) // 4])
    iqr = (q75 - q25) / 1.349
    spread = min(std, iqr) if iqr > 0.0 else std
    return spread, abs(q50) + spread, small


def _duals_usable(f_max: float, g_max: float, typical: float, small: float) -> bool:
    size = f_max + g_max
    return (
        math.isfinite(size)
        and size <= _DUALS_MAX_RATIO * typical
        and size <= _DUALS_MAX_SMALL_RATIO * small
    )


#: Up to this many entries the dual pre-reduction's matrix-vector products go through NumPy's
#: BLAS, which runs them on the calling thread there (about 4 against 7 us at 256 x 256); on
#: larger matrices it starts threads, which stall whenever another process holds a core (a
#: 1024 x 1024 product: 4 ms at the 99th percentile against 0.12 ms for torch's), so torch's
#: ``mv`` takes over.
_NUMPY_MV_MAX = 512 * 512
#: The dual pre-reduction checks from this regularisation (times the cost's spread) on ...
_CHECK_BELOW = 0.03
#: ... whether this fraction of the rows have distinct cheapest columns, and then stops.
_DISTINCT_ENOUGH = 0.97


def approx_duals(
    cost: np.ndarray,
    *,
    rel_eps: float = 0.001,
    rel_start: float = 0.3,
    scaling: float = 0.3,
    inner: int = 3,
    omega: float = 1.8,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Approximate dual potentials ``(f, g)`` of the uniform OT problem on a square ``cost``.

    Over-relaxed kernel Sinkhorn in float32 with the scalings absorbed into the log potentials
    after each stage of ``inner`` iterations; the regularisation goes from ``rel_start`` times
    the cost's standard deviation (or its range if smaller) down to ``rel_eps`` times it by
    factors ``scaling``. The marginals are taken as all ones (``u = 1 / K v``,
    ``v = 1 / K^T u``): for a square problem that scales the plan by ``n`` and shifts ``f`` and
    ``g`` by opposite constants, which the reduction ``C - f - g`` does not see. Over-relaxation
    (``log u <- (1 - omega) log u + omega log u_new``) roughly halves the assignment time that
    follows on 2-D data. Starting at 0.3 rather than 1 times the spread saves a stage: 5-25 %
    less time for the reduction and the assignment together at 256-1024 points in 2 and 3072
    dimensions (Gaussian and toy batches). Only a heuristic: callers use ``C - f - g``, which
    has the same optimal assignments as ``C``. The spread is the standard deviation of a
    subsample of the entries, or its interquartile range / 1.349 when smaller, so that a few
    huge entries do not set the schedule. Returns ``None`` for a constant cost, costs beyond
    what float32 carries comfortably, or duals that are non-finite, more than
    ``_DUALS_MAX_RATIO`` times a typical entry or more than ``_DUALS_MAX_SMALL_RATIO`` times a
    row's small entries (float64 ``C - f - g`` would then round away the differences between
    assignments); callers then go without.

    The element-wise work runs in NumPy on one thread, and so do the matrix-vector products:
    NumPy's BLAS up to ``512 x 512`` entries (where it stays on the calling thread), torch's
    single-threaded ``mv`` above (where NumPy's BLAS would start threads). These are some two
    hundred small operations whose cost a thread pool would not repay, and which would each
    stall whenever another process holds a core the pool is waiting for.
    """
    n, m = cost.shape
    g0 = cost.min(axis=0)
    lo = float(g0.min())
    hi = float(cost.max())
    span = hi - lo
    if not (max(abs(lo), abs(hi)) < 1e30 and math.isfinite(span)):
        return None  # beyond what float32 carries comfortably
    # the scale only sets the regularisation schedule: a strided subsample is enough
    std, typical, small = _scales(np.asarray(cost[:: max(1, n // 64)], dtype=np.float64))
    if not std > 1e-30:
        return None  # constant
    eps_final = rel_eps * std
    eps = max(min(span, rel_start * std), eps_final)
    f = np.zeros(n)
    g = g0.astype(np.float64)
    # the reduced cost C - f - g in float32 (f = 0, g = column minima), updated in place
    red = np.subtract(cost, g0[None, :], dtype=np.float32)
    kern = np.empty((n, m), dtype=np.float32)
    kern_t = torch.from_numpy(kern)
    if n * m <= _NUMPY_MV_MAX:
        # NumPy's BLAS runs these on the calling thread: half torch's time with its wrapping
        def k_v(x: np.ndarray) -> np.ndarray:
            return kern @ x

        def kt_u(x: np.ndarray) -> np.ndarray:
            return x @ kern
    else:

        def k_v(x: np.ndarray) -> np.ndarray:
            return torch.mv(kern_t, torch.from_numpy(x)).numpy()

        def kt_u(x: np.ndarray) -> np.ndarray:
            return torch.mv(kern_t.T, torch.from_numpy(x)).numpy()

    log_u = np.zeros(n, dtype=np.float32)
    log_v = np.zeros(m, dtype=np.float32)
    one_minus = np.float32(1.0 - omega)
    om = np.float32(omega)
    with np.errstate(all="ignore"):
        while True:
            np.multiply(red, np.float32(-1.0 / eps), out=kern)
            np.exp(kern, out=kern)
            for it in range(inner):
                # log u_new = -log(K exp(log v)); over-relaxed except on a stage's first step
                t_u = -np.log(k_v(np.exp(log_v)))
                log_u = t_u if it == 0 else one_minus * log_u + om * t_u
                t_v = -np.log(kt_u(np.exp(log_u)))
                log_v = t_v if it == 0 else one_minus * log_v + om * t_v
            du = np.float32(eps) * log_u
            dv = np.float32(eps) * log_v
            f += du
            g += dv
            if eps <= eps_final:
                break
            red -= du[:, None]  # float32 passes
            red -= dv[None, :]
            if eps <= _CHECK_BELOW * std:
                # good enough once nearly every row has its own cheapest column: the
                # assignment solver then has little left to do (typical of high dimensions)
                claimed = np.bincount(red.argmin(axis=1), minlength=m).astype(bool).sum()
                if claimed >= _DISTINCT_ENOUGH * n:
                    break
            log_u = np.zeros(n, dtype=np.float32)
            log_v = np.zeros(m, dtype=np.float32)
            eps = max(eps * scaling, eps_final)
    if not _duals_usable(float(np.abs(f).max()), float(np.abs(g).max()), typical, small):
        return None
    return f, g


def approx_duals_torch(
    cost: Tensor,
    *,
    rel_eps: float = 1e-5,
    rel_start: float = 0.3,
    scaling: float = 0.3,
    inner: int = 6,
    omega: float = 1.8,
) -> tuple[Tensor, Tensor] | None:
    """:func:`approx_duals` in torch on ``cost``'s device; float64 ``(f, g)`` on that device.

    The same schedule and over-relaxation, with log-domain updates
    (``log u = -logsumexp(log v - red / eps)``) in float32, so no row underflows however
    small ``eps`` is next to the costs. Made for accelerators, where a pass over the matrix
    costs microseconds: the defaults go ten times further down in ``eps`` with twice the
    iterations per stage, which shortens the host solver's augmenting paths (at 4096 points
    in 2-D, 0.23 s against 1.1 s for the assignment after the reduction on one CPU core).
    Returns ``None`` where :func:`approx_duals` does (constant cost, costs beyond what float32
    carries, non-finite or oversized duals).
    """
    n, m = cost.shape
    c64 = cost.detach().to(torch.float64)
    lo = float(c64.min())
    hi = float(c64.max())
    span = hi - lo
    if not (max(abs(lo), abs(hi)) < 1e30 and math.isfinite(span)):
        return None
    std, typical, small = _scales(c64[:: max(1, n // 64)].cpu().numpy())
    if not std > 1e-30:
        return None
    eps_final = rel_eps * std
    eps = max(min(span, rel_start * std), eps_final)
    g = c64.amin(0)
    f = torch.zeros(n, dtype=torch.float64, device=cost.device)
    red = (c64 - g[None, :]).to(torch.float32)
    while True:
        scaled = red * (-1.0 / eps)
        log_u = torch.zeros(n, dtype=torch.float32, device=cost.device)
        log_v = torch.zeros(m, dtype=torch.float32, device=cost.device)
        for it in range(inner):
            t_u = -torch.logsumexp(scaled + log_v[None, :], dim=1)
            log_u = t_u if it == 0 else torch.lerp(log_u, t_u, omega)
            t_v = -torch.logsumexp(scaled + log_u[:, None], dim=0)
            log_v = t_v if it == 0 else torch.lerp(log_v, t_v, omega)
        du = eps * log_u
        dv = eps * log_v
        f += du
        g += dv
        if eps <= eps_final:
            break
        red -= du[:, None]
        red -= dv[None, :]
        if eps <= _CHECK_BELOW * std:
            claimed = torch.zeros(m, dtype=torch.bool, device=cost.device)
            claimed[red.argmin(dim=1)] = True
            if int(claimed.sum()) >= _DISTINCT_ENOUGH * n:
                break
        eps = max(eps * scaling, eps_final)
    if not _duals_usable(float(f.abs().max()), float(g.abs().max()), typical, small):
        return None
    return f, g
