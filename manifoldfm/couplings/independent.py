"""The independent (identity) coupling of I-CFM."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CouplingResult, _check_pair

__all__ = ["Independent"]


class Independent:
    """Pair row ``k`` of ``x0`` with row ``k`` of ``x1``: the independent coupling of I-CFM.

    Two independently drawn batches paired in order are a draw from the product coupling, so no
    shuffling is needed. Both batches must have the same size.

    Example:
        >>> import torch
        >>> from manifoldfm.couplings import Independent
        >>> x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
        >>> pair = Independent()(x0, x1)
        >>> torch.equal(pair.x1, x1), pair.j.tolist()
        (True, [0, 1, 2, 3])
    """

    def coupling(
        self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None
    ) -> CouplingResult:
        """Return the identity pairing of ``x0`` and ``x1``.

        Args:
            x0: source batch, shape ``(B, ...)``.
            x1: target batch, shape ``(B, ...)``.
            generator: unused (the pairing is deterministic); accepted for the common protocol.

        Raises:
            ValueError: if the batch sizes differ.
        """
        _check_pair(x0, x1, same_features=False)
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(
                "Independent pairs batches of equal size, got "
                f"x0: {tuple(x0.shape)} and x1: {tuple(x1.shape)}"
            )
        idx = torch.arange(x0.shape[0], device=x0.device)
        return CouplingResult(x0=x0, x1=x1, i=idx, j=idx.clone())

    __call__ = coupling

    def __repr__(self) -> str:
        return "Independent()"
