"""Shape-annotated aliases and the protocols shared across the library (private)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Points", "Tangents", "Times", "VelocityField"]

#: A batch of points, shape ``(B, *point_shape)``.
Points = Tensor
#: A batch of tangent vectors, same shape as the points they are attached to.
Tangents = Tensor
#: One time per batch element, shape ``(B,)``, values in ``[0, 1]``.
Times = Tensor


@runtime_checkable
class VelocityField(Protocol):
    """A time-dependent vector field ``v(x, t, **cond) -> Tensor``.

    ``x`` has shape ``(B, *point_shape)``, ``t`` shape ``(B,)``; the result has ``x``'s shape.
    Conditions (class labels, context embeddings) arrive as keyword arguments. Any
    ``nn.Module`` or plain function with this signature qualifies.
    """

    def __call__(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor: ...
