"""The coupling protocol, its result record and the pairwise cost matrices couplings use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["Cost", "Coupling", "CouplingResult", "pairwise_cost"]

Cost = Callable[[Tensor, Tensor], Tensor] | Any | None
"""A cost specification: ``None`` (squared Euclidean distance over flattened features), a
callable ``(x0, x1) -> (B0, B1)`` cost matrix, or an object with a geoopt-style ``dist(x,
y)`` method (a manifold), whose squared distance is used.
"""

#: Feature dimension up to which the squared Euclidean cost is computed in float64 whatever the
#: input dtype (it costs ``B0 * B1 * D`` flops, nothing next to the assignment).
_FLOAT64_MAX_DIM = 16
#: Rows of each batch whose mean estimates the offset that the squared Euclidean cost removes.
_CENTRE_ROWS = 64


@dataclass(frozen=True, kw_only=True)
class CouplingResult:
    """A pairing of two minibatches.

    ``x0 = x0_in[i]`` and ``x1 = x1_in[j]``: row ``k`` of ``x0`` is paired with row ``k`` of
    ``x1``. The index tensors let labels or conditions follow the pairing
    (``labels[j]`` goes with ``x1``).

    Attributes:
        x0: paired source samples, shape ``(B, *shape0)``, dtype and device of the input.
        x1: paired target samples, shape ``(B, *shape1)``, dtype and device of the input.
        i: int64 indices into the source batch, shape ``(B,)``, on the inputs' device.
        j: int64 indices into the target batch, shape ``(B,)``, on the inputs' device.

    Example:
        >>> import torch
        >>> from manifoldfm.couplings import Independent
        >>> pair = Independent()(torch.zeros(3, 2), torch.ones(3, 2))
        >>> pair.i, pair.j
        (tensor([0, 1, 2]), tensor([0, 1, 2]))
    """

    x0: Tensor
    x1: Tensor
    i: Tensor
    j: Tensor


@runtime_checkable
class Coupling(Protocol):
    """Protocol of couplings: ``coupling(x0, x1, *, generator=None) -> CouplingResult``.

    ``x0`` has shape ``(B0, ...)`` and ``x1`` shape ``(B1, ...)``; the result pairs every row of
    ``x0`` with one row of ``x1``. Couplings that draw pairs use ``generator`` (on the inputs'
    device); deterministic ones ignore it. Calling the object is the same as ``.coupling``.

    Example:
        A coupling of one's own (here: the reversed order) fits wherever the built-in ones do:

        >>> import torch
        >>> from manifoldfm.couplings import Coupling, CouplingResult, ExactOT
        >>> class Reversed:
        ...     def coupling(self, x0, x1, *, generator=None):
        ...         i = torch.arange(x0.shape[0])
        ...         j = i.flip(0)
        ...         return CouplingResult(x0=x0, x1=x1[j], i=i, j=j)
        ...     __call__ = coupling
        >>> isinstance(Reversed(), Coupling), isinstance(ExactOT(), Coupling)
        (True, True)
        >>> Reversed()(torch.zeros(3, 1), torch.arange(3.0)[:, None]).x1.flatten()
        tensor([2., 1., 0.])
    """

    def coupling(
        self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None
    ) -> CouplingResult: ...

    def __call__(
        self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None
    ) -> CouplingResult: ...


def _check_pair(x0: Tensor, x1: Tensor, *, same_features: bool) -> None:
    """Shape, dtype and device checks shared by all couplings."""
    for name, x in (("x0", x0), ("x1", x1)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0:
            raise ValueError(f"{name} must have a batch dimension, got a scalar tensor")
        if x.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x0.device != x1.device:
        raise ValueError(f"x0 and x1 must be on the same device, got {x0.device} and {x1.device}")
    if same_features and x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            "x0 and x1 must have the same feature shape, got "
            f"x0: {tuple(x0.shape)} and x1: {tuple(x1.shape)}"
        )


def _check_cost_spec(cost: Cost) -> Cost:
    if cost is None or hasattr(cost, "dist") or callable(cost):
        return cost
    raise TypeError(
        "cost must be None, a callable (x0, x1) -> (B0, B1) cost matrix or an object with a "
        f"dist(x, y) method (a manifold), got {type(cost).__name__}"
    )


def _sq_euclidean(x0: Tensor, x1: Tensor, *, shifted: bool = False) -> Tensor:
    """Squared Euclidean distances between flattened rows, as one matrix product.

    With ``shifted`` (for assignment solvers, which only need the cost up to a constant per row
    and per column) the squared norms are left out above 16 features: the result is
    ``-2 <x, y>`` of the (possibly moved) rows, which saves two passes over the data and two
    over the matrix.

    ``|x|^2 + |y|^2 - 2 <x, y>`` cancels catastrophically when the data sit far from the
    origin next to their spread (images in ``[0, 1]``, say), so both batches are then first
    moved by a common offset, which leaves every distance unchanged; the offset is the mean of
    a few rows of each batch, and the move is skipped when it would change the squared norms
    by less than 20% (it costs a pass over the data). Computed in float64 when the feature
    dimension is at most 16 or the inputs are float64, otherwise in the input dtype (float32 at
    least). Inputs are detached: the result carries no gradient.

    On CPU the small passes run in NumPy and only the matrix product goes through torch (and
    its thread pool): each torch call wakes the pool, which stalls for a scheduler time slice
    whenever another process holds one of its cores.
    """
    a = x0.detach().reshape(x0.shape[0], -1)
    b = x1.detach().reshape(x1.shape[0], -1)
    dim = a.shape[1]
    if dim <= _FLOAT64_MAX_DIM or a.dtype == torch.float64:
        dtype = torch.float64
    else:
        dtype = torch.promote_types(a.dtype, torch.float32)
    a = a.to(dtype)
    b = b.to(dtype)
    if a.device.type == "cpu" and dtype in (torch.float32, torch.float64):
        return _sq_euclidean_host(a.numpy(), b.numpy(), shifted)
    return _sq_euclidean_torch(a, b, shifted)


def _worth_moving(offset: Any, mean_sq: Any) -> Any:
    """Whether moving both batches by their common centre ``c`` pays: ``|c|^2 > 0.2 s``, with
    ``s`` the mean squared distance of the sampled rows to ``c``, which is ``mean |x|^2 - |c|^2``
    (so the test is ``|c|^2 > mean |x|^2 / 6``, with no cancellation to fear)."""
    return 6.0 * offset > mean_sq


def _sq_euclidean_torch(a: Tensor, b: Tensor, shifted: bool = False) -> Tensor:
    """:func:`_sq_euclidean` in torch for ``(B, D)`` tensors of the compute dtype (devices)."""
    if a.shape[1] <= _FLOAT64_MAX_DIM:
        centre = 0.5 * (a.mean(0) + b.mean(0))
        a = a - centre
        b = b - centre
    else:
        sub_a = a[:_CENTRE_ROWS]
        sub_b = b[:_CENTRE_ROWS]
        m = sub_a.shape[0] + sub_b.shape[0]
        centre = (sub_a.sum(0) + sub_b.sum(0)) / m
        mean_sq = (sub_a.square().sum() + sub_b.square().sum()) / m
        if bool(_worth_moving(centre.square().sum(), mean_sq)):
            a = a - centre
            b = b - centre
        if shifted:
            return torch.mm(a, b.T).mul_(-2.0)
    sq_a = torch.linalg.vector_norm(a, dim=1).square_()
    sq_b = torch.linalg.vector_norm(b, dim=1).square_()
    # one (B0, B1) allocation: fresh large buffers cost page faults, the passes are cheap
    out = torch.addmm(sq_b[None, :], a, b.T, alpha=-2.0)
    return out.add_(sq_a[:, None]).clamp_min_(0.0)


def _sq_euclidean_host(a: np.ndarray, b: np.ndarray, shifted: bool = False) -> Tensor:
    """:func:`_sq_euclidean` for host arrays of one float dtype (see there)."""
    # non-finite inputs give non-finite costs, which the couplings report with their count
    with np.errstate(invalid="ignore", over="ignore"):
        return _sq_euclidean_np(a, b, shifted)


def _sq_euclidean_np(a: np.ndarray, b: np.ndarray, shifted: bool = False) -> Tensor:
    dim = a.shape[1]
    if dim <= _FLOAT64_MAX_DIM:
        centre = 0.5 * (a.mean(0) + b.mean(0))
        move = True
    else:
        # BLAS products only: a NumPy mean over rows or a pass over a centred copy of the
        # subsample costs more than a quarter of the whole 256 x 256 x 3072 cost matrix
        sub_a, sub_b = a[:_CENTRE_ROWS], b[:_CENTRE_ROWS]
        m = sub_a.shape[0] + sub_b.shape[0]
        w = np.full(sub_a.shape[0], 1.0 / m, dtype=a.dtype)
        centre = w @ sub_a + np.full(sub_b.shape[0], 1.0 / m, dtype=a.dtype) @ sub_b
        fa, fb = sub_a.ravel(), sub_b.ravel()
        mean_sq = (float(fa @ fa) + float(fb @ fb)) / m
        move = _worth_moving(float(centre @ centre), mean_sq)
    if move:
        a = a - centre
        b = b - centre
    if dim <= _FLOAT64_MAX_DIM:
        # direct differences, one coordinate at a time: exact, and no matrix product to
        # hand to a thread pool for a handful of flops per entry
        out_np = np.subtract.outer(a[:, 0], b[:, 0])
        out_np *= out_np
        for k in range(1, dim):
            diff = np.subtract.outer(a[:, k], b[:, k])
            diff *= diff
            out_np += diff
        return torch.from_numpy(out_np)
    # the O(B D) and O(B0 B1 D) passes go through torch (its threads pay off here); the
    # O(B0 B1) finishing passes through NumPy
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if shifted:
        prod = torch.mm(ta, tb.T)
        host_prod = prod.numpy()
        host_prod *= -2.0
        return prod
    sq_a = torch.linalg.vector_norm(ta, dim=1).square_().numpy()
    sq_b = torch.linalg.vector_norm(tb, dim=1).square_()
    out = torch.addmm(sq_b[None, :], ta, tb.T, alpha=-2.0)
    host = out.numpy()
    host += sq_a[:, None]
    np.maximum(host, 0.0, out=host)
    return out


def pairwise_cost(x0: Tensor, x1: Tensor, cost: Cost = None) -> Tensor:
    """Cost matrix between two batches, shape ``(B0, B1)``.

    Args:
        x0: source batch, shape ``(B0, *shape)``.
        x1: target batch, shape ``(B1, *shape)``.
        cost: ``None`` for the squared Euclidean distance over flattened features (float64
            up to 16 features, otherwise the input dtype, float32 at least; see
            :class:`ExactOT`); a callable
            ``(x0, x1) -> (B0, B1)``; or an object with a ``dist(x, y)`` method (a manifold),
            giving ``dist(x0_a, x1_b)^2`` for all pairs (``dist2`` is used when the object has
            one). The built-in cost is computed from detached inputs (no gradient).

    Returns:
        A floating tensor of shape ``(B0, B1)`` on the inputs' device.

    Raises:
        ValueError: if the feature shapes differ (built-in and manifold costs) or a callable
            returns a tensor of the wrong shape.

    Example:
        >>> import torch
        >>> from manifoldfm.couplings import pairwise_cost
        >>> c = pairwise_cost(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        >>> c.dtype, c.round(decimals=9)
        (torch.float64, tensor([[25.,  1.]], dtype=torch.float64))
    """
    cost = _check_cost_spec(cost)
    _check_pair(x0, x1, same_features=not (callable(cost) and not hasattr(cost, "dist")))
    n0, n1 = x0.shape[0], x1.shape[0]
    if cost is None:
        return _sq_euclidean(x0, x1)
    if hasattr(cost, "dist"):
        a = x0.unsqueeze(1)
        b = x1.unsqueeze(0)
        c = cost.dist2(a, b) if hasattr(cost, "dist2") else cost.dist(a, b) ** 2
    else:
        c = cost(x0, x1)
    if not isinstance(c, Tensor) or tuple(c.shape) != (n0, n1):
        shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
        raise ValueError(
            f"the cost must give a ({n0}, {n1}) matrix for x0: {tuple(x0.shape)} and "
            f"x1: {tuple(x1.shape)}, got {shape}"
        )
    if not c.is_floating_point():
        c = c.to(torch.promote_types(x0.dtype, torch.float32))
    return c


def _count_nonfinite(x: Tensor) -> int:
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        # one NumPy pass: no thread pool to wake (and stall on a busy machine)
        arr = x.detach().numpy()
        return 0 if np.isfinite(arr).all() else int((~np.isfinite(arr)).sum())
    return int((~torch.isfinite(x)).sum())


def _check_cost_finite(c: Tensor, x0: Tensor, x1: Tensor) -> None:
    bad = _count_nonfinite(c)
    if bad:
        culprits = [
            f"{name} holds {k} non-finite value(s)"
            for name, x in (("x0", x0), ("x1", x1))
            if (k := _count_nonfinite(x))
        ]
        why = f" ({'; '.join(culprits)})" if culprits else "; check the cost function"
        raise ValueError(
            f"the ({c.shape[0]}, {c.shape[1]}) cost matrix between x0: {tuple(x0.shape)} and "
            f"x1: {tuple(x1.shape)} holds {bad} non-finite value(s){why}"
        )


def _weights(w: Tensor | None, n: int, name: str, like: Tensor, *, strict: bool) -> Tensor | None:
    """Validate marginal weights and normalise them to sum 1 (float64, on ``like``'s device)."""
    if w is None:
        return None
    if not isinstance(w, Tensor):
        w = torch.as_tensor(w)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the batch, got {tuple(w.shape)}")
    w = w.detach().to(dtype=torch.float64, device=like.device)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} holds non-finite weights")
    low = float(w.min())
    if (strict and low <= 0) or low < 0:
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} weights must be {rel}, got a minimum of {low:.6g}")
    top = float(w.max())
    if top <= 0:
        raise ValueError(f"{name} weights must have a positive sum, got {float(w.sum()):.6g}")
    w = w / top  # first by the largest: the sum of weights near the float64 maximum overflows
    return w / w.sum()
