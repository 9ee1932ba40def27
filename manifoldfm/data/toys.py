"""Two-dimensional toy distributions used throughout the flow-matching literature.

Every sampler has the signature ``f(n, *, generator=None, dtype=None, device=None, **params)``
and returns an ``(n, 2)`` tensor. Draws are i.i.d., vectorised and pure torch.

**Generator and device rule.** Random numbers are drawn on the *generator's* device (on
``device`` when no generator is given) in the requested dtype, and the result is then moved to
``device``. A seeded CPU generator therefore gives the same points whatever ``device`` asks for;
to draw directly on a GPU, pass a generator created on that GPU. ``dtype`` defaults to
``torch.get_default_dtype()``.

**Scales.** Defaults reproduce the conventional sizes of these toys:

* ``eight_gaussians``: 8 components on a circle of radius ``scale = 5`` with isotropic standard
  deviation ``std = 0.1 ** 0.25 ~ 0.562`` (the distribution of the widely used "8 gaussians"
  of conditional flow matching, whose covariance is ``sqrt(0.1) I``).
* ``moons``: the two interleaving half circles of unit radius (upper moon centred at the origin,
  lower moon at ``(1, 0.5)``), Gaussian noise of standard deviation ``noise = 0.1``, then mapped
  by ``3 p - 1`` (``scale = 3``, ``shift = (-1, -1)``), the frame used in conditional flow
  matching tutorials: about ``[-4, 5] x [-2.5, 2]``.
* ``circles``: two concentric circles of radii ``3`` and ``1.5`` (``scale = 3``,
  ``factor = 0.5``) with Gaussian noise ``0.08`` before scaling, as in FFJORD's toy suite.
* ``checkerboard``: uniform on the 8 dark squares of a 4 x 4 board of squares of side
  ``scale = 2`` covering ``[-4, 4]^2`` (FFJORD's construction).
* ``spirals``: two interleaved arms ``r (-cos r, sin r)`` with ``r = 3 pi sqrt(u)`` (1.5 turns), a
  uniform ``[0, 0.5)`` jitter per coordinate, divided by ``3`` and blurred by Gaussian noise
  ``0.1`` (FFJORD's "2spirals").

Points are drawn at random along the curves (not on a fixed grid), so every sampler is an
i.i.d. sampler of one fixed distribution.

References:
    Grathwohl et al. FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
    Models. ICLR 2019.
    Tong et al. Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal
    Transport. TMLR 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._utils import check_positive

__all__ = [
    "TOYS",
    "ToySample",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "moons",
    "sample_toy",
    "sample_toy_labeled",
    "spirals",
]


@dataclass(frozen=True, kw_only=True)
class ToySample:
    """Toy points with the index of the component each one came from.

    Attributes:
        x: points, shape ``(n, 2)``.
        y: component labels, shape ``(n,)``, dtype ``long`` (e.g. which of the 8 Gaussians,
            which moon, circle, spiral arm or checkerboard square), on ``x``'s device.

    Example:
        >>> import torch
        >>> from manifoldfm.data import sample_toy_labeled
        >>> s = sample_toy_labeled("moons", 4, generator=torch.Generator().manual_seed(0))
        >>> s.x.shape, s.y.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    x: Tensor
    y: Tensor


class _Draw:
    """Random draws on the generator's device in the target dtype (see the module docstring)."""

    def __init__(
        self,
        n: int,
        generator: torch.Generator | None,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.n = n
        self.generator = generator
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.draw_device = generator.device if generator is not None else self.device

    def rand(self, *shape: int) -> Tensor:
        return torch.rand(
            shape, generator=self.generator, dtype=self.dtype, device=self.draw_device
        )

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(
            shape, generator=self.generator, dtype=self.dtype, device=self.draw_device
        )

    def randint(self, high: int) -> Tensor:
        return torch.randint(high, (self.n,), generator=self.generator, device=self.draw_device)

    def finish(self, x: Tensor, y: Tensor) -> ToySample:
        return ToySample(x=x.to(self.device), y=y.to(self.device))


def _shift(shift: tuple[float, float]) -> tuple[float, float]:
    try:
        a, b = (float(s) for s in shift)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shift must be a pair of numbers, got {shift!r}") from err
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"shift must be finite, got {shift!r}")
    return a, b


def _eight_gaussians(d: _Draw, *, scale: float = 5.0, std: float = 0.1**0.25) -> ToySample:
    scale = check_positive(scale, "scale")
    std = check_positive(std, "std", allow_zero=True)
    label = d.randint(8)
    # Components at angles 0, 45, ..., 315 degrees.
    angle = label.to(d.dtype) * (math.pi / 4)
    centres = scale * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return d.finish(centres + std * d.randn(d.n, 2), label)


