"""Noisy interpolant paths: independent CFM (constant noise) and Schrodinger-bridge CFM.

Both are Gaussian paths around the straight line, ``x_t = (1 - t) x0 + t x1 + s_t eps`` with
``eps ~ N(0, I)``, whose conditional velocity is ``u_t = x1 - x0 + s'_t eps``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils import as_time, broadcast_time, check_positive, eps_for
from .affine import check_pair
from .base import PathSample

__all__ = ["LinearGaussianPath", "SchrodingerBridgePath"]


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


class LinearGaussianPath:
    """The independent-CFM path: ``x_t ~ N((1 - t) x0 + t x1, sigma^2 I)``, ``u_t = x1 - x0``.

    This is I-CFM of Tong et al. (2024): a straight line blurred by constant noise ``sigma``.
    With ``sigma = 0`` it equals ``AffinePath(CondOT())`` and draws no noise.

    Args:
        sigma: standard deviation of the noise around the line, ``>= 0``.

    Example:
        >>> import torch
        >>> from manifoldfm import LinearGaussianPath
        >>> g = torch.Generator().manual_seed(0)
        >>> x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
        >>> s = LinearGaussianPath(0.1).sample(x0, x1, torch.rand(4, generator=g), generator=g)
        >>> torch.allclose(s.ut, x1 - x0)
        True

    References:
        Tong et al. Improving and Generalizing Flow-Based Generative Models with Minibatch
        Optimal Transport. TMLR 2024.
    """

    def __init__(self, sigma: float = 0.0) -> None:
        self.sigma = check_positive(sigma, "sigma", allow_zero=True)

    def __repr__(self) -> str:
        return f"LinearGaussianPath(sigma={self.sigma})"

    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor | float,
        *,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Draw ``x_t`` around the straight line; see :class:`LinearGaussianPath`."""
        check_pair(x0, x1)
        t = as_time(t, x0)
        tb = broadcast_time(t, x0)
        ut = x1 - x0
        xt = torch.lerp(x0, x1, tb)  # exact at both endpoints
        if self.sigma > 0:
            xt.add_(_noise(x0, generator), alpha=self.sigma)
        return PathSample(t=t, x0=x0, x1=x1, xt=xt, ut=ut)


class SchrodingerBridgePath:
    """Brownian-bridge path of SB-CFM: ``x_t ~ N((1 - t) x0 + t x1, sigma^2 t (1 - t) I)``.

    Paired with an entropic OT coupling of regularisation ``2 sigma^2``
    (``SinkhornOT(reg=2 * sigma**2)``) its marginals are those of the Schrodinger bridge
    between the source and data with reference Brownian motion ``sigma W``. The target is
    ``u_t = x1 - x0 + sigma (1 - 2t) / (2 sqrt(t (1 - t))) eps``, infinite at ``t = 0`` and
    ``t = 1`` (``singular_times``); times within a dtype-keyed epsilon of the endpoints are
    moved inside for the noise coefficient so that the target stays finite.

    Args:
        sigma: diffusion scale of the reference Brownian motion, ``> 0``.

    Example:
        >>> import torch
        >>> from manifoldfm import SchrodingerBridgePath
        >>> g = torch.Generator().manual_seed(0)
        >>> x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
        >>> s = SchrodingerBridgePath(0.5).sample(x0, x1, torch.tensor([0.0, 0.3, 0.6, 1.0]), generator=g)
        >>> torch.equal(s.xt[0], x0[0]) and torch.equal(s.xt[3], x1[3])
        True

    References:
        Tong et al. Simulation-free Schrodinger bridges via score and flow matching. AISTATS 2024.
    """

    singular_times: tuple[float, ...] = (0.0, 1.0)

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = check_positive(sigma, "sigma")

    def __repr__(self) -> str:
        return f"SchrodingerBridgePath(sigma={self.sigma})"

    def sample(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor | float,
        *,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Draw ``x_t`` on the Brownian bridge; see :class:`SchrodingerBridgePath`."""
        check_pair(x0, x1)
        t = as_time(t, x0)
        tb = broadcast_time(t, x0)
        eps = _noise(x0, generator)
        diff = x1 - x0
        var = tb * (1.0 - tb)
        xt = torch.addcmul(torch.lerp(x0, x1, tb), self.sigma * torch.sqrt(var), eps)
        e = eps_for(x0.dtype) ** 0.5
        tc = tb.clamp(e, 1.0 - e)
        coef = self.sigma * (1.0 - 2.0 * tc) / (2.0 * torch.sqrt(tc * (1.0 - tc)))
        ut = torch.addcmul(diff, coef, eps)
        return PathSample(t=t, x0=x0, x1=x1, xt=xt, ut=ut)
