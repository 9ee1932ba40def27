"""Exact linear assignment (equal-size uniform optimal transport) solvers (private).

Two solvers, both returning an optimal permutation:

* ``"lsa"`` (host): SciPy's shortest-augmenting-path solver (``linear_sum_assignment``, a
  Jonker-Volgenant variant) run on the *reduced* matrix ``C - f - g``, where ``f, g`` are
  approximate OT dual potentials from a few float32 Sinkhorn stages (:func:`approx_duals` on
  the host for CPU tensors and small accelerator tensors; :func:`approx_duals_torch`, with more
  stages, on the device for accelerator tensors from 1024 points). On the device route the
  solve is first tried on sparse candidates (the 8 smallest reduced costs of each row, solved
  on the host by shortest augmenting paths with exact duals) and certified optimal on the whole
  matrix by those duals (:func:`_sparse_certified`); only if that declines does the reduced
  float64 matrix go to the host.
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
from scipy.sparse.csgraph import dijkstra
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
#: A reduced cost ``R_ij - u_i - v_j`` above ``-_CERT_ULPS * eps * S_ij`` counts as
#: non-negative in the certificate (``eps`` the float64 machine epsilon), with
#: ``S_ij = |C_ij| + |f_i| + |g_j| + |m_i| + |u_i| + |v_j|`` the size of the terms it is computed
#: from (``m_i`` the row minimum of ``C - f - g``): the five float64 subtractions that give it
#: are off by at most about ``5 eps S_ij``, so rounding alone never fails the certificate, and
#: each entry is judged on its own terms (a huge entry or row does not loosen the others). The
#: permutation is then optimal to within ``_CERT_ULPS * eps * sum_i S_{i pi(i)}`` for every
#: permutation ``pi``: a few units in the last place of the entries involved.
_CERT_ULPS = 16.0
#: Arc length standing for zero in SciPy's graphs, which drop explicitly stored zeros; it
#: changes no comparison that float64 can make between path lengths.
_TINY = float(np.finfo(np.float64).tiny)
#: After a phase of the augmentations the next Dijkstra stops at this many times the longest
#: path just augmented (and runs again without a limit if it reaches no free column): the
#: searches of the later phases, from a few free rows, then skip most of the graph (measured at
#: 4096 points, 8 candidates a row: the host solve 25 % faster, from 84 to 62 ms over six
#: batches in 2 and 3072 dimensions, with limits from 1.2 to 4 times alike).
_LIMIT_FACTOR = 4.0


class _Candidates:
    """The candidate entries of the sparse route, row-major (CSR): row ``i`` holds
    ``cols[indptr[i]:indptr[i + 1]]`` with reduced costs ``w`` at the same places."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n: int) -> None:
        self.n = n
        self.rows = rows.astype(np.int32, copy=False)
        self.cols = cols.astype(np.int32, copy=False)
        self.w = w
        self.indptr = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(self.rows, minlength=n), out=self.indptr[1:])

    def add(self, rows: np.ndarray, cols: np.ndarray, w: np.ndarray) -> _Candidates:
        """These candidates and the given entries, row-major again."""
        r = np.concatenate([self.rows, rows.astype(np.int32, copy=False)])
        order = np.argsort(r, kind="stable")
        c = np.concatenate([self.cols, cols.astype(np.int32, copy=False)])
        return _Candidates(r[order], c[order], np.concatenate([self.w, w])[order], self.n)

    def matched_cost(self, x: np.ndarray) -> np.ndarray:
        """The reduced cost of each row's matched entry (``x[i]`` among row ``i``'s columns)."""
        on = self.cols == x[self.rows]
        out = np.empty(self.n)
        out[self.rows[on]] = self.w[on]
        return out


