"""Sample-quality metrics between point clouds, and the kinetic energy of trajectories.

All metrics take batches ``x`` of shape ``(N, *shape)`` and ``y`` of shape ``(M, *shape)`` whose
non-batch dimensions are flattened into feature vectors, and return a 0-dim tensor of ``x``'s
dtype on ``x``'s device. Distances between point clouds are between their *empirical*
distributions (uniform weights on the points).

* :func:`wasserstein`: exact ``W_p`` by network simplex (POT), solved in float64 on the host.
* :func:`mmd`: squared maximum mean discrepancy with a (multi-bandwidth) RBF or inverse
  multiquadric kernel; biased V-statistic by default (exactly 0 for identical point sets).
* :func:`energy_distance`: the squared energy distance (V-statistic).
* :func:`path_energy`: the discrete kinetic energy of trajectories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import ot
import torch
from torch import Tensor

from ._utils import check_choice, check_finite, check_positive

__all__ = ["energy_distance", "mmd", "path_energy", "wasserstein"]

_EXACT = "donot_use_mm_for_euclid_dist"


def _flat_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    for name, z in (("x", x), ("y", y)):
        if not isinstance(z, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        if z.ndim < 1 or z.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch, got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {z.dtype}")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must have the same point shape, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    check_finite(x, "x")
    check_finite(y, "y")
    xf = x.reshape(x.shape[0], -1)
    yf = y.reshape(y.shape[0], -1).to(dtype=x.dtype)
    return xf, yf


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Exact pairwise squared distances (no ``|a|^2 - 2ab + |b|^2`` cancellation)."""
    return torch.cdist(a, b, compute_mode=_EXACT).square()


