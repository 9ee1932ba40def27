"""Explicit Runge-Kutta steps, written once and driven by Butcher tableaux given as data.

Every fixed-step method (Euler, midpoint, Heun, classical RK4) and the adaptive Dormand-Prince
pair go through :func:`rk_step`. In Euclidean space it is the usual Runge-Kutta step with plain
additions. On a manifold every stage velocity is projected onto the tangent space at its stage
point and one of two schemes moves the state:

- ``"expmap"`` (the default; Runge-Kutta in normal coordinates centred at the current state
  ``x``, i.e. Runge-Kutta-Munthe-Kaas with the exponential map as chart): stage points
  ``y_i = exp_x(xi_i)`` with ``xi_i = h sum_j a_ij k~_j`` in the tangent space at ``x``, whose
  velocities ``k_i = v(y_i)`` are pulled back to that tangent space by the differential of
  the logarithm, ``k~_i = D log_x(y_i)[k_i]`` (``k~_1 = k_1``); the new state is
  ``exp_x(h sum_i b_i k~_i)``. This is the Runge-Kutta method applied to the ODE written in
  the chart ``exp_x``, so it keeps the tableau's full order on any manifold with ``expmap``
  and ``logmap`` (while ``|h v|`` stays well inside the injectivity radius), and the embedded
  error estimate of ``dopri5`` lives in the tangent space at ``x``. ``D log_x`` (see
  :func:`dlogmap`) is the identity on flat manifolds (:class:`~manifoldfm.manifolds.Euclidean`,
  :class:`~manifoldfm.manifolds.FlatTorus`), so there it is the plain Runge-Kutta step
  followed by ``expmap``; spheres and ``SO3`` have closed forms; other manifolds use a
  forward-mode ``torch.func.jvp`` of their ``logmap``. Every state is ``projx(expmap(...))``,
  on the manifold to rounding.
- ``"projection"`` (the projection method): the Runge-Kutta step is taken in the ambient space
  on the field extended by ``y -> proju(projx(y), v(projx(y)))`` and every stage point and new
  state is mapped back with ``projx``. It also keeps the tableau's full order on embedded
  manifolds (spheres, SO(3) as matrices, tori as angles) and needs no ``logmap``.

The fixed-step loop of :func:`~manifoldfm.solvers.solve_ode` takes the same steps with the
manifold's operations resolved once per solve. Where autograd records nothing (sampling under
``torch.no_grad``, or no input of an operation requiring grad) it uses the untracked fast
operations of :class:`~manifoldfm.manifolds.Sphere` and
:class:`~manifoldfm.manifolds.FlatTorus` in float32 and float64: no small-angle series (they
exist for exact gradients), row sums over the last dimension as a matrix product on the CPU,
projections written into the solver's own temporaries. They agree with the general operations
to rounding and keep every state on the manifold; where autograd records, the general
operations run, so gradients through the solver are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import Tensor

from ..manifolds import Manifold
from ._common import CountedField, ManifoldLike, expmap, proju, projx

__all__ = [
    "DOPRI5",
    "EULER",
    "HEUN",
    "MANIFOLD_SCHEMES",
    "MIDPOINT",
    "RK4",
    "TABLEAUX",
    "ButcherTableau",
    "dlogmap",
    "has_logmap",
    "rk_step",
]


@dataclass(frozen=True, kw_only=True)
class ButcherTableau:
    """Coefficients of an explicit Runge-Kutta method.

    Attributes:
        name: the method's name.
        order: the order of the solution weights ``b``.
        c: stage times as fractions of the step, one per stage.
        a: the strictly lower-triangular stage matrix, row ``i`` holding ``i`` coefficients.
        b: solution weights, one per stage.
        b_err: weights of the embedded error estimate ``b - b_hat`` (adaptive methods only).
        fsal: "first same as last": the last stage is evaluated at the new state, so its
            velocity is the first stage of the next step (requires ``a[-1] == b``).

    Example:
        >>> from manifoldfm.solvers import ButcherTableau
        >>> ButcherTableau(name="heun", order=2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5)).stages
        2

    References:
        Hairer, Norsett, Wanner. Solving Ordinary Differential Equations I, 2nd ed., Springer
        1993, section II.1.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None
    fsal: bool = False

    def __post_init__(self) -> None:
        s = len(self.b)
        if s < 1 or len(self.c) != s or len(self.a) != s:
            raise ValueError(
                f"tableau {self.name!r}: c, a and b need one entry per stage, got "
                f"{len(self.c)}, {len(self.a)} and {s}"
            )
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(
                    f"tableau {self.name!r}: row {i} of a needs {i} entries, got {len(row)}"
                )
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(
                    f"tableau {self.name!r}: row {i} of a must sum to c[{i}] = {self.c[i]}"
                )
        if self.b_err is not None and len(self.b_err) != s:
            raise ValueError(
                f"tableau {self.name!r}: b_err needs {s} entries, got {len(self.b_err)}"
            )
        if self.fsal and (s < 2 or self.a[-1] != self.b[:-1] or self.b[-1] != 0 or self.c[-1] != 1):
            raise ValueError(
                f"tableau {self.name!r}: fsal needs a[-1] == b with b[-1] = 0 and c[-1] = 1"
            )

    @property
    def stages(self) -> int:
        """The number of stages (velocity evaluations per step, FSAL aside)."""
        return len(self.b)


