"""Public contract checkers: run them in your own tests on your own schedulers and paths.

Each checker raises ``AssertionError`` with a message naming the failed property, so it plugs
into pytest directly. They are the same checks the library runs over its built-in objects.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .paths.base import PathSample, ProbPath
from .paths.schedulers import Scheduler, ScheduleOutput

__all__ = ["check_path", "check_scheduler"]


def _close(a: Tensor, b: Tensor, what: str, atol: float, rtol: float) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        err = (a - b).abs().max().item()
        raise AssertionError(f"{what}: max abs error {err:.3e} (atol={atol}, rtol={rtol})")


def _interior_times(n: int, singular: tuple[float, ...], dtype: torch.dtype) -> Tensor:
    lo = 0.05 if 0.0 in singular else 0.0
    hi = 0.95 if 1.0 in singular else 1.0
    return torch.linspace(lo, hi, n, dtype=dtype)


def check_scheduler(scheduler: Scheduler, *, dtype: torch.dtype = torch.float64) -> None:
    """Check a scheduler's contract: shapes, dtype, endpoints and derivatives.

    * every field of the output has the shape and dtype of ``t``;
    * with ``exact_endpoints``: ``alpha_0 = 0, sigma_0 = 1, alpha_1 = 1, sigma_1 = 0``;
    * ``d_alpha`` and ``d_sigma`` match central finite differences away from ``singular_times``;
    * ``alpha`` and ``sigma`` are finite at both endpoints.

    Args:
        scheduler: the scheduler to check.
        dtype: floating dtype to evaluate in (float64 gives tight finite differences).

    Raises:
        AssertionError: naming the first property that fails.

    Example:
        >>> from manifoldfm import CondOT
        >>> from manifoldfm.testing import check_scheduler
        >>> check_scheduler(CondOT(sigma_min=0.05))
    """
    t = _interior_times(33, tuple(getattr(scheduler, "singular_times", ())), dtype)
    out = scheduler(t)
    if not isinstance(out, ScheduleOutput):
        raise AssertionError(f"scheduler returned {type(out).__name__}, not ScheduleOutput")
    for name in ("alpha", "sigma", "d_alpha", "d_sigma"):
        v = getattr(out, name)
        if v.shape != t.shape or v.dtype != t.dtype:
            raise AssertionError(f"{name} has shape/dtype {tuple(v.shape)}/{v.dtype}, t has {tuple(t.shape)}/{t.dtype}")
    ends = scheduler(torch.tensor([0.0, 1.0], dtype=dtype))
    if not (torch.isfinite(ends.alpha).all() and torch.isfinite(ends.sigma).all()):
        raise AssertionError("alpha or sigma is not finite at t = 0 or t = 1")
    if getattr(scheduler, "exact_endpoints", False):
        _close(ends.alpha, torch.tensor([0.0, 1.0], dtype=dtype), "alpha at (0, 1)", 1e-12, 0)
        _close(ends.sigma, torch.tensor([1.0, 0.0], dtype=dtype), "sigma at (0, 1)", 1e-12, 0)
    h = 1e-6 if dtype == torch.float64 else 1e-2
    tc = t.clamp(h, 1 - h)
    up, dn = scheduler(tc + h), scheduler(tc - h)
    mid = scheduler(tc)
    tol = 1e-5 if dtype == torch.float64 else 5e-2
    _close(mid.d_alpha, (up.alpha - dn.alpha) / (2 * h), "d_alpha vs finite difference", tol, tol)
    _close(mid.d_sigma, (up.sigma - dn.sigma) / (2 * h), "d_sigma vs finite difference", tol, tol)


def check_path(
    path: ProbPath,
    x0: Tensor,
    x1: Tensor,
    *,
    exact_endpoints: bool = True,
    atol: float | None = None,
) -> None:
    """Check a deterministic path's contract on given endpoints.

    * ``sample`` returns a :class:`~manifoldfm.PathSample` whose tensors keep the input's shape,
      dtype and device;
    * with ``exact_endpoints``: ``x_0 = x0`` and ``x_1 = x1``;
    * ``ut`` is the time derivative of ``xt`` (forward-mode ``torch.func.jvp``) at interior times.

    Only for paths that draw no noise (``AffinePath``, geodesic paths); bridges are checked
    statistically in the library's own tests.

    Args:
        path: the path to check.
        x0: source points ``(B, *shape)``.
        x1: data points ``(B, *shape)``.
        exact_endpoints: whether the path must hit ``x0`` at ``t = 0`` and ``x1`` at ``t = 1``.
        atol: tolerance; defaults to 1e-8 (float64) or 1e-4 (float32).

    Raises:
        AssertionError: naming the first property that fails.

    Example:
        >>> import torch
        >>> from manifoldfm import AffinePath, Cosine
        >>> from manifoldfm.testing import check_path
        >>> g = torch.Generator().manual_seed(0)
        >>> x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
        >>> check_path(AffinePath(Cosine()), x0, torch.randn(4, 3, generator=g, dtype=torch.float64))
    """
    tol = atol if atol is not None else (1e-8 if x0.dtype == torch.float64 else 1e-4)
    b = x0.shape[0]
    t = torch.linspace(0.1, 0.9, b, dtype=x0.dtype, device=x0.device)
    s = path.sample(x0, x1, t)
    if not isinstance(s, PathSample):
        raise AssertionError(f"sample returned {type(s).__name__}, not PathSample")
    for name in ("xt", "ut"):
        v = getattr(s, name)
        if v.shape != x0.shape or v.dtype != x0.dtype or v.device != x0.device:
            raise AssertionError(
                f"{name} has shape/dtype/device {tuple(v.shape)}/{v.dtype}/{v.device}, "
                f"x0 has {tuple(x0.shape)}/{x0.dtype}/{x0.device}"
            )
    if exact_endpoints:
        _close(path.sample(x0, x1, 0.0).xt, x0, "xt at t = 0 vs x0", tol, 0)
        _close(path.sample(x0, x1, 1.0).xt, x1, "xt at t = 1 vs x1", tol, 0)

    def xt_of(tt: Tensor) -> Tensor:
        return path.sample(x0, x1, tt).xt

    _, dxdt = torch.func.jvp(xt_of, (t,), (torch.ones_like(t),))
    _close(s.ut, dxdt, "ut vs d xt / dt", tol * 10, tol * 10)
