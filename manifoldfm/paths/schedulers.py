"""Schedulers: how fast a path moves from the source (t = 0) to the data (t = 1).

A scheduler maps times ``t`` of shape ``(B,)`` to a :class:`ScheduleOutput` holding
``alpha_t``, ``sigma_t`` and their time derivatives, all of shape ``(B,)``. An affine path
is then ``x_t = sigma_t * x0 + alpha_t * x1``; a geodesic path moves the fraction
``kappa_t = alpha_t`` of the way along the geodesic (see :class:`~manifoldfm.GeodesicPath`).

Every scheduler here follows one convention: **t = 0 is noise, t = 1 is data**. Diffusion
schedules (VP, VE), usually written with t = 0 at the data, are written in this convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import check_positive

__all__ = [
    "VE",
    "VP",
    "CondOT",
    "Cosine",
    "ExponentialRate",
    "Polynomial",
    "ScheduleOutput",
    "Scheduler",
]


@dataclass(frozen=True, kw_only=True)
class ScheduleOutput:
    """The schedule at a batch of times; every field has the shape of ``t``.

    Attributes:
        alpha: weight of the data sample ``x1`` (``alpha_0 ~ 0``, ``alpha_1 = 1``).
        sigma: weight of the source sample ``x0`` (``sigma_0 = 1``, ``sigma_1 ~ 0``).
        d_alpha: time derivative of ``alpha``.
        d_sigma: time derivative of ``sigma``.

    Example:
        >>> import torch
        >>> from manifoldfm import CondOT
        >>> out = CondOT()(torch.tensor([0.25]))
        >>> out.alpha, out.sigma
        (tensor([0.2500]), tensor([0.7500]))
    """

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


@runtime_checkable
class Scheduler(Protocol):
    """Protocol for schedulers: ``sched(t) -> ScheduleOutput``.

    Attributes:
        singular_times: the endpoints (subset of ``(0.0, 1.0)``) where a derivative is
            infinite; training samples ``t`` away from them.
        exact_endpoints: whether ``alpha_0 = 0, sigma_0 = 1, alpha_1 = 1, sigma_1 = 0`` hold
            exactly (false for VP/VE and for ``CondOT(sigma_min > 0)``).

    Example:
        A schedule of one's own only needs the two attributes and ``__call__``:

        >>> import torch
        >>> from manifoldfm.paths import AffinePath, CondOT, ScheduleOutput, Scheduler
        >>> class Quadratic:  # alpha_t = t^2, sigma_t = 1 - t^2
        ...     singular_times = ()
        ...     exact_endpoints = True
        ...     def __call__(self, t):
        ...         return ScheduleOutput(alpha=t**2, sigma=1 - t**2, d_alpha=2 * t, d_sigma=-2 * t)
        >>> isinstance(Quadratic(), Scheduler), isinstance(CondOT(), Scheduler)
        (True, True)
        >>> AffinePath(Quadratic()).sample(torch.zeros(1, 2), torch.ones(1, 2), 0.5).xt
        tensor([[0.2500, 0.2500]])
    """

    singular_times: tuple[float, ...]
    exact_endpoints: bool

    def __call__(self, t: Tensor) -> ScheduleOutput: ...


class CondOT:
    """Conditional optimal-transport schedule: ``alpha_t = t``, ``sigma_t = 1 - (1 - sigma_min) t``.

    With ``sigma_min = 0`` (the default) the path is the straight line from ``x0`` to ``x1``
    (rectified flow / OT-CFM); ``sigma_min > 0`` keeps a little noise at ``t = 1``
    (Lipman et al., 2023).

    Args:
        sigma_min: standard deviation left at ``t = 1``, in ``[0, 1)``.

    Example:
        >>> import torch
        >>> from manifoldfm import CondOT
        >>> CondOT(sigma_min=0.1)(torch.tensor([1.0])).sigma
        tensor([0.1000])

    References:
        Lipman, Chen, Ben-Hamu, Nickel, Le. Flow Matching for Generative Modeling. ICLR 2023.
    """

    singular_times: tuple[float, ...] = ()

    def __init__(self, sigma_min: float = 0.0) -> None:
        sigma_min = check_positive(sigma_min, "sigma_min", allow_zero=True)
        if sigma_min >= 1:
            raise ValueError(f"sigma_min must be < 1, got {sigma_min}")
        self.sigma_min = sigma_min
        self.exact_endpoints = sigma_min == 0.0

    def __call__(self, t: Tensor) -> ScheduleOutput:
        c = 1.0 - self.sigma_min
        return ScheduleOutput(
            alpha=t,
            sigma=1.0 - c * t,
            d_alpha=torch.ones_like(t),
            d_sigma=torch.full_like(t, -c),
        )

    def __repr__(self) -> str:
        return f"CondOT(sigma_min={self.sigma_min})"


class Polynomial:
    """Polynomial schedule ``alpha_t = t^n``, ``sigma_t = 1 - t^n``.

    For ``n < 1`` the derivative is infinite at ``t = 0`` (``singular_times == (0.0,)``); for
    ``n > 1`` it is zero there, so the velocity at ``t = 0`` does not depend on ``x1`` and the
    conversions from a velocity to ``x1`` or to the noise are undefined (non-finite) there.

    Args:
        n: the exponent, ``> 0``; ``n = 1`` is :class:`CondOT`.

    Example:
        >>> import torch
        >>> from manifoldfm import Polynomial
        >>> Polynomial(2)(torch.tensor([0.5])).alpha
        tensor([0.2500])
    """

    exact_endpoints = True

    def __init__(self, n: float) -> None:
        self.n = check_positive(n, "n")
        # d/dt t^n = n t^(n-1) is infinite at t = 0 when n < 1.
        self.singular_times: tuple[float, ...] = (0.0,) if self.n < 1 else ()

    def __call__(self, t: Tensor) -> ScheduleOutput:
        n = self.n
        alpha = t**n
        d_alpha = n * t ** (n - 1) if n != 1 else torch.ones_like(t)
        return ScheduleOutput(alpha=alpha, sigma=1.0 - alpha, d_alpha=d_alpha, d_sigma=-d_alpha)

    def __repr__(self) -> str:
        return f"Polynomial(n={self.n})"


class Cosine:
    """Cosine (trigonometric) schedule ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``.

    ``alpha^2 + sigma^2 = 1``, so the path keeps unit variance between independent unit-variance
    endpoints.

    Example:
        >>> import torch
        >>> from manifoldfm import Cosine
        >>> out = Cosine()(torch.tensor([0.5]))
        >>> torch.allclose(out.alpha, out.sigma)
        True
    """

    singular_times: tuple[float, ...] = ()
    exact_endpoints = True

    def __call__(self, t: Tensor) -> ScheduleOutput:
        h = 0.5 * math.pi
        # sin/cos of h*t are exact at t = 0; at t = 1 cos(pi/2) ~ 6e-17 (float64), so snap it.
        s, c = torch.sin(h * t), torch.cos(h * t)
        c = torch.where(t == 1, torch.zeros_like(c), c)
        s = torch.where(t == 1, torch.ones_like(s), s)
        return ScheduleOutput(alpha=s, sigma=c, d_alpha=h * c, d_sigma=-h * s)

    def __repr__(self) -> str:
        return "Cosine()"


class VP:
    """Variance-preserving diffusion schedule with a linear beta, in the t = 0-noise convention.

    With ``s = 1 - t`` (diffusion time) and ``T(s) = beta_min s + (beta_max - beta_min) s^2 / 2``:
    ``alpha_t = exp(-T(1 - t) / 2)`` and ``sigma_t = sqrt(1 - alpha_t^2)``.
    ``alpha_0 = exp(-(beta_min + beta_max) / 4)`` is small but not zero; ``sigma`` has an
    infinite derivative at ``t = 1`` (``singular_times == (1.0,)``).

    Args:
        beta_min: noise rate at the data end.
        beta_max: noise rate at the noise end, ``>= beta_min``.

    Example:
        >>> import torch
        >>> from manifoldfm import VP
        >>> out = VP()(torch.tensor([0.5]))
        >>> torch.allclose(out.alpha**2 + out.sigma**2, torch.ones(1))
        True

    References:
        Song et al. Score-Based Generative Modeling through SDEs. ICLR 2021.
    """

    singular_times: tuple[float, ...] = (1.0,)
    exact_endpoints = False

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = check_positive(beta_min, "beta_min", allow_zero=True)
        self.beta_max = check_positive(beta_max, "beta_max")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max ({beta_max}) must be >= beta_min ({beta_min})")

    def __call__(self, t: Tensor) -> ScheduleOutput:
        s = 1.0 - t
        db = self.beta_max - self.beta_min
        big_t = self.beta_min * s + 0.5 * db * s * s  # integrated noise rate
        beta = self.beta_min + db * s
        alpha = torch.exp(-0.5 * big_t)
        sigma2 = -torch.expm1(-big_t)  # 1 - alpha^2 without cancellation near t = 1
        sigma = torch.sqrt(sigma2)
        d_alpha = 0.5 * beta * alpha
        # d sigma / dt = -alpha d_alpha / sigma; infinite at t = 1 (sigma = 0).
        d_sigma = -alpha * d_alpha / sigma
        return ScheduleOutput(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma)

    def __repr__(self) -> str:
        return f"VP(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VE:
    """Variance-exploding schedule with geometric sigma, in the t = 0-noise convention.

    ``alpha_t = 1`` and ``sigma_t = sigma_min (sigma_max / sigma_min)^(1 - t)``, so
    ``x_t = x1 + sigma_t x0``. Use a source with standard deviation ``sigma_max`` scale in mind:
    ``x_0 = x1 + sigma_max * x0`` is close to pure noise only when ``sigma_max`` dwarfs the data.

    Args:
        sigma_min: noise level at ``t = 1``, ``> 0``.
        sigma_max: noise level at ``t = 0``, ``> sigma_min``.

    Example:
        >>> import torch
        >>> from manifoldfm import VE
        >>> tuple(round(s, 4) for s in VE(0.01, 10.0)(torch.tensor([0.0, 1.0])).sigma.tolist())
        (10.0, 0.01)

    References:
        Song et al. Score-Based Generative Modeling through SDEs. ICLR 2021.
    """

    singular_times: tuple[float, ...] = ()
    exact_endpoints = False

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must be > sigma_min ({sigma_min})")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def __call__(self, t: Tensor) -> ScheduleOutput:
        sigma = self.sigma_min * torch.exp(self._log_ratio * (1.0 - t))
        return ScheduleOutput(
            alpha=torch.ones_like(t),
            sigma=sigma,
            d_alpha=torch.zeros_like(t),
            d_sigma=-self._log_ratio * sigma,
        )

    def __repr__(self) -> str:
        return f"VE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


class ExponentialRate:
    r"""Exponential-rate rotation schedule: ``kappa_t = (1 - e^{-c t}) / (1 - e^{-c})``.

    FrameFlow's ``exp`` rotation schedule (``rots.sample_schedule: exp``, ``exp_rate`` ``c = 10``)
    and FoldFlow's ``inference_scaling`` move the rotation at the constant rate ``c`` towards
    the predicted data rotation, ``d x / dt = c log_{x_t}(x1_hat)``, instead of the rate
    ``1 / (1 - t)`` of the linear schedule: most of the turn happens early, while the
    translation keeps its own (linear) schedule. That flow follows the geodesic with
    ``kappa_t = 1 - e^{-c t}``, which stops short of 1 (``1 - e^{-10} = 0.99995``; those
    samplers finish with the predicted rotation); here it is normalised to reach 1 at
    ``t = 1``, so that :class:`~manifoldfm.GeodesicPath` accepts it:

    * ``alpha_t = kappa_t = expm1(-c t) / expm1(-c)``, ``sigma_t = 1 - kappa_t``;
    * ``d_alpha = c e^{-c t} / (1 - e^{-c})``, ``d_sigma = -d_alpha``;
    * :meth:`velocity_scale`: ``kappa'_t / (1 - kappa_t) = c / (1 - e^{-c (1 - t)})``, the
      factor with which the geodesic path's velocity at ``x_t`` points to the data,
      ``u_t = velocity_scale(t) log_{x_t}(x1)``: ``c`` (FrameFlow's rate) up to a factor
      ``1 / (1 - e^{-c (1 - t)})`` that matters only in the last ``1 / c`` of the time.

    With ``c -> 0`` it tends to :class:`CondOT`. Use it as the rotation factor's schedule of a
    :class:`~manifoldfm.paths.ProductPath` on ``SO(3) x R^3``, the translation keeping
    ``CondOT``; or, at sampling time only, rescale the rotation velocity of a model trained
    with ``CondOT``: ``v_exp(x, t) = linear_rescale(t) v(x, t)`` with
    ``linear_rescale(t) = velocity_scale(t) (1 - t)`` (the linear schedule's
    ``v = log_{x_t}(x1_hat) / (1 - t)``), finite everywhere and 1 at ``t = 1``.

    Args:
        rate: the rate ``c > 0`` (FrameFlow's default is 10).

    Example:
        >>> import torch
        >>> from manifoldfm.paths import ExponentialRate
        >>> out = ExponentialRate(10.0)(torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64))
        >>> tuple(round(v, 4) for v in out.alpha.tolist())  # 63% of the turn by t = 0.1
        (0.0, 0.6321, 1.0)

    References:
        Yim, Campbell, Foong, Gastegger, Jimenez-Luna, Lewis, Garcia Satorras, Veeling,
        Barzilay, Jaakkola, Noe. Fast protein backbone generation with SE(3) flow matching
        (FrameFlow). arXiv:2310.05297, 2023. Bose, Akhound-Sadegh, Huguet, Fatras,
        Rector-Brooks, Liu, Rao, Bronstein, Tong. SE(3)-Stochastic Flow Matching for Protein
        Backbone Generation (FoldFlow). ICLR 2024.
    """

    singular_times: tuple[float, ...] = ()
    exact_endpoints = True

    def __init__(self, rate: float = 10.0) -> None:
        self.rate = check_positive(rate, "rate")
        self._den = -math.expm1(-self.rate)  # 1 - e^{-c}

    def __call__(self, t: Tensor) -> ScheduleOutput:
        c = self.rate
        alpha = torch.expm1(-c * t) / -self._den
        alpha = torch.where(t == 1, torch.ones_like(alpha), alpha)
        d_alpha = (c / self._den) * torch.exp(-c * t)
        return ScheduleOutput(alpha=alpha, sigma=1.0 - alpha, d_alpha=d_alpha, d_sigma=-d_alpha)

    def velocity_scale(self, t: Tensor) -> Tensor:
        """``kappa'_t / (1 - kappa_t) = c / (1 - e^{-c (1 - t)})``; infinite at ``t = 1``.

        The geodesic path's target is ``u_t = velocity_scale(t) log_{x_t}(x1)``.

        Example:
            >>> import torch
            >>> from manifoldfm.paths import ExponentialRate
            >>> ExponentialRate(10.0).velocity_scale(torch.tensor([0.0, 0.5], dtype=torch.float64))
            tensor([10.0005, 10.0678], dtype=torch.float64)
        """
        return self.rate / -torch.expm1(-self.rate * (1.0 - t))

    def linear_rescale(self, t: Tensor) -> Tensor:
        """``velocity_scale(t) (1 - t) = c (1 - t) / (1 - e^{-c (1 - t)})``: finite, 1 at ``t = 1``.

        The factor that turns the velocity of a model trained with the linear (``CondOT``)
        schedule into that of this schedule at sampling time (FrameFlow's exponential rotation
        rate, FoldFlow's inference scaling): ``v_exp(x, t) = linear_rescale(t) v(x, t)``. It is
        evaluated as ``z / (1 - e^{-z})`` with ``z = c (1 - t)``, by a series near ``z = 0``, so
        solvers may evaluate it at ``t = 1``.

        Example:
            >>> import torch
            >>> from manifoldfm.paths import ExponentialRate
            >>> ExponentialRate(10.0).linear_rescale(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
            tensor([10.0005,  5.0339,  1.0000], dtype=torch.float64)
        """
        z = self.rate * (1.0 - t)
        small = z.abs() < 1e-4
        zs = torch.where(small, torch.ones_like(z), z)
        series = 1.0 + z / 2.0 + z * z / 12.0  # z / (1 - e^{-z}) near 0
        return torch.where(small, series, zs / -torch.expm1(-zs))

    def __repr__(self) -> str:
        return f"ExponentialRate(rate={self.rate})"