EULER = ButcherTableau(name="euler", order=1, c=(0.0,), a=((),), b=(1.0,))
"""Forward Euler: one stage, order 1."""
MIDPOINT = ButcherTableau(name="midpoint", order=2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
"""The explicit midpoint rule: two stages, order 2."""
HEUN = ButcherTableau(name="heun", order=2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
"""Heun's method (explicit trapezoid): two stages, order 2."""
RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)
"""The classical fourth-order Runge-Kutta method: four stages, order 4."""
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
DOPRI5 = ButcherTableau(
    name="dopri5",
    order=5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DP_B,
    ),
    b=(*_DP_B, 0.0),
    # b (order 5) minus the embedded order-4 weights.
    b_err=(71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
    fsal=True,
)
"""Dormand-Prince 5(4): seven stages (first same as last), order 5 with an embedded order-4
error estimate, for adaptive steps."""

MANIFOLD_SCHEMES: tuple[str, ...] = ("expmap", "projection")
"""How a Runge-Kutta step moves on a manifold (see :func:`rk_step`)."""

TABLEAUX: dict[str, ButcherTableau] = {
    tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RK4, DOPRI5)
}
"""The tableaux by method name."""


def _combine(coeffs: tuple[float, ...], ks: list[Tensor], h: float) -> Tensor | None:
    """``h * sum_j coeffs[j] * ks[j]`` skipping zero coefficients (``None`` if all are zero)."""
    acc: Tensor | None = None
    for c, k in zip(coeffs, ks):
        if c == 0.0:
            continue
        acc = k * (h * c) if acc is None else torch.add(acc, k, alpha=h * c)
    return acc


def _move(x: Tensor, u: Tensor | None, manifold: ManifoldLike | None, scheme: str) -> Tensor:
    """The point reached from ``x`` by the (tangent, for ``"expmap"``) increment ``u``."""
    if u is None:
        return x
    if manifold is None:
        return x + u
    if scheme == "projection":
        return projx(manifold, x + u)
    y = expmap(manifold, x, u)
    # the library's spheres, tori and Euclidean spaces land on the manifold by construction
    return y if getattr(manifold, "_expmap_projects", False) else projx(manifold, y)


def has_logmap(manifold: object) -> bool:
    """Whether the ``"expmap"`` scheme can pull stage velocities back on ``manifold``.

    Example:
        >>> from manifoldfm.manifolds import SO3
        >>> from manifoldfm.solvers.steps import has_logmap
        >>> has_logmap(SO3()), has_logmap(object())
        (True, False)
    """
    return isinstance(manifold, Manifold) or callable(getattr(manifold, "logmap", None))


