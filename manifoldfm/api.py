"""From a data file to a trained model: :func:`fit`, :func:`load`, :func:`sample`, :func:`evaluate`.

:func:`fit` trains a flow-matching model on points of one space (``"euclidean"``,
``"sphere"``, ``"torus"``, ``"so3"``, ``"se3"``) or on functions (``"functions"``) with a
complete recipe: a source and a path suited to the space, a model sized from the data
(:class:`~manifoldfm.nn.ManifoldMLP`, or :class:`~manifoldfm.functional.FNO1d` for functions),
Adam with a cosine learning-rate decay, an exponential moving average (EMA) of the weights, a
validation split with early stopping, and checkpoints (``model.pt`` and ``config.json``) in a
run folder from which training can be resumed. :func:`load` rebuilds the model from the run
folder as a :class:`FittedModel` that samples and evaluates log-densities in the
representation of the data.

**Recipe per space.**

| space | source | path | normalisation |
|---|---|---|---|
| ``euclidean`` | standard Gaussian | ``AffinePath(CondOT())`` | per-coordinate mean and std |
| ``sphere`` | uniform on the sphere | ``GeodesicPath(Sphere(d - 1))`` | none |
| ``torus`` | uniform on the torus | ``GeodesicPath(FlatTorus(d))`` | none |
| ``so3`` | uniform (Haar) | ``GeodesicPath(SO3())`` | none |
| ``se3`` | Haar rotation, standard Gaussian translation | ``GeodesicPath(SE3())`` | translation mean, one common std |
| ``functions`` | Matern-5/2 GP noise, unit variance, length scale ``length_scale`` | ``AffinePath(CondOT(1e-4))`` | one scalar mean and std |

The model works on the standardised points; sampling undoes the standardisation. Functions
are the ``(N, n)`` values of ``N`` curves on ``n`` evenly spaced points (the layout of
:func:`~manifoldfm.data.read_points` with ``space="functions"``), read as the values at
``s_i = i / n`` of the unit interval taken as periodic (the grid convention of
:class:`~manifoldfm.functional.FNO1d`: point ``i`` of ``n`` and point ``2 i`` of ``2 n`` are
the same location); the GP noise is drawn at those points, the loss is the
trapezoid-weighted mean square over the grid (:func:`~manifoldfm.losses.quadrature_weights`),
and the trained operator samples on any grid (``FittedModel.sample(..., grid_size=m)``).

**Model size** (``hidden=None``, ``depth=None``): with ``n`` training points, ``hidden`` is
256 for ``n < 20000`` and 512 above, ``depth`` 4. For functions, ``hidden`` is the FNO width
(32 for fewer than 2000 curves, else 64), ``depth`` its number of Fourier layers (3, or 4 from
20000 curves), with ``min(16, n // 2)`` Fourier modes.

**Input features** (``fourier=None``): on the sphere the network sees each coordinate ``x``
also through ``sin(pi 2^k x), cos(pi 2^k x)`` for ``k = 0, ..., 7`` (8 Fourier bands,
:class:`~manifoldfm.nn.ManifoldFeatures`); other spaces use their plain features. An MLP on
raw coordinates is slow to learn sharp densities: on the volcano data (seed 0, 20000 steps,
selection by validation NLL) the test NLL was -1.51 nats without bands and -2.94, -3.28,
-3.37, -3.13, -0.49 with 4, 6, 8, 10 and 12 bands (-3.35 +- 0.23 over 5 seeds with 8); on the
flood data 1.17 without and 0.78 with 8. On tori, 3 or 7 extra harmonics changed the
Ramachandran NLLs by less than their seed spread (Proline 0.641 -> 0.627 and 0.630, Glycine
2.464 -> 2.471), and on SO(3) (a synthetic IGSO(3) mixture) 6 bands did worse, so the other
spaces keep their plain features. The bands cost a little on smooth densities: on a
von Mises-Fisher mixture (kappa 40) 0.740 nats with them, 0.689 without (truth 0.674); pass
``fourier=0`` for a target known to be smooth.

**Steps** (``steps=None``): 100 passes over the training set (``100 * ceil(n / batch_size)``),
at least 20000 and at most 50000 steps (functions: at least 5000, at most 20000). (On the
volcano data, 20000 steps without early stopping gave a test NLL of -1.04 nats with a 128 x 3
network and -1.49 with 256 x 4, against 1.32 after 2600 steps; with today's defaults 20000
steps give -3.35 +- 0.23 and 60000 steps -4.47 +- 0.30, or -5.02 +- 0.18 with a 512 x 4
network (``hidden=512``): longer training and wider networks still pay on sharp densities, at
three to seven times the time; see the results page of the docs.)

**Validation.** ``val_fraction`` of the points (at least one) are held out. Every
``eval_every`` steps the conditional flow-matching loss of the EMA model is measured on a
fixed set of validation pairs (source draws and times drawn once from ``seed``, independent
pairs), so successive values are comparable. The EMA weights with the lowest value are kept
(the best checkpoint); with ``patience=k`` training stops when ``k`` evaluations in a row
bring no improvement. Early stopping is off by default: on the volcano data with 20000 steps,
``patience=10`` stopped one seed of five at 8800 steps (test NLL -0.54 nats) where the full
run reached -1.49, and on the flood data it stopped runs at 7600-10000 steps. With
``val_nll_every=k`` (every space but ``functions``), the validation negative log-likelihood of
up to 1024 validation points (RK4, 20 steps, exact divergence) is also recorded at every
``k``-th evaluation. ``select`` says which weights are kept: ``"loss"`` the EMA weights of the
lowest validation loss; ``"nll"`` those of the lowest validation NLL (the Riemannian Flow
Matching protocol; the NLL is then measured at every evaluation unless ``val_nll_every`` says
otherwise, and ``patience`` counts NLL evaluations); ``"last"`` the final EMA weights (no
selection; ``patience`` does not apply). The default is ``"nll"`` on SO(3) and on spheres and
tori of at most 4 coordinates (compact and low-dimensional: the NLL is what the literature
reports, and exact divergences are cheap there) and ``"loss"`` elsewhere. On the volcano
data, 20000 steps, selection by the validation NLL gave a test NLL of -1.56 +- 0.12 nats
against -1.45 +- 0.08 by the loss (5 seeds; better on 4 seeds, equal on the fifth).

**Run folders.** A folder that already holds a checkpoint is never replaced silently:
``resume=True`` continues it, ``overwrite=True`` starts afresh in it, anything else is a
``FileExistsError``.

**Several processes and GPUs.** Launched by ``torchrun`` (``WORLD_SIZE > 1`` in the
environment), or called inside a process group the caller initialised, :func:`fit` trains
with ``torch.nn.parallel.DistributedDataParallel``: every process draws its own batch of
``batch_size`` points (the global batch is ``world_size * batch_size``) from its own random
stream, computes its coupling on that batch, and gradients are averaged; the EMA,
validation and early-stopping decisions are identical on every process (rank 0's validation
loss is broadcast), and rank 0 alone writes the checkpoint, which holds every process's
random-generator state so that a resumed run with the same number of processes continues
exactly. On CUDA each process takes ``cuda:LOCAL_RANK`` (NCCL backend); on CPU the gloo
backend is used. For example::

    torchrun --nproc_per_node=4 -m manifoldfm fit volcano.csv --space sphere \
        --out runs/volcano --device cuda

**Not yet supported.** Products of spaces, functions on 2-D or 3-D domains and conditional
models are not offered by :func:`fit` yet (an unknown space is a ``ValueError``).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import checks

__all__ = [
    "SPACES",
    "FitResult",
    "FittedModel",
    "evaluate",
    "fit",
    "load",
    "sample",
]

SPACES = ("euclidean", "sphere", "torus", "so3", "se3", "functions")
"""The spaces :func:`fit` trains on."""
_COUPLINGS = ("independent", "ot")
_FORMAT = 1
_VAL_PAIRS = 2048
_VAL_NLL_POINTS = 1024
_SELECT = ("loss", "nll", "last")
#: spaces where select=None means "nll" (compact; the literature reports NLL), up to this
#: many coordinates per point (sphere: ambient, torus: angles), where exact divergences are cheap
_NLL_SELECT = ("sphere", "torus", "so3")
_NLL_SELECT_MAX_DIM = 4
#: the value of settings added to the checkpoint after its first format, for older checkpoints
_OLD_DEFAULTS: dict[str, Any] = {"select": "loss", "fourier": 0, "length_scale": 0.05}
#: default Fourier bands of the input features per space (absent: none)
_FOURIER: dict[str, int] = {"sphere": 8}
_SIGMA_MIN_FUNCTIONS = 1e-4
#: the GP noise's length scale on [0, 1] (0.05 before: 0.02 halved the variance and density
#: MSE on the gene-expression curves and did no worse on AEMET, 3 seeds each)
_LENGTH_SCALE = 0.02


# ---------------------------------------------------------------------------------------------
# spaces
# ---------------------------------------------------------------------------------------------


def _check_space(space: object) -> str:
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    return space


def _manifold(space: str, dim: int) -> Any:
    from .manifolds import SE3, SO3, Euclidean, FlatTorus, Sphere

    if space in ("euclidean", "functions"):
        return Euclidean(dim)
    if space == "sphere":
        return Sphere(dim - 1)
    if space == "torus":
        return FlatTorus(dim)
    if space == "so3":
        return SO3()
    return SE3()


def _point_shape(space: str, dim: int) -> tuple[int, ...]:
    return (4, 4) if space == "se3" else (3, 3) if space == "so3" else (dim,)


def _check_points(x: Tensor, space: str) -> int:
    """Validate the shape of data points; return the dimension ``dim`` of the config."""
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"data must hold at least 2 points, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise ValueError(f"data contain non-finite values in {bad} of {x.shape[0]} points")
    if space in ("so3", "se3"):
        k = 3 if space == "so3" else 4
        if tuple(x.shape[1:]) != (k, k):
            raise ValueError(f"{space} data must have shape (N, {k}, {k}), got {tuple(x.shape)}")
        return k
    if x.ndim != 2:
        what = "(N, n) values of N functions on n grid points" if space == "functions" else "(N, d)"
        raise ValueError(f"{space} data must have shape {what}, got {tuple(x.shape)}")
    d = int(x.shape[1])
    if space == "functions" and d < 4:
        raise ValueError(f"functions need at least 4 grid points, got shape {tuple(x.shape)}")
    if space == "sphere" and d < 2:
        raise ValueError(f"sphere data must be unit vectors (N, d) with d >= 2, got d = {d}")
    return d


class _HaarGaussian:
    """Haar-uniform rotation times a standard Gaussian translation on SE(3)."""

    def __init__(self, manifold: Any) -> None:
        self.manifold = manifold

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return self.manifold.random(n, generator=generator, dtype=dtype, device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        """``-log(8 pi^2) + log N(t; 0, I_3)`` (w.r.t. the bi-invariant volume x Lebesgue)."""
        t = x[..., :3, 3]
        return -math.log(8 * math.pi**2) - 0.5 * t.square().sum(-1) - 1.5 * math.log(2 * math.pi)


def _grid(n: int) -> Tensor:
    """The ``(n, 1)`` points ``i / n`` of ``[0, 1)``: the periodic grid of :class:`FNO1d`.

    Reading the ``n`` values of a curve at ``i / n`` makes point ``i`` of an ``n``-point grid
    and point ``2 i`` of a ``2 n``-point grid the same location, for the noise, the loss
    weights and the neural operator alike.
    """
    return (torch.arange(n, dtype=torch.float64) / n)[:, None]


def _function_source(length_scale: float, n: int) -> Any:
    """Matern-5/2 Gaussian-process noise of unit variance on the grid of ``n`` points."""
    import gpytorch

    from .functional import GPSource

    base = gpytorch.kernels.MaternKernel(nu=2.5)
    base.lengthscale = length_scale
    kernel = gpytorch.kernels.ScaleKernel(base)
    kernel.outputscale = 1.0
    return GPSource(kernel, _grid(n))


def _source(space: str, manifold: Any, dim: int, config: Mapping[str, Any] | None = None) -> Any:
    from .sources import Gaussian, Uniform

    if space == "functions":
        if config is None:
            scale = _LENGTH_SCALE
        else:  # a checkpoint: its own length scale (the former default if it predates the key)
            scale = config.get("length_scale") or _OLD_DEFAULTS["length_scale"]
        return _function_source(float(scale), dim)
    if space == "euclidean":
        return Gaussian(dim)
    if space == "se3":
        return _HaarGaussian(manifold)
    return Uniform(manifold)


def _normalisation(x: Tensor, space: str) -> dict[str, list[float]]:
    if space == "functions":  # one scalar mean and std: the shape of the curves is kept
        return {"mean": [float(x.mean())], "std": [max(float(x.std()), 1e-8)]}
    if space == "euclidean":
        mean = x.mean(0)
        std = x.std(0).clamp_min(1e-8)
        return {"mean": mean.tolist(), "std": std.tolist()}
    if space == "se3":
        t = x[:, :3, 3]
        mean = t.mean(0)
        rms = float((t - mean).square().sum(1).mean().div(3).sqrt().clamp_min(1e-8))
        return {"mean": mean.tolist(), "std": [rms]}
    return {}


def _affine(x: Tensor, space: str, norm: Mapping[str, list[float]], *, inverse: bool) -> Tensor:
    """``(x - mean) / std`` (or its inverse) on the coordinates the normalisation covers."""
    if not norm:
        return x
    mean = torch.tensor(norm["mean"], dtype=x.dtype, device=x.device)
    std = torch.tensor(norm["std"], dtype=x.dtype, device=x.device)
    if space in ("euclidean", "functions"):
        return x * std + mean if inverse else (x - mean) / std
    out = x.clone()  # se3: the translation block only
    t = x[:, :3, 3]
    out[:, :3, 3] = t * std + mean if inverse else (t - mean) / std
    return out


def _standardise(x: Tensor, space: str, norm: Mapping[str, list[float]]) -> Tensor:
    return _affine(x, space, norm, inverse=False)


def _unstandardise(x: Tensor, space: str, norm: Mapping[str, list[float]]) -> Tensor:
    return _affine(x, space, norm, inverse=True)


def _default_size(n: int, space: str = "euclidean") -> tuple[int, int]:
    if space == "functions":  # FNO width and number of Fourier layers
        return (32 if n < 2000 else 64), (3 if n < 20000 else 4)
    return (256 if n < 20000 else 512), 4


def _default_steps(n: int, batch_size: int, space: str = "euclidean") -> int:
    epochs = 100 * math.ceil(n / batch_size)
    if space == "functions":
        return min(20000, max(5000, epochs))
    return min(50000, max(20000, epochs))


class _FunctionField(nn.Module):
    """An :class:`~manifoldfm.functional.FNO1d` on ``(B, n)`` function values (one channel)."""

    def __init__(self, width: int, depth: int, modes: int) -> None:
        super().__init__()
        from .functional import FNO1d

        self.fno = FNO1d(1, width=width, modes=modes, depth=depth)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fno(x[:, None], t)[:, 0]


def _modes(n: int) -> int:
    return max(1, min(16, n // 2))


def _build_model(space: str, manifold: Any, hidden: int, depth: int, fourier: int = 0) -> nn.Module:
    from .nn import ManifoldMLP

    if space == "functions":
        return _FunctionField(hidden, depth, _modes(int(manifold.dim)))
    return ManifoldMLP(manifold, hidden=hidden, depth=depth, fourier=fourier)


def _as_points(
    data: Tensor | str | os.PathLike[str], space: str, read_kwargs: Mapping[str, Any] | None
) -> Tensor:
    if isinstance(data, Tensor):
        if read_kwargs:
            raise TypeError("read_kwargs apply to files only; data is a tensor")
        if not data.is_floating_point():
            raise TypeError(f"data must be a floating tensor, got {data.dtype}")
        return data.detach()
    if isinstance(data, (str, os.PathLike)):
        from .data.readers import read_points

        return read_points(data, space=space, **dict(read_kwargs or {})).points
    raise TypeError(f"data must be a tensor or a file path, got {type(data).__name__}")


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the EMA model at the best validation step (in eval mode), a velocity field on
            standardised points (use :func:`load` or :attr:`fitted` to sample in the data's
            representation).
        config: the run's configuration (the content of ``config.json``).
        history: ``(step, train_loss, val_loss)`` per evaluation; ``train_loss`` is the mean
            training loss since the previous evaluation.
        best_step: the step of the kept weights (see ``config["select"]``).
        best_val: the selection metric there: the validation loss (``select="loss"``, or
            ``"last"``: the last validation loss) or the validation NLL (``select="nll"``).
        stopped_early: whether early stopping ended training before ``steps``.
        out: the run folder, or ``None`` when nothing was written.
        val_nll: ``(step, val_nll)`` pairs of every validation-NLL measurement (with
            ``val_nll_every`` or ``select="nll"``).

    Example:
        >>> import torch
        >>> from manifoldfm.api import fit
        >>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> res = fit(x, space="euclidean", steps=4, batch_size=16, eval_every=2, progress=False)
        >>> res.config["steps_done"], len(res.history)
        (4, 2)
    """

    model: nn.Module
    config: dict[str, Any]
    history: tuple[tuple[int, float, float], ...]
    best_step: int
    best_val: float
    stopped_early: bool
    out: Path | None
    val_nll: tuple[tuple[int, float], ...] = field(default=())

    @property
    def fitted(self) -> FittedModel:
        """The best model as a :class:`FittedModel` (no files needed).

        Example:
            >>> import torch
            >>> from manifoldfm.api import fit
            >>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
            >>> res = fit(x, space="euclidean", steps=2, batch_size=16, progress=False)
            >>> res.fitted.sample(5, steps=2).shape
            torch.Size([5, 2])
        """
        return _fitted(self.model, self.config)


