"""Euclidean space R^d as a (flat) manifold: expmap is ``+``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Manifold, norm

__all__ = ["Euclidean"]


class Euclidean(Manifold):
    """Euclidean space ``R^d`` with the standard inner product.

    ``expmap(x, u) = x + u``, ``logmap(x, y) = y - x``, ``dist`` is the Euclidean distance,
    ``transp`` and the transport of ``expmap_transp`` are the identity (exact parallel
    transport). There is no cut locus. The volume is infinite, so :meth:`random_uniform`
    raises; :meth:`random` draws standard normal points.

    Args:
        d: dimension, or a tuple for a point shape of several dimensions (e.g. ``(3, 4)``;
            then ``dim`` is the product).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import Euclidean
        >>> r3 = Euclidean(3)
        >>> x, y = torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
        >>> r3.dist(x, y)
        tensor([5., 1.])
        >>> r3.point_shape, r3.dim
        ((3,), 3)
    """

    name = "Euclidean"
    _expmap_projects = True
    volume = math.inf
    injectivity_radius = math.inf
    _deviation_name = "non-finite entries"

    def __init__(self, d: int | Sequence[int]) -> None:
        super().__init__()
        shape = (d,) if isinstance(d, int) else tuple(d) if isinstance(d, Sequence) else ()
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(
                f"Euclidean dimension must be a positive int or tuple of them, got {d!r}"
            )
        self._set_shape(shape, math.prod(shape))

    def extra_repr(self) -> str:
        return str(self.point_shape[0]) if len(self.point_shape) == 1 else str(self.point_shape)

    def _projx(self, x: Tensor) -> Tensor:
        return x

    def _proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u.expand(torch.broadcast_shapes(x.shape, u.shape))

    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        out = (u * v).sum(dim=self._point_dims())
        return out.expand(self._lead_shape(x, out))

    def _lead_shape(self, x: Tensor, out: Tensor) -> tuple[int, ...]:
        return tuple(torch.broadcast_shapes(self._lead(x), out.shape))

    def _expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def _logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        return norm(y - x, self._point_dims())

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        return u.expand(torch.broadcast_shapes(x.shape, y.shape, u.shape))

    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(x.shape, y.shape, v.shape)
        return v.expand(shape)

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        y = x + u
        return y, v.expand(torch.broadcast_shapes(y.shape, v.shape))

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        sb = s.reshape(s.shape + (1,) * len(self.point_shape))
        y = torch.addcmul(x, sb, u)
        return y, u.expand(y.shape)

    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:  # pragma: no cover - random_uniform raises before reaching this
        raise ValueError(f"{self!r} has no uniform distribution")

    def _random(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        return torch.randn(size + self.point_shape, generator=generator, dtype=dtype, device=device)

    def _origin(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.zeros(size + self.point_shape, dtype=dtype, device=device)

    def _point_deviation(self, x: Tensor) -> Tensor:
        finite = torch.isfinite(x).flatten(start_dim=x.ndim - len(self.point_shape)).all(-1)
        return torch.where(finite, 0.0, math.inf).to(x.dtype)

    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        return self._point_deviation(u)