def dlogmap(manifold: ManifoldLike, x: Tensor, y: Tensor, u: Tensor) -> Tensor:
    """The differential of the logarithm in its second argument: ``D log_x(y)[u]``.

    It maps a tangent vector ``u`` at ``y`` to the tangent space at ``x``: the velocity, in
    normal coordinates centred at ``x``, of a curve through ``y`` with velocity ``u``. The
    library's manifolds have closed forms (the identity on ``Euclidean`` and ``FlatTorus``, the
    Jacobi-field formula on spheres, the inverse right Jacobian on ``SO3``, factor by factor on
    products; a forward-mode ``torch.func.jvp`` of ``logmap`` for others); other objects use
    their own ``dlogmap(x, y, u)`` when they have one and otherwise the ``torch.func.jvp`` of
    their ``logmap``. Nothing is validated and nothing syncs with the host.

    Args:
        manifold: a manifold with ``logmap(x, y)``.
        x: base points, shape ``(B, *shape)``.
        y: points, same shape, away from the cut locus of ``x``.
        u: tangent vectors at ``y``, same shape.

    Returns:
        Tangent vectors at ``x``, same shape.

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import Sphere
        >>> from manifoldfm.solvers import dlogmap
        >>> s2 = Sphere(2)
        >>> x = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)  # a quarter turn away
        >>> dlogmap(s2, x, y, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))
        tensor([[0.0000, 1.5708, 0.0000]], dtype=torch.float64)
    """
    if isinstance(manifold, Manifold):
        return manifold._dlogmap(x, y, u)
    duck: Any = manifold
    custom = getattr(duck, "dlogmap", None)
    if callable(custom):
        out: Tensor = custom(x, y, u)
        return out

    def log_x(p: Tensor) -> Tensor:
        res: Tensor = duck.logmap(x, p)
        return res

    jvp: Tensor = torch.func.jvp(log_x, (y,), (u,))[1]
    return jvp


