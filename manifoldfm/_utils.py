"""Small numerical and validation helpers shared by the whole library (private)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "as_time",
    "broadcast_time",
    "check_finite",
    "check_same_batch",
    "checks",
    "eps_for",
    "safe_div",
    "safe_sqrt",
    "value_checks_enabled",
]

#: Thresholds keyed by dtype: below these a quantity is treated as zero (small-angle
#: branches, safe denominators).
EPS: dict[torch.dtype, float] = {
    torch.float16: 1e-3,
    torch.bfloat16: 1e-2,
    torch.float32: 1e-6,
    torch.float64: 1e-12,
}


def eps_for(dtype: torch.dtype) -> float:
    """Return the zero threshold used for ``dtype`` (float32's for unknown dtypes)."""
    return EPS.get(dtype, 1e-6)


@dataclass
class _CheckState:
    values: bool = True
    manifold: bool = False


_STATE = _CheckState()


def value_checks_enabled() -> bool:
    """Whether value checks (time range, finiteness) are on; they cost one sync on CUDA."""
    return _STATE.values


def manifold_checks_enabled() -> bool:
    """Whether on-manifold / tangency checks of inputs are on (off by default)."""
    return _STATE.manifold


@contextlib.contextmanager
def checks(*, values: bool | None = None, manifold: bool | None = None) -> Iterator[None]:
    """Turn input checks on or off inside a ``with`` block.

    Shape checks always run. *Value* checks (``t`` inside ``[0, 1]``, finite costs) are on by
    default; on CUDA each costs a host-device sync, so hot training loops may switch them off.
    *Manifold* checks (points on the manifold, vectors tangent) are off by default and are
    switched on by the test-suite.

    Args:
        values: enable (``True``) or disable (``False``) value checks; ``None`` keeps the setting.
        manifold: enable or disable on-manifold checks; ``None`` keeps the setting.

    Example:
        >>> import torch, manifoldfm as mfm
        >>> path = mfm.AffinePath(mfm.CondOT())
        >>> x0, x1, t = torch.zeros(2, 3), torch.ones(2, 3), torch.rand(2)
        >>> with mfm.checks(values=False):
        ...     sample = path.sample(x0, x1, t)
    """
    old = (_STATE.values, _STATE.manifold)
    if values is not None:
        _STATE.values = bool(values)
    if manifold is not None:
        _STATE.manifold = bool(manifold)
    try:
        yield
    finally:
        _STATE.values, _STATE.manifold = old


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_same_batch(**tensors: Tensor) -> int:
    """Check that all tensors share their leading (batch) size; return it."""
    sizes = {}
    for name, x in tensors.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0:
            raise ValueError(f"{name} must have a batch dimension, got a scalar tensor")
        sizes[name] = x.shape[0]
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k}: {_shape(v)}" for k, v in tensors.items())
        raise ValueError(f"batch sizes differ ({desc})")
    return next(iter(sizes.values()))


def as_time(t: Tensor | float, x: Tensor, *, name: str = "t", check_range: bool = True) -> Tensor:
    """Validate ``t`` against a batch ``x`` and return it as a ``(B,)`` tensor of x's dtype/device.

    ``t`` may be a Python float, a 0-dim tensor (broadcast to the batch) or a ``(B,)`` tensor.
    With value checks on, values outside ``[0, 1]`` or non-finite values raise ``ValueError``.
    """
    if x.ndim == 0:
        raise ValueError(f"x must have a batch dimension, got shape {_shape(x)}")
    batch = x.shape[0]
    if isinstance(t, bool) or not isinstance(t, (Tensor, float, int)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(t).__name__}")
    if not isinstance(t, Tensor):
        if check_range and not (0.0 <= float(t) <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {t}")
        return torch.full((batch,), float(t), dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(batch)
    elif t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape ({batch},) to match x of shape {_shape(x)}, "
            f"got {name} of shape {_shape(t)}"
        )
    if t.dtype != x.dtype or t.device != x.device:
        t = t.to(dtype=x.dtype, device=x.device)
    if check_range and _STATE.values and t.numel() > 0:
        lo_t, hi_t = torch.aminmax(t)
        lo, hi = lo_t.item(), hi_t.item()  # NaN fails both comparisons below
        if not (lo >= 0 and hi <= 1):
            raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.6g}, {hi:.6g}]")
    return t


def broadcast_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(B,)`` time tensor to ``(B, 1, ..., 1)`` so it broadcasts against ``x``.

    Example:
        >>> import torch
        >>> from manifoldfm._utils import broadcast_time
        >>> broadcast_time(torch.rand(4), torch.zeros(4, 5, 3)).shape
        torch.Size([4, 1, 1])
    """
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def check_finite(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf (when value checks are on)."""
    if _STATE.values and x.numel() > 0 and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} of shape {_shape(x)} holds {bad} non-finite value(s)")


def safe_div(num: Tensor, den: Tensor, eps: float | None = None) -> Tensor:
    """``num / den`` with ``den`` pushed away from zero (sign kept) so gradients stay finite."""
    eps = eps_for(den.dtype) if eps is None else eps
    fill = torch.full_like(den, eps).masked_fill_(den < 0, -eps)  # den's dtype, not the default
    safe = torch.where(den.abs() < eps, fill, den)
    return num / safe


def safe_sqrt(x: Tensor, eps: float | None = None) -> Tensor:
    """Square root of ``max(x, 0)`` whose gradient is finite at 0."""
    eps = eps_for(x.dtype) if eps is None else eps
    return torch.sqrt(torch.clamp(x, min=eps * eps)) * (x > 0)


def check_choice(value: str, name: str, options: tuple[str, ...]) -> str:
    """Validate a string option, raising ``ValueError`` that lists the valid choices."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")
    return value


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Validate a positive (or non-negative) finite Python number and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = (v >= 0 if allow_zero else v > 0) and math.isfinite(v)
    if not ok:
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {rel}, got {value}")
    return v