@dataclass(frozen=True, kw_only=True)
class FittedModel:
    """A trained model with what it needs to sample in the data's representation.

    Built by :func:`load` (or :attr:`FitResult.fitted`).

    Attributes:
        model: the velocity field (the best EMA weights), on standardised points.
        config: the run's configuration.
        manifold: the manifold the model lives on.
        source: the source distribution (on standardised points).

    Example:
        >>> import torch
        >>> from manifoldfm.api import fit
        >>> x = torch.nn.functional.normalize(torch.randn(64, 3), dim=1)
        >>> fm = fit(x, space="sphere", steps=2, batch_size=16, progress=False).fitted
        >>> y = fm.sample(4, steps=2, generator=torch.Generator().manual_seed(0))
        >>> y.shape, bool(torch.allclose(y.norm(dim=1), torch.ones(4), atol=1e-5))
        (torch.Size([4, 3]), True)
    """

    model: nn.Module
    config: dict[str, Any]
    manifold: Any
    source: Any

    @property
    def space(self) -> str:
        """The space's name."""
        return str(self.config["space"])

    def _param(self) -> Tensor:
        return next(self.model.parameters())

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        steps: int = 100,
        method: str = "rk4",
        generator: torch.Generator | None = None,
        grid_size: int | None = None,
    ) -> Tensor:
        """Draw ``n`` points in the data's representation (standardisation undone).

        Args:
            n: number of points.
            steps: ODE steps (fixed-step methods).
            method: a :func:`~manifoldfm.solvers.solve_ode` method.
            generator: random generator of the source draws (on the model's device).
            grid_size: ``functions`` only: the number of evenly spaced points of ``[0, 1]``
                at which the functions are generated (``None``: the training grid). The
                neural operator is resolution-independent, so a finer grid than the data's
                is allowed.

        Example:
            >>> import torch
            >>> from manifoldfm.api import fit
            >>> x = 5.0 + torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
            >>> fm = fit(x, space="euclidean", steps=2, batch_size=16, progress=False).fitted
            >>> fm.sample(3, steps=2).shape
            torch.Size([3, 2])
        """
        from .solvers import solve_ode

        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        n = int(n)
        source = self.source
        if grid_size is not None:
            if self.space != "functions":
                raise ValueError(f"grid_size applies to functions only, not to {self.space}")
            _check_positive_int(grid_size, "grid_size", minimum=4)
            if grid_size != int(self.config["dim"]):
                source = _source("functions", None, grid_size, self.config)
        p = self._param()
        x0 = source.sample(n, generator=generator, dtype=p.dtype, device=p.device)
        manifold = None if self.space in ("euclidean", "functions") else self.manifold
        sol = solve_ode(self.model, x0, steps=steps, method=method, manifold=manifold)
        return _unstandardise(sol.x, self.space, self.config["normalisation"])

    def log_prob(
        self, x: Tensor, *, steps: int = 100, method: str = "rk4", batch_size: int = 1024
    ) -> Tensor:
        """Log-density of data points ``x`` (data representation), shape ``(N,)``.

        W.r.t. the Riemannian volume on compact spaces (uniform source: the area on the
        sphere, ``d theta`` on tori, the bi-invariant volume of total mass ``8 pi^2`` on
        SO(3)), the Lebesgue measure of the data's coordinates on Euclidean space, and the
        product of both on SE(3) (rotation block and translation); the standardisation's
        Jacobian is included. Exact divergence, ``batch_size`` points at a time. Not
        defined for ``functions`` (a density of grid values depends on the grid; compare
        functions with :func:`~manifoldfm.metrics.functional_statistics` instead).

        Example:
            >>> import torch
            >>> from manifoldfm.api import fit
            >>> x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) * 6.28
            >>> fm = fit(x, space="torus", steps=2, batch_size=16, progress=False).fitted
            >>> fm.log_prob(x[:3], steps=2).shape
            torch.Size([3])
        """
        from .solvers import log_likelihood

        if self.space == "functions":
            raise ValueError(
                "log_prob is not defined for functions: the density of grid values depends on "
                "the grid; use manifoldfm.metrics.functional_statistics (evaluate does)"
            )
        p = self._param()
        x = x.to(dtype=p.dtype, device=p.device)
        z = _standardise(x, self.space, self.config["normalisation"])
        manifold = None if self.space == "euclidean" else self.manifold
        self.model.eval()
        out = []
        for chunk in z.split(batch_size):
            res = log_likelihood(
                self.model, chunk, self.source, steps=steps, method=method, manifold=manifold
            )
            out.append(res.log_prob)
        lp = torch.cat(out)
        norm = self.config["normalisation"]
        if self.space == "euclidean":
            lp = lp - float(torch.tensor(norm["std"]).log().sum())
        elif self.space == "se3":
            lp = lp - 3 * math.log(norm["std"][0])
        return lp


