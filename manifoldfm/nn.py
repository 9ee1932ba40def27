"""Neural velocity fields: time embeddings, an MLP velocity and classifier-free guidance.

Every model here follows the :class:`~manifoldfm._typing.VelocityField` protocol
``v(x, t, **cond) -> Tensor`` with ``x`` of shape ``(B, *point_shape)`` and ``t`` of shape ``(B,)``
(a float or 0-dim tensor is broadcast). Models hold no device or dtype of their own: move them
with ``.to(...)`` and feed inputs of the parameters' dtype.

Conditioning for classifier-free guidance (CFG) works in three pieces that compose with any
model: a model that understands a *null* condition (:class:`MLPVelocity` has a learned null
class and a zero null vector), :func:`drop_conditions` to replace conditions by the null one with
probability ``p`` during training, and :class:`ClassifierFreeGuidance` to mix the conditional and
unconditional velocities at sampling time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import as_time, check_choice, check_positive, value_checks_enabled
from .manifolds import SE3, SO3, FlatTorus, Manifold, Product, Sphere

__all__ = [
    "ClassifierFreeGuidance",
    "MLPVelocity",
    "ManifoldFeatures",
    "ManifoldMLP",
    "SinusoidalTimeEmbedding",
    "TangentProjection",
    "drop_conditions",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


def _check_int(value: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class SinusoidalTimeEmbedding(nn.Module):
    """Fixed sinusoidal features of a time ``t`` in ``[0, 1]``.

    ``emb(t) = [cos(s t w_k), sin(s t w_k)]_{k < dim/2}`` with ``w_k = max_period^(-2k/dim)`` and
    ``s = scale``; the default ``scale = 1000`` matches the usual 1000-step diffusion time grid so
    that the fastest feature turns about 160 times over ``[0, 1]`` and the slowest barely moves.
    Values lie in ``[-1, 1]``; the module has no parameters, and it computes in ``t``'s dtype on
    ``t``'s device.

    Args:
        dim: embedding size, a positive even number.
        max_period: ratio between the fastest and slowest frequency, ``> 1``.
        scale: factor applied to ``t`` before the sinusoids, ``> 0``.

    Example:
        >>> import torch
        >>> from manifoldfm.nn import SinusoidalTimeEmbedding
        >>> emb = SinusoidalTimeEmbedding(8)
        >>> emb(torch.tensor([0.0, 0.5])).shape
        torch.Size([2, 8])
        >>> emb(torch.tensor([0.0]))  # cos(0) = 1, sin(0) = 0
        tensor([[1., 1., 1., 1., 0., 0., 0., 0.]])

    References:
        Vaswani et al. Attention Is All You Need. NeurIPS 2017.
        Ho, Jain, Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> None:
        super().__init__()
        _check_int(dim, "dim", minimum=2)
        if dim % 2:
            raise ValueError(f"dim must be even (cos and sin halves), got {dim}")
        self.dim = dim
        self.max_period = check_positive(max_period, "max_period")
        if self.max_period <= 1:
            raise ValueError(f"max_period must be > 1, got {max_period}")
        self.scale = check_positive(scale, "scale")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, scale={self.scale}"

    def forward(self, t: Tensor) -> Tensor:
        """Embed times.

        Args:
            t: times of shape ``(B,)`` (floating point).

        Returns:
            Features of shape ``(B, dim)`` in ``t``'s dtype and device.
        """
        if not isinstance(t, Tensor):
            raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"t must be a floating-point tensor, got dtype {t.dtype}")
        half = self.dim // 2
        k = torch.arange(half, dtype=t.dtype, device=t.device)
        freqs = torch.exp(k * (-math.log(self.max_period) / half))
        args = (self.scale * t)[:, None] * freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class MLPVelocity(nn.Module):
    """An MLP velocity field ``v(x, t, *, y=None, c=None)`` for flat data ``x`` of shape ``(B, dim)``.

    The input of the MLP is the concatenation of ``x``, a sinusoidal embedding of ``t``, and
    optionally a learned embedding of a class label ``y`` and a continuous condition vector
    ``c``; its output has ``x``'s shape.

    Conditioning and the null condition (for classifier-free guidance):

    * ``num_classes > 0``: ``y`` holds integer labels in ``[0, num_classes]`` of shape ``(B,)``;
      the extra label ``num_classes`` (:attr:`null_label`) is a learned "no label" class, also
      used when ``y`` is omitted.
    * ``cond_dim > 0``: ``c`` is a ``(B, cond_dim)`` float tensor; the null condition is the zero
      vector, also used when ``c`` is omitted. (If zero is a meaningful condition, append a
      presence flag to ``c``.)

    :attr:`null_cond` lists those null values for :class:`ClassifierFreeGuidance`.

    Args:
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of hidden layers, ``>= 1``.
        time_dim: size of the time embedding (even).
        activation: one of ``"silu"``, ``"relu"``, ``"gelu"``, ``"tanh"``, ``"elu"``.
        num_classes: number of class labels (0 for none).
        class_dim: size of the label embedding (defaults to ``time_dim``).
        cond_dim: size of the continuous condition (0 for none).
        out_dim: size of the output (defaults to ``dim``); differs from ``dim`` when the input
            is a feature map of the point (see :class:`ManifoldMLP`).

    Example:
        >>> import torch
        >>> from manifoldfm.nn import MLPVelocity
        >>> _ = torch.manual_seed(0)
        >>> model = MLPVelocity(2, hidden=32, depth=2, num_classes=3)
        >>> x, t = torch.randn(5, 2), torch.rand(5)
        >>> model(x, t, y=torch.tensor([0, 1, 2, 3, 0])).shape  # label 3 is the null class
        torch.Size([5, 2])
        >>> model.null_cond
        {'y': 3}
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        *,
        time_dim: int = 64,
        activation: str = "silu",
        num_classes: int = 0,
        class_dim: int | None = None,
        cond_dim: int = 0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_int(dim, "dim", minimum=1)
        self.out_dim = dim if out_dim is None else _check_int(out_dim, "out_dim", minimum=1)
        _check_int(hidden, "hidden", minimum=1)
        _check_int(depth, "depth", minimum=1)
        check_choice(activation, "activation", tuple(_ACTIVATIONS))
        self.num_classes = _check_int(num_classes, "num_classes", minimum=0)
        self.cond_dim = _check_int(cond_dim, "cond_dim", minimum=0)
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        in_dim = dim + time_dim + cond_dim
        self.class_embedding: nn.Embedding | None = None
        if num_classes > 0:
            class_dim = (
                time_dim if class_dim is None else _check_int(class_dim, "class_dim", minimum=1)
            )
            self.class_embedding = nn.Embedding(num_classes + 1, class_dim)
            in_dim += class_dim
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), act()]
        layers.append(nn.Linear(hidden, self.out_dim))
        self.net = nn.Sequential(*layers)

    @property
    def null_label(self) -> int:
        """The label index of the learned null class (``num_classes``).

        Raises ``ValueError`` for a model without class labels.
        """
        if self.num_classes == 0:
            raise ValueError("this model takes no class labels (num_classes=0)")
        return self.num_classes

    @property
    def null_cond(self) -> dict[str, int | float]:
        """Null value of each condition this model accepts, keyed by keyword."""
        out: dict[str, int | float] = {}
        if self.num_classes > 0:
            out["y"] = self.num_classes
        if self.cond_dim > 0:
            out["c"] = 0.0
        return out

    def forward(
        self, x: Tensor, t: Tensor | float, *, y: Tensor | None = None, c: Tensor | None = None
    ) -> Tensor:
        """Velocity at ``(x, t)``.

        Args:
            x: points of shape ``(B, dim)``.
            t: times of shape ``(B,)`` in ``[0, 1]`` (a float or 0-dim tensor is broadcast).
            y: integer labels of shape ``(B,)`` in ``[0, num_classes]`` (``num_classes`` = null).
            c: continuous conditions of shape ``(B, cond_dim)``.

        Returns:
            Velocities of shape ``(B, out_dim)``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        batch = x.shape[0]
        t = as_time(t, x)
        feats = [x, self.time_embedding(t)]
        if self.class_embedding is not None:
            feats.append(self.class_embedding(self._labels(y, x)))
        elif y is not None:
            raise ValueError("y was given but the model takes no class labels (num_classes=0)")
        if self.cond_dim > 0:
            if c is None:
                c = x.new_zeros(batch, self.cond_dim)
            elif not isinstance(c, Tensor) or c.shape != (batch, self.cond_dim):
                shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(f"c must have shape ({batch}, {self.cond_dim}), got {shape}")
            feats.append(c.to(dtype=x.dtype))
        elif c is not None:
            raise ValueError("c was given but the model takes no condition vector (cond_dim=0)")
        return self.net(torch.cat(feats, dim=1))

    def _labels(self, y: Tensor | None, x: Tensor) -> Tensor:
        batch = x.shape[0]
        if y is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=x.device)
        if not isinstance(y, Tensor) or y.shape != (batch,):
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y must have shape ({batch},), got {shape}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
        if value_checks_enabled() and y.numel() > 0:
            lo, hi = torch.aminmax(y)
            if bool(lo < 0) or bool(hi > self.num_classes):
                raise ValueError(
                    f"labels y must lie in [0, {self.num_classes}] ({self.num_classes} = null), "
                    f"got values in [{int(lo)}, {int(hi)}]"
                )
        return y.long()

    def extra_repr(self) -> str:
        out = f", out_dim={self.out_dim}" if self.out_dim != self.dim else ""
        return f"dim={self.dim}{out}, num_classes={self.num_classes}, cond_dim={self.cond_dim}"


