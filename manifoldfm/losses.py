"""Flow-matching regression loss.

The conditional flow-matching (CFM) objective regresses a velocity field ``v`` onto the target
velocity ``u_t`` of a conditional path:

    L(v) = E_{t, x0, x1} || v(x_t, t) - u_t(x_t | x0, x1) ||^2_{x_t}

where the norm is the Riemannian norm at ``x_t`` (the Euclidean norm in ``R^d``). Its minimiser is
the marginal velocity ``E[u_t | x_t]`` that transports the source to the data.

**Reduction convention.** The squared norm of each sample is a *sum* over the point's feature
dimensions; the loss is the *mean* over the batch. It is therefore an unbiased estimate of the
objective above, equal to the Riemannian version with the Euclidean metric, and directly
comparable with kinetic energies (:func:`manifoldfm.metrics.path_energy`). Libraries that average
over every element instead report this value divided by the number of feature elements; the
minimiser and gradient directions are the same, only the scale (and so the effective learning
rate) differs.

**Functions on points.** In functional flow matching a sample is a function observed at points
``p_1 .. p_n`` and the squared norm is the ``L^2`` norm ``int |v(p) - u(p)|^2 dp``. Pass
``weights=`` (quadrature weights, e.g. from :func:`quadrature_weights`) to replace the plain sum
over the feature elements by the weighted sum ``sum_i w_i |v(p_i) - u(p_i)|^2``: with weights
summing to the measure of the domain it estimates the ``L^2`` norm, with weights summing to 1 the
mean square over the domain. On a regular grid the weights are (nearly) uniform, the plain loss
up to a constant factor; on scattered points they keep crowded regions from dominating.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from ._utils import check_choice, check_finite, value_checks_enabled

__all__ = ["cfm_loss", "quadrature_weights"]

_REDUCTIONS = ("mean", "none")


def _check_per_point(values: Tensor, batch: int) -> None:
    if values.ndim == 0 or values.shape[0] != batch:
        raise ValueError(
            f"manifold.inner returned shape {tuple(values.shape)}; expected per-point values "
            f"with leading batch size {batch}"
        )


def _per_point(values: Tensor, batch: int) -> Tensor:
    """Reduce a manifold's per-point inner products (checked) to shape ``(B,)``."""
    if values.ndim > 1:
        # Points made of several factors (e.g. N frames per sample): sum the factors' norms.
        values = values.reshape(batch, math.prod(values.shape[1:])).sum(dim=1)
    return values


def _check_weights(weights: Tensor, target: Tensor, what: str) -> None:
    """``weights`` broadcast to ``target``'s shape without changing it (``what`` names it)."""
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor or None, got {type(weights).__name__}")
    if not weights.is_floating_point():
        raise TypeError(f"weights must be floating point, got dtype {weights.dtype}")
    if weights.device != target.device:
        raise ValueError(
            f"weights must be on v_pred's device, got {weights.device} and {target.device}"
        )
    try:
        shape = torch.broadcast_shapes(weights.shape, target.shape)
    except RuntimeError:
        shape = None
    if shape != target.shape:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not broadcast to {what} of shape "
            f"{tuple(target.shape)}"
        )
    check_finite(weights, "weights")
    if value_checks_enabled() and bool((weights < 0).any()):
        raise ValueError(f"weights of shape {tuple(weights.shape)} must be non-negative")