def wasserstein(x: Tensor, y: Tensor, p: float = 2) -> Tensor:
    """Exact ``p``-Wasserstein distance between two point clouds with uniform weights.

    Solves the discrete optimal-transport problem with cost ``|x_i - y_j|^p`` by the network
    simplex (``ot.emd2``) in float64 on the host, and returns ``W_p = cost^(1/p)`` cast back to
    ``x``'s dtype and device. The cost grows like ``O(N M D)`` in memory and the solver roughly
    cubically in the number of points: meant for evaluation sets of a few thousand points.

    Args:
        x: points ``(N, *shape)``.
        y: points ``(M, *shape)``.
        p: order, ``>= 1``.

    Returns:
        0-dim tensor ``W_p(x, y)``.

    Raises:
        RuntimeError: if the solver stops without an optimal plan.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import wasserstein
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> wasserstein(x, x + torch.tensor([3.0, 4.0]))  # a translate by c: W2 = |c|
        tensor(5.)

    References:
        Peyré & Cuturi. Computational Optimal Transport. 2019.
        Flamary et al. POT: Python Optimal Transport. JMLR 2021.
    """
    p = check_positive(p, "p")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    xf, yf = _flat_pair(x, y)
    xd = xf.detach().to(device="cpu", dtype=torch.float64)
    yd = yf.detach().to(device="cpu", dtype=torch.float64)
    dist = torch.cdist(xd, yd, compute_mode=_EXACT)
    cost = dist.square() if p == 2 else dist.pow(p)
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    iters = max(100_000, 50 * n * m)
    value, log = ot.emd2(a, b, cost.numpy(), numItermax=iters, log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT solver did not converge ({n} x {m} points): {log['warning']}")
    w = max(float(value), 0.0) ** (1.0 / p)
    return torch.tensor(w, dtype=x.dtype, device=x.device)


def _median_distance(xf: Tensor, yf: Tensor) -> float:
    z = torch.cat([xf, yf], dim=0)
    d = torch.pdist(z)
    if d.numel() == 0:
        return 1.0
    med = float(d.median())
    return med if med > 0 else 1.0


def mmd(
    x: Tensor,
    y: Tensor,
    *,
    kernel: Literal["rbf", "imq"] = "rbf",
    bandwidths: Sequence[float] | None = None,
    biased: bool = True,
) -> Tensor:
    """Squared maximum mean discrepancy ``MMD^2(x, y)`` with a sum of kernels.

    ``k(a, b) = sum_s k_s(a, b)`` over the bandwidths ``s``, with ``k_s = exp(-|a - b|^2 / (2 s^2))``
    (``"rbf"``) or ``k_s = s / sqrt(s^2 + |a - b|^2)`` (``"imq"``, inverse multiquadric). Both are
    characteristic, so ``MMD = 0`` only for equal distributions.

    * ``biased=True`` (default): the V-statistic ``mean K_xx + mean K_yy - 2 mean K_xy``: the
      squared RKHS distance between the two empirical distributions, always ``>= 0`` and exactly
      0 for identical point sets.
    * ``biased=False``: the unbiased U-statistic (diagonals of ``K_xx``, ``K_yy`` left out); an
      unbiased estimate of the population ``MMD^2`` that can be slightly negative.

    Default bandwidths are ``(0.5, 1, 2)`` times the median pairwise distance of the pooled
    sample (data dependent, symmetric in ``x, y``); pass fixed ``bandwidths`` to compare
    several models against one reference on a common scale.

    Args:
        x: points ``(N, *shape)``.
        y: points ``(M, *shape)``.
        kernel: ``"rbf"`` or ``"imq"``.
        bandwidths: positive kernel scales.
        biased: V-statistic (``True``) or U-statistic (``False``, needs ``N, M >= 2``).

    Returns:
        0-dim tensor ``MMD^2``.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import mmd
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 2, generator=g)
        >>> float(mmd(x, x))
        0.0
        >>> bool(mmd(x, x + 1.0) > 0.1)
        True

    References:
        Gretton et al. A Kernel Two-Sample Test. JMLR 2012.
    """
    check_choice(kernel, "kernel", ("rbf", "imq"))
    xf, yf = _flat_pair(x, y)
    n, m = xf.shape[0], yf.shape[0]
    if not biased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased MMD needs at least 2 points per set, got {n} and {m}")
    if bandwidths is None:
        med = _median_distance(xf, yf)
        scales = [0.5 * med, med, 2.0 * med]
    else:
        if isinstance(bandwidths, (int, float)):
            raise TypeError("bandwidths must be a sequence of numbers, e.g. (1.0,)")
        scales = [check_positive(s, "bandwidth") for s in bandwidths]
        if not scales:
            raise ValueError("bandwidths must not be empty")

    def gram(a: Tensor, b: Tensor) -> Tensor:
        d2 = _sqdist(a, b)
        out = torch.zeros_like(d2)
        for s in scales:
            if kernel == "rbf":
                out = out + torch.exp(d2 * (-0.5 / (s * s)))
            else:
                out = out + s * torch.rsqrt(d2 + s * s)
        return out

    kxx, kyy, kxy = gram(xf, xf), gram(yf, yf), gram(xf, yf)
    if biased:
        value = kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
        return value.clamp_min(0.0)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2.0 * kxy.mean()


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Squared energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between point clouds.

    The V-statistic over all pairs (including ``i = j``), i.e. the energy distance between the
    two empirical distributions: ``>= 0``, exactly 0 for identical point sets, and a metric's
    square on distributions with finite first moment. Translation and rotation invariant.

    Args:
        x: points ``(N, *shape)``.
        y: points ``(M, *shape)``.

    Returns:
        0-dim tensor.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import energy_distance
        >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [3.0]])
        >>> energy_distance(x, y)  # 2 * 1.5 - 0.5 - 1.5
        tensor(1.)

    References:
        Székely & Rizzo. Energy statistics: A class of statistics based on distances. 2013.
    """
    xf, yf = _flat_pair(x, y)
    dxy = torch.cdist(xf, yf, compute_mode=_EXACT).mean()
    dxx = torch.cdist(xf, xf, compute_mode=_EXACT).mean()
    dyy = torch.cdist(yf, yf, compute_mode=_EXACT).mean()
    return (2.0 * dxy - dxx - dyy).clamp_min(0.0)


def path_energy(xs: Tensor, ts: Tensor, *, reduction: Literal["mean", "none"] = "mean") -> Tensor:
    """Discrete kinetic energy ``int_0^1 |dx/dt|^2 dt`` of trajectories.

    ``E = sum_k |x_{k+1} - x_k|^2 / |t_{k+1} - t_k|`` per trajectory (features flattened), which
    is the exact energy of the piecewise-linear interpolation of the saved states, a lower
    bound of the energy of any path through them. A straight line at constant speed from ``x0``
    to ``x1`` over ``[0, 1]`` has energy ``|x1 - x0|^2``, the least possible (the squared
    ``W_2`` cost of the coupling it realises); straighter flows have lower energy.

    Args:
        xs: states ``(T, B, *shape)`` at the times ``ts`` (e.g. ``ODESolution.xs``), ``T >= 2``.
        ts: strictly monotone times ``(T,)`` (increasing or decreasing).
        reduction: ``"mean"`` over trajectories (0-dim) or ``"none"`` (``(B,)``).

    Returns:
        The energy, 0-dim or ``(B,)``, of ``xs``'s dtype.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import path_energy
        >>> ts = torch.linspace(0, 1, 11)
        >>> x0, x1 = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])
        >>> xs = x0 + ts[:, None, None] * (x1 - x0)
        >>> torch.allclose(path_energy(xs, ts), torch.tensor(25.0))
        True

    References:
        Benamou & Brenier. A computational fluid mechanics solution to the Monge-Kantorovich
        mass transfer problem. 2000.
    """
    check_choice(reduction, "reduction", ("mean", "none"))
    if not isinstance(xs, Tensor) or not isinstance(ts, Tensor):
        raise TypeError("xs and ts must be torch.Tensors")
    if xs.ndim < 2:
        raise ValueError(f"xs must have shape (T, B, ...), got {tuple(xs.shape)}")
    if ts.ndim != 1 or ts.shape[0] != xs.shape[0]:
        raise ValueError(
            f"ts must have shape ({xs.shape[0]},) to match xs of shape {tuple(xs.shape)}, "
            f"got {tuple(ts.shape)}"
        )
    if xs.shape[0] < 2:
        raise ValueError(f"need at least 2 time points, got xs of shape {tuple(xs.shape)}")
    check_finite(ts, "ts")
    dt = torch.diff(ts.to(device=xs.device, dtype=xs.dtype))
    # One sync for validation: non-monotone times make the energy meaningless.
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError("ts must be strictly increasing or strictly decreasing")
    steps = xs.shape[0] - 1
    dx2 = (
        torch.diff(xs, dim=0)
        .reshape(steps, xs.shape[1], math.prod(xs.shape[2:]))
        .square()
        .sum(dim=2)
    )
    per_traj = (dx2 / dt.abs()[:, None]).sum(dim=0)
    if reduction == "none":
        return per_traj
    if per_traj.numel() == 0:
        raise ValueError("cannot average the energy over an empty batch")
    return per_traj.mean()