def _fitted(model: nn.Module, config: dict[str, Any]) -> FittedModel:
    space = str(config["space"])
    manifold = _manifold(space, int(config["dim"]))
    return FittedModel(
        model=model,
        config=config,
        manifold=manifold,
        source=_source(space, manifold, int(config["dim"]), config),
    )


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def _check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class _Dist:
    """The process group fit runs in: rank, world size, and whether fit created it."""

    rank: int = 0
    world: int = 1
    created: bool = False

    def all_mean(self, values: list[float], device: torch.device) -> list[float]:
        """Mean over the processes of a few floats (identity in one process)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        buf = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(buf)
        return (buf / self.world).tolist()

    def from_rank0(self, values: list[float], device: torch.device) -> list[float]:
        """Rank 0's values on every process (identity in one process)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        buf = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(buf, src=0)
        return buf.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def on_rank0(self, fn: Any, device: torch.device) -> float:
        """``fn()`` (a float or ``None``) on rank 0, its value broadcast to every process.

        Every process learns whether rank 0 succeeded, so an error there stops all processes
        instead of leaving the others waiting in the next collective.
        """
        value, error = 0.0, None
        if self.rank == 0:
            try:
                value = float(fn() or 0.0)
            except Exception as exc:  # re-raised below, after the others are told
                error = exc
        value, ok = self.from_rank0([value, 0.0 if error is not None else 1.0], device)
        if error is not None:
            raise error
        if ok != 1.0:
            raise RuntimeError("rank 0 failed (see its error); this process stops too")
        return value

    def check_same(self, settings: tuple[Any, ...]) -> None:
        """Raise ``ValueError`` on every process unless all processes got the same settings."""
        if self.world == 1:
            return
        every = self.gather(settings)
        if any(other != every[0] for other in every[1:]):
            raise ValueError(
                "fit got different arguments on different processes (out given, resume, "
                f"overwrite, steps, batch_size, seed, data shape, select, val_nll_every, "
                f"patience): {every}"
            )


