"""The coupling contract of ``manifoldfm.testing.check_coupling`` over every shipped coupling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manifoldfm as mfm
from manifoldfm.couplings import CouplingResult, ExactOT, FrameCost, Independent, SinkhornOT
from manifoldfm.manifolds import SE3, FlatTorus, Sphere
from manifoldfm.testing import check_coupling

from .conftest import DEVICES

F64 = torch.float64


def _batch(space: str, n: int, seed: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if space == "R3":
        x = torch.randn(n, 3, generator=g, dtype=F64)
    elif space == "S2":
        x = Sphere(2).random_uniform(n, generator=g, dtype=F64)
    elif space == "T2":
        x = FlatTorus(2).random_uniform(n, generator=g, dtype=F64)
    else:  # SE(3)^4 frames
        x = SE3().random(n, 4, generator=g, dtype=F64)
    return x.to(dtype=dtype, device=device)


_COST = {"R3": None, "S2": Sphere(2), "T2": FlatTorus(2), "SE3^4": FrameCost()}

#: (name, factory(space) -> coupling, is a permutation, is an exact OT solver)
_COUPLINGS = [
    ("independent", lambda space: Independent(), True, False),
    ("exact-lsa", lambda space: ExactOT(cost=_COST[space]), True, True),
    ("exact-auction", lambda space: ExactOT(cost=_COST[space], solver="auction"), True, True),
    ("sinkhorn", lambda space: SinkhornOT(0.5, cost=_COST[space]), False, False),
]


@pytest.mark.parametrize(
    ("name", "make", "perm", "optimal"), _COUPLINGS, ids=[c[0] for c in _COUPLINGS]
)
@pytest.mark.parametrize("space", ["R3", "S2", "T2", "SE3^4"])
@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_every_coupling_meets_the_contract(name, make, perm, optimal, space, n, seed):
    x0 = _batch(space, n, seed, F64, "cpu")
    x1 = _batch(space, n, seed + 1, F64, "cpu")
    check_coupling(
        make(space), x0, x1, seed=seed, permutation=perm, optimal=optimal, cost=_COST[space]
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_in_float32_and_on_each_device(device, dtype):
    x0 = _batch("S2", 40, 3, dtype, device)
    x1 = _batch("S2", 40, 4, dtype, device)
    s2 = Sphere(2)
    for coupling, perm, optimal in (
        (Independent(), True, False),
        (ExactOT(cost=s2), True, True),
        (SinkhornOT(0.2, cost=s2), False, False),
    ):
        check_coupling(coupling, x0, x1, permutation=perm, optimal=optimal, cost=s2)


def test_unequal_batches_and_weights_follow_the_contract():
    x0 = _batch("R3", 12, 0, F64, "cpu")
    x1 = _batch("R3", 20, 1, F64, "cpu")
    check_coupling(ExactOT(), x0, x1)  # a plan, partners drawn with the generator
    check_coupling(SinkhornOT(0.3), x0, x1)
    with pytest.raises(ValueError, match="equal size"):
        check_coupling(ExactOT(), x0, x1, permutation=True)


class _Shuffled:
    """Pairs x1 in a random order: a valid coupling, not an optimal one."""

    def coupling(self, x0, x1, *, generator=None):
        i = torch.arange(x0.shape[0])
        j = torch.randperm(x1.shape[0], generator=generator)
        return CouplingResult(x0=x0, x1=x1[j], i=i, j=j)

    __call__ = coupling


class _Unseeded(_Shuffled):
    """Ignores the generator: the same seed does not give the same pairs."""

    def coupling(self, x0, x1, *, generator=None):
        return super().coupling(x0, x1, generator=None)

    __call__ = coupling


class _WrongRows(_Shuffled):
    """Reports indices that do not match the rows it returns."""

    def coupling(self, x0, x1, *, generator=None):
        res = super().coupling(x0, x1, generator=generator)
        return CouplingResult(x0=res.x0, x1=x1, i=res.i, j=res.j)

    __call__ = coupling


class _Int32(_Shuffled):
    def coupling(self, x0, x1, *, generator=None):
        res = super().coupling(x0, x1, generator=generator)
        return CouplingResult(x0=res.x0, x1=res.x1, i=res.i.int(), j=res.j.int())

    __call__ = coupling


class _Repeats:
    """Pairs every x0 with x1[0]: in range, but not a permutation."""

    def coupling(self, x0, x1, *, generator=None):
        i = torch.arange(x0.shape[0])
        j = torch.zeros_like(i)
        return CouplingResult(x0=x0, x1=x1[j], i=i, j=j)

    __call__ = coupling


def test_check_coupling_catches_broken_couplings():
    x0 = _batch("R3", 16, 5, F64, "cpu")
    x1 = _batch("R3", 16, 6, F64, "cpu")
    check_coupling(_Shuffled(), x0, x1, permutation=True)  # valid, and a permutation
    with pytest.raises(AssertionError, match="exceeds that of"):
        check_coupling(_Shuffled(), x0, x1, optimal=True)
    with pytest.raises(AssertionError, match="same generator seed"):
        torch.manual_seed(0)
        check_coupling(_Unseeded(), x0, x1)
    with pytest.raises(AssertionError, match=r"result.x1 is not x1\[j\]"):
        check_coupling(_WrongRows(), x0, x1)
    with pytest.raises(AssertionError, match="int64"):
        check_coupling(_Int32(), x0, x1)
    check_coupling(_Repeats(), x0, x1)  # a valid (degenerate) coupling ...
    with pytest.raises(AssertionError, match="permutation"):
        check_coupling(_Repeats(), x0, x1, permutation=True)  # ... but not a permutation
    with pytest.raises(AssertionError, match="not CouplingResult"):
        check_coupling(
            type("Bad", (), {"coupling": lambda self, a, b, generator=None: (a, b)})(), x0, x1
        )


def test_exact_ot_is_optimal_against_brute_force():
    """On 6 points every permutation is tried: the checker's random trials are a lower bar."""
    import itertools

    for seed in range(5):
        x0 = _batch("T2", 6, seed, F64, "cpu")
        x1 = _batch("T2", 6, seed + 50, F64, "cpu")
        res = check_coupling(ExactOT(cost=FlatTorus(2)), x0, x1, optimal=True, cost=FlatTorus(2))
        c = mfm.couplings.pairwise_cost(x0, x1, FlatTorus(2))
        best = min(float(c[range(6), list(p)].sum()) for p in itertools.permutations(range(6)))
        assert float(c[res.i, res.j].sum()) <= best + 1e-12
