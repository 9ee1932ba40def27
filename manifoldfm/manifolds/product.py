"""Cartesian products of manifolds with the product metric, points stored flat."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._utils import safe_sqrt
from .base import Manifold, _tiny_root

__all__ = ["Product"]


class Product(Manifold):
    r"""Product ``M_1 x ... x M_k`` with the product metric (squared distances add up).

    **Layout.** A point is a flat tensor of shape ``(..., D)`` with ``D`` the sum of the
    factors' point sizes: each factor's point is flattened (row-major) and the pieces are
    concatenated in order. :meth:`split` returns the factor views with their own point shapes
    and :meth:`join` builds the flat tensor, so for ``Product(SO3(), Euclidean(3))`` (the
    metric of SE(3) used by this library) a point is ``(..., 12)``: the 9 entries of the
    rotation matrix, then the translation. Tangent vectors use the same layout.

    Every operation acts factor by factor: ``inner`` sums the factors' inner products,
    ``dist = sqrt(sum_i dist_i^2)``, ``expmap/logmap/transp/projx/proju`` are applied to each
    piece, ``random_uniform`` draws each factor in turn from the same generator, the volume is
    the product of the volumes and the injectivity radius the smallest one. Each factor's cut
    locus convention applies to its piece. ``component_inner`` returns every factor's inner
    product repeated over that factor's entries, so ``geoopt.optim.RiemannianAdam`` keeps one
    second-moment estimate per factor.

    Args:
        *manifolds: the factors (library manifolds, at least one; products nest).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import SO3, Euclidean, Product
        >>> se3 = Product(SO3(), Euclidean(3))
        >>> x = se3.join(torch.eye(3).expand(2, 3, 3), torch.zeros(2, 3))
        >>> x.shape, se3.dim
        (torch.Size([2, 12]), 6)
        >>> rot, trans = se3.split(x)
        >>> rot.shape, trans.shape
        (torch.Size([2, 3, 3]), torch.Size([2, 3]))
    """

    name = "Product"

    def __init__(self, *manifolds: Manifold | Sequence[Manifold]) -> None:
        super().__init__()
        items: tuple[object, ...] = manifolds
        if len(manifolds) == 1 and isinstance(manifolds[0], (list, tuple)):
            items = tuple(manifolds[0])
        if not items:
            raise ValueError("Product needs at least one factor")
        factors: list[Manifold] = []
        for i, m in enumerate(items):
            if not isinstance(m, Manifold):
                raise TypeError(f"factor {i} must be a manifoldfm manifold, got {type(m).__name__}")
            factors.append(m)
        self.factors = nn.ModuleList(factors)
        self.sizes = tuple(math.prod(m.point_shape) for m in self._ms)
        bounds = [0]
        for s in self.sizes:
            bounds.append(bounds[-1] + s)
        self._bounds = tuple(bounds)
        self._set_shape((bounds[-1],), sum(m.dim for m in self._ms))
        self.volume = math.prod(m.volume for m in self._ms)
        self.injectivity_radius = min(m.injectivity_radius for m in self._ms)
        self.parallel_transport = all(m.parallel_transport for m in self._ms)
        self._expmap_projects = all(m._expmap_projects for m in self._ms)
        self._deviation_name = "largest factor deviation"

    @property
    def _ms(self) -> tuple[Manifold, ...]:
        return tuple(self.factors)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return ", ".join(repr(m) for m in self._ms)

    # -------------------------------------------------------------------- layout

    def _split(self, x: Tensor) -> list[Tensor]:
        b = self._bounds
        return [
            x[..., b[i] : b[i + 1]].unflatten(-1, m.point_shape) for i, m in enumerate(self._ms)
        ]

    @staticmethod
    def _flat(m: Manifold, p: Tensor) -> Tensor:
        return p.flatten(start_dim=p.ndim - len(m.point_shape))

    def _join(self, parts: Sequence[Tensor]) -> Tensor:
        flats = [self._flat(m, p) for m, p in zip(self._ms, parts)]
        lead = torch.broadcast_shapes(*(f.shape[:-1] for f in flats))
        return torch.cat([f.expand(lead + f.shape[-1:]) for f in flats], dim=-1)

    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        """Views of a flat point (or tangent vector) as the factors' pieces.

        Args:
            x: shape ``(..., D)``.

        Returns:
            One tensor per factor, shape ``(..., *factor.point_shape)`` (views, no copy).
        """
        self._validate("x", x)
        return tuple(self._split(x))

    def join(self, *parts: Tensor) -> Tensor:
        """Flatten and concatenate one piece per factor into the flat layout.

        Args:
            *parts: one tensor per factor, shape ``(..., *factor.point_shape)``; leading
                shapes broadcast.

        Returns:
            Shape ``(..., D)``.
        """
        if len(parts) != len(self._ms):
            raise ValueError(f"{self!r} has {len(self._ms)} factors, got {len(parts)} parts")
        for i, (m, p) in enumerate(zip(self._ms, parts)):
            m._validate(f"part {i}", p)
        dtypes = {p.dtype for p in parts}
        if len(dtypes) > 1:
            raise TypeError(f"parts must share a dtype, got {sorted(map(str, dtypes))}")
        try:
            return self._join(parts)
        except RuntimeError:
            shapes = [tuple(p.shape) for p in parts]
            raise ValueError(f"leading shapes of the parts do not broadcast: {shapes}") from None

    def _map(self, fn: str, *tensors: Tensor) -> Tensor:
        pieces = [self._split(t) for t in tensors]
        return self._join([getattr(m, fn)(*(p[i] for p in pieces)) for i, m in enumerate(self._ms)])

    # -------------------------------------------------------------------- implementations

    def _projx(self, x: Tensor) -> Tensor:
        return self._map("_projx", x)

    def _proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map("_proju", x, u)

    def _egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map("_egrad2rgrad", x, u)

    def _inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        xs, us, vs = self._split(x), self._split(u), self._split(v)
        out = [m._inner(a, b, c) for m, a, b, c in zip(self._ms, xs, us, vs)]
        return torch.stack(torch.broadcast_tensors(*out), dim=-1).sum(-1)

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        """Each factor's inner product repeated over its entries, shape ``(..., D)``.

        geoopt's ``RiemannianAdam`` uses it for per-factor adaptive step sizes.
        """
        v = u if v is None else v
        self._validate_same(x=x, u=u, v=v)
        self._require_point("x", x)
        xs, us, vs = self._split(x), self._split(u), self._split(v)
        out = [m._inner(a, b, c) for m, a, b, c in zip(self._ms, xs, us, vs)]
        out = list(torch.broadcast_tensors(*out))
        return torch.cat(
            [o[..., None].expand((*o.shape, s)) for o, s in zip(out, self.sizes)], dim=-1
        )

    def _expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map("_expmap", x, u)

    def _logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._map("_logmap", x, y)

    def _dlogmap(self, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
        return self._map("_dlogmap", x, y, u)

    def _dist(self, x: Tensor, y: Tensor) -> Tensor:
        xs, ys = self._split(x), self._split(y)
        d = [m._dist(a, b) for m, a, b in zip(self._ms, xs, ys)]
        sq = torch.stack(torch.broadcast_tensors(*d), dim=-1).square().sum(-1)
        return safe_sqrt(sq, eps=_tiny_root(sq.dtype))

    def _transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._map("_transp", x, y, v)

    def _expmap_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        xs, us, vs = self._split(x), self._split(u), self._split(v)
        out = [m._expmap_transp(a, b, c) for m, a, b, c in zip(self._ms, xs, us, vs)]
        return self._join([o[0] for o in out]), self._join([o[1] for o in out])

    def _expmap_velocity(self, x: Tensor, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        xs, us = self._split(x), self._split(u)
        out = [m._expmap_velocity(a, b, s) for m, a, b in zip(self._ms, xs, us)]
        return self._join([o[0] for o in out]), self._join([o[1] for o in out])

    def _random_tangent(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._join(
            [m._random_tangent(p, generator) for m, p in zip(self._ms, self._split(x))]
        )

    def _random_uniform(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        return self._join([m._random_uniform(size, generator, dtype, device) for m in self._ms])

    def _random(
        self,
        size: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Tensor:
        return self._join([m._random(size, generator, dtype, device) for m in self._ms])

    def _origin(self, size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        return self._join([m._origin(size, dtype, device) for m in self._ms])

    def _point_deviation(self, x: Tensor) -> Tensor:
        devs = [m._point_deviation(p) for m, p in zip(self._ms, self._split(x))]
        return torch.stack(devs, dim=-1).amax(-1)

    def _tangent_deviation(self, x: Tensor, u: Tensor) -> Tensor:
        xs, us = self._split(x), self._split(u)
        devs = [m._tangent_deviation(a, b) for m, a, b in zip(self._ms, xs, us)]
        return torch.stack(torch.broadcast_tensors(*devs), dim=-1).amax(-1)
