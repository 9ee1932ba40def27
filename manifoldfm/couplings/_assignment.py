"""Exact linear assignment (equal-size uniform optimal transport) solvers (private).

Two solvers, both returning an optimal permutation:

* ``"lsa"`` (host): SciPy's shortest-augmenting-path solver (``linear_sum_assignment``, a
  Jonker-Volgenant variant) run on the *reduced* matrix ``C - f - g``, where ``f, g`` are
  approximate OT dual potentials from a few float32 Sinkhorn stages (:func:`approx_duals` on
  the host for CPU tensors and small accelerator tensors; :func:`approx_duals_torch`, with more
  stages, on the device for accelerator tensors from 1024 points, which then send the reduced
  float64 matrix to the host).
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
    cost's device (``None``: for accelerator tensors from 1024 points). The result is an int64
    tensor on ``cost``'s device.
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
            reduced = c64 - f[:, None]
            reduced -= g[None, :]
            cols = _lsa_host(reduced.cpu().numpy(), warm=False)
            return torch.from_numpy(cols.astype(np.int64, copy=False)).to(cost.device)
    host, fresh = _host_matrix(cost)
    cols = _lsa_host(host, overwrite=overwrite or fresh)
    return torch.from_numpy(cols.astype(np.int64, copy=False)).to(cost.device)