def _null_like(cond: Tensor, null: Tensor | float | int, name: str) -> Tensor:
    value = torch.as_tensor(null, dtype=cond.dtype, device=cond.device)
    try:
        return value.expand(cond.shape[1:]) if value.ndim else value
    except RuntimeError as err:
        raise ValueError(
            f"null value for {name} of shape {tuple(value.shape)} does not broadcast to one "
            f"condition of shape {tuple(cond.shape[1:])}"
        ) from err


def drop_conditions(
    cond: Tensor,
    p: float,
    *,
    null: Tensor | float | int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace each condition by the null condition with probability ``p`` (CFG training).

    The drop mask is drawn with ``torch.rand`` on the generator's device (``cond``'s device when
    no generator is given) and moved to ``cond``'s device, so a CPU generator gives the same
    mask whatever device the conditions live on.

    Args:
        cond: conditions of shape ``(B, ...)`` (labels ``(B,)``, vectors ``(B, k)``, ...).
        p: drop probability in ``[0, 1]``.
        null: the null condition: a scalar or a tensor of one condition's shape ``cond.shape[1:]``
            (for :class:`MLPVelocity` use ``model.null_cond["y"]`` or ``["c"]``).
        generator: random generator for the mask.

    Returns:
        A new tensor like ``cond`` with the dropped rows replaced by ``null``.

    Example:
        >>> import torch
        >>> from manifoldfm.nn import drop_conditions
        >>> g = torch.Generator().manual_seed(0)
        >>> drop_conditions(torch.tensor([0, 1, 2, 1]), 1.0, null=3, generator=g)
        tensor([3, 3, 3, 3])
        >>> drop_conditions(torch.tensor([0, 1, 2, 1]), 0.0, null=3, generator=g)
        tensor([0, 1, 2, 1])

    References:
        Ho & Salimans. Classifier-Free Diffusion Guidance. NeurIPS workshop 2021.
    """
    if not isinstance(cond, Tensor):
        raise TypeError(f"cond must be a torch.Tensor, got {type(cond).__name__}")
    if cond.ndim == 0:
        raise ValueError("cond must have a batch dimension, got a scalar tensor")
    p = check_positive(p, "p", allow_zero=True)
    if p > 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    null_value = _null_like(cond, null, "cond")
    draw_device = generator.device if generator is not None else cond.device
    u = torch.rand(cond.shape[0], generator=generator, device=draw_device)
    mask = (u < p).to(cond.device).reshape((-1,) + (1,) * (cond.ndim - 1))
    return torch.where(mask, null_value, cond)


class ClassifierFreeGuidance(nn.Module):
    """Guided velocity ``v = v_uncond + scale * (v_cond - v_uncond)`` in one batched forward pass.

    The conditional and the null-conditional inputs are concatenated along the batch, the
    wrapped model runs once on ``2B`` points, and the two halves are mixed with
    ``torch.lerp`` (exact at ``scale = 0`` and ``scale = 1``). ``scale = 0`` gives the
    unconditional field, ``1`` the conditional one, ``> 1`` extrapolates (stronger guidance).
    Conditions passed as ``None`` are forwarded as ``None``; without any condition the model is
    called once on the original batch. Models whose output for one sample depends on the rest of
    the batch (batch norm in training mode) are not suited to batched guidance.

    Args:
        model: a velocity field ``model(x, t, **cond)``, typically trained with
            :func:`drop_conditions`.
        scale: guidance weight (any real number; ``0`` unconditional, ``1`` conditional).
        null_cond: mapping from condition keyword to its null value (a scalar or a tensor of one
            condition's shape). Defaults to ``model.null_cond``.

    Example:
        >>> import torch
        >>> from manifoldfm.nn import ClassifierFreeGuidance, MLPVelocity
        >>> _ = torch.manual_seed(0)
        >>> model = MLPVelocity(2, hidden=16, depth=1, num_classes=2)
        >>> guided = ClassifierFreeGuidance(model, scale=2.0)
        >>> x, t, y = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 0, 1])
        >>> v_c, v_u = model(x, t, y=y), model(x, t)
        >>> torch.allclose(guided(x, t, y=y), v_u + 2.0 * (v_c - v_u), atol=1e-6)
        True

    References:
        Ho & Salimans. Classifier-Free Diffusion Guidance. NeurIPS workshop 2021.
        Zheng et al. Guided Flows for Generative Modeling and Decision Making. 2023.
    """

    def __init__(
        self,
        model: Any,
        scale: float,
        null_cond: Mapping[str, Tensor | float | int] | None = None,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not math.isfinite(scale)
        ):
            raise ValueError(f"scale must be a finite number, got {scale!r}")
        self.scale = float(scale)
        if null_cond is None:
            null_cond = getattr(model, "null_cond", None)
            if null_cond is None:
                raise ValueError(
                    "null_cond is required: the model has no null_cond attribute naming its "
                    "null conditions"
                )
        self.null_cond = dict(null_cond)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, null_cond={self.null_cond}"

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Guided velocity at ``(x, t)`` given conditions ``**cond`` (each of batch size ``B``)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        t = as_time(t, x)
        given = {k: v for k, v in cond.items() if v is not None}
        if not given:
            return self.model(x, t, **cond)
        batch = x.shape[0]
        doubled: dict[str, Any] = dict(cond)
        for name, value in given.items():
            if name not in self.null_cond:
                raise ValueError(
                    f"no null value for condition {name!r}; null_cond has {sorted(self.null_cond)}"
                )
            if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != batch:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"condition {name!r} must be a tensor with batch size {batch}, got {shape}"
                )
            null = _null_like(value, self.null_cond[name], name).expand_as(value)
            doubled[name] = torch.cat([value, null], dim=0)
        out = self.model(torch.cat([x, x], dim=0), torch.cat([t, t], dim=0), **doubled)
        v_cond, v_uncond = out[:batch], out[batch:]
        return torch.lerp(v_uncond, v_cond, self.scale)


# ---------------------------------------------------------------------------------------------
# manifold-aware models
# ---------------------------------------------------------------------------------------------


def _check_manifold_module(manifold: Any) -> None:
    missing = [m for m in ("proju",) if not callable(getattr(manifold, m, None))]
    if missing:
        raise TypeError(
            f"manifold must provide geoopt's proju(x, u); {type(manifold).__name__} does not"
        )


class TangentProjection(nn.Module):
    """Make any network a tangent velocity field: ``v(x, t) = proju(x, model(x, t))``.

    A network's raw output is an ambient vector; on a manifold the velocity must be tangent at
    ``x``. Projecting the output (rather than penalising its normal part) makes the field
    tangent by construction, so ODE solutions stay on the manifold and the CFM loss compares
    tangent vectors only.

    Args:
        model: any module ``model(x, t, **cond)`` whose output has ``x``'s shape.
        manifold: a manifold with geoopt's ``proju(x, u)`` (every manifold of the library).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import Sphere
        >>> from manifoldfm.nn import MLPVelocity, TangentProjection
        >>> _ = torch.manual_seed(0)
        >>> v = TangentProjection(MLPVelocity(3, hidden=16, depth=1), Sphere(2))
        >>> x = Sphere(2).random_uniform(4)
        >>> out = v(x, torch.rand(4))
        >>> bool((out * x).sum(-1).abs().max() < 1e-6)  # orthogonal to x: tangent
        True
    """

    def __init__(self, model: nn.Module, manifold: Any) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        _check_manifold_module(manifold)
        self.model = model
        self.manifold = manifold

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Tangent velocity at ``(x, t)``, shape of ``x``."""
        out = self.model(x, t, **cond)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the wrapped model must return x's shape {tuple(x.shape)}, got {shape}"
            )
        return self.manifold.proju(x, out)


