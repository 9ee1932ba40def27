"""Couplings: independent, exact minibatch OT (assignment and POT paths) and entropic OT."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import manifoldfm as mfm
from manifoldfm.couplings import (
    Coupling,
    CouplingResult,
    ExactOT,
    Independent,
    SinkhornConvergenceWarning,
    SinkhornOT,
    pairwise_cost,
)
from manifoldfm.couplings._assignment import auction, solve_assignment
from manifoldfm.couplings._sinkhorn import approx_duals, approx_duals_torch
from manifoldfm.manifolds import FlatTorus, Sphere

from .conftest import DEVICES

seeds = st.integers(min_value=0, max_value=2**31 - 1)
F64 = torch.float64


def _batches(n0, n1, d, seed, dtype=torch.float64, shift=0.5, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n0, d, generator=g, dtype=torch.float64)
    x1 = torch.randn(n1, d, generator=g, dtype=torch.float64) + shift
    return x0.to(dtype=dtype, device=device), x1.to(dtype=dtype, device=device)


def _cost64(x0, x1):
    a = x0.double().reshape(x0.shape[0], -1)
    b = x1.double().reshape(x1.shape[0], -1)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).cpu().numpy()


def _optimum(c):
    r, k = linear_sum_assignment(c)
    return float(c[r, k].sum())


def _assert_permutation(j, n):
    assert j.dtype == torch.int64
    assert sorted(j.tolist()) == list(range(n)), "not a permutation"


# ---------------------------------------------------------------------------------------------
# Exact OT on equal batches: an optimal permutation
# ---------------------------------------------------------------------------------------------


@settings(max_examples=30)
@given(
    n=st.integers(1, 160),
    d=st.integers(1, 6),
    seed=seeds,
    shift=st.floats(-3.0, 3.0),
)
@example(n=1, d=1, seed=0, shift=0.0)
@example(n=2, d=1, seed=1, shift=0.0)
@example(n=128, d=2, seed=3, shift=2.0)  # past the size where the dual pre-reduction starts
def test_exact_ot_is_optimal_permutation(n, d, seed, shift):
    x0, x1 = _batches(n, n, d, seed, shift=shift)
    pair = ExactOT()(x0, x1)
    _assert_permutation(pair.j, n)
    assert torch.equal(pair.i, torch.arange(n))
    c = _cost64(x0, x1)
    ours = float(c[np.arange(n), pair.j.numpy()].sum())
    opt = _optimum(c)
    assert ours <= float(np.trace(c)) + 1e-9 * (1 + abs(ours))  # never worse than identity
    assert ours == pytest.approx(opt, rel=1e-10, abs=1e-10)
    assert torch.equal(pair.x1, x1[pair.j]) and torch.equal(pair.x0, x0[pair.i])


@settings(max_examples=15)
@given(n=st.integers(2, 40), d=st.integers(1, 4), seed=seeds)
@example(n=40, d=2, seed=7)
def test_auction_solver_is_optimal(n, d, seed):
    x0, x1 = _batches(n, n, d, seed)
    pair = ExactOT(solver="auction")(x0, x1)
    _assert_permutation(pair.j, n)
    c = _cost64(x0, x1)
    assert float(c[np.arange(n), pair.j.numpy()].sum()) == pytest.approx(_optimum(c), rel=1e-9)


@settings(max_examples=15)
@given(n=st.integers(2, 30), seed=seeds, levels=st.integers(1, 4))
@example(n=12, seed=0, levels=1)  # all costs equal: everything ties
def test_auction_gap_certificate_with_ties(n, seed, levels):
    # integer costs with many ties: the certified gap bounds the distance to the optimum
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, levels, (n, n), generator=g).to(torch.float64)
    cols, _, gap, done = auction(
        c, torch.zeros(n, dtype=torch.float64), eps_start=1.0, eps_final=0.1 / n
    )
    assert done
    _assert_permutation(cols, n)
    ours = float(c[torch.arange(n), cols].sum())
    opt = _optimum(c.numpy())
    assert 0.0 <= gap <= 0.1 + 1e-12
    assert opt <= ours <= opt + gap + 1e-9
    assert ours == opt  # integer costs and n * eps_final < 1


def test_auction_round_budget_falls_back_to_exact_solver():
    x0, x1 = _batches(60, 60, 2, 11)
    c = pairwise_cost(x0, x1)
    cols = solve_assignment(c, "auction", max_rounds=1)
    _assert_permutation(cols, 60)
    cn = c.numpy()
    assert float(cn[np.arange(60), cols.numpy()].sum()) == pytest.approx(_optimum(cn), rel=1e-12)
    cols, _, gap, done = auction(
        c, torch.zeros(60, dtype=torch.float64), eps_start=1.0, eps_final=1e-9, max_rounds=1
    )
    assert not done and gap == math.inf


@settings(max_examples=15)
@given(n=st.integers(2, 150), d=st.integers(1, 5), seed=seeds, dx=st.floats(-5.0, 5.0))
def test_exact_ot_invariant_to_translating_x1(n, d, seed, dx):
    # |x - y - c|^2 differs from |x - y|^2 by a row term plus a column term
    x0, x1 = _batches(n, n, d, seed)
    shift = torch.linspace(-1.0, 1.0, d, dtype=torch.float64) * dx
    j = ExactOT()(x0, x1).j
    j_shift = ExactOT()(x0, x1 + shift).j
    c = _cost64(x0, x1)
    if not torch.equal(j, j_shift):  # only a floating-point tie may differ
        a = c[np.arange(n), j.numpy()].sum()
        b = c[np.arange(n), j_shift.numpy()].sum()
        assert a == pytest.approx(b, rel=1e-12)


@settings(max_examples=10)
@given(n=st.integers(2, 150), seed=seeds)
def test_exact_ot_equivariant_to_permuting_x1(n, seed):
    x0, x1 = _batches(n, n, 3, seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    j = ExactOT()(x0, x1).j
    j_perm = ExactOT()(x0, x1[perm]).j
    assert torch.equal(perm[j_perm], j)


def test_exact_ot_warm_start_path_matches_scipy_at_larger_sizes():
    for n, d, seed in [(200, 2, 0), (256, 3072, 1), (300, 10, 2)]:
        x0, x1 = _batches(n, n, d, seed)
        j = ExactOT()(x0, x1).j
        c = pairwise_cost(x0, x1).numpy()
        assert float(c[np.arange(n), j.numpy()].sum()) == pytest.approx(_optimum(c), rel=1e-12)


def test_approx_duals_reduce_without_changing_the_optimum_and_fail_soft():
    x0, x1 = _batches(120, 120, 2, 5, shift=1.0)
    c = pairwise_cost(x0, x1).numpy()
    f, g = approx_duals(c)
    reduced = c - f[:, None] - g[None, :]
    assert np.isfinite(reduced).all()
    r, k = linear_sum_assignment(reduced)
    assert float(c[r, k].sum()) == pytest.approx(_optimum(c), rel=1e-12)
    # near-optimal duals: the reduced matrix is nearly non-negative next to the cost spread
    assert reduced.min() > -0.2 * c.std()
    assert approx_duals(np.ones((5, 5))) is None  # constant cost: nothing to do


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_dual_reduction_keeps_the_optimum(dtype):
    # the torch pre-reduction (used on accelerators) run on CPU tensors
    x0, x1 = _batches(150, 150, 2, 6, shift=1.0)
    c = pairwise_cost(x0, x1).to(dtype)
    f, g = approx_duals_torch(c)
    assert f.dtype == g.dtype == torch.float64
    reduced = (c.double() - f[:, None] - g[None, :]).numpy()
    assert np.isfinite(reduced).all() and reduced.min() > -0.2 * float(c.double().std())
    r, k = linear_sum_assignment(reduced)
    c64 = c.double().numpy()
    opt = _optimum(c64)
    assert float(c64[r, k].sum()) == pytest.approx(opt, rel=1e-12)
    j = solve_assignment(c, device_duals=True)
    assert float(c64[np.arange(150), j.numpy()].sum()) == pytest.approx(opt, rel=1e-12)
    # fail soft: constant or float32-overflowing costs leave the plain solver to do the work
    assert approx_duals_torch(torch.ones(5, 5)) is None
    big = torch.from_numpy(c64) * 1e40
    assert approx_duals_torch(big) is None
    j = solve_assignment(big, device_duals=True)
    assert float(c64[np.arange(150), j.numpy()].sum()) == pytest.approx(opt, rel=1e-12)


def _sparse_problem(kind, n, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss2":
        x0, x1 = _batches(n, n, 2, seed)
    elif kind == "gauss50":
        x0, x1 = _batches(n, n, 50, seed)
    elif kind == "duplicates":  # many exact ties between assignments
        x0, x1 = _batches(n // 4, n // 4, 2, seed)
        x0, x1 = x0.repeat(4, 1), x1.repeat(4, 1)
    elif kind == "grid_ties":  # integer costs: ties everywhere
        x0 = torch.randint(0, 5, (n, 2), generator=g).double()
        x1 = torch.randint(0, 5, (n, 2), generator=g).double()
    else:  # "uniform": an unstructured matrix, hard for few candidates per row
        return torch.rand(n, n, generator=g, dtype=torch.float64)
    return torch.from_numpy(_cost64(x0, x1))


@settings(max_examples=12)
@given(
    kind=st.sampled_from(["gauss2", "gauss50", "duplicates", "grid_ties", "uniform"]),
    n=st.integers(120, 260),
    k=st.sampled_from([1, 2, 8]),
    zero_duals=st.booleans(),
    seed=seeds,
)
@example(kind="uniform", n=200, k=1, zero_duals=True, seed=0)
@example(kind="duplicates", n=200, k=8, zero_duals=False, seed=1)
def test_sparse_certified_assignment_is_optimal_or_declines(kind, n, k, zero_duals, seed):
    # the certificate (dual feasibility on the whole matrix) admits no suboptimal permutation,
    # whatever the candidates and duals; with good duals on point clouds it certifies
    from manifoldfm.couplings._assignment import _sparse_certified

    n -= n % 4
    c = _sparse_problem(kind, n, seed)
    duals = None if zero_duals else approx_duals_torch(c)
    f, g = duals if duals is not None else (torch.zeros(n, dtype=c.dtype),) * 2
    j = _sparse_certified(c, f, g, k=k)
    if j is None:
        assert kind == "uniform" or zero_duals or k < 8 or kind == "grid_ties"
        return
    _assert_permutation(j, n)
    c64 = c.numpy()
    assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(_optimum(c64), rel=1e-12)


def _candidate_problem(kind, n, k, seed):
    """``(n, k)`` candidate weights and columns: each row's ``k`` smallest entries of a
    non-negative matrix with a zero in every row, as the sparse route builds them."""
    rng = np.random.default_rng(seed)
    if kind == "gauss2":
        x0, x1 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 0.5
        c = ((x0[:, None, :] - x1[None, :, :]) ** 2).sum(-1)
    elif kind == "ties":
        c = rng.integers(0, 4, size=(n, n)).astype(np.float64)
    else:
        c = rng.random((n, n))
    c -= c.min(1, keepdims=True)
    cols = np.argsort(c, axis=1, kind="stable")[:, :k].astype(np.int32)
    return c, np.take_along_axis(c, cols, 1), cols


def _candidate_optimum(cand, n):
    """The optimum over the candidates by the dense solver (others forbidden), or None."""
    big = np.full((n, n), np.inf)
    np.minimum.at(big, (cand.rows, cand.cols), cand.w)
    finite = np.isfinite(big)
    if not (finite.any(0).all() and finite.any(1).all()):
        return None
    try:
        r, j = linear_sum_assignment(big)
    except ValueError:  # no perfect matching among the candidates
        return None
    return float(big[r, j].sum())


def _assert_exact_duals(cand, x, u, v):
    rc = cand.w - u[cand.rows] - v[cand.cols]
    scale = 1.0 + np.abs(cand.w).max() + np.abs(u).max() + np.abs(v).max()
    assert rc.min() >= -1e-12 * scale  # feasible on every candidate
    on = cand.cols == x[cand.rows]
    assert np.abs(rc[on]).max() <= 1e-12 * scale  # tight on the matching


@settings(max_examples=40)
@given(
    kind=st.sampled_from(["gauss2", "ties", "uniform"]),
    n=st.integers(2, 90),
    k=st.integers(1, 6),
    extra=st.integers(0, 40),
    seed=seeds,
)
@example(kind="ties", n=40, k=2, extra=10, seed=3)
def test_sparse_augmentations_are_optimal_on_the_candidates(kind, n, k, extra, seed):
    # the host solve of the sparse route: an optimal perfect matching of the candidates with
    # exact duals, from the greedy start and again after new entries free some rows (the warm
    # start of a later round)
    from manifoldfm.couplings import _assignment as assignment

    k = min(k, n)
    c, w, cols = _candidate_problem(kind, n, k, seed)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    cand = assignment._Candidates(rows, cols.ravel(), w.ravel(), n)
    x, u, v = assignment._greedy_start(w, cols)
    opt = _candidate_optimum(cand, n)
    if not assignment._augment(cand, x, u, v):
        assert opt is None
        return
    assert opt is not None
    _assert_permutation(torch.from_numpy(x), n)
    assert float(cand.matched_cost(x).sum()) == pytest.approx(opt, rel=1e-12, abs=1e-12)
    _assert_exact_duals(cand, x, u, v)
    # a later round: new entries, their rows' duals lowered and those rows freed
    rng = np.random.default_rng(seed + 1)
    br = rng.integers(0, n, extra).astype(np.int32)
    bc = rng.integers(0, n, extra).astype(np.int32)
    bw = c[br, bc]
    cand = cand.add(br, bc, bw)
    lowered = u.copy()
    np.minimum.at(lowered, br, bw - v[bc])
    x[lowered < u] = -1
    assert assignment._augment(cand, x, lowered, v)
    _assert_permutation(torch.from_numpy(x), n)
    opt = _candidate_optimum(cand, n)
    assert float(cand.matched_cost(x).sum()) == pytest.approx(opt, rel=1e-12, abs=1e-12)
    _assert_exact_duals(cand, x, lowered, v)


@settings(max_examples=25)
@given(kind=st.sampled_from(["gauss2", "ties", "uniform"]), n=st.integers(2, 70), seed=seeds)
def test_largest_column_duals_are_the_bellman_ford_fixpoint(kind, n, seed):
    # the duals the certificate uses: feasible and tight on the candidates, column duals <= 0
    # and the largest such (the fixpoint of Bellman-Ford passes from zero)
    from manifoldfm.couplings import _assignment as assignment

    k = min(4, n)
    _, w, cols = _candidate_problem(kind, n, k, seed)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    cand = assignment._Candidates(rows, cols.ravel(), w.ravel(), n)
    x, u, v = assignment._greedy_start(w, cols)
    if not assignment._augment(cand, x, u, v):
        return
    u2, v2 = assignment._largest_column_duals(cand, x, v)
    _assert_exact_duals(cand, x, u2, v2)
    assert v2.max() <= 0.0
    wm = cand.matched_cost(x)
    ref = np.zeros(n)
    for _ in range(2 * n + 2):
        step = ref.copy()
        np.minimum.at(step, cand.cols, ref[x[cand.rows]] + cand.w - wm[cand.rows])
        if np.array_equal(step, ref):
            break
        ref = step
    np.testing.assert_allclose(v2, ref, rtol=0, atol=1e-12 * (1.0 + np.abs(w).max()))


@pytest.mark.parametrize("dim", [2, 30])
def test_device_route_solves_sparse_and_certifies_or_falls_back(dim, monkeypatch):
    from manifoldfm.couplings import _assignment as assignment

    n = 600
    x0, x1 = _batches(n, n, dim, 21)
    c = pairwise_cost(x0, x1)
    c64 = c.double().numpy()
    opt = _optimum(c64)
    taken = []
    real = assignment._sparse_certified

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(assignment, "_sparse_certified", spy)
    j = solve_assignment(c, device_duals=True)
    assert taken == [True]  # certified on the candidates
    assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(opt, rel=1e-12)
    # declined: the dense solve on the reduced matrix gives the same optimum
    monkeypatch.setattr(assignment, "_sparse_certified", lambda *a, **kw: None)
    j = solve_assignment(c, device_duals=True)
    assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(opt, rel=1e-12)


@pytest.mark.parametrize("penalty", [1e16, 1e20])
def test_sparse_route_stays_exact_with_huge_entries(penalty):
    n = 520
    x0, x1 = _batches(n, n, 2, 13, shift=1.0)
    c = pairwise_cost(x0, x1).double()
    forbidden = torch.rand(n, n, generator=torch.Generator().manual_seed(5)) < 0.1
    c[forbidden] = penalty
    c64 = c.numpy()
    j = solve_assignment(c, device_duals=True)
    assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(_optimum(c64), rel=1e-12)


@pytest.mark.parametrize("n", [200, 520])  # the host route; the device route's sparse solve
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("penalty", [1e8, 1e16, 1e20])
def test_assignment_stays_exact_when_most_entries_are_penalties(n, fraction, penalty):
    # most entries forbidden: a penalty is then the typical entry, and duals of a penalty's
    # size (whose float64 rounding swamps the real costs) must still be refused
    x0, x1 = _batches(n, n, 2, 14, shift=1.0)
    c = pairwise_cost(x0, x1).double()
    c[torch.rand(n, n, generator=torch.Generator().manual_seed(6)) < fraction] = penalty
    c64 = c.numpy()
    opt = _optimum(c64)
    for device_duals in (False, True):
        j = solve_assignment(c, device_duals=device_duals)
        _assert_permutation(j, n)
        assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(opt, rel=1e-12)


def test_sparse_certificate_judges_each_entry_on_its_own_terms():
    # one forced huge row: its entries' tolerance (a few ulps of 1e6) must not let the other
    # rows stray further than that from their optimum (row 0 takes whichever column is left)
    from manifoldfm.couplings._assignment import _CERT_ULPS, _sparse_certified

    rng = np.random.default_rng(0)
    n = 40
    eps = float(np.finfo(np.float64).eps)
    certified = 0
    for _ in range(10):
        c = rng.random((n, n))
        c[0] = 1e6 * (1.0 + 1e-3 * rng.random(n))
        zero = torch.zeros(n, dtype=torch.float64)
        j = _sparse_certified(torch.from_numpy(c), zero, zero, k=n // 2)
        if j is None:
            continue
        certified += 1
        _assert_permutation(j, n)
        opt = _optimum(c)
        got = float(c[np.arange(n), j.numpy()].sum())
        # the bound: a few ulps of row 0's terms (about 3e6 in all), next to nothing from the
        # other rows' (a 1e-13 relative tolerance of the largest terms would allow 4e-6)
        assert got <= opt + 2 * _CERT_ULPS * eps * 3e6
    assert certified >= 5


@pytest.mark.parametrize("dim", [2, 300])
def test_float32_host_cost_keeps_the_optimum_and_the_callers_matrix(dim):
    # a float32 CPU cost goes to the dual pre-reduction as it is (no float64 copy) and is
    # reduced straight into float64: the optimum is the float32 matrix's own, and the caller's
    # tensor comes back untouched, even with overwrite=True
    from manifoldfm.couplings._assignment import _host_matrix

    n = 150
    x0, x1 = _batches(n, n, dim, 12, dtype=torch.float32)
    c = torch.cdist(x0, x1).square()
    keep = c.clone()
    host, fresh = _host_matrix(c)
    assert host.dtype == np.float32 and not fresh and np.shares_memory(host, c.numpy())
    assert approx_duals(host) is not None  # the reduced route is the one taken
    c64 = keep.double().numpy()
    opt = _optimum(c64)
    for j in (solve_assignment(c, overwrite=True), ExactOT(cost=lambda a, b: c)(x0, x1).j):
        assert torch.equal(c, keep)
        assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(opt, rel=1e-12)


@pytest.mark.parametrize("penalty", [1e16, 1e18, 1e20])
@pytest.mark.parametrize("device_duals", [False, True])
def test_exact_ot_stays_exact_with_huge_entries(penalty, device_duals):
    # forbidden pairs as huge penalties must not inflate the duals until float64 C - f - g
    # rounds away the differences between assignments (both pre-reduction routes)
    n = 200
    x0, x1 = _batches(n, n, 2, 11, shift=1.0)
    c = pairwise_cost(x0, x1).double()
    forbidden = torch.rand(n, n, generator=torch.Generator().manual_seed(3)) < 0.1
    c[forbidden] = penalty
    c[0, 0] = penalty * 100  # one larger outlier in the subsampled first row
    c64 = c.numpy()
    j = solve_assignment(c, device_duals=device_duals)
    assert float(c64[np.arange(n), j.numpy()].sum()) == pytest.approx(_optimum(c64), rel=1e-12)


def test_exact_ot_float32_high_dimensional_images():
    # pixel-like data far from the origin: the centred float32 GEMM keeps the cost accurate
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 3, 16, 16, generator=g)
    x1 = (x0 + 0.1 * torch.randn(64, 3, 16, 16, generator=g)).clamp(0, 1)[torch.randperm(64)]
    c32 = pairwise_cost(x0, x1)
    assert c32.dtype == torch.float32
    c64 = _cost64(x0, x1)
    assert np.abs(c32.double().numpy() - c64).max() <= 1e-5 * c64.max()
    pair = ExactOT()(x0, x1)
    assert pair.x0.dtype == pair.x1.dtype == torch.float32
    assert float(c64[np.arange(64), pair.j.numpy()].sum()) == pytest.approx(_optimum(c64), rel=1e-6)


@pytest.mark.parametrize("dim", [1, 3, 16, 17, 300])
def test_host_and_device_cost_implementations_agree(dim):
    from manifoldfm.couplings.base import _sq_euclidean_host, _sq_euclidean_torch

    dtype = torch.float64 if dim <= 16 else torch.float32
    g = torch.Generator().manual_seed(dim)
    x0 = (torch.rand(40, dim, generator=g, dtype=torch.float64) + 3.0).to(dtype)
    x1 = (torch.rand(30, dim, generator=g, dtype=torch.float64) + 3.0).to(dtype)
    host = _sq_euclidean_host(x0.numpy(), x1.numpy())
    dev = _sq_euclidean_torch(x0, x1)
    ref = torch.from_numpy(_cost64(x0, x1))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for c in (host, dev):
        assert c.dtype == dtype and c.shape == (40, 30)
        torch.testing.assert_close(c.double(), ref, rtol=tol, atol=tol * float(ref.max()))


@pytest.mark.parametrize("offset", [0.0, 0.3, 3.0])
def test_shifted_cost_is_the_cost_up_to_row_and_column_constants(offset):
    from manifoldfm.couplings.base import _sq_euclidean_host, _sq_euclidean_torch

    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(70, 300, generator=g) + offset
    x1 = torch.randn(50, 300, generator=g) + offset
    ref = _cost64(x0, x1)
    host = _sq_euclidean_host(x0.numpy(), x1.numpy(), shifted=True)
    dev = _sq_euclidean_torch(x0, x1, shifted=True)
    torch.testing.assert_close(host, dev, rtol=1e-5, atol=1e-5 * float(host.abs().max()))
    for c in (host, dev):
        d = ref - c.double().numpy()  # r_i + q_j: nothing left after double centring
        left = d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()
        assert np.abs(left).max() <= 1e-5 * ref.max()


def test_pairwise_cost_small_dimension_in_float64():
    x0, x1 = _batches(5, 4, 2, 0, dtype=torch.float32)
    c = pairwise_cost(x0, x1)
    assert c.dtype == torch.float64 and c.shape == (5, 4)
    np.testing.assert_allclose(c.numpy(), _cost64(x0, x1), rtol=1e-12, atol=1e-12)
    assert float(c.min()) >= 0.0


# ---------------------------------------------------------------------------------------------
# Exact OT with unequal sizes or weights (POT network simplex) and other costs
# ---------------------------------------------------------------------------------------------


@settings(max_examples=15)
@given(n0=st.integers(1, 25), n1=st.integers(1, 25), d=st.integers(1, 4), seed=seeds)
@example(n0=10, n1=5, d=2, seed=0)
@example(n0=3, n1=9, d=1, seed=2)
def test_exact_ot_unequal_sizes_draws_from_the_plan_rows(n0, n1, d, seed):
    x0, x1 = _batches(n0, n1, d, seed)
    coupling = ExactOT()
    plan = coupling.plan(x0, x1)
    assert plan.shape == (n0, n1)
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(n0, 1 / n0), atol=1e-12)
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(n1, 1 / n1), atol=1e-12)
    # the plan is optimal: its cost equals POT's exact value
    c = _cost64(x0, x1)
    ref = ot.emd2(np.full(n0, 1 / n0), np.full(n1, 1 / n1), c)
    assert float((plan.numpy() * c).sum()) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    pair = coupling(x0, x1, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(pair.i, torch.arange(n0)) and pair.j.shape == (n0,)
    assert bool((plan[pair.i, pair.j] > 0).all()), "partner drawn outside the plan's support"
    again = coupling(x0, x1, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(pair.j, again.j)


def test_exact_ot_weights_go_through_the_plan():
    x0, x1 = _batches(6, 6, 2, 4)
    a = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 5.0])
    b = torch.tensor([0.0, 1.0, 1.0, 1.0, 3.0, 4.0])
    plan = ExactOT().plan(x0, x1, a=a, b=b)
    np.testing.assert_allclose(plan.sum(1).numpy(), (a / a.sum()).numpy(), atol=1e-12)
    np.testing.assert_allclose(plan.sum(0).numpy(), (b / b.sum()).numpy(), atol=1e-12)
    pair = ExactOT()(x0, x1, a=a, b=b, generator=torch.Generator().manual_seed(0))
    assert isinstance(pair, CouplingResult)
    assert bool((pair.j != 0).all()), "a zero-weight target was drawn"
    assert bool((plan[pair.i, pair.j] > 0).all())


def test_exact_ot_draws_follow_the_row_conditionals():
    # x0 row 0 sits between two targets: its plan row splits its mass 1:2
    x0 = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    x1 = torch.tensor([[-1.0], [1.0], [10.0]], dtype=torch.float64)
    a = torch.tensor([0.75, 0.25], dtype=torch.float64)
    b = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([ExactOT()(x0, x1, a=a, b=b, generator=g).j for _ in range(600)])
    assert bool((draws[:, 1] == 2).all())
    freq = float((draws[:, 0] == 1).double().mean())
    assert freq == pytest.approx(2 / 3, abs=0.06)


def test_manifold_and_callable_costs():
    sphere = Sphere(2)
    g = torch.Generator().manual_seed(0)
    x0 = sphere.random_uniform(30, generator=g, dtype=torch.float64)
    x1 = sphere.random_uniform(30, generator=g, dtype=torch.float64)
    c = pairwise_cost(x0, x1, sphere)
    ref = torch.stack(
        [torch.stack([sphere.dist(x0[i], x1[k]) ** 2 for k in range(30)]) for i in range(30)]
    )
    torch.testing.assert_close(c, ref)
    j = ExactOT(cost=sphere)(x0, x1).j
    cn = c.numpy()
    assert float(cn[np.arange(30), j.numpy()].sum()) == pytest.approx(_optimum(cn), rel=1e-12)

    def l1(a, b):
        return (a[:, None] - b[None]).abs().sum(-1)

    y0, y1 = _batches(60, 60, 3, 1)
    cl = l1(y0, y1)
    kept = cl.clone()
    j = ExactOT(cost=lambda a, b: cl)(y0, y1).j  # the solver must not scribble on it
    assert torch.equal(cl, kept)
    cl = cl.numpy()
    assert float(cl[np.arange(60), j.numpy()].sum()) == pytest.approx(_optimum(cl), rel=1e-12)
    # a callable cost may compare different feature shapes
    pair = ExactOT(cost=lambda a, b: torch.cdist(a[:, :2], b) ** 2)(y0, y1[:, :2])
    _assert_permutation(pair.j, 60)


def test_torus_cost_wraps_around():
    torus = FlatTorus(1)
    x0 = torch.tensor([[0.1], [3.0]], dtype=torch.float64)
    x1 = torch.tensor([[3.2], [2 * math.pi - 0.1]], dtype=torch.float64)
    assert ExactOT(cost=torus)(x0, x1).j.tolist() == [1, 0]
    assert ExactOT()(x0, x1).j.tolist() == [0, 1]  # Euclidean cost ignores the wrap


# ---------------------------------------------------------------------------------------------
# Entropic OT
# ---------------------------------------------------------------------------------------------


@settings(max_examples=15)
@given(
    n0=st.integers(1, 30),
    n1=st.integers(1, 30),
    seed=seeds,
    reg=st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 10.0]),
)
@example(n0=20, n1=20, seed=0, reg=1e-3)
def test_sinkhorn_plan_marginals(n0, n1, seed, reg):
    x0, x1 = _batches(n0, n1, 2, seed)
    tol = 1e-4 if reg < 0.1 else 1e-8
    sk = SinkhornOT(reg, tol=tol, max_iter=50_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)
        plan = sk.plan(x0, x1)
    assert bool(torch.isfinite(plan).all())
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(n0, 1 / n0), rtol=1e-10)
    assert np.abs(plan.sum(0).numpy() - 1 / n1).sum() <= tol


def test_sinkhorn_matches_pot_and_approaches_exact_plan():
    x0, x1 = _batches(25, 25, 2, 3)
    c = _cost64(x0, x1)
    u = np.full(25, 1 / 25)
    ref = ot.sinkhorn(u, u, c, reg=0.5, stopThr=1e-12, numItermax=100_000)
    ours = SinkhornOT(0.5, tol=1e-12, max_iter=100_000).plan(x0, x1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    exact = ExactOT().plan(x0, x1).numpy()
    errors = [np.abs(SinkhornOT(r).plan(x0, x1).numpy() - exact).sum() for r in (1.0, 0.1, 1e-3)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3  # of the order of the marginal tolerance
    # at tiny reg the draws are the exact permutation
    pair = SinkhornOT(1e-3)(x0, x1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pair.j, ExactOT()(x0, x1).j)


def test_sinkhorn_host_and_device_loops_agree():
    from manifoldfm.couplings._sinkhorn import _NUMPY, _TORCH, _sinkhorn_loop

    x0, x1 = _batches(30, 20, 2, 6)
    c = pairwise_cost(x0, x1)
    la = torch.full((30,), -math.log(30), dtype=torch.float64)
    lb = torch.rand(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64).log()
    lb = lb - torch.logsumexp(lb, 0)
    kw = {"max_iter": 5000, "tol": 1e-10, "scaling": 0.5, "stage_iter": 10, "omega": 1.8}
    kw.update(check_every=10, absorb_at=40.0)
    f_d, g_d, it_d, err_d = _sinkhorn_loop(_TORCH, c, la, lb, 0.05, **kw)
    f_h, g_h, it_h, err_h = _sinkhorn_loop(_NUMPY, c.numpy(), la.numpy(), lb.numpy(), 0.05, **kw)
    assert err_d <= 1e-10 and err_h <= 1e-10 and it_d == it_h
    np.testing.assert_allclose(f_d.numpy(), f_h, atol=1e-9)
    np.testing.assert_allclose(g_d.numpy(), g_h, atol=1e-9)


def test_sinkhorn_draws_follow_the_plan():
    x0, x1 = _batches(3, 4, 1, 8)
    sk = SinkhornOT(1.0)
    plan = sk.plan(x0, x1)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sk(x0, x1, generator=g).j for _ in range(800)])  # (800, 3)
    for i in range(3):
        freq = torch.bincount(draws[:, i], minlength=4).double() / 800
        expected = plan[i] / plan[i].sum()
        assert float((freq - expected).abs().max()) < 0.06


def test_generator_reproducibility():
    x0, x1 = _batches(32, 32, 2, 0)
    sk = SinkhornOT(0.5)
    a = sk(x0, x1, generator=torch.Generator().manual_seed(3))
    b = sk(x0, x1, generator=torch.Generator().manual_seed(3))
    c = sk(x0, x1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.j, b.j) and not torch.equal(a.j, c.j)
    e1 = ExactOT()(x0, x1, generator=torch.Generator().manual_seed(3))
    e2 = ExactOT()(x0, x1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(e1.j, e2.j)  # deterministic for equal batches


def test_sinkhorn_nonconvergence_warns():
    x0, x1 = _batches(20, 20, 2, 0)
    with pytest.warns(SinkhornConvergenceWarning, match="marginal L1 error"):
        pair = SinkhornOT(1e-3, max_iter=3)(x0, x1)
    assert isinstance(pair, CouplingResult)


# ---------------------------------------------------------------------------------------------
# Contract: types, dtypes, devices, bad input
# ---------------------------------------------------------------------------------------------

COUPLINGS = [
    Independent(),
    ExactOT(),
    ExactOT(solver="auction"),
    ExactOT(solver="lsa"),
    SinkhornOT(0.1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("coupling", COUPLINGS, ids=repr)
def test_dtype_device_and_result_type(coupling, dtype, device):
    x0, x1 = _batches(9, 9, 3, 0, dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    pair = coupling(x0, x1, generator=gen)
    assert isinstance(coupling, Coupling)
    assert type(pair) is CouplingResult
    assert pair.x0.dtype == pair.x1.dtype == dtype
    assert pair.x0.device == pair.x1.device == pair.i.device == pair.j.device == x0.device
    assert pair.i.dtype == pair.j.dtype == torch.int64
    assert torch.equal(pair.x0, x0[pair.i]) and torch.equal(pair.x1, x1[pair.j])
    again = coupling.coupling(x0, x1, generator=torch.Generator(device=device).manual_seed(0))
    assert torch.equal(again.j, pair.j)


def test_result_type_whatever_the_options():
    x0, x1 = _batches(8, 5, 2, 0)
    g = torch.Generator().manual_seed(0)
    results = [
        ExactOT()(x0, x1, generator=g),
        ExactOT()(x0[:5], x1, generator=g, a=torch.ones(5)),
        SinkhornOT(0.3)(x0, x1, generator=g, b=torch.ones(5)),
        Independent()(x0[:5], x1),
    ]
    assert {type(r) for r in results} == {CouplingResult}
    with pytest.raises(Exception, match=r"frozen|cannot assign"):
        results[0].j = None  # type: ignore[misc]


def test_bad_input():
    x0, x1 = _batches(4, 4, 2, 0)
    with pytest.raises(ValueError, match=r"feature shape.*\(4, 2\).*\(4, 3\)"):
        ExactOT()(x0, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"feature shape"):
        SinkhornOT(0.1)(x0, torch.zeros(4, 3, dtype=torch.float64))
    bad = x1.clone()
    bad[1, 0] = float("nan")
    bad[2, 1] = float("inf")
    for coupling in (ExactOT(), ExactOT(solver="auction"), SinkhornOT(0.1)):
        with pytest.raises(ValueError, match=r"\(4, 4\) cost matrix.*x1 holds 2 non-finite"):
            coupling(x0, bad)

    def holey(a, b):
        c = torch.cdist(a, b) ** 2
        c[0, :3] = float("nan")
        return c

    with pytest.raises(ValueError, match=r"holds 3 non-finite value\(s\); check the cost"):
        ExactOT(cost=holey)(x0, x1)
    with pytest.raises(ValueError, match="non-finite"):
        ExactOT()(x0, bad[:3])  # the POT path too
    with pytest.raises(ValueError, match="reg must be finite and > 0"):
        SinkhornOT(0.0)
    with pytest.raises(ValueError, match="reg"):
        SinkhornOT(-1.0)
    with pytest.raises(TypeError, match="reg must be a number"):
        SinkhornOT("big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scaling"):
        SinkhornOT(0.1, scaling=1.5)
    with pytest.raises(ValueError, match="max_iter"):
        SinkhornOT(0.1, max_iter=0)
    with pytest.raises(
        ValueError, match="unknown solver 'hungarian'; choose one of auto, lsa, auction"
    ):
        ExactOT(solver="hungarian")
    with pytest.raises(TypeError, match="unexpected keyword"):
        ExactOT(method="exact")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="cost must be None, a callable"):
        ExactOT(cost=3.0)
    with pytest.raises(ValueError, match=r"\(4, 4\) matrix.*got \(4,\)"):
        ExactOT(cost=lambda a, b: a.sum(1))(x0, x1)
    with pytest.raises(ValueError, match=r"batch sizes|equal size.*\(4, 2\).*\(3, 2\)"):
        Independent()(x0, x1[:3])
    with pytest.raises(ValueError, match=r"a must have shape \(4,\)"):
        ExactOT()(x0, x1, a=torch.ones(3))
    with pytest.raises(ValueError, match="a weights must be > 0"):
        ExactOT()(x0, x1, a=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="b weights must be >= 0"):
        SinkhornOT(0.1)(x0, x1, b=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="positive sum"):
        ExactOT()(x0, x1, b=torch.zeros(4))
    with pytest.raises(TypeError, match="floating dtype"):
        ExactOT()(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one sample"):
        ExactOT()(x0[:0], x1)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        ExactOT()(np.zeros((3, 2)), x1)  # type: ignore[arg-type]


def test_value_checks_switch_only_affects_sinkhorn():
    x0, x1 = _batches(4, 4, 2, 0)
    bad = x1.clone()
    bad[0, 0] = float("nan")
    with mfm.checks(values=False), pytest.raises(ValueError, match="non-finite"):
        ExactOT()(x0, bad)  # the exact solvers always check
    with mfm.checks(values=False):
        SinkhornOT(0.1)(x0, x1)


def test_repr_names_the_options():
    assert repr(ExactOT(solver="lsa")) == "ExactOT(cost=None, solver='lsa')"
    assert "reg=0.5" in repr(SinkhornOT(0.5)) and "Sphere" in repr(SinkhornOT(1.0, Sphere(2)))


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("solver", "n", "d"), [("auto", 512, 2), ("auto", 1024, 3), ("auction", 256, 3)]
)
def test_cuda_exact_ot_matches_cpu_optimum(solver, n, d):
    x0, x1 = _batches(n, n, d, 0, device="cuda")
    pair = ExactOT(solver=solver)(x0, x1)
    assert pair.j.device.type == "cuda" and pair.x1.device.type == "cuda"
    c = _cost64(x0, x1)
    assert float(c[np.arange(n), pair.j.cpu().numpy()].sum()) == pytest.approx(
        _optimum(c), rel=1e-9
    )


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e40])
def test_exact_ot_extreme_cost_scales(scale):
    # the float32 dual pre-reduction must fail soft (overflow) and never change the optimum
    for solver, n in (("lsa", 120), ("auction", 30)):
        x0, x1 = _batches(n, n, 2, 9)
        c = torch.from_numpy(_cost64(x0, x1)) * scale
        j = ExactOT(cost=lambda a, b, c=c: c, solver=solver)(x0, x1).j
        _assert_permutation(j, n)
        cn = c.numpy()
        assert float(cn[np.arange(n), j.numpy()].sum()) == pytest.approx(_optimum(cn), rel=1e-9)


@pytest.mark.parametrize("which", ["x0", "b"])
def test_sinkhorn_coupling_accepts_inputs_that_carry_gradients(which):
    # the pairing itself is not differentiable, but inputs with requires_grad (a point batch
    # under a manifold cost, or target weights) must not break it
    g = torch.Generator().manual_seed(3)
    x0 = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=F64), dim=-1)
    x1 = torch.nn.functional.normalize(torch.randn(4, 3, generator=g, dtype=F64), dim=-1)
    b = torch.full((4,), 0.25, dtype=F64)
    (x0 if which == "x0" else b).requires_grad_(True)
    ref = SinkhornOT(0.1, Sphere(2))(
        x0.detach(), x1, b=b.detach(), generator=torch.Generator().manual_seed(0)
    )
    pair = SinkhornOT(0.1, Sphere(2))(x0, x1, b=b, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pair.j, ref.j)


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e160])
def test_auction_is_exact_at_extreme_cost_scales(scale):
    # the auction works on the cost divided by its largest magnitude: no spread underflowing
    # to zero (which took the constant-matrix shortcut) or overflowing to inf
    x0, x1 = _batches(40, 40, 2, 15)
    c = pairwise_cost(x0, x1).double() * scale
    c64 = c.numpy()
    j = solve_assignment(c, "auction")
    _assert_permutation(j, 40)
    assert float(c64[np.arange(40), j.numpy()].sum()) == pytest.approx(_optimum(c64), rel=1e-8)


def test_sinkhorn_raises_a_reg_below_float64_resolution():
    # reg = 1e-20 next to costs of order 1 cannot be resolved in float64: it is raised to
    # 1e-10 of the largest cost, which gives the exact plan, not NaN or a silent all-zero pairing
    x0, x1 = _batches(6, 4, 2, 16)
    sk = SinkhornOT(1e-20, max_iter=20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        plan = sk.plan(x0, x1)
        pair = sk(x0, x1, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(plan).all() and plan.min() >= 0
    assert float(plan.sum()) == pytest.approx(1.0, abs=1e-5)
    c = pairwise_cost(x0, x1).double().numpy()
    exact = ot.emd(np.full(6, 1 / 6), np.full(4, 1 / 4), c)
    assert float((plan.double().numpy() * c).sum()) == pytest.approx(
        float((exact * c).sum()), rel=1e-6
    )
    assert pair.j.unique().numel() == 4  # every target is used, as the plan's columns say


def test_weights_near_the_float64_maximum_are_normalised():
    x0, x1 = _batches(4, 4, 2, 17)
    big = torch.full((4,), 1e308, dtype=F64)
    plan = SinkhornOT(0.5).plan(x0, x1, a=big, b=big)
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(1), torch.full((4,), 0.25, dtype=plan.dtype))
    pair = ExactOT()(x0, x1, a=big, b=big * 0.5)
    _assert_permutation(pair.j, 4)


@pytest.mark.parametrize("coupling", [ExactOT(), SinkhornOT(0.5)])
def test_couplings_name_non_tensor_and_scalar_inputs(coupling):
    x = torch.zeros(3, 2)
    with pytest.raises(TypeError, match=r"x0 must be a torch\.Tensor"):
        coupling([[0.0, 1.0]], x)
    with pytest.raises(ValueError, match="x0 must have a batch dimension"):
        coupling(torch.tensor(1.0), x)
