"""Geodesic conditional paths on manifolds: ``x_t = exp_{x0}(kappa_t log_{x0} x1)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._utils import as_time, broadcast_time
from ..manifolds.base import Manifold
from ..manifolds.euclidean import Euclidean
from .affine import check_pair
from .base import PathSample
from .schedulers import CondOT, ScheduleOutput, Scheduler

__all__ = ["GeodesicPath"]

#: How far ``alpha_0`` and ``alpha_1`` may sit from 0 and 1 for a schedule to count as a
#: geodesic schedule ``kappa_t`` (evaluated in float64).
_KAPPA_TOL = 1e-9


def _check_kappa(scheduler: Scheduler, owner: str) -> None:
    """Raise unless ``scheduler(t).alpha`` runs from 0 at ``t = 0`` to 1 at ``t = 1``.

    Example:
        >>> from manifoldfm import VP
        >>> from manifoldfm.paths.geodesic import _check_kappa
        >>> _check_kappa(VP(), "GeodesicPath")
        Traceback (most recent call last):
        ...
        ValueError: GeodesicPath needs a schedule whose kappa_t = alpha_t runs from 0 at t = 0 to 1 at t = 1; VP(beta_min=0.1, beta_max=20.0) gives alpha_0 = 0.00657 and alpha_1 = 1 (diffusion schedules such as VP and VE never reach the endpoints)
    """
    if not callable(scheduler):
        raise TypeError(f"scheduler must be callable, got {type(scheduler).__name__}")
    out = scheduler(torch.tensor([0.0, 1.0], dtype=torch.float64))
    if not isinstance(out, ScheduleOutput):
        raise TypeError(f"scheduler must return a ScheduleOutput, got {type(out).__name__}")
    k0, k1 = (float(a) for a in out.alpha.detach().reshape(-1)[:2].tolist())
    if not (abs(k0) <= _KAPPA_TOL and abs(k1 - 1.0) <= _KAPPA_TOL):
        raise ValueError(
            f"{owner} needs a schedule whose kappa_t = alpha_t runs from 0 at t = 0 to 1 at "
            f"t = 1; {scheduler!r} gives alpha_0 = {k0:.3g} and alpha_1 = {k1:.6g} (diffusion "
            "schedules such as VP and VE never reach the endpoints)"
        )


def _point_ndim(manifold: Any) -> int:
    """Number of trailing point dimensions of a library or geoopt-style manifold (0 if unknown)."""
    if isinstance(manifold, Manifold):
        return len(manifold.point_shape)
    nd = getattr(manifold, "ndim", 0)
    return nd if isinstance(nd, int) and not isinstance(nd, bool) and nd >= 0 else 0


def _check_points(manifold: Any, x0: Tensor, x1: Tensor) -> None:
    """Validate a batch of endpoint pairs against ``manifold``'s point shape.

    ``x0`` and ``x1`` must be floating tensors of one shape ``(B, ..., *point_shape)`` (a batch
    dimension, optional extra leading dimensions), dtype and device. With manifold checks on,
    library manifolds also check that both lie on the manifold.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import Sphere
        >>> from manifoldfm.paths.geodesic import _check_points
        >>> _check_points(Sphere(2), torch.zeros(4, 3), torch.zeros(4, 2))
        Traceback (most recent call last):
        ...
        ValueError: x0 and x1 must have the same shape, got x0 (4, 3) and x1 (4, 2)
    """
    check_pair(x0, x1)
    if not x0.is_floating_point():
        raise TypeError(f"x0 and x1 must have a floating dtype, got {x0.dtype}")
    k = _point_ndim(manifold)
    if isinstance(manifold, Manifold):
        shape = manifold.point_shape
        if x0.ndim < k + 1 or tuple(x0.shape[x0.ndim - k :]) != shape:
            want = ", ".join(map(str, shape))
            raise ValueError(
                f"x0 and x1 must have shape (B, ..., {want}) on {manifold!r}, got {tuple(x0.shape)}"
            )
        manifold._require_point("x0", x0)
        manifold._require_point("x1", x1)
    elif x0.ndim < k + 1:
        raise ValueError(
            f"x0 and x1 need a batch dimension before the manifold's {k} point dimension(s), "
            f"got shape {tuple(x0.shape)}"
        )


class GeodesicPath:
    r"""Geodesic conditional path ``x_t = exp_{x0}(kappa_t log_{x0} x1)`` on a manifold.

    The point moves the fraction ``kappa_t = alpha_t`` of the scheduler along the minimising
    geodesic from ``x0`` (``t = 0``) to ``x1`` (``t = 1``); the target is its velocity

    ``u_t = kappa'_t * d/ds exp_{x0}(s u)`` at ``s = kappa_t``, with ``u = log_{x0} x1``,

    a tangent vector at ``x_t`` whose Riemannian norm is ``kappa'_t dist(x0, x1)``. The
    geodesic's velocity is the parallel transport of ``u`` to ``x_t``, which every library
    manifold has in closed form (see :meth:`~manifoldfm.manifolds.Manifold.expmap_transp`):

    * ``Euclidean``: ``x_t = x0 + kappa_t (x1 - x0)``, ``u_t = kappa'_t (x1 - x0)`` (equal to
      ``AffinePath`` with the same ``kappa``: with ``CondOT()`` bit for bit);
    * ``Sphere``: ``x_t = cos(kappa_t theta) x0 + sin(kappa_t theta) e``,
      ``u_t = kappa'_t theta (cos(kappa_t theta) e - sin(kappa_t theta) x0)`` with
      ``u = theta e``;
    * ``FlatTorus``: ``x_t = wrap(x0 + kappa_t u)``, ``u_t = kappa'_t u``;
    * ``SO3``: ``x_t = x0 exp(kappa_t hat(w))``, ``u_t = kappa'_t x_t hat(w)`` with
      ``u = x0 hat(w)``;
    * ``Product``: each factor by its own closed form.

    One log map and one exponential map per call, no autograd. Any other object with geoopt's
    ``expmap(x, u)`` and ``logmap(x, y)`` also works (for example a ``geoopt.Sphere``): then
    ``u_t`` is the forward-mode derivative (``torch.func.jvp``) of ``s -> exp_{x0}(s u)`` at
    ``kappa_t``, times ``kappa'_t``; a library manifold without an exact transport is
    differentiated the same way.

    **Cut locus.** Where ``x1`` is on the cut locus of ``x0`` (antipodes on spheres, rotations
    by ``pi`` on SO(3), a coordinate difference of ``pi`` on tori) the minimising geodesic is
    not unique; the path follows the manifold's documented ``logmap`` convention, with finite
    values and gradients.

    Args:
        manifold: a library manifold, or any object with geoopt's ``expmap`` and ``logmap``.
        scheduler: the schedule; ``kappa_t`` is its ``alpha``, which must run from 0 at
            ``t = 0`` to 1 at ``t = 1`` (``CondOT``, ``Polynomial``, ``Cosine``; not ``VP`` or
            ``VE``). Defaults to ``CondOT()``: constant speed ``dist(x0, x1)``.

    Attributes:
        manifold: the manifold.
        scheduler: the schedule.
        singular_times: the scheduler's: times where ``kappa'_t`` is infinite (``t = 0``
            for ``Polynomial(n < 1)``), so that ``ut`` is not finite there; draw training
            times away from them.

    Raises:
        ValueError: if the schedule's ``alpha`` does not run from 0 to 1.
        TypeError: if ``manifold`` lacks ``expmap``/``logmap`` or the scheduler is not callable.

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import Sphere
        >>> from manifoldfm.paths import GeodesicPath
        >>> path = GeodesicPath(Sphere(2))
        >>> x0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
        >>> x1 = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
        >>> s = path.sample(x0, x1, torch.tensor([0.5], dtype=torch.float64))
        >>> (s.xt * math.sqrt(2)).round(decimals=6)  # half way along the quarter circle
        tensor([[1., 1., 0.]], dtype=torch.float64)
        >>> torch.linalg.vector_norm(s.ut) / (math.pi / 2)  # constant speed dist(x0, x1)
        tensor(1., dtype=torch.float64)

    References:
        Chen, Lipman. Flow Matching on General Geometries. ICLR 2024.
    """

    def __init__(self, manifold: Any, scheduler: Scheduler | None = None) -> None:
        if not (
            callable(getattr(manifold, "expmap", None))
            and callable(getattr(manifold, "logmap", None))
        ):
            raise TypeError(
                "manifold must be a manifoldfm manifold or have geoopt's expmap and logmap "
                f"methods, got {type(manifold).__name__}"
            )
        self.manifold = manifold
        self.scheduler: Scheduler = CondOT() if scheduler is None else scheduler
        _check_kappa(self.scheduler, "GeodesicPath")
        self.singular_times: tuple[float, ...] = tuple(
            getattr(self.scheduler, "singular_times", ())
        )
        self._native = isinstance(manifold, Manifold)
        self._euclidean = isinstance(manifold, Euclidean)
        # CondOT: kappa_t = t, kappa'_t = 1 whatever sigma_min (the geodesic ignores sigma).
        self._unit_speed = isinstance(self.scheduler, CondOT)

    def __repr__(self) -> str:
        return f"GeodesicPath({self.manifold!r}, {self.scheduler!r})"

    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor | float,
        *,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Point and target velocity of the geodesic path at ``t``.

        Args:
            x0: source points ``(B, ..., *point_shape)``: a batch dimension, then optional
                extra dimensions (e.g. ``N`` frames per sample), then the point dimensions.
            x1: data points, same shape.
            t: times ``(B,)`` in ``[0, 1]``, one per sample and shared by its extra
                dimensions (a float or 0-dim tensor is broadcast).
            generator: unused (the path draws no noise); accepted for the path protocol.

        Returns:
            :class:`~manifoldfm.PathSample` with ``xt`` on the manifold and ``ut`` tangent at
            ``xt``, both of ``x0``'s shape, dtype and device.

        Raises:
            ValueError: on shapes that do not match the manifold or each other, or ``t``
                outside ``[0, 1]``.
        """
        _check_points(self.manifold, x0, x1)
        t = as_time(t, x0)
        xt, ut = self._target(x0, x1, t, generator)
        return PathSample(t=t, x0=x0, x1=x1, xt=xt, ut=ut)

    def _target(
        self, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``(xt, ut)`` for validated inputs (``t`` of shape ``(B,)``)."""
        sched = self.scheduler(t)
        kappa, d_kappa = sched.alpha, sched.d_alpha
        m = self.manifold
        if self._euclidean:
            # Straight line: exact at both endpoints, the same kernels as AffinePath.
            xt = torch.lerp(x0, x1, broadcast_time(kappa, x0))
            diff = x1 - x0
            return xt, diff if self._unit_speed else broadcast_time(d_kappa, x0) * diff
        if self._native:
            u = m._logmap(x0, x1)
            lead = x0.ndim - len(m.point_shape)
            s = kappa.reshape(kappa.shape + (1,) * (lead - 1))
            xt, vel = m._expmap_velocity(x0, u, s)
            return xt, vel if self._unit_speed else broadcast_time(d_kappa, vel) * vel
        u = m.logmap(x0, x1)

        def point(k: Tensor) -> Tensor:
            return m.expmap(x0, k * u)

        res = torch.func.jvp(point, (broadcast_time(kappa, x0),), (broadcast_time(d_kappa, x0),))
        return res[0], res[1]
