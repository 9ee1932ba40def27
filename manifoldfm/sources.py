"""Source distributions: where the flow starts (t = 0).

Every source offers ``sample(n, *, generator=None, dtype=None, device=None) -> (n, *shape)`` and
``log_prob(x) -> (B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._utils import check_positive

__all__ = ["Gaussian"]


class Gaussian:
    """Isotropic Gaussian ``N(mean, std^2 I)`` on tensors of a fixed shape.

    Args:
        shape: the shape of one sample (an int ``d`` means ``(d,)``; ``()`` gives scalars).
        mean: the mean of every entry (a Python float).
        std: the standard deviation of every entry, ``> 0`` (a Python float).

    Example:
        >>> import torch
        >>> from manifoldfm.sources import Gaussian
        >>> src = Gaussian((3, 2))
        >>> x = src.sample(5, generator=torch.Generator().manual_seed(0))
        >>> x.shape, src.log_prob(x).shape
        (torch.Size([5, 3, 2]), torch.Size([5]))
        >>> round(float(Gaussian(1).log_prob(torch.zeros(1, 1))), 4)  # -log(2 pi) / 2
        -0.9189
    """

    def __init__(self, shape: int | Sequence[int], mean: float = 0.0, std: float = 1.0) -> None:
        self._shape = _check_shape(shape)
        if isinstance(mean, bool) or not isinstance(mean, (int, float)):
            raise TypeError(f"mean must be a Python float, got {type(mean).__name__}")
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        self.mean = float(mean)
        self.std = check_positive(std, "std")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return self._shape

    @property
    def dim(self) -> int:
        """The number of entries of one sample."""
        return math.prod(self._shape)

    def __repr__(self) -> str:
        return f"Gaussian(shape={self._shape}, mean={self.mean}, std={self.std})"

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *shape)``.

        Args:
            n: the number of samples (``>= 0``).
            generator: random generator; its device is the default device.
            dtype: a floating dtype (default: ``torch.get_default_dtype()``).
            device: the device (default: the generator's, else the CPU).

        Example:
            >>> import torch
            >>> from manifoldfm.sources import Gaussian
            >>> Gaussian(2, mean=1.0, std=0.5).sample(4, dtype=torch.float64).dtype
            torch.float64
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        x = torch.randn((n, *self._shape), generator=generator, dtype=dtype, device=device)
        if self.std != 1.0:
            x = x.mul_(self.std)
        if self.mean != 0.0:
            x = x.add_(self.mean)
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of each sample, shape ``(B,)``, for ``x`` of shape ``(B, *shape)``.

        Example:
            >>> import torch
            >>> from manifoldfm.sources import Gaussian
            >>> Gaussian(2).log_prob(torch.zeros(3, 2))
            tensor([-1.8379, -1.8379, -1.8379])
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim != len(self._shape) + 1 or tuple(x.shape[1:]) != self._shape:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self._shape))}) for this source, "
                f"got {tuple(x.shape)}"
            )
        z = x if self.mean == 0.0 else x - self.mean
        if self.std != 1.0:
            z = z / self.std
        const = self.dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return -0.5 * z.reshape(x.shape[0], -1).square().sum(dim=1) - const


def _check_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
        if s < 1:
            raise ValueError(f"shape entries must be >= 1, got {tuple(shape)}")
        out.append(int(s))
    return tuple(out)