def cfm_loss(
    v_pred: Tensor,
    sample: Any,
    *,
    manifold: Any = None,
    reduction: Literal["mean", "none"] = "mean",
    weights: Tensor | None = None,
) -> Tensor:
    """Mean squared (Riemannian) norm of ``v_pred - sample.ut``.

    Without a manifold the squared Euclidean norm is summed over every non-batch dimension and
    averaged over the batch (see the module docstring for why). With a manifold, the squared norm
    of the difference is ``manifold.inner(sample.xt, diff, diff)`` (geoopt's signature); if it
    returns more than one value per sample (e.g. one per factor of a point made of ``N`` frames)
    they are summed.

    With ``weights`` and no manifold, the squared error of each element is multiplied by its
    weight before the sum: ``sum_i w_i (v_i - u_i)^2``. ``weights`` must broadcast to
    ``v_pred``'s shape without changing it, aligned from the right as usual: ``(n_points,)``
    for functions ``(B, n_points)``, ``(n_points, 1)`` for ``(B, n_points, C)``, ``(H, W)``
    for fields ``(B, C, H, W)``, or ``(B, n_points)`` when every sample has its own points.
    They are used as given (no renormalisation): weights summing to the domain measure give
    the ``L^2`` norm, weights summing to 1 the mean square; without ``weights`` (all ones) the
    result is the current plain sum. With a manifold, ``weights`` multiply the squared norms
    that ``manifold.inner`` returns per factor before they are summed: a residue mask ``(B, N)``
    (or ``(N,)``) for proteins of ``N`` frames ``(B, N, 4, 4)`` on :class:`~manifoldfm.SE3`
    leaves padded residues out of the loss (its value, whatever they hold; for finite
    gradients the padded entries must be finite too, e.g. identity frames).

    Args:
        v_pred: predicted velocities at ``sample.xt``, shape ``(B, *point_shape)``.
        sample: a :class:`~manifoldfm.PathSample` (any object with ``ut`` and, when a manifold is
            given, ``xt`` attributes of ``v_pred``'s shape).
        manifold: optional object with a geoopt-style ``inner(x, u, v)`` method.
        reduction: ``"mean"`` (a 0-dim tensor) or ``"none"`` (per-sample values, shape ``(B,)``).
        weights: optional non-negative weights broadcastable to ``v_pred.shape`` (quadrature
            weights), or with a manifold to the shape of its per-factor squared norms (residue
            masks); see above.

    Returns:
        The loss, a 0-dim tensor or a ``(B,)`` tensor of ``v_pred``'s dtype and device.

    Raises:
        TypeError: if ``v_pred`` is not a tensor or ``sample`` lacks ``ut``/``xt``.
        ValueError: on shape mismatch (``weights`` included), an unknown ``reduction``, or
            negative or non-finite weights (when value checks are on).

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath
        >>> from manifoldfm.losses import cfm_loss
        >>> s = AffinePath().sample(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.2, 0.7]))
        >>> cfm_loss(torch.zeros(2, 3), s)  # |0 - (1, 1, 1)|^2 = 3 for each sample
        tensor(3.)
        >>> cfm_loss(s.ut, s, reduction="none")
        tensor([0., 0.])
        >>> cfm_loss(torch.zeros(2, 3), s, weights=torch.full((3,), 1 / 3))  # mean over points
        tensor(1.)

    References:
        Lipman et al. Flow Matching for Generative Modeling. ICLR 2023.
        Chen & Lipman. Flow Matching on General Geometries. ICLR 2024.
    """
    check_choice(reduction, "reduction", _REDUCTIONS)
    if not isinstance(v_pred, Tensor):
        raise TypeError(f"v_pred must be a torch.Tensor, got {type(v_pred).__name__}")
    ut = getattr(sample, "ut", None)
    if not isinstance(ut, Tensor):
        raise TypeError(
            f"sample must be a PathSample (with a tensor attribute ut), got {type(sample).__name__}"
        )
    if v_pred.shape != ut.shape:
        raise ValueError(
            f"v_pred and sample.ut must have the same shape, got v_pred {tuple(v_pred.shape)} "
            f"and sample.ut {tuple(ut.shape)}"
        )
    if v_pred.ndim < 1:
        raise ValueError(f"v_pred needs a batch dimension, got shape {tuple(v_pred.shape)}")
    batch = v_pred.shape[0]
    diff = v_pred - ut
    if weights is not None and manifold is None:
        _check_weights(
            weights, v_pred, "v_pred (e.g. pass (n_points,) for (B, n_points) functions)"
        )
        sq = diff.square() * weights.to(dtype=diff.dtype)
        per_sample = sq.reshape(batch, math.prod(diff.shape[1:])).sum(dim=1)
    elif manifold is None:
        per_sample = diff.reshape(batch, math.prod(diff.shape[1:])).square().sum(dim=1)
    else:
        xt = getattr(sample, "xt", None)
        if not isinstance(xt, Tensor):
            raise TypeError("with a manifold, sample must carry the points xt (a tensor)")
        if xt.shape[0] != batch:
            raise ValueError(
                f"sample.xt has batch size {xt.shape[0]} but v_pred has {batch} "
                f"(shapes {tuple(xt.shape)} and {tuple(v_pred.shape)})"
            )
        inner = getattr(manifold, "inner", None)
        if not callable(inner):
            raise TypeError(f"manifold must have an inner(x, u, v) method, got {manifold!r}")
        norms = inner(xt, diff, diff)
        _check_per_point(norms, batch)
        if weights is not None:
            # one weight per factor (e.g. a residue mask (B, N) for (B, N, 4, 4) frames)
            _check_weights(weights, norms, "the per-factor squared norms manifold.inner returns")
            w = weights.to(dtype=norms.dtype)
            # zero weight drops a factor outright, even a non-finite one (a padded residue);
            # gradients through such a factor stay finite only if its inputs are finite
            norms = torch.where(w != 0, norms * w, torch.zeros_like(norms))
        per_sample = _per_point(norms, batch)
    if reduction == "none":
        return per_sample
    if batch == 0:
        raise ValueError("cannot average the loss over an empty batch (got batch size 0)")
    return per_sample.mean()