def _moons(
    d: _Draw,
    *,
    noise: float = 0.1,
    scale: float = 3.0,
    shift: tuple[float, float] = (-1.0, -1.0),
) -> ToySample:
    noise = check_positive(noise, "noise", allow_zero=True)
    scale = check_positive(scale, "scale")
    sx, sy = _shift(shift)
    label = d.randint(2)
    theta = math.pi * d.rand(d.n)
    lower = label.to(d.dtype)
    sign = 1.0 - 2.0 * lower  # +1 upper moon, -1 lower moon
    px = sign * torch.cos(theta) + lower
    py = sign * torch.sin(theta) + 0.5 * lower
    p = torch.stack([px, py], dim=1) + noise * d.randn(d.n, 2)
    offset = torch.tensor([sx, sy], dtype=d.dtype, device=d.draw_device)
    return d.finish(scale * p + offset, label)


def _circles(
    d: _Draw, *, noise: float = 0.08, scale: float = 3.0, factor: float = 0.5
) -> ToySample:
    noise = check_positive(noise, "noise", allow_zero=True)
    scale = check_positive(scale, "scale")
    factor = check_positive(factor, "factor")
    if factor >= 1:
        raise ValueError(f"factor (inner / outer radius) must be < 1, got {factor}")
    label = d.randint(2)  # 0 outer, 1 inner
    radius = 1.0 - (1.0 - factor) * label.to(d.dtype)
    theta = (2 * math.pi) * d.rand(d.n)
    p = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return d.finish(scale * (p + noise * d.randn(d.n, 2)), label)


def _checkerboard(d: _Draw, *, scale: float = 2.0) -> ToySample:
    scale = check_positive(scale, "scale")
    # On the unit board [-2, 2]^2: column c in {-2, -1, 0, 1}; a dark square in each column
    # at rows {c mod 2 - 2, c mod 2}.
    col = d.randint(4)
    row_pick = d.randint(2)
    u = d.rand(d.n, 2)
    parity = col % 2
    row = parity + 2 * row_pick - 2  # in {-2, -1, 0, 1}
    x = (col - 2).to(d.dtype) + u[:, 0]
    y = row.to(d.dtype) + u[:, 1]
    label = 2 * col + row_pick  # 8 squares
    return d.finish(scale * torch.stack([x, y], dim=1), label)


def _spirals(
    d: _Draw, *, noise: float = 0.1, scale: float = 1.0 / 3.0, turns: float = 1.5
) -> ToySample:
    noise = check_positive(noise, "noise", allow_zero=True)
    scale = check_positive(scale, "scale")
    turns = check_positive(turns, "turns")
    label = d.randint(2)
    r = torch.sqrt(d.rand(d.n)) * (2 * math.pi * turns)
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], dim=1) + 0.5 * d.rand(d.n, 2)
    sign = 1.0 - 2.0 * label.to(d.dtype)
    p = scale * sign[:, None] * arm + noise * d.randn(d.n, 2)
    return d.finish(p, label)


_Sampler = Callable[..., ToySample]

TOYS: dict[str, _Sampler] = {
    "eight_gaussians": _eight_gaussians,
    "moons": _moons,
    "circles": _circles,
    "checkerboard": _checkerboard,
    "spirals": _spirals,
}
"""Name -> labelled sampler; :func:`sample_toy` dispatches on these names."""


def _run(
    name: str,
    n: int,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    params: dict[str, Any],
) -> ToySample:
    if not isinstance(name, str) or name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose one of {', '.join(sorted(TOYS))}")
    draw = _Draw(n, generator, dtype, device)
    try:
        return TOYS[name](draw, **params)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"{name}: {err}") from err
        raise


def eight_gaussians(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    scale: float = 5.0,
    std: float = 0.1**0.25,
) -> Tensor:
    """Mixture of 8 equally weighted isotropic Gaussians on a circle.

    Args:
        n: number of points.
        generator: random generator (see the module docstring for the device rule).
        dtype: floating dtype of the result (default: torch's default dtype).
        device: device of the result (default CPU).
        scale: radius of the circle of centres (angles ``0, 45, ..., 315`` degrees).
        std: standard deviation of each component.

    Returns:
        Points of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> from manifoldfm.data import eight_gaussians
        >>> x = eight_gaussians(1000, generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(x.norm(dim=1).mean().sub(5).abs() < 0.2)
        (torch.Size([1000, 2]), True)
    """
    params = {"scale": scale, "std": std}
    return _run("eight_gaussians", n, generator, dtype, device, params).x


