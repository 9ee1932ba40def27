"""Couplings: which source sample goes with which data sample in a minibatch.

``Independent`` (I-CFM), ``ExactOT`` (OT-CFM: an optimal permutation for equal batches) and
``SinkhornOT`` (SB-CFM: pairs drawn from an entropic plan). Each is called as
``coupling(x0, x1, *, generator=None) -> CouplingResult(x0, x1, i, j)``. ``FrameCost`` is a cost
for sets of rigid frames (SO(3)^N x R^{3N}, optionally aligned by ``kabsch``).
"""

from .base import Cost, Coupling, CouplingResult, pairwise_cost
from .frame_cost import FrameCost, kabsch
from .independent import Independent
from .ot import ExactOT, SinkhornConvergenceWarning, SinkhornOT

__all__ = [
    "Cost",
    "Coupling",
    "CouplingResult",
    "ExactOT",
    "FrameCost",
    "Independent",
    "SinkhornConvergenceWarning",
    "SinkhornOT",
    "kabsch",
    "pairwise_cost",
]
