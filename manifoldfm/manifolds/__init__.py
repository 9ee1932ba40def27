"""Riemannian manifolds: geoopt-compatible, batched, exact exp/log maps.

``Euclidean(d)``, ``Sphere(d)`` (S^d in R^{d+1}), ``FlatTorus(d)`` (angles in [0, 2 pi)),
``SO3()`` (3x3 rotation matrices), ``SE3()`` (4x4 homogeneous matrices, product metric
SO(3) x R^3) and ``Product(*manifolds)`` (flat layout with
``split``/``join``). All subclass :class:`Manifold`, itself an abstract ``geoopt.Manifold``.
"""

from .base import Manifold
from .euclidean import Euclidean
from .product import Product
from .se3 import SE3
from .so3 import SO3
from .sphere import Sphere
from .torus import FlatTorus

__all__ = ["SE3", "SO3", "Euclidean", "FlatTorus", "Manifold", "Product", "Sphere"]
