"""The probability-path protocol and its result record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["PathSample", "ProbPath"]


@dataclass(frozen=True, kw_only=True)
class PathSample:
    """One draw from a conditional probability path, the regression target of flow matching.

    Attributes:
        t: times, shape ``(B,)``.
        x0: source samples, shape ``(B, *point_shape)``.
        x1: data samples, same shape.
        xt: points on the conditional paths at time ``t``, same shape.
        ut: conditional target velocities at ``xt``, same shape.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, CondOT
        >>> s = AffinePath(CondOT()).sample(torch.zeros(2, 3), torch.ones(2, 3), torch.full((2,), 0.5))
        >>> s.xt
        tensor([[0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000]])
    """

    t: Tensor
    x0: Tensor
    x1: Tensor
    xt: Tensor
    ut: Tensor


@runtime_checkable
class ProbPath(Protocol):
    """Protocol of conditional probability paths.

    ``path.sample(x0, x1, t, *, generator=None) -> PathSample``: ``x0`` and ``x1`` have shape
    ``(B, *point_shape)`` and ``t`` shape ``(B,)`` (a float or 0-dim tensor is broadcast).
    Paths that draw extra noise (bridges) use ``generator``; deterministic paths ignore it.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, CondOT, GeodesicPath, Sphere
        >>> from manifoldfm.paths import ProbPath
        >>> isinstance(AffinePath(CondOT()), ProbPath), isinstance(GeodesicPath(Sphere(2)), ProbPath)
        (True, True)
        >>> AffinePath(CondOT()).sample(torch.zeros(2, 3), torch.ones(2, 3), 0.25).xt.shape
        torch.Size([2, 3])
    """

    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor | float, *, generator: torch.Generator | None = None
    ) -> PathSample: ...