#: Coordinates bounded by 1 in absolute value (unit vectors, rotation matrices), whose Fourier
#: bands are sin/cos of pi 2^k x.
_BOUNDED = (Sphere, SO3)


def _torus_multiples(bands: int) -> list[int]:
    """The integer multiples of the angles in the extra Fourier bands of a torus: 2, 3, ..."""
    return list(range(2, bands + 2))


def _feature_size(manifold: Manifold, bands: int = 0) -> int:
    if isinstance(manifold, FlatTorus):
        return 2 * manifold.point_shape[0] * (1 + bands)
    if isinstance(manifold, SE3):
        return 12 + 18 * bands
    if isinstance(manifold, Product):
        return sum(_feature_size(m, bands) for m in manifold._ms)
    n = math.prod(manifold.point_shape)
    return n * (1 + 2 * bands) if isinstance(manifold, _BOUNDED) else n


def _bands(x: Tensor, freqs: Tensor) -> Tensor:
    """``(B, F) -> (B, 2 F K)``: ``sin`` and ``cos`` of every coordinate times every frequency."""
    ang = x[..., None] * freqs.to(device=x.device, dtype=x.dtype)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1).reshape(x.shape[0], -1)


def _features(manifold: Manifold, x: Tensor, torus_freqs: Tensor, bounded_freqs: Tensor) -> Tensor:
    """``(B, *point_shape) -> (B, F)``: the embedding coordinates, with angles as (cos, sin),
    and the Fourier bands of the bounded coordinates when the frequency tensors are not empty."""
    if isinstance(manifold, FlatTorus):
        base = torch.cat([torch.cos(x), torch.sin(x)], dim=-1)
        return torch.cat([base, _bands(x, torus_freqs)], dim=-1) if torus_freqs.numel() else base
    if isinstance(manifold, SE3):  # the rotation and translation blocks, not the constant row
        flat = x[:, :3, :].reshape(x.shape[0], 12)
        if not bounded_freqs.numel():
            return flat
        return torch.cat([flat, _bands(x[:, :3, :3].reshape(x.shape[0], 9), bounded_freqs)], -1)
    if isinstance(manifold, Product):
        parts = manifold.split(x)
        return torch.cat(
            [_features(m, p, torus_freqs, bounded_freqs) for m, p in zip(manifold._ms, parts)],
            dim=-1,
        )
    flat = x.reshape(x.shape[0], -1)
    if isinstance(manifold, _BOUNDED) and bounded_freqs.numel():
        return torch.cat([flat, _bands(flat, bounded_freqs)], dim=-1)
    return flat


