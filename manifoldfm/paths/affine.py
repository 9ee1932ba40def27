"""Affine conditional paths ``x_t = sigma_t x0 + alpha_t x1`` and parameterisation conversions."""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils import as_time, broadcast_time
from .base import PathSample
from .schedulers import CondOT, ScheduleOutput, Scheduler

__all__ = ["AffinePath", "check_pair"]


def check_pair(x0: Tensor, x1: Tensor) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``x0`` and ``x1`` are same-shape batched tensors.

    Example:
        >>> import torch
        >>> from manifoldfm.paths.affine import check_pair
        >>> check_pair(torch.zeros(4, 2), torch.ones(4, 2))  # fine: returns None
        >>> try:
        ...     check_pair(torch.zeros(4, 2), torch.ones(3, 2))
        ... except ValueError as e:
        ...     print(e)
        x0 and x1 must have the same shape, got x0 (4, 2) and x1 (3, 2)
    """
    for name, x in (("x0", x0), ("x1", x1)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():  # a time cast to an integer dtype would be 0 or 1
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x0.shape != x1.shape:
        raise ValueError(
            f"x0 and x1 must have the same shape, got x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)}"
        )
    if x0.ndim < 1:
        raise ValueError(f"x0 and x1 need a batch dimension, got shape {tuple(x0.shape)}")
    if x0.dtype != x1.dtype or x0.device != x1.device:
        raise ValueError(
            f"x0 and x1 must share dtype and device, got {x0.dtype}/{x0.device} "
            f"and {x1.dtype}/{x1.device}"
        )


class AffinePath:
    """Affine probability path ``x_t = sigma_t x0 + alpha_t x1`` with target ``u_t = dx_t/dt``.

    With a Gaussian source ``x0 ~ N(0, I)`` this is the Gaussian path of flow matching and of
    diffusion models; the conversions below move between the four usual parameterisations of
    a model's output (velocity, data prediction ``x1``, noise prediction ``x0``, score).

    Args:
        scheduler: a :class:`~manifoldfm.paths.schedulers.Scheduler`; defaults to ``CondOT()``.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, CondOT
        >>> g = torch.Generator().manual_seed(0)
        >>> x0, x1 = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
        >>> s = AffinePath(CondOT()).sample(x0, x1, torch.rand(8, generator=g))
        >>> torch.allclose(s.ut, x1 - x0)
        True

    References:
        Lipman et al. Flow Matching for Generative Modeling. ICLR 2023.
        Liu et al. Flow Straight and Fast (rectified flow). ICLR 2023.
    """

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler: Scheduler = CondOT() if scheduler is None else scheduler
        if not callable(self.scheduler):
            raise TypeError(f"scheduler must be callable, got {type(scheduler).__name__}")
        self._straight = isinstance(self.scheduler, CondOT) and self.scheduler.sigma_min == 0.0

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor | float,
        *,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Point and target velocity of the conditional path at ``t``.

        Args:
            x0: source samples ``(B, *shape)``.
            x1: data samples ``(B, *shape)``.
            t: times ``(B,)`` in ``[0, 1]`` (a float is broadcast).
            generator: unused (the path draws no noise); accepted for a uniform path protocol.

        Returns:
            :class:`~manifoldfm.PathSample` with ``xt`` and ``ut`` of ``x0``'s shape.
        """
        check_pair(x0, x1)
        t = as_time(t, x0)
        if self._straight:
            # Straight line: two fused kernels, exact at both endpoints.
            xt = torch.lerp(x0, x1, broadcast_time(t, x0))
            ut = x1 - x0
        else:
            s = self._sched(t, x0)
            xt = torch.addcmul(s.sigma * x0, s.alpha, x1)
            ut = torch.addcmul(s.d_sigma * x0, s.d_alpha, x1)
        return PathSample(t=t, x0=x0, x1=x1, xt=xt, ut=ut)

    def _sched(self, t: Tensor, x: Tensor) -> ScheduleOutput:
        out = self.scheduler(t)
        return ScheduleOutput(
            alpha=broadcast_time(out.alpha, x),
            sigma=broadcast_time(out.sigma, x),
            d_alpha=broadcast_time(out.d_alpha, x),
            d_sigma=broadcast_time(out.d_sigma, x),
        )

    def _prepare(self, v: Tensor, xt: Tensor, t: Tensor | float, name: str) -> ScheduleOutput:
        if v.shape != xt.shape:
            raise ValueError(
                f"{name} and xt must have the same shape, got {tuple(v.shape)} and {tuple(xt.shape)}"
            )
        return self._sched(as_time(t, xt), xt)

    # ------------------------------------------------------------- conversions
    def velocity_to_x1(self, v: Tensor, xt: Tensor, t: Tensor | float) -> Tensor:
        """Data prediction ``E[x1 | x_t]`` from a velocity: ``(sigma v - sigma' x) / (sigma alpha' - sigma' alpha)``.

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> p = AffinePath()
            >>> p.velocity_to_x1(torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))
            tensor([[0.5000, 0.5000]])
        """
        s = self._prepare(v, xt, t, "v")
        return (s.sigma * v - s.d_sigma * xt) / (s.sigma * s.d_alpha - s.d_sigma * s.alpha)

    def x1_to_velocity(self, x1_pred: Tensor, xt: Tensor, t: Tensor | float) -> Tensor:
        """Velocity from a data prediction: ``(alpha' sigma - sigma' alpha) x1 / sigma + sigma' x / sigma``.

        Singular where ``sigma_t = 0`` (``t = 1`` for exact-endpoint schedules).

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> AffinePath().x1_to_velocity(torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))
            tensor([[2., 2.]])
        """
        s = self._prepare(x1_pred, xt, t, "x1_pred")
        return (s.d_sigma * xt + (s.d_alpha * s.sigma - s.d_sigma * s.alpha) * x1_pred) / s.sigma

    def velocity_to_noise(self, v: Tensor, xt: Tensor, t: Tensor | float) -> Tensor:
        """Noise (source) prediction ``E[x0 | x_t]``: ``(alpha v - alpha' x) / (alpha sigma' - alpha' sigma)``.

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> AffinePath().velocity_to_noise(torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))
            tensor([[-0.5000, -0.5000]])
        """
        s = self._prepare(v, xt, t, "v")
        return (s.alpha * v - s.d_alpha * xt) / (s.alpha * s.d_sigma - s.d_alpha * s.sigma)

    def noise_to_velocity(self, x0_pred: Tensor, xt: Tensor, t: Tensor | float) -> Tensor:
        """Velocity from a noise prediction; singular where ``alpha_t = 0`` (``t = 0``).

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> AffinePath().noise_to_velocity(-torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))
            tensor([[2., 2.]])
        """
        s = self._prepare(x0_pred, xt, t, "x0_pred")
        return (s.d_alpha * xt + (s.d_sigma * s.alpha - s.d_alpha * s.sigma) * x0_pred) / s.alpha

    def velocity_to_score(self, v: Tensor, xt: Tensor, t: Tensor | float) -> Tensor:
        """Score ``grad log p_t(x)`` of the marginal path with a standard Gaussian source.

        Uses ``score = -E[x0 | x_t] / sigma_t``; singular where ``sigma_t = 0``.

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> AffinePath().velocity_to_score(torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))
            tensor([[1., 1.]])
        """
        s = self._prepare(v, xt, t, "v")
        x0_pred = (s.alpha * v - s.d_alpha * xt) / (s.alpha * s.d_sigma - s.d_alpha * s.sigma)
        return -x0_pred / s.sigma

    def score_to_velocity(self, score: Tensor, xt: Tensor, t: Tensor | float) -> Tensor:
        """Velocity from the score of the marginal path (standard Gaussian source).

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> AffinePath().score_to_velocity(torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([0.5]))
            tensor([[1., 1.]])
        """
        s = self._prepare(score, xt, t, "score")
        x0_pred = -s.sigma * score
        return (s.d_alpha * xt + (s.d_sigma * s.alpha - s.d_alpha * s.sigma) * x0_pred) / s.alpha