def _distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    """Join the process group of a ``torchrun`` launch (or the caller's), pick the device.

    A process group the caller initialised is used as it is. Without one, ``WORLD_SIZE > 1``
    in the environment (set by ``torchrun``) starts one with the NCCL backend on CUDA and gloo
    otherwise. On CUDA without a device index, each process takes ``cuda:LOCAL_RANK``.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return _Dist(), device
    created = False
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return _Dist(), device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    world, rank = dist.get_world_size(), dist.get_rank()
    if world > 1 and device.type == "cuda" and device.index is None:
        local = os.environ.get("LOCAL_RANK")
        index = int(local) if local is not None else rank % max(1, torch.cuda.device_count())
        device = torch.device("cuda", index)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if world > 1 and dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError(f"the process group uses NCCL, which needs a CUDA device; got {device}")
    return _Dist(rank, world, created), device


def _collective_device(d: _Dist, dev: torch.device) -> torch.device:
    if d.world == 1:
        return dev
    import torch.distributed as dist

    return dev if dist.get_backend() == "nccl" else torch.device("cpu")


def _train_generator_seed(seed: int, rank: int) -> int:
    return seed + 1 + 7919 * rank


def fit(
    data: Tensor | str | os.PathLike[str],
    *,
    space: str,
    out: str | os.PathLike[str] | None = None,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int | None = None,
    depth: int | None = None,
    ema: float = 0.999,
    coupling: str = "independent",
    val_fraction: float = 0.1,
    eval_every: int | None = None,
    patience: int | None = None,
    val_nll_every: int | None = None,
    select: str | None = None,
    fourier: int | None = None,
    length_scale: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    read_kwargs: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train a flow-matching model on data points of one space (see the module docstring).

    Args:
        data: points ``(N, d)`` (``(N, 3, 3)`` on so3, ``(N, 4, 4)`` on se3, ``(N, n)``
            values on ``n`` evenly spaced points of ``[0, 1]`` for functions) in the
            representation of :func:`~manifoldfm.data.read_points`, or a file it reads.
        space: ``"euclidean"``, ``"sphere"``, ``"torus"``, ``"so3"``, ``"se3"`` or
            ``"functions"``.
        out: run folder for ``model.pt`` and ``config.json`` (written at every evaluation);
            ``None`` writes nothing.
        steps: total training steps (``None``: the rule of the module docstring).
        batch_size: points per step (per process under ``torchrun``).
        lr: peak learning rate of Adam (cosine decay to ``lr / 20``).
        hidden: hidden width (``None``: from the data).
        depth: number of hidden layers (``None``: from the data).
        ema: decay of the exponential moving average of the weights (0 keeps the last
            weights); at step ``k`` the decay is ``min(ema, (1 + k) / (10 + k))``, so short
            runs are not dominated by the initial weights.
        coupling: ``"independent"`` or ``"ot"`` (exact minibatch OT with the squared geodesic
            distance of the space).
        val_fraction: fraction of the points held out for validation (in ``[0, 0.5]``; 0
            validates on the training points).
        eval_every: steps between evaluations (``None``: ``max(10, steps // 50)``).
        patience: evaluations without improvement before stopping; ``None`` (the default)
            never stops early: the validation flow-matching loss falls slowly and noisily, and
            stopping on it cut likelihood-oriented runs short (see the module docstring).
        val_nll_every: record the validation NLL every this many evaluations (``None``:
            never, or every evaluation with ``select="nll"``); not for ``functions``.
        select: which EMA weights the run keeps: ``"loss"`` (lowest validation loss),
            ``"nll"`` (lowest validation NLL; not for ``functions``) or ``"last"``
            (``None``: ``"nll"`` on so3 and on spheres and tori of at most 4 coordinates,
            ``"loss"`` elsewhere, or the checkpoint's choice when resuming). With ``"nll"`` the
            NLL is also measured at the last step; if no measurement is finite (a diverged
            flow), the last weights are kept with a ``RuntimeWarning``.
        fourier: Fourier bands of the network's input features
            (:class:`~manifoldfm.nn.ManifoldFeatures`; ``None``: 8 on the sphere, 0 elsewhere,
            see the module docstring); bands apply to bounded coordinates only (on se3 the
            rotation block), so a nonzero value on ``euclidean`` or ``functions`` is a
            ``ValueError``.
        length_scale: ``functions`` only: the length scale of the Matern-5/2 noise on
            ``[0, 1]`` (``None``: 0.02; 0.05 before, see the results page of the docs).
        seed: seed of the split, the initialisation and every random draw.
        device: training device (``"cuda"`` under ``torchrun``: each process takes
            ``cuda:LOCAL_RANK``).
        dtype: floating dtype of the model and data.
        progress: show a tqdm progress bar (rank 0 only).
        resume: continue from ``out``'s checkpoint (same data; ``steps`` may be raised to
            train longer). The run keeps the checkpoint's seed, model size, Fourier bands,
            noise, selection rule, learning rate, EMA, coupling and batch size; a ``hidden``,
            ``depth``, ``fourier``, ``select`` or ``length_scale`` that differs from them is a
            ``ValueError`` (checkpoints written before ``select`` and ``fourier`` existed
            count as ``"loss"`` and 0); ``val_nll_every`` (default: the checkpoint's),
            ``patience`` and ``eval_every`` apply to the rest of the run; the other arguments
            are not used.
        overwrite: allow a new run to replace the checkpoint in ``out``.
        read_kwargs: options of :func:`~manifoldfm.data.read_points` when ``data`` is a file.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: an unknown space or coupling, bad numbers, data of the wrong shape, or a
            checkpoint that does not match the data.
        FileNotFoundError: ``resume=True`` without a checkpoint in ``out``.
        FileExistsError: ``out`` holds a checkpoint, and neither ``resume`` nor ``overwrite``.

    Example:
        >>> import torch
        >>> from manifoldfm.api import fit
        >>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> res = fit(x, space="euclidean", steps=4, batch_size=16, progress=False)
        >>> res.config["space"], res.config["hidden"], res.config["depth"]
        ('euclidean', 256, 4)
    """

    space = _check_space(space)
    if coupling not in _COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {', '.join(_COUPLINGS)}")
    batch_size = _check_positive_int(batch_size, "batch_size", minimum=2)
    if steps is not None:
        _check_positive_int(steps, "steps")
    if eval_every is not None:
        _check_positive_int(eval_every, "eval_every")
    if patience is not None:
        _check_positive_int(patience, "patience")
    if val_nll_every is not None:
        _check_positive_int(val_nll_every, "val_nll_every")
        if space == "functions":
            raise ValueError(
                "val_nll_every: functions have no likelihood (see FittedModel.log_prob)"
            )
    if fourier is not None:
        _check_positive_int(fourier, "fourier", minimum=0)
        if space in ("functions", "euclidean") and fourier:
            raise ValueError(
                f"fourier bands apply to bounded coordinates (sphere, torus, so3, the rotations "
                f"of se3), not to {space}"
            )
    if select is not None:
        if select not in _SELECT:
            raise ValueError(f"unknown select {select!r}; choose one of {', '.join(_SELECT)}")
        if select == "nll" and space == "functions":
            raise ValueError('select="nll": functions have no likelihood; use "loss" or "last"')
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (0.0 <= ema < 1.0):
        raise ValueError(f"ema must lie in [0, 1), got {ema!r}")
    if not (0.0 <= val_fraction <= 0.5):
        raise ValueError(f"val_fraction must lie in [0, 0.5], got {val_fraction!r}")
    if length_scale is not None:
        if space != "functions":
            raise ValueError(f"length_scale applies to functions only, not to {space}")
        if isinstance(length_scale, bool) or not (
            isinstance(length_scale, (int, float)) and 0 < length_scale < math.inf
        ):
            raise ValueError(f"length_scale must be a positive number, got {length_scale!r}")
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    if resume and out is None:
        raise ValueError("resume=True needs the run folder out")
    out_dir = Path(out) if out is not None else None
    if (
        out_dir is not None
        and not resume
        and not overwrite
        and ((out_dir / "config.json").exists() or (out_dir / "model.pt").exists())
    ):
        raise FileExistsError(
            f"{out_dir} already holds a run; pass resume=True to continue it or "
            "overwrite=True to replace it (CLI: --resume / --overwrite)"
        )

    points = _as_points(data, space, read_kwargs).to(torch.float64)
    dim = _check_points(points, space)
    dist_info, dev = _distributed(torch.device(device))
    try:
        return _fit_run(
            points,
            dim,
            space=space,
            out_dir=out_dir,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            hidden=hidden,
            depth=depth,
            ema=ema,
            coupling=coupling,
            val_fraction=val_fraction,
            eval_every=eval_every,
            patience=patience,
            val_nll_every=val_nll_every,
            select=select,
            fourier=fourier,
            length_scale=length_scale,
            seed=seed,
            dtype=dtype,
            progress=progress,
            resume=resume,
            overwrite=overwrite,
            dist_info=dist_info,
            dev=dev,
        )
    except BaseException:
        if dist_info.created:  # a group fit started is not left behind by an error
            import torch.distributed as dist

            dist.destroy_process_group()
        raise


