"""Closed-form marginal velocity of a finite data set under an affine Gaussian path.

For data ``{m_k}`` with weights ``w_k`` and the affine path ``x_t = sigma_t x0 + alpha_t x1``
with source ``x0 ~ N(0, s^2 I)``, the marginal path is the Gaussian mixture
``p_t = sum_k w_k N(alpha_t m_k, (sigma_t s)^2 I)`` and the velocity generating it is the
posterior average of the conditional velocities,

    u_t(x) = sum_k p(k | x, t) u_t(x | m_k),
    u_t(x | m) = (sigma_t' / sigma_t) (x - alpha_t m) + alpha_t' m,

with ``p(k | x, t) = softmax_k(log w_k - |x - alpha_t m_k|^2 / (2 (sigma_t s)^2))``. It is the
exact minimiser of the conditional flow-matching loss for that data (the regression function
``E[u_t | x_t = x]``), so it serves as an oracle in tests and as a non-parametric
("memorising") baseline: integrated from the source it reproduces the data points.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._utils import as_time, broadcast_time, check_finite, check_positive, eps_for
from .schedulers import ScheduleOutput, Scheduler

__all__ = ["EmpiricalMarginalVelocity"]

#: Default budget of ``B_chunk * K`` logits (and of ``B_chunk * D`` outputs) per chunk.
_CHUNK_ELEMENTS = 1 << 22


class EmpiricalMarginalVelocity:
    """Marginal velocity field ``v(x, t)`` of a finite (weighted) data set under an affine path.

    See the module docstring for the formula. Calls are vectorised over the batch and the data:
    the ``(B, K)`` logits come from one matrix product (on data centred at their weighted mean,
    for accuracy), the posterior from a stable softmax, and the batch is processed in chunks so
    that no more than about ``chunk_size`` logits are held at once.

    **Time 1 (sigma_t = 0).** For schedules with exact endpoints (``CondOT()``, ``Cosine()``,
    ``Polynomial(n)``; also ``VP``, whose ``sigma_1 = 0``) the conditional Gaussians collapse and
    the field is singular at ``t = 1`` for ``x`` away from the data. There the posterior is the
    nearest data point of non-zero weight (the ``sigma -> 0`` limit of the softmax, computed with
    the variance floored at ``eps^2``, ``eps`` keyed by dtype) and the source estimate
    ``E[x0 | x]`` is taken to be 0, its value on the data, so ``v(x, 1) = alpha_1' m_nearest``:
    the conditional velocity at that data point averaged over the source. This keeps solvers
    that evaluate ``t = 1`` (Heun, RK4) finite; it is a convention, not a limit. For ``t < 1`` the
    field is finite for every finite input, though of size ``|x - alpha_t m| / sigma_t`` as
    ``t -> 1``; it is never NaN. In float32, logits of order ``|x| |m| / sigma_t^2`` lose
    precision when ``sigma_t`` is tiny (the posterior is then one-hot anyway).

    The data tensor is kept as given (not copied: do not modify it in place); calls with inputs
    of another dtype or device use a cached converted copy.

    Args:
        data: data points ``(K, *shape)``, ``K >= 1``.
        path: an :class:`~manifoldfm.AffinePath` (anything with a ``scheduler`` attribute), or a
            scheduler itself.
        source_std: standard deviation ``s`` of the Gaussian source ``N(0, s^2 I)``.
        weights: optional non-negative weights ``(K,)`` of the data points (normalised here).
        chunk_size: maximum number of ``(batch, data)`` pairs handled at once.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, CondOT
        >>> from manifoldfm.paths.marginal import EmpiricalMarginalVelocity
        >>> data = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
        >>> v = EmpiricalMarginalVelocity(data, AffinePath(CondOT()))
        >>> x = torch.tensor([[0.5, 1.0]])
        >>> v(x, torch.tensor([0.0]))  # t = 0: mean of the data minus x
        tensor([[-0.5000, -1.0000]])
        >>> v.posterior(torch.tensor([[1.9, 0.0]]), torch.tensor([0.99])).argmax(dim=1)
        tensor([1])

    References:
        Lipman et al. Flow Matching for Generative Modeling. ICLR 2023 (marginal vector field).
        Karras, Aittala, Aila, Laine. Elucidating the Design Space of Diffusion-Based Generative
        Models. NeurIPS 2022 (the ideal denoiser of a finite data set).
    """

    def __init__(
        self,
        data: Tensor,
        path: Any,
        *,
        source_std: float = 1.0,
        weights: Tensor | None = None,
        chunk_size: int = _CHUNK_ELEMENTS,
    ) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"data must be a torch.Tensor, got {type(data).__name__}")
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(
                f"data must have shape (K, *point_shape) with K >= 1, got {tuple(data.shape)}"
            )
        if not data.is_floating_point():
            raise TypeError(f"data must be floating point, got dtype {data.dtype}")
        check_finite(data, "data")
        scheduler = getattr(path, "scheduler", path)
        if not callable(scheduler):
            raise TypeError(
                f"path must be an AffinePath (with a scheduler) or a scheduler, got {path!r}"
            )
        self.scheduler: Scheduler = scheduler
        self.path = path
        self.source_std = check_positive(source_std, "source_std")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.data = data
        self.point_shape = tuple(data.shape[1:])
        k = data.shape[0]
        if weights is None:
            w = torch.full((k,), 1.0 / k, dtype=data.dtype, device=data.device)
        else:
            if not isinstance(weights, Tensor) or weights.shape != (k,):
                shape = (
                    tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
                )
                raise ValueError(f"weights must have shape ({k},) to match data, got {shape}")
            w = weights.detach().to(dtype=data.dtype, device=data.device)
            check_finite(w, "weights")
            if bool((w < 0).any()) or not bool(w.sum() > 0):
                raise ValueError("weights must be non-negative with a positive sum")
            w = w / w.sum()
        self.weights = w
        self._cache: dict[
            tuple[torch.dtype, torch.device], tuple[Tensor, Tensor, Tensor, Tensor]
        ] = {}

    def __repr__(self) -> str:
        return (
            f"EmpiricalMarginalVelocity(K={self.data.shape[0]}, point_shape={self.point_shape}, "
            f"scheduler={self.scheduler!r}, source_std={self.source_std})"
        )

    # ---------------------------------------------------------------- internals
    def _tables(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Centred flat data, its squared norms, the log-weights and the mean, in ``like``'s dtype/device."""
        key = (like.dtype, like.device)
        hit = self._cache.get(key)
        if hit is None:
            data = self.data.detach().to(dtype=like.dtype, device=like.device)
            flat = data.reshape(data.shape[0], -1)
            w = self.weights.to(dtype=like.dtype, device=like.device)
            mean = w @ flat
            centred = flat - mean
            sq = centred.square().sum(dim=1)
            logw = torch.where(w > 0, torch.log(w), torch.full_like(w, -torch.inf))
            hit = (centred, sq, logw, mean)
            self._cache[key] = hit
        return hit

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or tuple(x.shape[1:]) != self.point_shape:
            raise ValueError(
                f"x must have shape (B, *{self.point_shape}) like the data points, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point, got dtype {x.dtype}")

    def _posterior_flat(
        self, xf: Tensor, alpha: Tensor, var: Tensor, tables: tuple[Tensor, Tensor, Tensor, Tensor]
    ) -> Tensor:
        """Posterior weights ``(b, K)`` for flat points ``xf`` ``(b, D)``; ``alpha``, ``var`` ``(b,)``."""
        centred, sq, logw, mean = tables
        xc = xf - alpha[:, None] * mean  # x - alpha mu, so |x - alpha m|^2 = |xc - alpha mc|^2
        # -|xc - a mc|^2 / 2 up to a per-row constant: a <xc, mc> - a^2 |mc|^2 / 2.
        raw = alpha[:, None] * (xc @ centred.T) - (0.5 * alpha.square())[:, None] * sq[None, :]
        # The variance is floored at eps^2 (dtype-keyed: 1e-12 in float32, 1e-24 in float64):
        # below it the softmax is one-hot on the nearest point to working precision, and the
        # floor keeps raw / var finite at sigma_t = 0 (the sigma -> 0 limit; exact ties split).
        eps = eps_for(xf.dtype)
        logits = raw / var.clamp_min(eps * eps)[:, None] + logw[None, :]
        return torch.softmax(logits, dim=1)

    def _chunks(self, batch: int, k: int, d: int) -> int:
        return max(1, self.chunk_size // max(k, d, 1)) if batch else 1

    # ------------------------------------------------------------------ public
    def posterior(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Posterior probabilities ``p(k | x, t)`` of the data points.

        Args:
            x: points ``(B, *shape)``.
            t: times ``(B,)`` in ``[0, 1]`` (a float is broadcast).

        Returns:
            Weights of shape ``(B, K)`` summing to 1 over ``K`` (one-hot at ``sigma_t = 0``).

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> from manifoldfm.paths.marginal import EmpiricalMarginalVelocity
            >>> v = EmpiricalMarginalVelocity(torch.tensor([[0.0], [1.0]]), AffinePath())
            >>> v.posterior(torch.tensor([[0.3]]), 0.0)  # t = 0: the prior weights
            tensor([[0.5000, 0.5000]])
        """
        self._check_x(x)
        t = as_time(t, x)
        s = self.scheduler(t)
        tables = self._tables(x)
        xf = x.reshape(x.shape[0], math.prod(self.point_shape))
        var = (s.sigma * self.source_std).square()
        step = self._chunks(x.shape[0], tables[0].shape[0], 1)
        parts = [
            self._posterior_flat(xf[i : i + step], s.alpha[i : i + step], var[i : i + step], tables)
            for i in range(0, x.shape[0], step)
        ]
        if not parts:
            return x.new_zeros(0, tables[0].shape[0])
        return torch.cat(parts, dim=0)

    def x1_pred(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Posterior mean of the data ``E[x1 | x_t = x] = sum_k p(k | x, t) m_k``.

        Example:
            >>> import torch
            >>> from manifoldfm import AffinePath
            >>> from manifoldfm.paths.marginal import EmpiricalMarginalVelocity
            >>> v = EmpiricalMarginalVelocity(torch.tensor([[0.0], [1.0]]), AffinePath())
            >>> v.x1_pred(torch.tensor([[0.3]]), 0.0)
            tensor([[0.5000]])
        """
        self._check_x(x)
        t = as_time(t, x)
        return self._x1_pred(x, t)[0]

    def _x1_pred(self, x: Tensor, t: Tensor) -> tuple[Tensor, ScheduleOutput]:
        s = self.scheduler(t)
        tables = self._tables(x)
        centred, _, _, mean = tables
        xf = x.reshape(x.shape[0], math.prod(self.point_shape))
        var = (s.sigma * self.source_std).square()
        step = self._chunks(x.shape[0], centred.shape[0], centred.shape[1])
        parts = [
            self._posterior_flat(xf[i : i + step], s.alpha[i : i + step], var[i : i + step], tables)
            @ centred
            for i in range(0, x.shape[0], step)
        ]
        x1c = torch.cat(parts, dim=0) if parts else xf.new_zeros(xf.shape)
        return (x1c + mean).reshape(x.shape), s

    def __call__(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal velocity ``u_t(x)``.

        Args:
            x: points ``(B, *shape)`` (the data's point shape).
            t: times ``(B,)`` in ``[0, 1]`` (a float or 0-dim tensor is broadcast).

        Returns:
            Velocities of ``x``'s shape, dtype and device.
        """
        self._check_x(x)
        t = as_time(t, x)
        x1_hat, s = self._x1_pred(x, t)
        alpha, sigma = broadcast_time(s.alpha, x), broadcast_time(s.sigma, x)
        d_alpha, d_sigma = broadcast_time(s.d_alpha, x), broadcast_time(s.d_sigma, x)
        positive = sigma > 0
        safe_sigma = torch.where(positive, sigma, torch.ones_like(sigma))
        # E[x0 | x] = (x - alpha E[x1 | x]) / sigma, taken as 0 where sigma = 0 (see class docs).
        x0_hat = torch.where(positive, (x - alpha * x1_hat) / safe_sigma, torch.zeros_like(x))
        noise_term = torch.where(positive, d_sigma * x0_hat, torch.zeros_like(x))
        return d_alpha * x1_hat + noise_term
