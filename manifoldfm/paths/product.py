"""Paths on product manifolds: one conditional path (and schedule) per factor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._utils import as_time
from ..manifolds.base import Manifold
from ..manifolds.euclidean import Euclidean
from ..manifolds.product import Product
from ..manifolds.se3 import SE3
from .base import PathSample, ProbPath
from .geodesic import GeodesicPath, _check_points

__all__ = ["ProductPath"]


def _same_geometry(a: Manifold, b: Manifold) -> bool:
    return a is b or (type(a) is type(b) and repr(a) == repr(b))


class ProductPath:
    r"""One conditional path per factor of a :class:`~manifoldfm.manifolds.Product` manifold.

    ``sample`` splits ``x0`` and ``x1`` with the product's layout, samples every factor's
    path at the same time ``t`` (one per sample) and joins the pieces: ``x_t`` and ``u_t``
    are the concatenations of the factors' ``x_t`` and ``u_t``. Each factor keeps its own
    schedule, for example a rotation that moves faster than the translation on
    ``SO(3) x R^3`` (``Polynomial(n)`` with ``n < 1`` for the rotation: most of the turn
    happens early); with one schedule for all factors the result equals
    ``GeodesicPath(Product(...), schedule)``.

    **Factors.** A factor path with a ``manifold`` attribute (:class:`GeodesicPath`, a nested
    ``ProductPath``) brings its manifold, and ``manifold`` defaults to the product of them. A
    path without one (``AffinePath``, ``LinearGaussianPath``, ...) moves in a Euclidean
    factor whose size it does not know: then pass ``manifold``, a ``Product`` whose factor
    at that position is a ``Euclidean``; its other factors must match the paths' manifolds.

    Args:
        paths: the factor paths, in the order of the product's factors (at least one).
        manifold: the ``Product`` (or ``SE3``) manifold; required when a path has no
            ``manifold``.

    Attributes:
        paths: the factor paths (a tuple).
        manifold: the ``Product`` (or ``SE3``) manifold.
        singular_times: the union of the factor paths' singular times.

    Raises:
        ValueError: on an empty list, a count or geometry that does not match ``manifold``, or
            a path without a manifold and no ``manifold`` given.
        TypeError: on an object without ``sample`` or a ``manifold`` that is not a ``Product``.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import SO3, Euclidean, Product
        >>> from manifoldfm.paths import AffinePath, CondOT, GeodesicPath, Polynomial, ProductPath
        >>> se3 = Product(SO3(), Euclidean(3))
        >>> path = ProductPath([GeodesicPath(SO3(), Polynomial(0.5)), AffinePath(CondOT())], manifold=se3)
        >>> g = torch.Generator().manual_seed(0)
        >>> x0, x1 = se3.random(8, generator=g), se3.random(8, generator=g)
        >>> s = path.sample(x0, x1, torch.rand(8, generator=g))
        >>> s.xt.shape, s.ut.shape
        (torch.Size([8, 12]), torch.Size([8, 12]))
        >>> path.singular_times  # Polynomial(0.5) has an infinite speed at t = 0
        (0.0,)

        On SE(3) frames, ``(B, N, 4, 4)``:

        >>> from manifoldfm.manifolds import SE3
        >>> frames = ProductPath([GeodesicPath(SO3(), Polynomial(0.5)), AffinePath(CondOT())], manifold=SE3())
        >>> x0, x1 = SE3().random(8, 5, generator=g), SE3().random(8, 5, generator=g)
        >>> s = frames.sample(x0, x1, torch.rand(8, generator=g))
        >>> s.xt.shape, bool((s.ut[..., 3, :] == 0).all())
        (torch.Size([8, 5, 4, 4]), True)
    """

    def __init__(self, paths: Sequence[ProbPath], *, manifold: Product | SE3 | None = None) -> None:
        if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
            raise TypeError(f"paths must be a sequence of paths, got {type(paths).__name__}")
        paths = tuple(paths)
        if not paths:
            raise ValueError("ProductPath needs at least one factor path")
        for i, p in enumerate(paths):
            if not callable(getattr(p, "sample", None)):
                raise TypeError(f"factor {i} must be a path with a sample method, got {p!r}")
        own = [getattr(p, "manifold", None) for p in paths]
        for i, (p, m) in enumerate(zip(paths, own)):
            if m is not None and not isinstance(m, Manifold):
                raise TypeError(
                    f"factor {i} ({p!r}) is on {type(m).__name__}, not a manifoldfm manifold: "
                    "a Product takes library manifolds only"
                )
        if manifold is None:
            missing = [i for i, m in enumerate(own) if m is None]
            if missing:
                raise ValueError(
                    f"factor path(s) {missing} have no manifold (e.g. AffinePath): pass "
                    "manifold=Product(...) with a Euclidean factor in their place, or use "
                    "GeodesicPath(Euclidean(d), scheduler)"
                )
            manifold = Product(*own)  # type: ignore[arg-type]
        else:
            if not isinstance(manifold, (Product, SE3)):
                raise TypeError(
                    f"manifold must be a Product or an SE3, got {type(manifold).__name__}"
                )
            factors = manifold._ms
            if len(factors) != len(paths):
                raise ValueError(f"{manifold!r} has {len(factors)} factors, got {len(paths)} paths")
            for i, (p, m, f) in enumerate(zip(paths, own, factors)):
                if m is None and not isinstance(f, Euclidean):
                    raise ValueError(
                        f"factor {i}: {p!r} has no manifold and moves in Euclidean space, but "
                        f"the product's factor is {f!r}"
                    )
                if m is not None and not _same_geometry(m, f):
                    raise ValueError(
                        f"factor {i}: the path is on {m!r} but the product's factor is {f!r}"
                    )
        self.paths: tuple[Any, ...] = paths
        self.manifold: Product | SE3 = manifold
        times: set[float] = set()
        for p in paths:
            times.update(getattr(p, "singular_times", ()))
        self.singular_times: tuple[float, ...] = tuple(sorted(times))

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.paths)
        return f"ProductPath([{inner}], manifold={self.manifold!r})"

    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor | float,
        *,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Sample every factor's path at the same ``t`` and join the pieces.

        Args:
            x0: source points ``(B, ..., D)`` in the product's flat layout.
            x1: data points, same shape.
            t: times ``(B,)`` in ``[0, 1]`` shared by all factors (a float is broadcast).
            generator: passed to every factor path (used by those that draw noise).

        Returns:
            :class:`~manifoldfm.PathSample` whose ``xt``/``ut`` join the factors' pieces.

        Raises:
            ValueError: on shapes that do not match the product or each other, or ``t``
                outside ``[0, 1]``.
        """
        _check_points(self.manifold, x0, x1)
        t = as_time(t, x0)
        xt, ut = self._target(x0, x1, t, generator)
        return PathSample(t=t, x0=x0, x1=x1, xt=xt, ut=ut)

    def _target(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        m = self.manifold
        xts, uts = [], []
        for p, a, b in zip(self.paths, m._split(x0), m._split(x1)):
            if isinstance(p, (GeodesicPath, ProductPath)):
                # Inputs already validated: skip the factor's own checks (and their syncs).
                xt, ut = p._target(a, b, t, generator)
            else:
                s = p.sample(a, b, t, generator=generator)
                xt, ut = s.xt, s.ut
            xts.append(xt)
            uts.append(ut)
        if isinstance(m, SE3):
            return m._join(xts), m._join_tangent(uts)
        return m._join(xts), m._join(uts)