def _fit_run(
    points: Tensor,
    dim: int,
    *,
    space: str,
    out_dir: Path | None,
    steps: int | None,
    batch_size: int,
    lr: float,
    hidden: int | None,
    depth: int | None,
    ema: float,
    coupling: str,
    val_fraction: float,
    eval_every: int | None,
    patience: int | None,
    val_nll_every: int | None,
    select: str | None,
    fourier: int | None,
    length_scale: float | None,
    seed: int,
    dtype: torch.dtype,
    progress: bool,
    resume: bool,
    overwrite: bool,
    dist_info: _Dist,
    dev: torch.device,
) -> FitResult:
    """The body of :func:`fit` once its arguments are checked, the data read and the process
    group joined (validated float64 ``points`` of dimension ``dim``)."""
    from tqdm.auto import tqdm

    from .couplings import ExactOT
    from .losses import cfm_loss, quadrature_weights
    from .paths import AffinePath, CondOT, GeodesicPath

    n = int(points.shape[0])
    rank0 = dist_info.rank == 0
    cdev = _collective_device(dist_info, dev)
    dist_info.check_same(
        (
            out_dir is not None,
            resume,
            overwrite,
            steps,
            batch_size,
            seed,
            tuple(points.shape),
            select,
            val_nll_every,
            patience,
        )
    )

    stored: dict[str, Any] | None = None
    if resume:
        assert out_dir is not None
        cfg_file, model_file = out_dir / "config.json", out_dir / "model.pt"
        if not (cfg_file.is_file() and model_file.is_file()):
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir}")
        stored = json.loads(cfg_file.read_text())

    # split (a function of n, the seed and n_val only; a resumed run takes the last two from
    # its checkpoint, whatever it is given, so that it sees the same split)
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    if stored is not None:
        seed = int(stored.get("seed", seed))
        n_val = int(stored.get("n_val", n_val))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    train64 = points[train_idx]
    val64 = points[val_idx] if n_val else train64

    manifold = _manifold(space, dim)
    d_hidden, d_depth = _default_size(train64.shape[0], space)

    ckpt: dict[str, Any] | None = None
    if stored is not None:
        assert out_dir is not None
        config = stored
        if config["space"] != space or config["dim"] != dim or config["n_points"] != n:
            raise ValueError(
                f"the checkpoint in {out_dir} is for {config['n_points']} points on "
                f"{config['space']} (dim {config['dim']}); got {n} points on {space} (dim {dim})"
            )
        ckpt = torch.load(model_file, map_location=dev, weights_only=True)
        given = {
            "length_scale": length_scale,
            "hidden": hidden,
            "depth": depth,
            "select": select,
            "fourier": fourier,
        }
        for key, value in given.items():
            stored = config.get(key, _OLD_DEFAULTS.get(key))
            if value is not None and stored is not None and value != stored:
                raise ValueError(
                    f"{key} = {value!r} differs from the checkpoint's {stored!r}; a "
                    "resumed run keeps its model and noise (start a new run to change them)"
                )
        hidden, depth = int(config["hidden"]), int(config["depth"])
        norm = config["normalisation"]
        seed = int(config["seed"])
        length_scale = config.get("length_scale")
        if config.get("space") == "functions" and length_scale is None:
            length_scale = _OLD_DEFAULTS["length_scale"]
        select = str(config.get("select", _OLD_DEFAULTS["select"]))
        fourier = int(config.get("fourier", _OLD_DEFAULTS["fourier"]))
        if val_nll_every is None:
            val_nll_every = config.get("val_nll_every")
        # the optimiser, schedule and EMA continue from the checkpoint's settings
        lr, ema = float(config["lr"]), float(config["ema"])
        coupling, batch_size = str(config["coupling"]), int(config["batch_size"])
        total = steps if steps is not None else int(config["steps"])
        if total < int(config["steps_done"]):
            raise ValueError(
                f"steps = {total} is below the {config['steps_done']} steps already done"
            )
    else:
        hidden = _check_positive_int(hidden, "hidden") if hidden is not None else d_hidden
        depth = _check_positive_int(depth, "depth") if depth is not None else d_depth
        norm = _normalisation(train64, space)
        total = steps if steps is not None else _default_steps(train64.shape[0], batch_size, space)
        if space == "functions" and length_scale is None:
            length_scale = _LENGTH_SCALE
        by_nll = space in _NLL_SELECT and dim <= _NLL_SELECT_MAX_DIM  # so3: dim 3
        select = select or ("nll" if by_nll else "loss")
        fourier = _FOURIER.get(space, 0) if fourier is None else fourier
        if select == "nll" and val_nll_every is None:
            val_nll_every = 1
    if select == "last" and patience is not None:
        raise ValueError('patience needs a selection metric; select="last" has none')
    if eval_every is None:
        eval_every = max(10, total // 50)

    config = {
        "format": _FORMAT,
        "version": _version(),
        "space": space,
        "dim": dim,
        "point_shape": list(_point_shape(space, dim)),
        "manifold": repr(manifold),
        "n_points": n,
        "n_train": int(train64.shape[0]),
        "n_val": int(n_val),
        "hidden": hidden,
        "depth": depth,
        "fourier": fourier,
        "normalisation": norm,
        "coupling": coupling,
        "batch_size": batch_size,
        "world_size": dist_info.world,
        "lr": lr,
        "ema": ema,
        "steps": total,
        "eval_every": eval_every,
        "patience": patience,
        "select": select,
        "val_nll_every": val_nll_every,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
        "steps_done": 0,
        "best_step": 0,
        "best_val": None,
        "train_seconds": 0.0,
    }
    if space == "functions":
        config["length_scale"] = float(length_scale)  # type: ignore[arg-type]
        config["sigma_min"] = _SIGMA_MIN_FUNCTIONS
        config["model"] = f"FNO1d width {hidden} depth {depth} modes {_modes(dim)}"

    train = _standardise(train64, space, norm).to(device=dev, dtype=dtype)
    val = _standardise(val64, space, norm).to(device=dev, dtype=dtype)
    source = _source(space, manifold, dim, config)
    path: Any
    weights: Tensor | None = None
    if space == "functions":
        path = AffinePath(CondOT(_SIGMA_MIN_FUNCTIONS))
        weights = quadrature_weights(_grid(dim)[:, 0], normalize=True).to(dev, dtype)
    elif space == "euclidean":
        path = AffinePath(CondOT())
    else:
        path = GeodesicPath(manifold)
    loss_manifold = None if space in ("euclidean", "functions") else manifold
    pairing = None
    if coupling == "ot":
        pairing = ExactOT() if loss_manifold is None else ExactOT(cost=manifold)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG untouched
        torch.manual_seed(seed)
        model = _build_model(space, manifold, hidden, depth, fourier)
    model = model.to(device=dev, dtype=dtype)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    best_model = copy.deepcopy(ema_model)
    train_model: nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dev.index] if dev.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=lr / 20)
    g = torch.Generator(device=dev).manual_seed(_train_generator_seed(seed, dist_info.rank))

    # fixed validation pairs: source draws and times from their own generator
    gv = torch.Generator(device=dev).manual_seed(seed + 2)
    n_pairs = min(_VAL_PAIRS, max(256, val.shape[0]))
    vi = torch.randint(0, val.shape[0], (n_pairs,), generator=gv, device=dev)
    v_x0 = source.sample(n_pairs, generator=gv, dtype=dtype, device=dev)
    v_t = torch.rand(n_pairs, generator=gv, dtype=dtype, device=dev)
    v_sample = path.sample(v_x0, val[vi], v_t)

    history: list[tuple[int, float, float]] = []
    nll_history: list[tuple[int, float]] = []
    best_val, best_step, bad_evals, start_step = math.inf, 0, 0, 0
    train_seconds = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema_model.load_state_dict(ckpt["ema"])
        best_model.load_state_dict(ckpt["best"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        sched.T_max = total
        states = ckpt.get("generators") or [ckpt["generator"]]
        if len(states) == dist_info.world:
            g.set_state(states[dist_info.rank].cpu())
        else:  # another number of processes: fresh streams, a function of seed, rank, step
            g.manual_seed(_train_generator_seed(seed, dist_info.rank) + 104729 * int(ckpt["step"]))
        history = [tuple(h) for h in ckpt["history"]]  # type: ignore[misc]
        nll_history = [tuple(h) for h in ckpt.get("val_nll", [])]  # type: ignore[misc]
        best_val, best_step = float(ckpt["best_val"]), int(ckpt["best_step"])
        bad_evals, start_step = int(ckpt["bad_evals"]), int(ckpt["step"])
        train_seconds = float(ckpt.get("train_seconds", 0.0))

    ema_params: list[Tensor] = list(ema_model.parameters())
    model_params: list[Tensor] = list(model.parameters())

    def save(step: int) -> None:
        config.update(
            steps_done=step,
            best_step=best_step,
            best_val=best_val if math.isfinite(best_val) else None,
            train_seconds=round(train_seconds, 3),
        )
        if out_dir is None:
            return
        generators = dist_info.gather(g.get_state())  # collective: every process calls save
        dist_info.on_rank0(lambda: write(step, generators), cdev)  # written once, by rank 0

    def write(step: int, generators: list[Tensor]) -> None:
        assert out_dir is not None
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "format": _FORMAT,
            "model": model.state_dict(),
            "ema": ema_model.state_dict(),
            "best": best_model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": generators[0],
            "generators": generators,
            "history": history,
            "val_nll": nll_history,
            "best_val": best_val,
            "best_step": best_step,
            "bad_evals": bad_evals,
            "step": step,
            "train_seconds": train_seconds,
        }
        tmp = out_dir / "model.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(out_dir / "model.pt")
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    @torch.no_grad()
    def val_loss() -> float:
        ema_model.eval()
        pred = torch.cat(
            [ema_model(xt, t) for xt, t in zip(v_sample.xt.split(512), v_sample.t.split(512))]
        )
        return float(cfm_loss(pred, v_sample, manifold=loss_manifold, weights=weights))

    def val_nll() -> float:
        # a flow that has diverged (points thrown to infinity) has no finite likelihood: +inf,
        # which selection and patience treat as no improvement, instead of a failed run
        ema_model.eval()
        fm = _fitted(ema_model, config)
        with checks(values=False, manifold=False):
            value = -float(fm.log_prob(val64[:_VAL_NLL_POINTS], steps=20).mean())
        return value if math.isfinite(value) else math.inf

    step = start_step
    stopped = False
    running: Tensor | float = 0.0  # summed on the device: no host sync per step
    count = 0
    bar = tqdm(
        total=total,
        initial=start_step,
        desc=f"fit {space}",
        disable=not (progress and rank0),
        leave=False,
    )
    t_start = time.perf_counter()
    model.train()
    while step < total:
        idx = torch.randint(0, train.shape[0], (batch_size,), generator=g, device=dev)
        x1 = train[idx]
        x0 = source.sample(batch_size, generator=g, dtype=dtype, device=dev)
        if pairing is not None:
            pair = pairing(x0, x1, generator=g)
            x0, x1 = pair.x0, pair.x1
        t = torch.rand(batch_size, generator=g, dtype=dtype, device=dev)
        s = path.sample(x0, x1, t)
        loss = cfm_loss(train_model(s.xt, s.t), s, manifold=loss_manifold, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():  # EMA with a warm-up: early averages forget the initialisation
            decay = min(ema, (1.0 + step) / (10.0 + step))
            torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
        step += 1
        running = running + loss.detach()
        count += 1
        bar.update(1)
        if step % eval_every == 0 or step == total:
            (train_mean,) = dist_info.all_mean([float(running) / count], cdev)
            v = dist_info.on_rank0(val_loss, cdev)
            history.append((step, train_mean, v))
            running, count = 0.0, 0
            metric: float | None = v if select != "nll" else None
            due = val_nll_every is not None and len(history) % val_nll_every == 0
            if due or (select == "nll" and step == total):
                nll = dist_info.on_rank0(val_nll, cdev)
                nll_history.append((step, nll))
                if select == "nll":
                    metric = nll
            if metric is not None and (select == "last" or metric < best_val):
                best_val, best_step, bad_evals = metric, step, 0
                best_model.load_state_dict(ema_model.state_dict())
            elif metric is not None:
                bad_evals += 1
            bar.set_postfix(loss=f"{history[-1][1]:.3f}", val=f"{v:.3f}", refresh=False)
            train_seconds += time.perf_counter() - t_start
            t_start = time.perf_counter()
            save(step)
            model.train()
            if patience is not None and bad_evals >= patience and step < total:
                stopped = True
                break
    bar.close()
    if select == "nll" and not math.isfinite(best_val) and step > start_step:
        # every validation NLL was infinite (a diverged flow): keep the last weights, not the
        # initial ones, and say so
        warnings.warn(
            f"no finite validation NLL in {len(nll_history)} measurement(s); the run keeps its "
            "last EMA weights",
            RuntimeWarning,
            stacklevel=3,
        )
        best_model.load_state_dict(ema_model.state_dict())
        best_step = step
        save(step)
    if step == start_step:  # nothing to train (resumed at the end)
        save(step)
    best_model.eval()
    config["stopped_early"] = stopped
    if out_dir is not None:
        final = json.dumps(config, indent=2) + "\n"
        dist_info.on_rank0(lambda: (out_dir / "config.json").write_text(final) and None, cdev)
    # release the DistributedDataParallel wrapper (its reducer holds the process group)
    # while the group is alive: destroyed after the group, its destructor can hang
    del train_model
    dist_info.barrier()  # the run folder is complete before any process returns
    if dist_info.created:
        import torch.distributed as dist

        dist.destroy_process_group()
    return FitResult(
        model=best_model,
        config=dict(config),
        history=tuple(history),
        best_step=best_step,
        best_val=best_val,
        stopped_early=stopped,
        out=out_dir,
        val_nll=tuple(nll_history),
    )


# ---------------------------------------------------------------------------------------------
# load, sample, evaluate
# ---------------------------------------------------------------------------------------------


def load(
    run_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> FittedModel:
    """Rebuild the best model of a run folder written by :func:`fit`.

    Args:
        run_dir: the folder with ``config.json`` and ``model.pt``.
        device: where to put the model.
        dtype: the model's dtype (default: the training dtype).

    Raises:
        FileNotFoundError: a missing file.

    Example:
        >>> import tempfile, torch
        >>> from manifoldfm.api import fit, load
        >>> x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) * 6.28
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = fit(x, space="torus", steps=2, batch_size=16, out=d, progress=False)
        ...     fm = load(d)
        >>> fm.space, fm.sample(3, steps=2).shape
        ('torus', torch.Size([3, 2]))
    """
    run = Path(run_dir)
    cfg_file, model_file = run / "config.json", run / "model.pt"
    for f in (cfg_file, model_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: is {run} a run folder written by fit?")
    config = json.loads(cfg_file.read_text())
    space = _check_space(config["space"])
    manifold = _manifold(space, int(config["dim"]))
    model = _build_model(
        space,
        manifold,
        int(config["hidden"]),
        int(config["depth"]),
        int(config.get("fourier", _OLD_DEFAULTS["fourier"])),
    )
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    model.load_state_dict(state["best"])
    dt = dtype if dtype is not None else getattr(torch, config.get("dtype", "float32"))
    model = model.to(device=torch.device(device), dtype=dt).eval().requires_grad_(False)
    return FittedModel(
        model=model,
        config=config,
        manifold=manifold,
        source=_source(space, manifold, int(config["dim"]), config),
    )


def sample(
    run_dir: str | os.PathLike[str],
    n: int,
    *,
    steps: int = 100,
    method: str = "rk4",
    seed: int | None = 0,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Draw ``n`` points from the model of a run folder, in the data's representation.

    Args:
        run_dir: a run folder written by :func:`fit`.
        n: number of points.
        steps: ODE steps.
        method: a :func:`~manifoldfm.solvers.solve_ode` method.
        seed: seed of the source draws (``None``: torch's global generator).
        device: device of the model.

    Example:
        >>> import tempfile, torch
        >>> from manifoldfm.api import fit, sample
        >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = fit(x, space="euclidean", steps=2, batch_size=16, out=d, progress=False)
        ...     y = sample(d, 5, steps=2)
        >>> y.shape
        torch.Size([5, 3])
    """
    fm = load(run_dir, device=device)
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    return fm.sample(n, steps=steps, method=method, generator=g)


def _geodesic_w2(manifold: Any, x: Tensor, y: Tensor) -> float:
    import numpy as np
    import ot

    from .couplings import pairwise_cost

    cost = pairwise_cost(x.double(), y.double(), manifold).cpu().numpy()
    n, m = cost.shape
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    # POT stops at 100000 iterations by default, short of the optimum from about 2000 points
    value, log = ot.emd2(a, b, cost, numItermax=max(100_000, 50 * n * m), log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT solver did not converge ({n} x {m} points): {log['warning']}")
    return math.sqrt(max(float(value), 0.0))


def evaluate(
    run_dir: str | os.PathLike[str],
    data: Tensor | str | os.PathLike[str],
    *,
    n_samples: int | None = None,
    max_points: int = 2000,
    steps: int = 100,
    nll_steps: int = 50,
    seed: int = 0,
    device: str | torch.device = "cpu",
    read_kwargs: Mapping[str, Any] | None = None,
    plot: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Compare the model of a run folder with (held-out) data points.

    Up to ``max_points`` data points (a random subset from ``seed``) are compared with as many
    samples (or ``n_samples``): on ``euclidean`` the W2 distance
    (:func:`manifoldfm.metrics.wasserstein`) and the squared MMD
    (:func:`manifoldfm.metrics.mmd`); on the other spaces the W2 distance for the squared
    geodesic distance (POT's exact solver). The mean negative log-likelihood ``nll`` of the
    data points (nats; see :meth:`FittedModel.log_prob`) is added on every space but
    ``functions``. For ``functions`` the samples are generated on the data's grid (which may
    differ from the training grid) and compared by
    :func:`manifoldfm.metrics.functional_statistics` (``mean_mse``, ``variance_mse``,
    ``autocovariance_mse``, ``density_mse``). With ``plot``, a PNG of the samples over the data
    in the space's plot (:func:`manifoldfm.cli.plot_points`) is written there.

    Returns:
        A dict with ``space``, ``n_data``, ``n_samples`` and the metrics (floats).

    Example:
        >>> import tempfile, torch
        >>> from manifoldfm.api import evaluate, fit
        >>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = fit(x, space="euclidean", steps=2, batch_size=16, out=d, progress=False)
        ...     m = evaluate(d, x, steps=2, nll_steps=2)
        >>> sorted(k for k in m if k in ("w2", "mmd", "nll"))
        ['mmd', 'nll', 'w2']
    """
    from .metrics import functional_statistics, mmd, wasserstein

    fm = load(run_dir, device=device)
    points = _as_points(data, fm.space, read_kwargs).to(torch.float64)
    _check_points(points, fm.space)
    width = int(points.shape[1] if fm.space not in ("so3", "se3") else points.shape[-1])
    if fm.space != "functions" and width != int(fm.config["dim"]):
        raise ValueError(
            f"data of shape {tuple(points.shape)} do not match the run's space "
            f"{fm.space} (dim {fm.config['dim']})"
        )
    _check_positive_int(max_points, "max_points", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    if points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], generator=gen)[:max_points]]
    m = n_samples if n_samples is not None else int(points.shape[0])
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    result: dict[str, Any] = {
        "space": fm.space,
        "n_data": int(points.shape[0]),
        "n_samples": m,
    }
    if fm.space == "functions":  # generated on the data's grid (the operator is resolution-free)
        gen_pts = fm.sample(m, steps=steps, generator=g, grid_size=width).to(torch.float64).cpu()
        result["grid_size"] = width
        result.update(functional_statistics(gen_pts, points).as_dict())
    else:
        gen_pts = fm.sample(m, steps=steps, generator=g).to(torch.float64).cpu()
    if plot is not None:
        from .cli import plot_points

        title = f"{fm.space}: {m} samples (colour) over {points.shape[0]} data points (grey)"
        plot_points(Path(plot), gen_pts, fm.space, title=title, reference=points)
    if fm.space == "functions":
        return result
    if fm.space == "euclidean":
        result["w2"] = float(wasserstein(gen_pts, points))
        result["mmd"] = float(mmd(gen_pts, points))
    else:
        result["w2_geodesic"] = _geodesic_w2(fm.manifold, gen_pts, points)
    result["nll"] = -float(fm.log_prob(points, steps=nll_steps).mean())
    return result