def quadrature_weights(points: Tensor, *, neighbours: int = 1, normalize: bool = False) -> Tensor:
    """Quadrature weights of a point set, for integrals ``int f ~ sum_i w_i f(p_i)``.

    * **1-D** (``(n,)`` or ``(n, 1)``): the trapezoid rule on the sorted points over
      ``[min, max]``: ``w_i = (p_{i+1} - p_{i-1}) / 2`` inside, half the gap at the two ends
      (equivalently the Voronoi cells clipped to ``[min, max]``, the midpoints to the
      neighbours). Exact for polynomials of degree 1, error ``O(h^2)`` for smooth integrands;
      the points may come in any order (weights are returned in input order).
    * **d >= 2** (``(n, d)``): nearest-neighbour cell volumes. With ``r_i`` the distance from
      ``p_i`` to its ``neighbours``-th nearest other point, ``w_i`` is proportional to
      ``r_i^d`` (the ball of that radius holds ``neighbours`` points, so ``r_i^d`` is
      proportional to the inverse local point density), scaled so that the weights sum to the
      volume of the bounding box of the points. No random numbers and no tessellation: all
      pairwise distances, ``O(n^2)`` time and memory (a few thousand points). On a regular grid
      with ``neighbours=1`` all weights are equal; on scattered points the estimate is
      consistent but noisy (each ``r_i^d`` is a Gamma variable): a larger ``neighbours``
      trades noise for boundary bias.

    Args:
        points: ``(n,)`` or ``(n, d)`` points, ``n >= 2``, floating point.
        neighbours: which nearest neighbour sets the cell size in ``d >= 2`` (``>= 1``, less
            than ``n``; unused in 1-D).
        normalize: rescale the weights to sum to 1 (the mean over the domain) instead of the
            domain's measure (``max - min`` in 1-D, the bounding-box volume in ``d >= 2``).

    Returns:
        ``(n,)`` non-negative weights of ``points``' dtype and device.

    Raises:
        ValueError: bad shape, fewer than 2 points, ``neighbours`` out of range, non-finite
            points, or a point set of zero extent (all points equal in some coordinate) when
            ``normalize`` is set.

    Example:
        >>> import torch
        >>> from manifoldfm.losses import quadrature_weights
        >>> x = torch.tensor([0.0, 0.5, 1.0, 2.0])
        >>> quadrature_weights(x)
        tensor([0.2500, 0.5000, 0.7500, 0.5000])
        >>> float(quadrature_weights(x) @ (3 * x + 1))  # exact for linear functions: 8
        8.0
    """
    if not isinstance(points, Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if not points.is_floating_point():
        raise TypeError(f"points must be floating point, got dtype {points.dtype}")
    given = tuple(points.shape)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] < 1:
        raise ValueError(
            f"points must have shape (n,) or (n, d) with n >= 2 and d >= 1, got {given}"
        )
    if isinstance(neighbours, bool) or not isinstance(neighbours, int):
        raise TypeError(f"neighbours must be an int, got {type(neighbours).__name__}")
    n, d = points.shape
    if not 1 <= neighbours < n:
        raise ValueError(f"neighbours must be in [1, {n - 1}] for {n} points, got {neighbours}")
    check_finite(points, "points")
    if d == 1:
        x = points[:, 0]
        order = torch.argsort(x)
        gaps = torch.diff(x[order]) / 2
        sorted_w = torch.zeros_like(x)
        sorted_w[:-1] += gaps
        sorted_w[1:] += gaps
        weights = torch.empty_like(x).scatter_(0, order, sorted_w)
        measure = x.max() - x.min()
    else:
        dist = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
        dist.fill_diagonal_(float("inf"))
        r = dist.topk(neighbours, dim=1, largest=False).values[:, -1]
        cell = r.pow(d)
        measure = (points.max(dim=0).values - points.min(dim=0).values).prod()
        total = cell.sum()
        # Coincident points give r = 0: fall back to equal shares rather than 0 / 0.
        weights = torch.where(total > 0, cell / torch.where(total > 0, total, 1.0), 1.0 / n)
        weights = weights * measure
    if normalize:
        if not bool(measure > 0):
            raise ValueError(
                f"points of shape {(n, d)} have zero extent in some coordinate; "
                "cannot normalise weights"
            )
        weights = weights / measure
    return weights
