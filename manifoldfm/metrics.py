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

**Statistics of random functions** (the evaluation of Functional Flow Matching, Kerrigan et
al. 2024): :func:`pointwise_mean_mse`, :func:`pointwise_variance_mse`,
:func:`autocovariance_mse` (with :func:`autocovariance`), :func:`density_mse`,
:func:`power_spectrum_mse` (with :func:`radial_power_spectrum`) and the summary
:func:`functional_statistics` (a :class:`FunctionalStatistics` record). They compare a set of
generated functions with a set of held-out functions observed on the *same* points.

Layouts of a set of functions (batch first, the two sets may differ in batch size only):

* ``(B, n_points)``: one scalar channel on ``n_points`` points (regular or scattered);
* ``(B, C, n)``: ``C`` channels on a regular 1-D grid of ``n`` points;
* ``(B, C, H, W)``: ``C`` channels on a regular ``H x W`` grid (2-D fields).

The point-set layout ``(B, n_points, C)`` (channels last) must be moved to channels first,
``x.transpose(1, 2)``, before calling them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot
import torch
from torch import Tensor

from ._utils import check_choice, check_finite, check_positive

__all__ = [
    "FunctionalStatistics",
    "autocovariance",
    "autocovariance_mse",
    "density_mse",
    "energy_distance",
    "functional_statistics",
    "mmd",
    "path_energy",
    "pointwise_mean_mse",
    "pointwise_variance_mse",
    "power_spectrum_mse",
    "radial_power_spectrum",
    "wasserstein",
]

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
    # 16-bit floats are computed in float32 (torch has no CPU cdist / pdist for them); the
    # metrics cast their value back to x's dtype
    work = torch.promote_types(x.dtype, torch.float32)
    xf = x.reshape(x.shape[0], -1).to(dtype=work)
    yf = y.reshape(y.shape[0], -1).to(dtype=work)
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
        return value.clamp_min(0.0).to(x.dtype)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (sxx + syy - 2.0 * kxy.mean()).to(x.dtype)


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
    return (2.0 * dxy - dxx - dyy).clamp_min(0.0).to(x.dtype)


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


# ---------------------------------------------------------------------------------------------
# statistics of random functions (Functional Flow Matching evaluation)
# ---------------------------------------------------------------------------------------------