class ManifoldFeatures(nn.Module):
    """Continuous, geometry-respecting input features of manifold points.

    A network fed raw coordinates must see nearby points as nearby inputs. Angles on a torus
    are not: ``0`` and ``2 pi - 1e-9`` are the same point, so each angle becomes
    ``(cos, sin)``. Spheres and SO(3) (as 3x3 matrices) are embedded already, so their
    coordinates are used as they are; on SE(3) the rotation and translation blocks (12 numbers,
    not the constant bottom row); a :class:`~manifoldfm.manifolds.Product` concatenates its
    factors' features; other manifolds give their flattened coordinates.

    **Fourier bands.** With ``fourier=K`` every bounded coordinate also enters through ``K``
    frequency bands, so that a small network can represent sharp densities (an MLP on raw
    coordinates is biased towards slowly varying functions): the angles ``a`` of a torus
    through ``cos(m a), sin(m a)`` for ``m = 2, ..., K + 1`` (integer multiples: still
    periodic), the coordinates ``x`` of spheres and SO(3) (and the rotation block of SE(3)),
    which lie in ``[-1, 1]``, through ``sin(pi 2^k x), cos(pi 2^k x)`` for ``k = 0, ..., K - 1``.
    Euclidean coordinates (unbounded), including the translations of SE(3), are left as they
    are.

    Args:
        manifold: a manifold of the library.
        fourier: the number ``K >= 0`` of extra frequency bands (0: none).

    Attributes:
        out_features: the number of features of one point.

    Example:
        >>> import math, torch
        >>> from manifoldfm.manifolds import FlatTorus, Sphere
        >>> from manifoldfm.nn import ManifoldFeatures
        >>> f = ManifoldFeatures(FlatTorus(2))
        >>> f(torch.tensor([[0.0, math.pi / 2]])).round(decimals=4) + 0.0  # (cos, cos, sin, sin)
        tensor([[1., 0., 0., 1.]])
        >>> f.out_features, ManifoldFeatures(FlatTorus(2), fourier=3).out_features
        (4, 16)
        >>> ManifoldFeatures(Sphere(2), fourier=4).out_features  # 3 + 3 * 2 * 4
        27
    """

    _torus_freqs: Tensor
    _bounded_freqs: Tensor

    def __init__(self, manifold: Manifold, fourier: int = 0) -> None:
        super().__init__()
        if not isinstance(manifold, Manifold):
            raise TypeError(
                f"manifold must be a manifoldfm manifold, got {type(manifold).__name__}"
            )
        if isinstance(fourier, bool) or not isinstance(fourier, int) or fourier < 0:
            raise ValueError(f"fourier must be an integer >= 0, got {fourier!r}")
        self.manifold = manifold
        self.fourier = fourier
        self.out_features = _feature_size(manifold, fourier)
        # not saved in state dicts: a function of ``fourier``, so checkpoints stay compatible
        torus = torch.tensor(_torus_multiples(fourier), dtype=torch.float64)
        bounded = math.pi * 2.0 ** torch.arange(fourier, dtype=torch.float64)
        self.register_buffer("_torus_freqs", torus, persistent=False)
        self.register_buffer("_bounded_freqs", bounded, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Features of points ``x`` of shape ``(B, *point_shape)``, shape ``(B, out_features)``."""
        shape = self.manifold.point_shape
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, shape))}) on {self.manifold!r}, "
                f"got {tuple(x.shape)}"
            )
        return _features(self.manifold, x, self._torus_freqs, self._bounded_freqs)

    def extra_repr(self) -> str:
        return f"{self.manifold!r}, fourier={self.fourier}, out_features={self.out_features}"


class ManifoldMLP(nn.Module):
    """An MLP velocity field on a manifold: features in, tangent velocity out.

    The composition ``proju(x, MLP(features(x), t))`` of :class:`ManifoldFeatures`,
    :class:`MLPVelocity` (whose output is the point's ambient size) and the tangent projection
    of :class:`TangentProjection`. On SO(3) the output is read as an angular velocity ``w``
    and returned as ``x @ hat(w)`` (three outputs instead of nine, tangent without a
    projection); on SE(3) as a body-frame twist ``(w, v)`` (six outputs instead of sixteen,
    :meth:`~manifoldfm.manifolds.SE3.twist_to_tangent`). Conditions (``y=``, ``c=``) pass
    through to the MLP.

    Args:
        manifold: a manifold of the library; points have shape ``(B, *point_shape)``.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        fourier: Fourier bands of the input features (see :class:`ManifoldFeatures`).
        **mlp_kwargs: further arguments of :class:`MLPVelocity` (``time_dim``,
            ``activation``, ``num_classes``, ``cond_dim``, ...).

    Example:
        >>> import torch
        >>> from manifoldfm.manifolds import FlatTorus
        >>> from manifoldfm.nn import ManifoldMLP
        >>> _ = torch.manual_seed(0)
        >>> v = ManifoldMLP(FlatTorus(2), hidden=32, depth=2)
        >>> v(FlatTorus(2).random_uniform(5), torch.rand(5)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        manifold: Manifold,
        hidden: int = 256,
        depth: int = 3,
        *,
        fourier: int = 0,
        **mlp_kwargs: Any,
    ) -> None:
        super().__init__()
        if "out_dim" in mlp_kwargs:
            raise TypeError("out_dim is set by the manifold; do not pass it")
        self.features = ManifoldFeatures(manifold, fourier)
        self.manifold = manifold
        self._so3 = isinstance(manifold, SO3)
        self._se3 = isinstance(manifold, SE3)
        out = 3 if self._so3 else 6 if self._se3 else math.prod(manifold.point_shape)
        self.mlp = MLPVelocity(self.features.out_features, hidden, depth, out_dim=out, **mlp_kwargs)

    @property
    def null_cond(self) -> dict[str, int | float]:
        """Null values of the conditions (see :attr:`MLPVelocity.null_cond`)."""
        return self.mlp.null_cond

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Tangent velocity at ``(x, t)``, shape of ``x``."""
        out = self.mlp(self.features(x), t, **cond)
        if self._so3:
            from .manifolds.so3 import hat

            return x @ hat(out)
        if self._se3:
            se3: Any = self.manifold
            return se3.twist_to_tangent(x, out, frame="body")
        return self.manifold.proju(x, out.reshape(x.shape))
