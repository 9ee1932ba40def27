"""Exact linear assignment (equal-size uniform optimal transport) solvers (private).

Two solvers, both returning an optimal permutation:

* ``"lsa"`` (host): SciPy's shortest-augmenting-path solver (``linear_sum_assignment``, a
  Jonker-Volgenant variant) run on the *reduced* matrix ``C - f - g``, where ``f, g`` are
  approximate OT dual potentials from a few float32 Sinkhorn stages (:func:`approx_duals` on
  the host for CPU tensors and small accelerator tensors; :func:`approx_duals_torch`, with more
  stages, on the device for accelerator tensors from 1024 points). On the device route the
  solve is first tried on sparse candidates (the 8 smallest reduced costs of each row, sent to
  SciPy's sparse Jonker-Volgenant solver) and certified optimal on the whole matrix by exact
  duals (:func:`_sparse_certified`); only if that declines does the reduced float64 matrix go
  to the host.
  Subtracting a row constant and a column constant changes the cost of every permutation by the
  same amount, so the optimum is exactly that of ``C``; but with near-optimal duals the
  augmenting paths are short, which makes the solve about 5-20 times faster than on ``C``
  itself at 256-1024 points (measured on Gaussian batches in 2 and 3072 dimensions).
* ``"auction"`` (any device, torch): Bertsekas' auction with epsilon scaling, vectorised over all
  unassigned rows (Jacobi bidding), warm-started with log-domain Sinkhorn prices. At the end
  every row is within ``eps_final`` of its best object (epsilon complementary slackness), so the
  permutation's cost exceeds the optimum by at most the duality gap
  ``sum_i (C + p)_{i, s(i)} - min_j (C + p)_{ij} <= n * eps_final``, which is computed and
  checked; ``eps_final`` is set so that this bound is ``1e-9`` times the largest absolute cost.
  If the round budget runs out, the host solver finishes the job from the auction's prices.

References:
    R. Jonker and A. Volgenant. A shortest augmenting path algorithm for dense and sparse linear
    assignment problems. Computing 38, 1987.
    D. F. Crouse. On implementing 2D rectangular assignment algorithms. IEEE Trans. Aerospace
    and Electronic Systems 52(4), 2016.
    D. P. Bertsekas. The auction algorithm: a distributed relaxation method for the assignment
    problem. Annals of Operations Research 14, 1988.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from torch import Tensor

from ._sinkhorn import approx_duals, approx_duals_torch, sinkhorn

__all__ = ["SOLVERS", "auction", "solve_assignment"]

SOLVERS = ("auto", "lsa", "auction")

#: Below this size the dual pre-reduction costs more than it saves (measured crossover ~110).
_WARM_MIN = 112
#: From this size accelerator tensors get the dual pre-reduction on the device (measured on an
#: H200, float32 Gaussians in 2 and 3072 dimensions, two runs: at 256 points the host route took
#: 5-7 ms against 5-17 ms on the device, at 512 points both 14-19 ms, at 1024 points 47-102 ms
#: against 20-42 ms; on a small matrix many small kernels cost more than the host's passes).
_DEVICE_DUALS_MIN = 1024
#: From this size the device route first tries the sparse certified solve
#: (:func:`_sparse_certified`), which sends the host ``n x 8`` candidates instead of the
#: ``n x n`` reduced matrix.
_SPARSE_MIN = 512
#: Relative size of the duality gap the auction certifies (times the largest |cost|).
_AUCTION_REL_GAP = 1e-9


def _lsa_host(cost: np.ndarray, warm: bool = True, overwrite: bool = False) -> np.ndarray:
    """Column index of each row in an optimal assignment of a square float32/float64 matrix.

    The reduced matrix ``C - f - g`` is formed in float64 (from float32 entries exactly). With
    ``overwrite`` a float64 ``cost`` is reduced in place (the caller no longer needs it), which
    saves allocating, and page-faulting, another ``n x n`` matrix.
    """
    n = cost.shape[0]
    reduced = cost
    if warm and n >= _WARM_MIN:
        duals = approx_duals(cost)
        if duals is not None:
            f, g = duals
            if overwrite and cost.dtype == np.float64:
                reduced -= f[:, None]
            else:
                reduced = np.subtract(cost, f[:, None], dtype=np.float64)
            reduced -= g[None, :]
    _, cols = linear_sum_assignment(reduced)
    return cols


def _host_matrix(cost: Tensor) -> tuple[np.ndarray, bool]:
    """A float32 or float64 host array of ``cost`` and whether it is a fresh copy (free to
    overwrite). Float32 stays float32: the solver forms its float64 reduced matrix from it."""
    dtype = cost.dtype if cost.dtype in (torch.float32, torch.float64) else torch.float64
    host = cost.detach().to(device="cpu", dtype=dtype)
    fresh = host.data_ptr() != cost.data_ptr()
    return host.numpy(), fresh


#: Candidate columns per row of the sparse certified route (the smallest reduced costs).
_SPARSE_K = 8
#: Rounds of the sparse certified route: each adds the entries the certificate found negative.
_SPARSE_ROUNDS = 6
#: Bellman-Ford passes between two reads of their progress on the host (one sync each).
_PASSES_PER_CHECK = 8
#: A reduced cost above ``-_CERT_REL_TOL * S`` counts as non-negative in the certificate, with
#: ``S`` the size of the terms of an entry that can be near zero: ``max |C_{i s(i)}|`` plus the
#: largest duals (float64 rounding of ``C - f - g - u - v`` there is a few ``1e-16 * S``; an
#: entry far larger, such as a penalty, is far from negative). The permutation is then optimal
#: to within ``n * _CERT_REL_TOL * S``.
_CERT_REL_TOL = 1e-13


def _sparse_match(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n: int) -> np.ndarray | None:
    """Optimal perfect matching on the candidate entries (SciPy's sparse Jonker-Volgenant), or
    ``None`` when they hold no perfect matching."""
    # SciPy drops explicit zeros (they would stop being edges): the smallest positive float in
    # their place changes no comparison that float64 can make between assignments
    graph = csr_matrix((np.maximum(w, np.finfo(np.float64).tiny), (rows, cols)), shape=(n, n))
    try:
        _, match = min_weight_full_bipartite_matching(graph)
    except ValueError:
        return None
    return match.astype(np.int64, copy=False)


def _column_potentials(
    src: Tensor, dst: Tensor, length: Tensor, v: Tensor, max_passes: int
) -> Tensor | None:
    """Potentials with ``v[dst] <= v[src] + length`` on every arc, by Bellman-Ford passes from
    ``v`` (decreasing it); ``None`` if they do not settle (a negative cycle) within
    ``max_passes``. Settling is read on the host every ``_PASSES_PER_CHECK`` passes (the passes
    only decrease ``v``, so equal ends mean no pass in between changed it)."""
    inf = torch.full_like(v, math.inf)
    for _ in range(-(-max_passes // _PASSES_PER_CHECK)):
        start = v
        for _ in range(_PASSES_PER_CHECK):
            v = torch.minimum(v, inf.scatter_reduce(0, dst, v[src] + length, "amin"))
        if torch.equal(v, start):
            return v
    return None


def _sparse_certified(
    cost64: Tensor,
    f: Tensor,
    g: Tensor,
    k: int = _SPARSE_K,
    rounds: int = _SPARSE_ROUNDS,
) -> Tensor | None:
    """An optimal permutation found on sparse candidates and certified on the whole matrix.

    With approximate duals ``f, g`` (on ``cost64``'s device) the reduced matrix
    ``R = C - f - g - min_row(C - f - g)`` is non-negative with a zero in every row, and the
    optimal assignment uses almost only entries among the ``k`` smallest of their row. Each
    round:

    1. the candidates go to the host, where SciPy's sparse Jonker-Volgenant solver
       (``min_weight_full_bipartite_matching``) finds the optimal assignment ``s`` among them;
    2. exact duals of that restricted problem: with ``u_i = R_{i s(i)} - v_{s(i)}`` every
       matched entry has reduced cost 0, and ``R_ij - u_i - v_j >= 0`` on the candidates is a
       shortest-path system on the columns (an arc ``s(i) -> j`` of length
       ``R_ij - R_{i s(i)}`` per candidate), solved by Bellman-Ford passes in torch on the
       device; a negative cycle (``s`` not optimal among the candidates) leaves it unsettled;
    3. the certificate, one pass over the whole matrix on the device: if ``R - u - v >= 0``
       everywhere (to float64 rounding), ``(u, v)`` is dual feasible with zero reduced cost on
       ``s``, so ``s`` is optimal for the whole problem (linear programming duality);
       otherwise the negative entries join the candidates and the next round starts.

    On Gaussian batches of 4096 points, 8 candidates per row leave 2-300 negative entries after
    the first round and none after the second or third. Returns ``None`` when a step fails (no
    perfect matching among the candidates, unsettled potentials, more than ``n`` negative
    entries, no certificate after ``rounds`` rounds); the caller then solves the dense problem.
    Reads to the host per round: the new candidates, the matching and a few scalars.
    """
    n = cost64.shape[0]
    dev = cost64.device
    k = min(k, n)
    red = cost64 - f[:, None]
    red -= g[None, :]
    red -= red.amin(1, keepdim=True)
    vals, idx = red.topk(k, dim=1, largest=False, sorted=False)
    arange = torch.arange(n, device=dev)
    rows_d = arange.repeat_interleave(k)
    cols_d = idx.reshape(-1)
    w_d = vals.reshape(-1)
    rows_h = np.repeat(np.arange(n), k)
    cols_h = cols_d.cpu().numpy()
    w_h = w_d.cpu().numpy()
    dual_size = f.abs().amax() + g.abs().amax()  # the rounds' tolerance: these terms are fixed
    v = torch.zeros(n, dtype=red.dtype, device=dev)
    for _ in range(rounds):
        match_h = _sparse_match(rows_h, cols_h, w_h, n)
        if match_h is None:
            return None
        match = torch.from_numpy(match_h).to(dev)
        r_match = red[arange, match]
        # from the last round's potentials: any start settles to feasible ones
        settled = _column_potentials(
            match[rows_d], cols_d, w_d - r_match[rows_d], v, max(64, n // 4)
        )
        if settled is None:
            return None
        v = settled
        u = r_match - v[match]
        size = cost64[arange, match].abs().amax() + v.abs().amax() + dual_size
        tol = _CERT_REL_TOL * float(size)
        bad = torch.nonzero((red - u[:, None]) - v[None, :] < -tol)
        if bad.shape[0] == 0:
            return match
        if bad.shape[0] > n:
            return None
        bad_w = red[bad[:, 0], bad[:, 1]]
        rows_d = torch.cat([rows_d, bad[:, 0]])
        cols_d = torch.cat([cols_d, bad[:, 1]])
        w_d = torch.cat([w_d, bad_w])
        bad_h = bad.cpu().numpy()
        rows_h = np.concatenate([rows_h, bad_h[:, 0]])
        cols_h = np.concatenate([cols_h, bad_h[:, 1]])
        w_h = np.concatenate([w_h, bad_w.cpu().numpy()])
    return None


def auction(
    cost: Tensor,
    prices: Tensor,
    *,
    eps_start: float,
    eps_final: float,
    scaling: float = 0.1,
    max_rounds: int = 100_000,
) -> tuple[Tensor, Tensor, float, bool]:
    """Auction with epsilon scaling on a square float64 cost matrix (minimisation).

    Each phase keeps the assignments that still satisfy epsilon complementary slackness at the
    new epsilon and lets every unassigned row bid at once; an object goes to its highest bidder
    (ties to the highest row index).

    Returns:
        ``(cols, prices, gap, done)``: the object of each row, the final prices, the certified
        duality gap (an upper bound on ``cost(cols) - optimum``) and whether the auction finished
        within ``max_rounds`` (if not, ``cols`` may hold ``-1`` and ``gap`` is ``inf``).
    """
    n = cost.shape[0]
    dev = cost.device
    rows = torch.arange(n, device=dev)
    assign = torch.full((n,), -1, dtype=torch.long, device=dev)  # row -> object
    owner = torch.full((n,), -1, dtype=torch.long, device=dev)  # object -> row
    neg_inf = torch.full((n,), -math.inf, dtype=cost.dtype, device=dev)
    no_row = torch.full((n,), -1, dtype=torch.long, device=dev)
    p = prices.clone()
    eps = max(eps_start, eps_final)
    rounds = 0
    while True:
        # drop the assignments that violate eps-complementary slackness at this eps
        reduced_best = (cost + p[None, :]).amin(1)
        held = assign >= 0
        current = (cost[rows, assign.clamp(min=0)] + p[assign.clamp(min=0)]).where(
            held, torch.full_like(reduced_best, math.inf)
        )
        bad = held & (current > reduced_best + eps)
        owner[assign[bad]] = -1
        assign[bad] = -1
        free = torch.nonzero(assign < 0).squeeze(1)
        while free.numel() > 0:
            if rounds >= max_rounds:
                return assign, p, math.inf, False
            rounds += 1
            values = cost[free] + p[None, :]
            if n > 1:
                top, idx = values.topk(2, dim=1, largest=False)
                margin = top[:, 1] - top[:, 0]
            else:
                top, idx = values, torch.zeros_like(free)[:, None]
                margin = torch.zeros_like(top[:, 0])
            obj = idx[:, 0]
            bid = p[obj] + margin + eps
            best = neg_inf.scatter_reduce(0, obj, bid, "amax")
            winner_rows = torch.where(bid == best[obj], free, -1)
            winner = no_row.scatter_reduce(0, obj, winner_rows, "amax")
            won = torch.nonzero(winner >= 0).squeeze(1)
            new_rows = winner[won]
            old_rows = owner[won]
            assign[old_rows[old_rows >= 0]] = -1
            owner[won] = new_rows
            assign[new_rows] = won
            p[won] = best[won]
            free = torch.nonzero(assign < 0).squeeze(1)
        if eps <= eps_final:
            break
        eps = max(eps * scaling, eps_final)
    reduced = cost + p[None, :]
    gap = float((reduced[rows, assign] - reduced.amin(1)).sum())
    return assign, p, gap, True


def _auction_solve(cost: Tensor, max_rounds: int) -> Tensor:
    n = cost.shape[0]
    c64 = cost.to(torch.float64)
    scale = float(c64.abs().max())
    std = float(c64.std()) if n > 1 else 0.0
    if n == 1 or scale == 0.0 or std == 0.0:
        return torch.arange(n, device=cost.device)
    log_w = torch.full((n,), -math.log(n), dtype=torch.float64, device=cost.device)
    rel = 0.03
    warm = sinkhorn(c64, log_w, log_w, rel * std, max_iter=60, tol=0.0, scaling=0.3)
    prices = -warm.g
    eps_final = _AUCTION_REL_GAP * scale / n
    cols, prices, gap, done = auction(
        c64, prices, eps_start=rel * std, eps_final=eps_final, max_rounds=max_rounds
    )
    if done and gap <= _AUCTION_REL_GAP * scale * (1 + 1e-6):
        return cols
    # out of budget: the host solver finishes from the auction's prices (same optimum)
    reduced, _ = _host_matrix(c64 + prices[None, :])
    return torch.from_numpy(_lsa_host(reduced, warm=False)).to(cost.device)


def solve_assignment(
    cost: Tensor,
    solver: str = "auto",
    *,
    overwrite: bool = False,
    max_rounds: int = 20_000,
    device_duals: bool | None = None,
) -> Tensor:
    """Optimal permutation for a square cost matrix: ``j[i]`` is the column of row ``i``.

    ``solver="auto"`` is ``"lsa"`` on every device. With ``overwrite`` the solver may scribble
    over ``cost``. ``device_duals`` runs the dual pre-reduction of ``"lsa"`` in torch on the
    cost's device (``None``: for accelerator tensors from 1024 points), followed by the sparse
    certified solve from 512 points and, if that declines, the dense host solve of the reduced
    matrix. The result is an int64 tensor on ``cost``'s device.
    """
    n = cost.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=cost.device)
    if solver == "auto":
        # measured on an H200 at 4096 points (float32 Gaussians): the host solver after the
        # dual pre-reduction took 1.5-2.0 s in 2-D and 0.9-1.0 s in 3072-D, the device
        # auction 8.8-9.6 s and 2.6-2.9 s (benchmarks/README.md, section 3)
        solver = "lsa"
    if solver == "auction":
        return _auction_solve(cost, max_rounds)
    if device_duals is None:
        device_duals = cost.device.type != "cpu" and n >= _DEVICE_DUALS_MIN
    if device_duals and n >= _WARM_MIN:
        # the dual pre-reduction on the device, where its passes over the matrix are cheap
        # enough to go further down in eps; the host solver gets the reduced float64 matrix
        c64 = cost.detach().to(torch.float64)
        duals = approx_duals_torch(c64)
        if duals is not None:
            f, g = duals
            if n >= _SPARSE_MIN:
                cols_dev = _sparse_certified(c64, f, g)
                if cols_dev is not None:
                    return cols_dev
            reduced = c64 - f[:, None]
            reduced -= g[None, :]
            cols = _lsa_host(reduced.cpu().numpy(), warm=False)
            return torch.from_numpy(cols.astype(np.int64, copy=False)).to(cost.device)
    host, fresh = _host_matrix(cost)
    cols = _lsa_host(host, overwrite=overwrite or fresh)
    return torch.from_numpy(cols.astype(np.int64, copy=False)).to(cost.device)
