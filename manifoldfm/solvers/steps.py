"""Explicit Runge-Kutta steps, written once and driven by Butcher tableaux given as data.

Every fixed-step method (Euler, midpoint, Heun, classical RK4) and the adaptive Dormand-Prince
pair go through :func:`rk_step`. In Euclidean space it is the usual Runge-Kutta step with plain
additions. On a manifold every stage velocity is projected onto the tangent space at its stage
point and one of two schemes moves the state:

- ``"expmap"`` (geodesic updates): stage points ``projx(expmap(x, proju(x, h sum_j a_ij k_j)))``
  and new state ``projx(expmap(x, proju(x, h sum_i b_i k_i)))``. Intrinsic, exact along
  geodesics, but the stage velocities live in different tangent spaces, so on a curved manifold
  the order is at most 2 whatever the tableau (Euler keeps order 1).
- ``"projection"`` (the projection method): the Runge-Kutta step is taken in the ambient space
  on the field extended by ``y -> proju(projx(y), v(projx(y)))`` and every stage point and new
  state is mapped back with ``projx``. It keeps the tableau's full order on embedded manifolds
  (spheres, SO(3) as matrices, tori as angles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import ManifoldLike

__all__ = [
    "DOPRI5",
    "EULER",
    "HEUN",
    "MANIFOLD_SCHEMES",
    "MIDPOINT",
    "RK4",
    "TABLEAUX",
    "ButcherTableau",
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
MIDPOINT = ButcherTableau(name="midpoint", order=2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
HEUN = ButcherTableau(name="heun", order=2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)
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

#: How a Runge-Kutta step moves on a manifold (see :func:`rk_step`).
MANIFOLD_SCHEMES: tuple[str, ...] = ("expmap", "projection")

#: The tableaux by method name.
TABLEAUX: dict[str, ButcherTableau] = {
    tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RK4, DOPRI5)
}


def _combine(coeffs: tuple[float, ...], ks: list[Tensor], h: float) -> Tensor | None:
    """``h * sum_j coeffs[j] * ks[j]`` skipping zero coefficients (``None`` if all are zero)."""
    acc: Tensor | None = None
    for c, k in zip(coeffs, ks):
        if c == 0.0:
            continue
        acc = k * (h * c) if acc is None else torch.add(acc, k, alpha=h * c)
    return acc


def _move(x: Tensor, u: Tensor | None, manifold: ManifoldLike | None, scheme: str) -> Tensor:
    if u is None:
        return x
    if manifold is None:
        return x + u
    if scheme == "projection":
        return manifold.projx(x + u)
    return manifold.projx(manifold.expmap(x, manifold.proju(x, u)))


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
        manifold: optional manifold with geoopt's ``proju``, ``expmap`` and ``projx``.
        scheme: how to move on the manifold, ``"expmap"`` or ``"projection"`` (see the module
            docstring).
        k1: the velocity at ``(x, t)`` when already known (FSAL); evaluated otherwise.

    Returns:
        ``(x_new, k_last, error)``: the new state; for FSAL tableaux the velocity at
        ``(x_new, t + h)`` (else ``None``); the embedded error estimate of ``x``'s shape for
        tableaux with ``b_err`` (else ``None``).

    Example:
        >>> import torch
        >>> from manifoldfm.solvers import RK4, rk_step
        >>> x0 = torch.ones(1, 1, dtype=torch.float64)
        >>> x, _, _ = rk_step(lambda x, t: -x, x0, 0.0, 0.1, RK4)
        >>> round(float(x), 7)  # the Taylor polynomial of exp(-0.1) = 0.9048374...
        0.9048375

    References:
        Hairer, Norsett, Wanner. Solving Ordinary Differential Equations I, 2nd ed., Springer
        1993, section II.1. Hairer, Lubich, Wanner. Geometric Numerical Integration, 2nd ed.,
        Springer 2006, chapter IV (projection methods and integrators on manifolds).
    """
    if manifold is not None and scheme not in MANIFOLD_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(MANIFOLD_SCHEMES)}")
    ks = [f(x, t) if k1 is None else k1]
    x_new: Tensor | None = None
    last = tableau.stages - 1
    for i in range(1, tableau.stages):
        xi = _move(x, _combine(tableau.a[i], ks, h), manifold, scheme)
        ks.append(f(xi, t + tableau.c[i] * h))
        if tableau.fsal and i == last:
            x_new = xi
    if x_new is None:
        x_new = _move(x, _combine(tableau.b, ks, h), manifold, scheme)
    err: Tensor | None = None
    if tableau.b_err is not None:
        err = _combine(tableau.b_err, ks, h)
        if err is None:
            err = torch.zeros_like(x)
        elif manifold is not None and scheme == "expmap":
            err = manifold.proju(x, err)
    return x_new, (ks[-1] if tableau.fsal else None), err