def _function_pair(
    generated: Tensor, reference: Tensor, *, min_batch: int = 1
) -> tuple[Tensor, Tensor]:
    """Validate two sets of functions on the same points; ``reference`` cast to ``generated``'s dtype."""
    for name, z in (("generated", generated), ("reference", reference)):
        if not isinstance(z, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {z.dtype}")
        if z.ndim < 2:
            raise ValueError(
                f"{name} must have shape (B, n_points) or (B, C, *grid), got {tuple(z.shape)}"
            )
        if z.shape[0] < min_batch:
            raise ValueError(
                f"{name} needs at least {min_batch} function(s), got shape {tuple(z.shape)}"
            )
        if math.prod(z.shape[1:]) == 0:
            raise ValueError(f"{name} has no points, got shape {tuple(z.shape)}")
    if generated.shape[1:] != reference.shape[1:]:
        raise ValueError(
            "generated and reference must be observed on the same points (equal shapes after the "
            f"batch dimension), got generated {tuple(generated.shape)} and reference "
            f"{tuple(reference.shape)}"
        )
    if generated.device != reference.device:
        raise ValueError(
            f"generated and reference must be on the same device, got {generated.device} "
            f"and {reference.device}"
        )
    check_finite(generated, "generated")
    check_finite(reference, "reference")
    return generated, reference.to(dtype=generated.dtype)


def pointwise_mean_mse(generated: Tensor, reference: Tensor) -> Tensor:
    """Mean squared difference of the pointwise mean functions of two sets of functions.

    ``mean_p (m_g(p) - m_r(p))^2`` where ``m(p)`` is the average over the set of the values at
    point (and channel) ``p``; the mean runs over every point and channel.

    Args:
        generated: functions ``(N, n_points)`` or ``(N, C, *grid)``.
        reference: functions ``(M, ...)`` on the same points (same shape after the batch).

    Returns:
        0-dim tensor of ``generated``'s dtype.

    Raises:
        ValueError: if the shapes after the batch differ (the message names both shapes).

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import pointwise_mean_mse
        >>> a, b = torch.zeros(3, 5), torch.full((4, 5), 2.0)
        >>> float(pointwise_mean_mse(a, b))  # (0 - 2)^2 at every point
        4.0

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024.
    """
    g, r = _function_pair(generated, reference)
    return (g.mean(dim=0) - r.mean(dim=0)).square().mean()


def pointwise_variance_mse(
    generated: Tensor, reference: Tensor, *, unbiased: bool = True
) -> Tensor:
    """Mean squared difference of the pointwise variance functions of two sets of functions.

    ``mean_p (s2_g(p) - s2_r(p))^2`` where ``s2(p)`` is the variance over the set of the values
    at point (and channel) ``p``, with Bessel's correction (divide by ``B - 1``) when
    ``unbiased`` and by ``B`` otherwise.

    Args:
        generated: functions ``(N, n_points)`` or ``(N, C, *grid)``.
        reference: functions ``(M, ...)`` on the same points.
        unbiased: Bessel-corrected variances (needs ``N, M >= 2``).

    Returns:
        0-dim tensor of ``generated``'s dtype.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import pointwise_variance_mse
        >>> a = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])  # variance 2 at both points
        >>> float(pointwise_variance_mse(a, 2 * a))  # variances 2 and 8
        36.0

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024.
    """
    g, r = _function_pair(generated, reference, min_batch=2 if unbiased else 1)
    correction = 1 if unbiased else 0
    vg = torch.var(g, dim=0, correction=correction)
    vr = torch.var(r, dim=0, correction=correction)
    return (vg - vr).square().mean()


def _check_max_lag(max_lag: int | None, n: int) -> int:
    if max_lag is None:
        return n - 1
    if isinstance(max_lag, bool) or not isinstance(max_lag, int):
        raise TypeError(f"max_lag must be an int or None, got {type(max_lag).__name__}")
    if not 0 <= max_lag < n:
        raise ValueError(f"max_lag must be in [0, {n - 1}] for a grid of {n} points, got {max_lag}")
    return max_lag


def autocovariance(x: Tensor, *, max_lag: int | None = None) -> Tensor:
    """Empirical autocovariance function of a set of functions on a regular 1-D grid.

    With ``c_b(j) = x_b(j) - m(j)`` the functions centred by the set's pointwise mean
    ``m(j) = (1/B) sum_b x_b(j)``, the autocovariance at lag ``h`` (in grid steps) is

        gamma(h) = 1 / (B (n - h)) * sum_b sum_{j = 0}^{n - 1 - h} c_b(j) c_b(j + h),

    the covariance between values ``h`` steps apart averaged over all positions ``j`` and over
    the set (a stationary summary of the covariance function; ``gamma(0)`` is the mean
    pointwise variance with divisor ``B``). Computed for all lags at once by a zero-padded FFT
    (``O(B n log n)``), one function per channel.

    Args:
        x: functions ``(B, n)`` or ``(B, C, n)`` on an evenly spaced grid of ``n`` points.
        max_lag: the largest lag ``L``, in ``[0, n - 1]``; ``None`` for ``n - 1``.

    Returns:
        ``(L + 1,)`` for ``(B, n)`` input, ``(C, L + 1)`` for ``(B, C, n)``, of ``x``'s dtype.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import autocovariance
        >>> x = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])  # constants: gamma(h) = 1
        >>> tuple(round(v, 6) for v in autocovariance(x).tolist())
        (1.0, 1.0, 1.0)

    References:
        Brockwell & Davis. Time Series: Theory and Methods. Springer 1991, section 7.2.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    if x.ndim not in (2, 3) or x.shape[0] == 0 or x.shape[-1] == 0:
        raise ValueError(
            f"x must have shape (B, n) or (B, C, n) on a 1-D grid with B, n >= 1, "
            f"got {tuple(x.shape)}"
        )
    check_finite(x, "x")
    n = x.shape[-1]
    lag = _check_max_lag(max_lag, n)
    c = x - x.mean(dim=0, keepdim=True)
    spec = torch.fft.rfft(c, n=2 * n, dim=-1)
    corr = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=2 * n, dim=-1)
    sums = corr[..., : lag + 1].sum(dim=0)
    counts = torch.arange(n, n - lag - 1, -1, dtype=x.dtype, device=x.device)
    return sums / (counts * x.shape[0])


def autocovariance_mse(
    generated: Tensor,
    reference: Tensor,
    *,
    max_lag: int | None = None,
    mode: Literal["lags", "matrix"] = "lags",
) -> Tensor:
    """Mean squared difference of the covariance structure of two sets of functions.

    * ``mode="lags"`` (default): the mean over lags ``0..L`` (and channels) of
      ``(gamma_g(h) - gamma_r(h))^2`` with :func:`autocovariance` (covariance at lag ``h``
      averaged over positions); needs a regular 1-D grid, layouts ``(B, n)`` or ``(B, C, n)``.
    * ``mode="matrix"``: the mean over all pairs of points ``(p, q)`` (channels flattened in)
      of ``(K_g(p, q) - K_r(p, q))^2``, with ``K`` the empirical covariance matrix (divisor
      ``B``) of the flattened functions; any layout, memory ``O(D^2)`` for ``D`` values per
      function.

    Functional Flow Matching compares the autocorrelation of generated and held-out curves; its
    exact estimator is not published with the paper's code, so this definition is the one
    used here (both sets are treated identically, so the value is 0 for identical sets and
    symmetric in its arguments).

    Args:
        generated: functions ``(N, ...)``.
        reference: functions ``(M, ...)`` on the same points.
        max_lag: the largest lag for ``mode="lags"`` (``None``: ``n - 1``).
        mode: ``"lags"`` or ``"matrix"``.

    Returns:
        0-dim tensor of ``generated``'s dtype.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import autocovariance_mse
        >>> a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
        >>> float(autocovariance_mse(a, 3 * a))  # gamma = 1 and 9 at every lag
        64.0
        >>> float(autocovariance_mse(a, 3 * a, mode="matrix"))
        64.0

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024.
    """
    check_choice(mode, "mode", ("lags", "matrix"))
    g, r = _function_pair(generated, reference)
    if mode == "lags":
        if g.ndim not in (2, 3):
            raise ValueError(
                "mode='lags' needs functions on a 1-D grid, (B, n) or (B, C, n), got generated "
                f"{tuple(g.shape)}; use mode='matrix' for other layouts"
            )
        lag = _check_max_lag(max_lag, g.shape[-1])
        return (autocovariance(g, max_lag=lag) - autocovariance(r, max_lag=lag)).square().mean()
    gf = g.reshape(g.shape[0], -1)
    rf = r.reshape(r.shape[0], -1)
    gc = gf - gf.mean(dim=0)
    rc = rf - rf.mean(dim=0)
    kg = gc.T @ gc / gf.shape[0]
    kr = rc.T @ rc / rf.shape[0]
    return (kg - kr).square().mean()


def density_mse(generated: Tensor, reference: Tensor, *, bins: int = 50) -> Tensor:
    """Mean squared difference of the histogram densities of the pooled function values.

    All values of each set (every point, channel and function) are pooled and binned into
    ``bins`` equal bins spanning ``[lo, hi]``, the range of the *union* of both sets (so the
    value is symmetric in its arguments; the last bin is closed). Each histogram is
    normalised to a density (``count / (total * bin width)``, integrating to 1) and the result
    is the mean over bins of the squared difference. If all values are equal the range is
    ``[lo - 0.5, lo + 0.5]``. The bin range is found on the device (no host synchronisation).

    The authors' evaluation code of Functional Flow Matching compares Gaussian kernel density
    estimates on a grid instead; histograms need no bandwidth and are exact for identical
    sets. Values scale with ``1 / width^2``: compare models at the same ``bins`` on the same
    reference set. Bin counts are piecewise constant in the values: an evaluation metric, not
    a training loss (no gradient flows through it).

    Args:
        generated: functions ``(N, ...)``.
        reference: functions ``(M, ...)`` on the same points.
        bins: number of bins, ``>= 1``.

    Returns:
        0-dim tensor of ``generated``'s dtype.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import density_mse
        >>> a, b = torch.zeros(2, 3), torch.ones(2, 3)
        >>> float(density_mse(a, b, bins=2))  # densities (2, 0) and (0, 2) on bins of width 1/2
        4.0

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    g, r = _function_pair(generated, reference)
    gv, rv = g.reshape(-1), r.reshape(-1)
    lo = torch.minimum(gv.min(), rv.min())
    hi = torch.maximum(gv.max(), rv.max())
    flat = hi <= lo
    lo = torch.where(flat, lo - 0.5, lo)
    hi = torch.where(flat, hi + 0.5, hi)
    width = (hi - lo) / bins

    def hist(v: Tensor) -> Tensor:
        idx = torch.floor((v - lo) / width).clamp(0, bins - 1).to(torch.long)
        counts = torch.zeros(bins, dtype=v.dtype, device=v.device)
        counts.scatter_add_(0, idx, torch.ones_like(v))
        return counts / (v.numel() * width)

    return (hist(gv) - hist(rv)).square().mean()


def radial_power_spectrum(x: Tensor) -> Tensor:
    """Radially averaged power spectrum of a set of 2-D fields.

    Each field is Fourier transformed over its last two axes with the orthonormal DFT
    (``torch.fft.fft2(..., norm="ortho")``, so the powers ``|F(k)|^2`` sum to ``sum x^2``).
    Integer wavenumbers ``(k_y, k_x)`` (``torch.fft.fftfreq(n) * n``, in units of the
    fundamental frequency of each axis) have radius ``rho = sqrt(k_y^2 + k_x^2)``; the annulus
    of radius ``k`` holds the modes with ``round(rho) = k``. The spectrum at ``k`` is the power
    averaged over the modes of its annulus, the functions of the set and nothing else, for
    ``k = 0 .. min(H, W) // 2`` (every such annulus holds at least one mode; the corner modes
    beyond are left out).

    Args:
        x: fields ``(B, C, H, W)`` (a single channel is ``(B, 1, H, W)``).

    Returns:
        ``(C, min(H, W) // 2 + 1)`` mean power per annulus, of ``x``'s dtype.

    Example:
        >>> import math, torch
        >>> from manifoldfm.metrics import radial_power_spectrum
        >>> i = torch.arange(16.0)
        >>> wave = torch.sin(2 * math.pi * (3 * i[:, None] + 4 * i[None, :]) / 16)
        >>> int(radial_power_spectrum(wave[None, None]).argmax())  # |(3, 4)| = 5
        5

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024 (spectra of
        Navier-Stokes samples).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    if x.ndim != 4 or min(x.shape) == 0:
        raise ValueError(
            f"x must be fields of shape (B, C, H, W) with no empty axis, got {tuple(x.shape)}"
        )
    check_finite(x, "x")
    _, c, h, w = x.shape
    f = torch.fft.fft2(x, norm="ortho")
    power = (f.real.square() + f.imag.square()).mean(dim=0).reshape(c, h * w)
    ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=x.dtype, device=x.device)
    kx = torch.fft.fftfreq(w, d=1.0 / w, dtype=x.dtype, device=x.device)
    rho = torch.sqrt(ky[:, None].square() + kx[None, :].square()).reshape(-1)
    n_k = min(h, w) // 2 + 1
    # Modes beyond the last full annulus go to a spare bin that is dropped.
    k = torch.round(rho).to(torch.long).clamp_max(n_k)
    sums = torch.zeros(c, n_k + 1, dtype=x.dtype, device=x.device)
    sums.scatter_add_(1, k.expand(c, -1), power)
    counts = torch.zeros(n_k + 1, dtype=x.dtype, device=x.device)
    counts.scatter_add_(0, k, torch.ones_like(rho))
    return sums[:, :n_k] / counts[:n_k]


def power_spectrum_mse(generated: Tensor, reference: Tensor, *, log: bool = True) -> Tensor:
    """Mean squared difference of the radially averaged power spectra of two sets of 2-D fields.

    Uses :func:`radial_power_spectrum` of each set; the mean runs over radii and channels. With
    ``log=True`` (default) the spectra are compared as ``log10`` powers, each floored at
    ``eps * max power`` of both sets (``eps`` of the dtype), so every scale counts (power
    spectra of natural fields span many decades and a linear comparison is dominated by the
    lowest wavenumbers); ``log=False`` compares the powers themselves. The authors' evaluation
    code of Functional Flow Matching sums coefficients over shells ``|k_x| + |k_y| = k``
    instead; annuli of Euclidean radius are rotation invariant.

    For band-limited fields (no power beyond some radius) the log comparison is dominated by
    the empty annuli, where both spectra sit at rounding level and their logs differ by many
    decades: compare such fields with ``log=False`` or over the occupied radii only.

    Args:
        generated: fields ``(N, C, H, W)``.
        reference: fields ``(M, C, H, W)``.
        log: compare ``log10`` spectra (``True``) or linear ones.

    Returns:
        0-dim tensor of ``generated``'s dtype.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import power_spectrum_mse
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4, 1, 8, 8, generator=g)
        >>> float(power_spectrum_mse(x, x))
        0.0
        >>> round(float(power_spectrum_mse(x, 10 * x)), 6)  # power x 100: 2 decades
        4.0

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024.
    """
    g, r = _function_pair(generated, reference)
    if g.ndim != 4:
        raise ValueError(
            f"power_spectrum_mse needs 2-D fields (B, C, H, W), got generated {tuple(g.shape)} "
            f"and reference {tuple(r.shape)}"
        )
    sg, sr = radial_power_spectrum(g), radial_power_spectrum(r)
    if not log:
        return (sg - sr).square().mean()
    top = torch.maximum(sg.max(), sr.max())
    floor = torch.clamp(top * torch.finfo(g.dtype).eps, min=torch.finfo(g.dtype).tiny)
    return (
        (torch.log10(torch.maximum(sg, floor)) - torch.log10(torch.maximum(sr, floor)))
        .square()
        .mean()
    )


@dataclass(frozen=True, kw_only=True)
class FunctionalStatistics:
    """The sample statistics of :func:`functional_statistics` (0-dim tensors; ``None`` if not defined).

    Attributes:
        mean_mse: :func:`pointwise_mean_mse`.
        variance_mse: :func:`pointwise_variance_mse`.
        autocovariance_mse: :func:`autocovariance_mse` over lags, for 1-D layouts ``(B, n)``
            and ``(B, C, n)``; ``None`` otherwise.
        density_mse: :func:`density_mse`.
        power_spectrum_mse: :func:`power_spectrum_mse`, for 2-D fields ``(B, C, H, W)``;
            ``None`` otherwise.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import functional_statistics
        >>> x = torch.zeros(2, 4)
        >>> functional_statistics(x, x).as_dict()["power_spectrum_mse"] is None
        True
    """

    mean_mse: Tensor
    variance_mse: Tensor
    autocovariance_mse: Tensor | None
    density_mse: Tensor
    power_spectrum_mse: Tensor | None

    def as_dict(self) -> dict[str, float | None]:
        """The statistics as Python floats (``None`` kept), e.g. for a JSON report.

        Example:
            >>> import torch
            >>> from manifoldfm.metrics import functional_statistics
            >>> stats = functional_statistics(torch.zeros(2, 3), torch.ones(2, 3))
            >>> stats.as_dict()["mean_mse"]
            1.0
        """
        out: dict[str, float | None] = {}
        for name in (
            "mean_mse",
            "variance_mse",
            "autocovariance_mse",
            "density_mse",
            "power_spectrum_mse",
        ):
            value = getattr(self, name)
            out[name] = None if value is None else float(value)
        return out


def functional_statistics(
    generated: Tensor,
    reference: Tensor,
    *,
    max_lag: int | None = None,
    bins: int = 50,
    unbiased: bool = True,
    log_spectrum: bool = True,
) -> FunctionalStatistics:
    """All Functional Flow Matching sample statistics between generated and held-out functions.

    Computes :func:`pointwise_mean_mse`, :func:`pointwise_variance_mse`, :func:`density_mse`,
    and, by layout, :func:`autocovariance_mse` over lags (1-D: ``(B, n)`` or ``(B, C, n)``; the
    grid is taken as evenly spaced) or :func:`power_spectrum_mse` (2-D fields
    ``(B, C, H, W)``). Lower is better for all; each is 0 for identical sets and unchanged by
    reordering either set.

    Args:
        generated: functions ``(N, ...)``.
        reference: held-out functions ``(M, ...)`` on the same points.
        max_lag: largest lag of the autocovariance (``None``: all lags).
        bins: histogram bins of the density comparison.
        unbiased: Bessel-corrected pointwise variances (needs ``N, M >= 2``).
        log_spectrum: compare ``log10`` power spectra.

    Returns:
        A :class:`FunctionalStatistics`.

    Example:
        >>> import torch
        >>> from manifoldfm.metrics import functional_statistics
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(16, 32, generator=g)
        >>> stats = functional_statistics(x, x.flip(0))  # the same set, reordered
        >>> tuple(round(v, 9) for v in stats.as_dict().values() if v is not None)
        (0.0, 0.0, 0.0, 0.0)

    References:
        Kerrigan, Migliorini & Smyth. Functional Flow Matching. AISTATS 2024.
    """
    g, r = _function_pair(generated, reference, min_batch=2 if unbiased else 1)
    acov = autocovariance_mse(g, r, max_lag=max_lag) if g.ndim in (2, 3) else None
    spec = power_spectrum_mse(g, r, log=log_spectrum) if g.ndim == 4 else None
    return FunctionalStatistics(
        mean_mse=pointwise_mean_mse(g, r),
        variance_mse=pointwise_variance_mse(g, r, unbiased=unbiased),
        autocovariance_mse=acov,
        density_mse=density_mse(g, r, bins=bins),
        power_spectrum_mse=spec,
    )