def moons(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    noise: float = 0.1,
    scale: float = 3.0,
    shift: tuple[float, float] = (-1.0, -1.0),
) -> Tensor:
    """Two interleaving half circles ("two moons"), mapped by ``scale * p + shift``.

    Each point picks a moon with probability 1/2 and an angle ``theta ~ U[0, pi]``: the upper
    moon is ``(cos theta, sin theta)``, the lower one ``(1 - cos theta, 0.5 - sin theta)``;
    Gaussian noise of standard deviation ``noise`` is added before the affine map.

    Args:
        n: number of points.
        generator: random generator (see the module docstring for the device rule).
        dtype: floating dtype of the result.
        device: device of the result.
        noise: standard deviation of the noise (in unit-moon coordinates).
        scale: scale factor.
        shift: translation applied after scaling.

    Returns:
        Points of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> from manifoldfm.data import moons
        >>> moons(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    params = {"noise": noise, "scale": scale, "shift": shift}
    return _run("moons", n, generator, dtype, device, params).x


def circles(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    noise: float = 0.08,
    scale: float = 3.0,
    factor: float = 0.5,
) -> Tensor:
    """Two concentric noisy circles of radii ``scale`` and ``factor * scale``, equally weighted.

    Args:
        n: number of points.
        generator: random generator (see the module docstring for the device rule).
        dtype: floating dtype of the result.
        device: device of the result.
        noise: standard deviation of the noise before scaling.
        scale: outer radius.
        factor: inner / outer radius, in ``(0, 1)``.

    Returns:
        Points of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> from manifoldfm.data import circles
        >>> x = circles(4, generator=torch.Generator().manual_seed(0), noise=0.0)
        >>> sorted({round(r, 4) for r in x.norm(dim=1).tolist()})
        [1.5, 3.0]
    """
    params = {"noise": noise, "scale": scale, "factor": factor}
    return _run("circles", n, generator, dtype, device, params).x


def checkerboard(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    scale: float = 2.0,
) -> Tensor:
    """Uniform distribution on the 8 dark squares of a 4 x 4 checkerboard.

    The board covers ``[-2 scale, 2 scale]^2``; the square ``[i, i+1) x [j, j+1)`` (in units of
    ``scale``, ``i, j in {-2, ..., 1}``) is dark, and carries mass 1/8, when ``i + j`` is even.

    Args:
        n: number of points.
        generator: random generator (see the module docstring for the device rule).
        dtype: floating dtype of the result.
        device: device of the result.
        scale: side length of a square.

    Returns:
        Points of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> from manifoldfm.data import checkerboard
        >>> x = checkerboard(500, generator=torch.Generator().manual_seed(0))
        >>> bool(x.abs().max() <= 4)
        True
    """
    return _run("checkerboard", n, generator, dtype, device, {"scale": scale}).x


def spirals(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    noise: float = 0.1,
    scale: float = 1.0 / 3.0,
    turns: float = 1.5,
) -> Tensor:
    """Two interleaved spiral arms, point-symmetric about the origin.

    A point on an arm is ``r (-cos r, sin r) + j`` with ``r = 2 pi turns sqrt(u)``, ``u ~ U[0, 1)``
    and a jitter ``j ~ U[0, 0.5)^2``; the second arm is its negative. The result is multiplied by
    ``scale`` and blurred by Gaussian noise ``noise``.

    Args:
        n: number of points.
        generator: random generator (see the module docstring for the device rule).
        dtype: floating dtype of the result.
        device: device of the result.
        noise: standard deviation of the final Gaussian blur.
        scale: scale factor.
        turns: number of turns of each arm.

    Returns:
        Points of shape ``(n, 2)``.

    Example:
        >>> import torch
        >>> from manifoldfm.data import spirals
        >>> spirals(6, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([6, 2])
    """
    params = {"noise": noise, "scale": scale, "turns": turns}
    return _run("spirals", n, generator, dtype, device, params).x


def sample_toy_labeled(
    name: str,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **params: Any,
) -> ToySample:
    """Draw from the toy ``name`` together with each point's component label.

    Labels: ``eight_gaussians`` 0-7 by angle (label ``k`` at ``45 k`` degrees), ``moons`` 0 upper /
    1 lower, ``circles`` 0 outer / 1 inner, ``spirals`` 0 / 1 by arm, ``checkerboard`` 0-7 by
    square. Useful for class-conditional models and guidance.

    Args:
        name: one of :data:`TOYS`.
        n: number of points.
        generator: random generator.
        dtype: floating dtype of the points.
        device: device of the result.
        **params: the toy's own parameters (see each sampler).

    Returns:
        :class:`ToySample` with ``x`` ``(n, 2)`` and ``y`` ``(n,)``.

    Example:
        >>> import torch
        >>> from manifoldfm.data import sample_toy_labeled
        >>> s = sample_toy_labeled("eight_gaussians", 5, generator=torch.Generator().manual_seed(0), std=0.0)
        >>> torch.allclose(s.x[:, 0], 5 * torch.cos(s.y * torch.pi / 4), atol=1e-5)
        True
    """
    return _run(name, n, generator, dtype, device, params)


def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **params: Any,
) -> Tensor:
    """Draw ``n`` points from the toy distribution ``name``.

    Args:
        name: one of ``"eight_gaussians"``, ``"moons"``, ``"circles"``, ``"checkerboard"``,
            ``"spirals"``.
        n: number of points.
        generator: random generator.
        dtype: floating dtype of the points.
        device: device of the result.
        **params: the toy's own parameters (see each sampler).

    Returns:
        Points of shape ``(n, 2)``; the same as calling the named sampler.

    Raises:
        ValueError: for an unknown name (the message lists the valid names).

    Example:
        >>> import torch
        >>> from manifoldfm.data import sample_toy
        >>> sample_toy("checkerboard", 8, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 2])
    """
    return _run(name, n, generator, dtype, device, params).x