def _greedy_start(w: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A partial matching with exact duals to start the augmentations from, for ``k``
    candidates per row given as ``(n, k)`` arrays: every row's smallest entry, one row per
    column (the others stay free, ``x[i] = -1``); ``u`` the row minima and ``v = 0`` keep every
    candidate's reduced cost ``w - u - v`` non-negative and the matched ones zero."""
    n = w.shape[0]
    best = w.argmin(1)
    ar = np.arange(n)
    col = cols[ar, best]
    y = np.full(n, -1, dtype=np.int64)
    y[col] = ar  # a column claimed by several rows keeps one of them
    x = np.full(n, -1, dtype=np.int64)
    taken = np.flatnonzero(y >= 0)
    x[y[taken]] = taken
    return x, w[ar, best].copy(), np.zeros(n)


def _augment(cand: _Candidates, x: np.ndarray, u: np.ndarray, v: np.ndarray) -> bool:
    """Complete the matching ``x`` (row -> column, ``-1`` for free rows) to an optimal perfect
    matching of the candidates, in place, with exact duals ``u, v`` (in place as well).

    On entry ``w - u - v >= 0`` on every candidate and ``= 0`` on the matched ones. Each phase
    is one multi-source Dijkstra (SciPy's, in C) from all free rows over the residual graph:
    an arc row ``i`` -> column ``j`` of length ``w_ij - u_i - v_j`` per candidate and an arc of
    length 0 from each matched column to its row (its search stops at a limit after the first
    phase, see ``_LIMIT_FACTOR``). The duals then move by the distances (``u -= d``,
    ``v += d``; nodes not reached by the largest distance reached), which keeps every reduced
    cost non-negative and makes every arc of the shortest-path forest tight; in each tree that
    reaches a free column the path to the nearest one is augmented. The paths lie in different
    trees, so they share no node; every phase augments at least one. Returns ``False`` when
    the candidates hold no perfect matching.
    """
    n = cand.n
    nnz = cand.cols.size
    y = np.full(n, -1, dtype=np.int64)
    on = np.flatnonzero(x >= 0)
    y[x[on]] = on
    # nodes: rows 0..n-1, columns n..2n-1; the row block of the graph is fixed
    indices = np.empty(nnz + n, dtype=np.int32)
    indices[:nnz] = cand.cols
    indices[:nnz] += n
    data = np.empty(nnz + n)
    indptr = np.empty(2 * n + 1, dtype=np.int32)
    indptr[: n + 1] = cand.indptr
    limit = math.inf
    while True:
        free = np.flatnonzero(x < 0)
        if free.size == 0:
            return True
        arcs = data[:nnz]
        np.subtract(cand.w, u[cand.rows], out=arcs)
        arcs -= v[cand.cols]
        np.maximum(arcs, _TINY, out=arcs)  # rounding can leave a tight arc at -1 ulp
        matched = y >= 0
        m = int(np.count_nonzero(matched))
        indices[nnz : nnz + m] = y[matched]
        data[nnz : nnz + m] = _TINY
        np.cumsum(matched, out=indptr[n + 1 :])
        indptr[n + 1 :] += nnz
        graph = csr_matrix((data[: nnz + m], indices[: nnz + m], indptr), shape=(2 * n, 2 * n))
        while True:
            dist, pred, source = dijkstra(
                graph, indices=free, min_only=True, return_predecessors=True, limit=limit
            )
            dcol = dist[n:]
            ends = np.flatnonzero((y < 0) & np.isfinite(dcol))
            if ends.size or limit == math.inf:
                break
            limit = math.inf
        if ends.size == 0:
            return False
        # the nearest free column of each tree
        tree = source[n + ends]
        order = np.lexsort((dcol[ends], tree))
        first = np.ones(order.size, dtype=bool)
        first[1:] = tree[order[1:]] != tree[order[:-1]]
        reached = np.isfinite(dist)
        # unreached nodes move by the largest distance reached: an arc into one from a reached
        # node is longer than the search's limit, and without a limit there is none
        dist[~reached] = dist[reached].max()
        u -= dist[:n]
        v += dcol
        limit = _LIMIT_FACTOR * float(dcol[ends[order[first]]].max())
        for j in ends[order[first]].tolist():
            while True:  # back along the tree: column j <- row i <- i's old column ...
                i = int(pred[n + j])
                old = int(x[i])
                x[i] = j
                y[j] = i
                if old < 0:
                    break
                j = old


def _largest_column_duals(
    cand: _Candidates, x: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Among the duals of the perfect matching ``x`` (optimal on the candidates, with exact
    column duals ``v``), the ones whose column duals are the largest that are ``<= 0``.

    Column duals are feasible exactly when ``v_j <= v_{x(i)} + w_ij - w_{i x(i)}`` for every
    candidate; the largest ones ``<= 0`` are shortest distances from a source with an arc of
    length 0 to every column (the fixpoint of Bellman-Ford passes from ``v = 0``), found by one
    Dijkstra on lengths made non-negative by the potentials ``v``. They stay as close as
    possible to the approximate duals that the reduced costs ``w`` start from, which leaves few
    non-candidate entries negative for the certificate.
    """
    n = cand.n
    w_match = cand.matched_cost(x)
    u = w_match - v[x]
    # the arcs of column x(i) are the candidates of row i: row i's CSR segment, in column order
    row_of = np.empty(n, dtype=np.int64)
    row_of[x] = np.arange(n)
    counts = np.diff(cand.indptr)[row_of]
    indptr = np.zeros(n + 2, dtype=np.int32)
    np.cumsum(counts, out=indptr[1 : n + 1])
    nnz = int(indptr[n])
    take = np.repeat(cand.indptr[row_of].astype(np.int64) - indptr[:n], counts)
    take += np.arange(nnz)
    top = float(v.max())
    data = np.empty(nnz + n)
    np.subtract(cand.w[take], u[cand.rows[take]], out=data[:nnz])
    data[:nnz] -= v[cand.cols[take]]
    np.subtract(top, v, out=data[nnz:])
    np.maximum(data, _TINY, out=data)
    indices = np.concatenate([cand.cols[take], np.arange(n, dtype=np.int32)])
    indptr[n + 1] = nnz + n
    graph = csr_matrix((data, indices, indptr), shape=(n + 1, n + 1))
    dist = dijkstra(graph, indices=n)[:n]
    v_new = np.minimum(dist - top + v, 0.0)
    return w_match - v_new[x], v_new


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

    1. on the host, the optimal assignment ``s`` among the candidates with exact duals
       (:func:`_augment`: a primal-dual shortest-augmenting-path solver whose phases are
       multi-source Dijkstra runs, from the greedy matching on each row's smallest entry in the
       first round and from the last round's matching and duals after), then the duals moved
       as close to ``R``'s own as they may be (:func:`_largest_column_duals`);
    2. the certificate, one pass over the whole matrix on the device: if ``R - u - v >= 0``
       everywhere (to float64 rounding), ``(u, v)`` is dual feasible with zero reduced cost on
       ``s``, so ``s`` is optimal for the whole problem (linear programming duality);
       otherwise the negative entries join the candidates, the rows they lie in give up their
       match (their duals drop to keep the new entries feasible), and the next round starts.

    On Gaussian batches of 4096 points, 8 candidates per row leave 1-15 negative entries after
    the first round and none after the second. Returns ``None`` when a step fails (no perfect
    matching among the candidates, more than ``n`` negative entries, no certificate after
    ``rounds`` rounds); the caller then solves the dense problem. Reads to the host: the
    candidates, then per round the negative entries and a few scalars.
    """
    n = cost64.shape[0]
    dev = cost64.device
    k = min(k, n)
    red = cost64 - f[:, None]
    red -= g[None, :]
    row_min = red.amin(1)
    red -= row_min[:, None]
    vals, idx = red.topk(k, dim=1, largest=False, sorted=False)
    w_h = vals.cpu().numpy()
    cols_h = idx.to(torch.int32).cpu().numpy()
    cand = _Candidates(np.repeat(np.arange(n, dtype=np.int32), k), cols_h.ravel(), w_h.ravel(), n)
    x, u, v = _greedy_start(w_h, cols_h)
    # the certificate's tolerance: the parts that stay fixed over the rounds
    ulp = _CERT_ULPS * float(torch.finfo(torch.float64).eps)
    entry_tol = cost64.abs().mul_(ulp)
    row_size = f.abs() + row_min.abs()
    col_size = g.abs()
    for _ in range(rounds):
        if not _augment(cand, x, u, v):
            return None
        u, v = _largest_column_duals(cand, x, v)
        u_d = torch.from_numpy(u).to(dev)
        v_d = torch.from_numpy(v).to(dev)
        slack = (red - u_d[:, None]) - v_d[None, :]
        slack += entry_tol
        slack += (ulp * (row_size + u_d.abs()))[:, None]
        slack += (ulp * (col_size + v_d.abs()))[None, :]
        bad = torch.nonzero(slack < 0)
        del slack
        if bad.shape[0] == 0:
            return torch.from_numpy(x).to(dev)
        if bad.shape[0] > n:
            return None
        bad_w = red[bad[:, 0], bad[:, 1]].cpu().numpy()
        bad_h = bad.cpu().numpy()
        br, bc = bad_h[:, 0], bad_h[:, 1]
        cand = cand.add(br, bc, bad_w)
        # keep the new entries feasible: their rows' duals drop, and those rows give up their
        # (no longer tight) match
        lowered = u.copy()
        np.minimum.at(lowered, br, bad_w - v[bc])
        drop = np.flatnonzero(lowered < u)
        u = lowered
        x[drop] = -1
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
    lo, hi = (float(v) for v in torch.aminmax(c64))
    if n == 1 or lo == hi:  # a constant matrix: every permutation is optimal
        return torch.arange(n, device=cost.device)
    # the auction runs on the cost divided by its largest magnitude (the same optimal
    # permutations), so that its spread, prices and gaps neither underflow nor overflow
    scale = max(abs(lo), abs(hi))
    c64 = c64 / scale
    std = float(c64.std())
    log_w = torch.full((n,), -math.log(n), dtype=torch.float64, device=cost.device)
    rel = 0.03
    warm = sinkhorn(c64, log_w, log_w, rel * std, max_iter=60, tol=0.0, scaling=0.3)
    prices = -warm.g
    eps_final = _AUCTION_REL_GAP / n
    cols, prices, gap, done = auction(
        c64, prices, eps_start=rel * std, eps_final=eps_final, max_rounds=max_rounds
    )
    if done and gap <= _AUCTION_REL_GAP * (1 + 1e-6):
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