def rk_step(
    f: Callable[[Tensor, float], Tensor],
    x: Tensor,
    t: float,
    h: float,
    tableau: ButcherTableau,
    *,
    manifold: ManifoldLike | None = None,
    scheme: str = "expmap",
    k1: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One explicit Runge-Kutta step from ``(t, x)`` to ``t + h``.

    Args:
        f: the velocity ``f(x, t) -> Tensor`` at a Python-float time, already tangent at ``x``
            on a manifold.
        x: the state, shape ``(B, *shape)``.
        t: the current time.
        h: the signed step size (negative to integrate backwards).
        tableau: the method's :class:`ButcherTableau`.
        manifold: optional manifold with geoopt's ``proju``, ``expmap`` and ``projx`` (and
            ``logmap`` for the ``"expmap"`` scheme with more than one stage).
        scheme: how to move on the manifold, ``"expmap"`` (Runge-Kutta in normal coordinates
            at ``x``) or ``"projection"`` (see the module docstring). Both keep the tableau's
            order.
        k1: the velocity at ``(x, t)`` when already known (FSAL); evaluated otherwise.

    Returns:
        ``(x_new, k_last, error)``: the new state; for FSAL tableaux the velocity at
        ``(x_new, t + h)`` (else ``None``), tangent at ``x_new``; the embedded error estimate
        of ``x``'s shape for tableaux with ``b_err`` (else ``None``), tangent at ``x`` for the
        ``"expmap"`` scheme.

    Raises:
        ValueError: an unknown scheme.
        TypeError: the ``"expmap"`` scheme with several stages on a manifold without
            ``logmap``.

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import RK4, rk_step
        >>> x0 = torch.ones(1, 1, dtype=torch.float64)
        >>> x, _, _ = rk_step(lambda x, t: -x, x0, 0.0, 0.1, RK4)
        >>> round(float(x), 7)  # the Taylor polynomial of exp(-0.1) = 0.9048374...
        0.9048375

        On the sphere, the rotation about the z axis (exact flow: a rotation by ``h``):

        >>> import math
        >>> from manifoldfm.manifolds import Sphere
        >>> e_z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        >>> x0 = torch.tensor([[0.6, 0.0, 0.8]], dtype=torch.float64)
        >>> x, _, _ = rk_step(lambda x, t: torch.linalg.cross(e_z.expand_as(x), x), x0, 0.0, 0.5,
        ...                   RK4, manifold=Sphere(2))
        >>> exact = torch.tensor([[0.6 * math.cos(0.5), 0.6 * math.sin(0.5), 0.8]])
        >>> float((x - exact).norm()) < 1e-4
        True

    References:
        Hairer, Norsett, Wanner. Solving Ordinary Differential Equations I, 2nd ed., Springer
        1993, section II.1. Hairer, Lubich, Wanner. Geometric Numerical Integration, 2nd ed.,
        Springer 2006, chapter IV (projection methods, integrators based on local
        coordinates, Munthe-Kaas methods). Munthe-Kaas. High order Runge-Kutta methods on
        manifolds. Appl. Numer. Math. 29 (1999).
    """
    geodesic = manifold is not None and scheme == "expmap"
    if manifold is not None and scheme not in MANIFOLD_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(MANIFOLD_SCHEMES)}")
    if geodesic and tableau.stages > 1 and not has_logmap(manifold):
        raise TypeError(
            f"the 'expmap' scheme pulls stage velocities back with the differential of "
            f"logmap(x, y), which {type(manifold).__name__} lacks; use scheme='projection'"
        )
    k = f(x, t) if k1 is None else k1
    # The stage velocities, pulled back to the tangent space at x for the expmap scheme.
    ks = [k]
    x_new: Tensor | None = None
    last = tableau.stages - 1
    for i in range(1, tableau.stages):
        xi = _move(x, _combine(tableau.a[i], ks, h), manifold, scheme)
        k = f(xi, t + tableau.c[i] * h)
        if tableau.fsal and i == last:
            x_new = xi
        ks.append(dlogmap(manifold, x, xi, k) if geodesic and manifold is not None else k)
    if x_new is None:
        x_new = _move(x, _combine(tableau.b, ks, h), manifold, scheme)
    err: Tensor | None = None
    if tableau.b_err is not None:
        err = _combine(tableau.b_err, ks, h)
        if err is None:
            err = torch.zeros_like(x)
    # FSAL: the raw velocity at x_new is the next step's first stage.
    return x_new, (k if tableau.fsal else None), err


_Coeffs = tuple[tuple[int, float], ...]


def _nonzero(coeffs: tuple[float, ...]) -> _Coeffs:
    return tuple((j, a) for j, a in enumerate(coeffs) if a != 0.0)


def _build_plan(tableau: ButcherTableau) -> tuple[tuple[_Coeffs, ...], _Coeffs]:
    return tuple(_nonzero(row) for row in tableau.a[1:]), _nonzero(tableau.b)


_PLANS = {t.name: (t, *_build_plan(t)) for t in TABLEAUX.values()}


def _plan(tableau: ButcherTableau) -> tuple[tuple[_Coeffs, ...], _Coeffs]:
    """The nonzero stage coefficients ``(j, a_ij)`` of each row ``i >= 1`` and of ``b``
    (computed once for the library's tableaux)."""
    plan = _PLANS.get(tableau.name)
    if plan is not None and plan[0] is tableau:
        return plan[1], plan[2]
    return _build_plan(tableau)


class _FastManifold(Protocol):
    """The untracked fast operations of ``Sphere`` and ``FlatTorus`` (see their sources):
    ``aux`` is what ``_fast_aux(x0)`` returned; ``_projx_inplace`` overwrites ``y`` and
    ``_expmap_fast`` may overwrite ``u``, temporaries the solver owns."""

    def _fast_aux(self, x: Tensor) -> Any: ...

    def _proju_fast(self, x: Tensor, u: Tensor, aux: Any) -> Tensor: ...

    def _projx_inplace(self, y: Tensor, aux: Any) -> Tensor: ...

    def _expmap_fast(self, x: Tensor, u: Tensor, aux: Any) -> Tensor: ...

    def _dlogmap_fast(self, x: Tensor, y: Tensor, u: Tensor, aux: Any) -> Tensor: ...


class _FixedStep:
    """One step of an explicit tableau (no error estimate, no FSAL) for ``solve_ode``'s
    fixed-step loop, with everything that does not change from step to step resolved once.

    It takes the same step as :func:`rk_step` (to rounding). Where autograd records nothing
    (``torch.no_grad``, or no input of an operation requires grad) it uses the manifold's
    untracked fast operations when it has them (``Sphere``, ``FlatTorus``: no small-angle
    series, row sums as matrix products, projections written into the solver's own
    temporaries); where autograd records, the operations of :func:`rk_step`, so gradients
    through the solver are unchanged. Stage increments are accumulated in place in fresh
    temporaries (in-place additions are safe for autograd: ``add`` saves no input).
    """

    __slots__ = ("aux", "b", "c", "fast", "field", "geodesic", "grad", "manifold", "rows")

    def __init__(
        self,
        field: CountedField,
        tableau: ButcherTableau,
        manifold: ManifoldLike | None,
        scheme: str,
        x0: Tensor,
    ) -> None:
        if tableau.fsal or tableau.b_err is not None:
            raise ValueError(f"tableau {tableau.name!r} needs rk_step (FSAL or error estimate)")
        self.field = field
        self.manifold = manifold
        self.rows, self.b = _plan(tableau)
        self.c = tableau.c
        self.geodesic = manifold is not None and scheme == "expmap"
        fast = (
            isinstance(manifold, Manifold)
            and hasattr(manifold, "_projx_inplace")
            and x0.dtype in (torch.float32, torch.float64)
        )
        self.fast = cast(_FastManifold, manifold) if fast else None
        self.aux = self.fast._fast_aux(x0) if self.fast is not None else None
        # whether autograd may record anything in this solve (grad mode is per thread and
        # a velocity field that switches it restores it before returning)
        self.grad = torch.is_grad_enabled()

    @property
    def absorbing(self) -> bool:
        """Whether a non-finite state stays non-finite through every later step (so the
        initial state needs a finiteness check only when the last one fails)."""
        return self.manifold is None or self.fast is not None

    @property
    def bounded(self) -> bool:
        """Whether every state after a step has bounded coordinates (or is NaN), so that its
        plain sum is finite exactly when all entries are."""
        return self.fast is not None

    def __call__(self, x: Tensor, t: float, h: float) -> Tensor:
        velocity, advance = self.velocity, self.advance
        ks = [velocity(x, t)]
        for i, row in enumerate(self.rows, start=1):
            y = advance(x, row, ks, h)
            k = velocity(y, t + self.c[i] * h)
            ks.append(self.pull_back(x, y, k) if self.geodesic else k)
        return advance(x, self.b, ks, h)

    def pull_back(self, x: Tensor, y: Tensor, k: Tensor) -> Tensor:
        """``D log_x(y)[k]``: the stage velocity in the tangent space at ``x``."""
        recorded = self.grad and (x.requires_grad or y.requires_grad or k.requires_grad)
        if self.fast is not None and not recorded:
            return self.fast._dlogmap_fast(x, y, k, self.aux)
        return dlogmap(cast(ManifoldLike, self.manifold), x, y, k)

    def velocity(self, y: Tensor, t: float) -> Tensor:
        """The field at ``(y, t)``, projected onto the tangent space at ``y``."""
        field, m = self.field, self.manifold
        k = field.raw(y, field.time(y, t))
        if m is None:
            return k
        if self.fast is not None and not (self.grad and (y.requires_grad or k.requires_grad)):
            return self.fast._proju_fast(y, k, self.aux)
        return proju(m, y, k)

    def advance(self, x: Tensor, coeffs: _Coeffs, ks: list[Tensor], h: float) -> Tensor:
        """The point reached from ``x`` by ``h sum_j coeffs_j ks_j``."""
        if not coeffs:
            return x
        m = self.manifold
        (j, a), rest = coeffs[0], coeffs[1:]
        if self.geodesic:
            u = ks[j] * (h * a)
            for j, a in rest:
                u.add_(ks[j], alpha=h * a)
            if self.fast is not None and not (self.grad and (x.requires_grad or u.requires_grad)):
                return self.fast._expmap_fast(x, u, self.aux)
            return _move(x, u, m, "expmap")
        if rest or m is None:
            # x + h sum_j a_j k_j rounded as rk_step (and solve_sde's Euler-Maruyama) round it
            y = ks[j] * (h * a)
            for j, a in rest:
                y.add_(ks[j], alpha=h * a)
            y.add_(x)
            if m is None:
                return y
        else:  # one stage velocity, on a manifold: one fused multiply-add
            y = torch.add(x, ks[j], alpha=h * a)
        if self.fast is not None and not y.requires_grad:
            return self.fast._projx_inplace(y, self.aux)
        return projx(m, y)
