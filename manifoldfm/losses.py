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
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from ._utils import check_choice

__all__ = ["cfm_loss"]

_REDUCTIONS = ("mean", "none")


def _per_point(values: Tensor, batch: int) -> Tensor:
    """Reduce a manifold's per-point inner products to shape ``(B,)``."""
    if values.ndim == 0 or values.shape[0] != batch:
        raise ValueError(
            f"manifold.inner returned shape {tuple(values.shape)}; expected per-point values "
            f"with leading batch size {batch}"
        )
    if values.ndim > 1:
        # Points made of several factors (e.g. N frames per sample): sum the factors' norms.
        values = values.reshape(batch, math.prod(values.shape[1:])).sum(dim=1)
    return values


def cfm_loss(
    v_pred: Tensor,
    sample: Any,
    *,
    manifold: Any = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Mean squared (Riemannian) norm of ``v_pred - sample.ut``.

    Without a manifold the squared Euclidean norm is summed over every non-batch dimension and
    averaged over the batch (see the module docstring for why). With a manifold, the squared norm
    of the difference is ``manifold.inner(sample.xt, diff, diff)`` (geoopt's signature); if it
    returns more than one value per sample (e.g. one per factor of a point made of ``N`` frames)
    they are summed.

    Args:
        v_pred: predicted velocities at ``sample.xt``, shape ``(B, *point_shape)``.
        sample: a :class:`~manifoldfm.PathSample` (any object with ``ut`` and, when a manifold is
            given, ``xt`` attributes of ``v_pred``'s shape).
        manifold: optional object with a geoopt-style ``inner(x, u, v)`` method.
        reduction: ``"mean"`` (a 0-dim tensor) or ``"none"`` (per-sample values, shape ``(B,)``).

    Returns:
        The loss, a 0-dim tensor or a ``(B,)`` tensor of ``v_pred``'s dtype and device.

    Raises:
        TypeError: if ``v_pred`` is not a tensor or ``sample`` lacks ``ut``/``xt``.
        ValueError: on shape mismatch or an unknown ``reduction``.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath
        >>> from manifoldfm.losses import cfm_loss
        >>> s = AffinePath().sample(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.2, 0.7]))
        >>> cfm_loss(torch.zeros(2, 3), s)  # |0 - (1, 1, 1)|^2 = 3 for each sample
        tensor(3.)
        >>> cfm_loss(s.ut, s, reduction="none")
        tensor([0., 0.])

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
    if manifold is None:
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
        per_sample = _per_point(inner(xt, diff, diff), batch)
    if reduction == "none":
        return per_sample
    if batch == 0:
        raise ValueError("cannot average the loss over an empty batch (got batch size 0)")
    return per_sample.mean()
