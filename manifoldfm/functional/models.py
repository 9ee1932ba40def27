"""Neural operators: velocity fields over functions, for functional flow matching.

A function is handled in one of two forms (see the shape conventions of the library):

* on a regular grid, as values of shape ``(B, C, n)`` or ``(B, C, h, w)``:
  :class:`FNO1d` and :class:`FNO2d`, Fourier neural operators whose weights do not depend on
  the grid size, so one model runs on any resolution;
* on a scattered point set, as values of shape ``(B, n_points, C)`` carried with their
  locations ``points`` of shape ``(n_points, d)`` (shared) or ``(B, n_points, d)``:
  :class:`PointSetOperator`, a transformer over point tokens, equivariant to permutations of
  the points.

All three follow the :class:`~manifoldfm._typing.VelocityField` protocol ``v(x, t, **cond)``
with ``t`` of shape ``(B,)`` (a float or 0-dim tensor is broadcast), return ``x``'s shape, and
condition on time through a sinusoidal embedding
(:class:`~manifoldfm.nn.SinusoidalTimeEmbedding`) followed by an MLP. Like every model of the
library they hold no device or dtype of their own: move them with ``.to(...)`` and feed inputs of
the parameters' dtype. Spectral weights are stored as real tensors with a trailing axis of size
2 (real and imaginary parts), so ``model.double()`` and ``model.to(dtype)`` convert them like any
other parameter.

References:
    Li et al. Fourier Neural Operator for Parametric Partial Differential Equations. ICLR 2021.
    Kerrigan, Migliorini, Smyth. Functional Flow Matching. AISTATS 2024.
    Perez et al. FiLM: Visual Reasoning with a General Conditioning Layer. AAAI 2018.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._utils import as_time, check_choice
from ..nn import SinusoidalTimeEmbedding

__all__ = ["FNO1d", "FNO2d", "PointSetOperator"]

_COORDINATES = ("periodic", "linear", "none")


def _int(value: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _modes(modes: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    out = (modes,) * ndim if isinstance(modes, int) and not isinstance(modes, bool) else modes
    if not isinstance(out, tuple) or len(out) != ndim:
        raise ValueError(f"modes must be an int or a tuple of {ndim} ints, got {modes!r}")
    for m in out:
        _int(m, "modes", minimum=1)
    return out


def _tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


class _TimeMLP(nn.Module):
    """``t -> MLP(sinusoidal(t))``: a learned time feature of size ``hidden``."""

    def __init__(self, time_dim: int, hidden: int) -> None:
        super().__init__()
        self.embedding = SinusoidalTimeEmbedding(time_dim)
        self.net = nn.Sequential(
            nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.net(self.embedding(t))


def _fft_friendly(n: int) -> bool:
    """Whether ``n`` has no prime factor above 7 (sizes the FFT handles at full speed)."""
    for p in (2, 3, 5, 7):
        while n % p == 0 and n > 1:
            n //= p
    return n == 1


class _SpectralConv(nn.Module):
    """Spectral convolution over the last ``len(modes)`` (1 or 2) axes of ``(B, C, *grid)``.

    ``rfftn`` of the input, a complex matrix ``(C_in, C_out)`` per kept frequency, zero for the
    others, ``irfftn`` back to the input's grid size. The kept frequencies are the lowest ones:
    ``-modes < k < modes`` along the first axis of a 2-D grid (complex FFT) and
    ``0 <= k < modes`` along the last (real-FFT) axis. One real parameter of shape
    ``(C_in, C_out, *freqs, 2)`` holds them, ``freqs`` ordered as the FFT orders them
    (``0 .. modes - 1`` then ``-(modes - 1) .. -1`` on the complex axis). On a grid too small to
    hold them all, only the frequencies the grid has are used; a frequency has the same weight on
    every grid.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, ...]) -> None:
        super().__init__()
        self.modes = modes
        freqs = (modes[0],) if len(modes) == 1 else (2 * modes[0] - 1, modes[1])
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(in_channels, out_channels, *freqs, 2))

    def forward(self, x: Tensor) -> Tensor:
        if len(self.modes) == 1:
            n = x.shape[-1]
            k = min(self.modes[0], n // 2 + 1)
            if not _fft_friendly(n):  # e.g. 365 = 5 * 73: matrix products beat the FFT
                return self._forward_dft(x, n, k)
            w = torch.view_as_complex(self.weight)
            x_ft = torch.fft.rfft(x, norm="forward")[..., :k]
            out = torch.einsum("bik,iok->bok", x_ft, w[..., :k])
            return torch.fft.irfft(out, n=n, norm="forward")
        w = torch.view_as_complex(self.weight)
        h, w_size = x.shape[-2:]
        m1, m2 = self.modes
        pos = min(m1, (h + 1) // 2)  # frequencies 0 .. pos - 1
        neg = min(m1 - 1, h // 2)  # frequencies -neg .. -1
        k2 = min(m2, w_size // 2 + 1)
        x_ft = torch.fft.rfft2(x, norm="forward")[..., :k2]
        rows = torch.cat([x_ft[..., :pos, :], x_ft[..., h - neg :, :]], dim=-2)
        w_rows = torch.cat([w[:, :, :pos, :k2], w[:, :, 2 * m1 - 1 - neg :, :k2]], dim=2)
        out = torch.einsum("bixy,ioxy->boxy", rows, w_rows)
        middle = out.new_zeros(out.shape[0], out.shape[1], h - pos - neg, k2)
        out = torch.cat([out[..., :pos, :], middle, out[..., pos:, :]], dim=-2)
        return torch.fft.irfft2(out, s=(h, w_size), norm="forward")

    def _forward_dft(self, x: Tensor, n: int, k: int) -> Tensor:
        """The 1-D layer with the ``k`` kept frequencies as real matrix products.

        Equal to ``irfft(W rfft(x)[:k], n)`` (``norm="forward"``) up to rounding, but a product
        with ``(n, k)`` cosine and sine tables costs ``O(n k)`` per channel in BLAS instead of
        an FFT, which for few modes (and grid sizes with large prime factors, e.g. 365) is
        several times faster on CPUs.
        """
        j = torch.arange(n, device=x.device, dtype=torch.int64)
        f = torch.arange(k, device=x.device, dtype=torch.int64)
        phase = (j[:, None] * f[None, :]) % n  # exact integer phases: no large angles
        angle = phase.to(torch.float64) * (2 * math.pi / n)
        # forward table (n, 2k): [cos | -sin] / n gives the forward-normalised rfft (re | im)
        fwd = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1) / n
        # inverse table (2k, n): irfft with c_0 = 1, c_f = 2 inside, 1 at Nyquist (n / 2)
        c = torch.full((k, 1), 2.0, dtype=torch.float64, device=x.device)
        c[0] = 1.0
        if n % 2 == 0 and k == n // 2 + 1:
            c[-1] = 1.0
        inv = torch.cat([c * torch.cos(angle).T, -c * torch.sin(angle).T], dim=0)
        b, ci = x.shape[0], x.shape[1]
        spec = (x.reshape(b * ci, n) @ fwd.to(x.dtype)).reshape(b, ci, 2 * k)
        w = self.weight[..., :k, :]
        w_re, w_im = w[..., 0], w[..., 1]
        # (re + i im)(w_re + i w_im) as one real product over the stacked (re, im) channels
        big = torch.cat([torch.cat([w_re, w_im], 1), torch.cat([-w_im, w_re], 1)], 0)
        s_re, s_im = spec[..., :k], spec[..., k:]
        out = torch.einsum("bik,iok->bok", torch.cat([s_re, s_im], 1), big)  # (B, 2 C_out, k)
        co = out.shape[1] // 2
        out = torch.cat([out[:, :co], out[:, co:]], dim=2)  # (B, C_out, 2k): (re | im)
        return (out.reshape(b * co, 2 * k) @ inv.to(x.dtype)).reshape(b, co, n)


class _FNO(nn.Module):
    """Shared body of :class:`FNO1d` and :class:`FNO2d` (``ndim`` grid axes)."""

    def __init__(
        self,
        ndim: int,
        channels: int,
        width: int,
        modes: int | tuple[int, ...],
        depth: int,
        time_dim: int,
        out_channels: int | None,
        projection: int,
        coordinates: str,
    ) -> None:
        super().__init__()
        self.ndim = ndim
        self.coordinates = check_choice(coordinates, "coordinates", _COORDINATES)
        self.channels = _int(channels, "channels", minimum=1)
        self.out_channels = (
            channels if out_channels is None else _int(out_channels, "out_channels", minimum=1)
        )
        self.width = _int(width, "width", minimum=1)
        self.depth = _int(depth, "depth", minimum=1)
        _int(projection, "projection", minimum=1)
        self.modes = _modes(modes, ndim)
        conv: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv1d if ndim == 1 else nn.Conv2d
        n_coords = {"periodic": 2 * ndim, "linear": ndim, "none": 0}[coordinates]
        self.lift = conv(channels + n_coords, width, 1)
        self.spectral = nn.ModuleList(_SpectralConv(width, width, self.modes) for _ in range(depth))
        self.pointwise = nn.ModuleList(conv(width, width, 1) for _ in range(depth))
        self.time = _TimeMLP(time_dim, 4 * width)
        self.film = nn.Linear(4 * width, 2 * width * depth)
        self.project = nn.Sequential(
            conv(width, projection, 1), nn.GELU(), conv(projection, self.out_channels, 1)
        )
        self.act = nn.GELU()

    def _check(self, x: object) -> Tensor:
        x = _tensor(x, "x")
        grid = ", ".join("n" if self.ndim == 1 else a for a in ("h", "w")[: self.ndim])
        if x.ndim != self.ndim + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"x must have shape (B, {self.channels}, {grid}) (channels first), "
                f"got {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < 1 or x.shape[0] < 1:
            raise ValueError(f"x must have a non-empty batch and grid, got {tuple(x.shape)}")
        return x

    def _coordinates(self, x: Tensor) -> Tensor:
        """Coordinate channels of the grid, shape ``(B, n_coords, *grid)``."""
        grid = x.shape[2:]
        axes = [torch.arange(n, dtype=x.dtype, device=x.device) / n for n in grid]
        mesh = torch.meshgrid(*axes, indexing="ij") if self.ndim > 1 else (axes[0],)
        pos = torch.stack(mesh)
        if self.coordinates == "periodic":
            angle = (2 * math.pi) * pos
            pos = torch.cat([torch.cos(angle), torch.sin(angle)])
        return pos.expand(x.shape[0], *pos.shape)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        x = self._check(x)
        t = as_time(t, x)
        h = x if self.coordinates == "none" else torch.cat([x, self._coordinates(x)], dim=1)
        h = self.lift(h)
        film = self.film(self.time(t)).reshape(x.shape[0], self.depth, 2, self.width)
        film = film.reshape(film.shape + (1,) * self.ndim)
        for i in range(self.depth):
            h = self.spectral[i](h) + self.pointwise[i](h)
            h = h * (1 + film[:, i, 0]) + film[:, i, 1]
            if i < self.depth - 1:
                h = self.act(h)
        return self.project(h)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, out_channels={self.out_channels}, width={self.width}, "
            f"modes={self.modes}, depth={self.depth}, coordinates={self.coordinates!r}"
        )


_FNO_ARGS = """
    Each of the ``depth`` Fourier layers computes ``h <- act(FiLM_t(K h + W h))``: ``K`` a
    spectral convolution (FFT over the grid axes, a learned complex ``width x width`` matrix per
    kept low frequency, the other frequencies dropped, inverse FFT to the input's grid size),
    ``W`` a pointwise linear map (1x1 convolution, with bias), ``FiLM_t(h) = h (1 + gamma(t)) +
    beta(t)`` a per-channel scale and shift computed from the time embedding (sinusoidal
    features of ``t``, then an MLP), ``act`` = GELU (not after the last layer). Before the layers
    the input channels plus the grid coordinates are lifted to ``width`` channels; after them a
    pointwise two-layer MLP (``projection`` hidden channels) maps to ``out_channels``.

    Grids and coordinates. The grid is read as a uniform periodic sampling of the unit
    interval/square: grid point ``i`` of ``n`` sits at ``s = i / n`` in ``[0, 1)`` (endpoint
    excluded), so point ``i`` of an ``n``-point grid and point ``2 i`` of a ``2 n``-point grid are
    the same location. The coordinate channels are, per axis, ``cos(2 pi s)`` and
    ``sin(2 pi s)`` (``coordinates="periodic"``, the default: smooth and periodic like the FFT
    basis, and they still tell every location of ``[0, 1)`` apart), or the normalised position
    ``s`` itself (``"linear"``: one channel per axis, with a jump where the periodic grid wraps
    around), or none (``"none"``).

    Resolution. The FFT is normalised by the grid size (``norm="forward"``), so a frequency's
    weight acts on the same Fourier coefficient whatever the resolution: the same weights run on
    any grid. A smooth function sampled at two resolutions gives outputs that agree at the
    common points up to the aliasing of the harmonics that the nonlinearities create, provided
    the kept frequencies lie below both Nyquist limits (at least ``2 * modes`` points per axis).
    For smooth inputs that aliasing falls off exponentially with the grid size: for inputs made
    of the frequencies 0 to 2 and a freshly initialised model, the gap is about ``2e-4`` of the
    output's variation with 16 points and ``1e-8`` with 32. With ``"linear"`` coordinates the
    jump where the grid wraps around aliases too, and the gap falls off only like ``1 / n``.
    Smaller grids are accepted: the spectral convolutions then use the frequencies the grid has
    (the weights of the others are ignored), and outputs agree with those of finer grids as far
    as the dropped frequencies carry little energy. Functions that are not periodic are fine too
    (the pointwise path and the coordinates carry the boundary), as in the original FNO; no
    domain padding is applied. To pair the model with
    :func:`~manifoldfm.functional.grid_points`, whose grids include both ends, sample the
    periodic grid ``grid_points(n, 0.0, (n - 1) / n)``.

    Speed. On 1-D grids whose size has a prime factor above 7 (365 days, 73 points), the
    kept frequencies are computed by products with ``(n, modes)`` cosine and sine tables
    instead of FFTs (the same layer to rounding; 3.3x faster per forward and backward pass at
    ``n = 365``, width 32, 16 modes, batch 256 on a 2-core CPU).
"""


class FNO1d(_FNO):
    __doc__ = (
        """Fourier neural operator velocity field ``v(x, t)`` for functions on a 1-D grid.

    Input and output have shape ``(B, channels, n)`` (``(B, out_channels, n)`` for the output),
    for any grid size ``n >= 1``.
"""
        + _FNO_ARGS
        + """
    Args:
        channels: number of function channels ``C``.
        width: number of hidden channels.
        modes: number of kept Fourier frequencies ``0 .. modes - 1``.
        depth: number of Fourier layers.
        time_dim: size of the sinusoidal time features (even).
        out_channels: number of output channels (defaults to ``channels``).
        projection: hidden channels of the output MLP.
        coordinates: coordinate channels appended to the input: ``"periodic"``,
            ``"linear"`` or ``"none"`` (see above).

    Example:
        >>> import torch
        >>> from manifoldfm.functional.models import FNO1d
        >>> _ = torch.manual_seed(0)
        >>> model = FNO1d(channels=2, width=16, modes=8, depth=2)
        >>> model(torch.randn(3, 2, 64), torch.rand(3)).shape
        torch.Size([3, 2, 64])
        >>> model(torch.randn(3, 2, 200), 0.5).shape  # same weights, another resolution
        torch.Size([3, 2, 200])

    References:
        Li et al. Fourier Neural Operator for Parametric Partial Differential Equations.
        ICLR 2021.
        Kerrigan, Migliorini, Smyth. Functional Flow Matching. AISTATS 2024.
    """
    )

    def __init__(
        self,
        channels: int = 1,
        width: int = 64,
        modes: int = 16,
        depth: int = 4,
        *,
        time_dim: int = 64,
        out_channels: int | None = None,
        projection: int = 128,
        coordinates: str = "periodic",
    ) -> None:
        super().__init__(
            1, channels, width, modes, depth, time_dim, out_channels, projection, coordinates
        )

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Velocity at ``(x, t)``.

        Args:
            x: function values of shape ``(B, channels, n)``.
            t: times of shape ``(B,)`` in ``[0, 1]`` (a float or 0-dim tensor is broadcast).

        Returns:
            Velocities of shape ``(B, out_channels, n)`` in ``x``'s dtype and device.

        Raises:
            ValueError: if ``x`` does not have shape ``(B, channels, n)`` or ``t`` does not
                match its batch.
        """
        return super().forward(x, t)


class FNO2d(_FNO):
    __doc__ = (
        """Fourier neural operator velocity field ``v(x, t)`` for functions on a 2-D grid.

    Input and output have shape ``(B, channels, h, w)`` (``(B, out_channels, h, w)`` for the
    output), for any grid size. Along the first grid axis the kept frequencies are
    ``-modes1 < k < modes1``, along the second ``0 <= k < modes2`` (real FFT).
"""
        + _FNO_ARGS
        + """
    Args:
        channels: number of function channels ``C``.
        width: number of hidden channels.
        modes: kept frequencies per axis, an int or a pair ``(modes1, modes2)``.
        depth: number of Fourier layers.
        time_dim: size of the sinusoidal time features (even).
        out_channels: number of output channels (defaults to ``channels``).
        projection: hidden channels of the output MLP.
        coordinates: coordinate channels appended to the input: ``"periodic"``,
            ``"linear"`` or ``"none"`` (see above).

    Example:
        >>> import torch
        >>> from manifoldfm.functional.models import FNO2d
        >>> _ = torch.manual_seed(0)
        >>> model = FNO2d(channels=1, width=8, modes=(6, 4), depth=2)
        >>> model(torch.randn(2, 1, 16, 12), torch.rand(2)).shape
        torch.Size([2, 1, 16, 12])

    References:
        Li et al. Fourier Neural Operator for Parametric Partial Differential Equations.
        ICLR 2021.
        Kerrigan, Migliorini, Smyth. Functional Flow Matching. AISTATS 2024.
    """
    )

    def __init__(
        self,
        channels: int = 1,
        width: int = 32,
        modes: int | tuple[int, int] = 12,
        depth: int = 4,
        *,
        time_dim: int = 64,
        out_channels: int | None = None,
        projection: int = 128,
        coordinates: str = "periodic",
    ) -> None:
        super().__init__(
            2, channels, width, modes, depth, time_dim, out_channels, projection, coordinates
        )

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Velocity at ``(x, t)``.

        Args:
            x: function values of shape ``(B, channels, h, w)``.
            t: times of shape ``(B,)`` in ``[0, 1]`` (a float or 0-dim tensor is broadcast).

        Returns:
            Velocities of shape ``(B, out_channels, h, w)`` in ``x``'s dtype and device.

        Raises:
            ValueError: if ``x`` does not have shape ``(B, channels, h, w)`` or ``t`` does not
                match its batch.
        """
        return super().forward(x, t)


# ---------------------------------------------------------------------------------------------
# point sets
# ---------------------------------------------------------------------------------------------


class _FourierFeatures(nn.Module):
    """``p -> [p, cos(pi 2^j p), sin(pi 2^j p)]_{j < F}`` per coordinate: ``d (2 F + 1)`` features."""

    def __init__(self, d: int, num_frequencies: int) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.out_features = d * (2 * num_frequencies + 1)

    def forward(self, p: Tensor) -> Tensor:
        j = torch.arange(self.num_frequencies, dtype=p.dtype, device=p.device)
        args = (p[..., :, None] * (math.pi * 2.0**j)).flatten(-2)
        return torch.cat([p, torch.cos(args), torch.sin(args)], dim=-1)


class _CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention of queries on a memory, then a feed-forward block."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_m = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_f = nn.LayerNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def forward(self, q: Tensor, memory: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        m = self.norm_m(memory)
        a, _ = self.attn(
            self.norm_q(q), m, m, key_padding_mask=key_padding_mask, need_weights=False
        )
        q = q + a
        return q + self.ff(self.norm_f(q))


class PointSetOperator(nn.Module):
    """Transformer velocity field over functions sampled at scattered points.

    ``v(x, t, *, points, mask=None, query_points=None)`` with values ``x`` of shape
    ``(B, n_points, channels)`` at locations ``points`` of shape ``(n_points, d)`` (one point set
    for the batch) or ``(B, n_points, d)`` (one per function).

    Each point becomes a token ``MLP([fourier(p), x(p)])`` where ``fourier(p)`` holds the
    coordinates and ``cos, sin(pi 2^j p)`` for ``j < num_frequencies`` (coordinates of order 1,
    e.g. in ``[0, 1]^d``, suit the default; rescale others). The time enters through a
    sinusoidal embedding and an MLP, added to the tokens before every encoder layer. ``depth``
    pre-norm transformer encoder layers (self-attention over the points, GELU feed-forward) and
    a per-token linear head give the velocity at each point, of shape
    ``(B, n_points, out_channels)``. No positional index is used, so the model is equivariant to
    permutations of the points: permuting ``x`` and ``points`` together permutes the output.

    Padding (``mask``): functions with different numbers of points can share a batch by padding
    to a common ``n_points`` and passing ``mask`` of shape ``(B, n_points)``, ``True`` at real
    points. Padded points are ignored as keys and get velocity 0 (mask the loss targets too);
    a row with no real point gives zeros everywhere (query readouts included).

    Query points (``query_points``, needs ``decoder_depth >= 1``): the velocity is read at
    locations ``query_points`` of shape ``(m, d)`` or ``(B, m, d)`` instead of at ``points``,
    by ``decoder_depth`` cross-attention blocks whose queries are the Fourier features of the
    query locations plus the time feature and whose keys and values are the encoded point
    tokens. Each query is decoded independently of the other queries, so the result at a
    location does not depend on which other locations are asked. The output has shape
    ``(B, m, out_channels)``. This readout must be trained with queries (e.g. the velocity
    target at held-out points of each function); it suits smooth functions (with GP noise as the
    source) whose values between points are determined by their neighbours, and serves to
    evaluate a field at a finer resolution than it was given. Sampling at a new resolution does
    not need it: the encoder runs on any point set, so integrate the ODE on the new points.

    Args:
        d: dimension of the domain (coordinates per point).
        channels: number of function channels ``C``.
        width: token size.
        heads: number of attention heads (must divide ``width``).
        depth: number of encoder layers.
        time_dim: size of the sinusoidal time features (even).
        num_frequencies: number of Fourier frequencies per coordinate.
        mlp_ratio: feed-forward hidden size as a multiple of ``width``.
        dropout: dropout probability in the attention and feed-forward blocks.
        decoder_depth: number of cross-attention blocks for ``query_points`` (0: none).
        out_channels: number of output channels (defaults to ``channels``).

    Example:
        >>> import torch
        >>> from manifoldfm.functional.models import PointSetOperator
        >>> _ = torch.manual_seed(0)
        >>> model = PointSetOperator(d=2, channels=1, width=32, heads=4, depth=2).eval()
        >>> points = torch.rand(50, 2)
        >>> x, t = torch.randn(3, 50, 1), torch.rand(3)
        >>> v = model(x, t, points=points)
        >>> v.shape
        torch.Size([3, 50, 1])
        >>> perm = torch.randperm(50)  # permuting the points permutes the velocities
        >>> torch.allclose(model(x[:, perm], t, points=points[perm]), v[:, perm], atol=1e-5)
        True

    References:
        Vaswani et al. Attention Is All You Need. NeurIPS 2017.
        Tancik et al. Fourier Features Let Networks Learn High Frequency Functions in Low
        Dimensional Domains. NeurIPS 2020.
        Kerrigan, Migliorini, Smyth. Functional Flow Matching. AISTATS 2024.
    """

    def __init__(
        self,
        d: int = 1,
        channels: int = 1,
        width: int = 128,
        heads: int = 4,
        depth: int = 3,
        *,
        time_dim: int = 64,
        num_frequencies: int = 8,
        mlp_ratio: int = 2,
        dropout: float = 0.0,
        decoder_depth: int = 0,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.d = _int(d, "d", minimum=1)
        self.channels = _int(channels, "channels", minimum=1)
        self.out_channels = (
            channels if out_channels is None else _int(out_channels, "out_channels", minimum=1)
        )
        self.width = _int(width, "width", minimum=1)
        self.heads = _int(heads, "heads", minimum=1)
        if width % heads:
            raise ValueError(f"heads must divide width, got width={width}, heads={heads}")
        self.depth = _int(depth, "depth", minimum=1)
        self.decoder_depth = _int(decoder_depth, "decoder_depth", minimum=0)
        _int(num_frequencies, "num_frequencies", minimum=0)
        _int(mlp_ratio, "mlp_ratio", minimum=1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        hidden = mlp_ratio * width
        self.features = _FourierFeatures(d, num_frequencies)
        self.embed = nn.Sequential(
            nn.Linear(self.features.out_features + channels, width),
            nn.GELU(),
            nn.Linear(width, width),
        )
        self.time = _TimeMLP(time_dim, width)
        self.time_bias = nn.Linear(width, width * depth)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=hidden,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.out_channels)
        self.query_embed: nn.Module | None = None
        self.decoder = nn.ModuleList(
            _CrossAttentionBlock(width, heads, hidden, dropout) for _ in range(decoder_depth)
        )
        if decoder_depth > 0:
            self.query_embed = nn.Sequential(
                nn.Linear(self.features.out_features, width), nn.GELU(), nn.Linear(width, width)
            )

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, channels={self.channels}, out_channels={self.out_channels}, "
            f"width={self.width}, heads={self.heads}, depth={self.depth}, "
            f"decoder_depth={self.decoder_depth}"
        )

    def _points(self, points: object, x: Tensor, name: str, n: int | None) -> Tensor:
        if not isinstance(points, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
        batch = x.shape[0]
        count = "m" if n is None else str(n)
        ok = points.ndim in (2, 3) and points.shape[-1] == self.d
        ok = ok and (n is None or points.shape[-2] == n)
        ok = ok and (points.ndim == 2 or points.shape[0] == batch)
        if not ok:
            raise ValueError(
                f"{name} must have shape ({count}, {self.d}) or ({batch}, {count}, {self.d}) "
                f"for x of shape {tuple(x.shape)}, got {tuple(points.shape)}"
            )
        if not (points.is_floating_point() or points.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must hold real coordinates, got dtype {points.dtype}")
        points = points.to(dtype=x.dtype, device=x.device)
        return points.expand(batch, *points.shape[-2:])

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        *,
        points: Tensor,
        mask: Tensor | None = None,
        query_points: Tensor | None = None,
    ) -> Tensor:
        """Velocity at ``(x, t)`` for values at ``points``.

        Args:
            x: function values of shape ``(B, n_points, channels)``.
            t: times of shape ``(B,)`` in ``[0, 1]`` (a float or 0-dim tensor is broadcast).
            points: locations of shape ``(n_points, d)`` or ``(B, n_points, d)``.
            mask: optional boolean ``(B, n_points)``, ``True`` at real (non-padded) points.
            query_points: optional locations ``(m, d)`` or ``(B, m, d)`` at which to read the
                velocity (needs ``decoder_depth >= 1``).

        Returns:
            Velocities of shape ``(B, n_points, out_channels)``, or ``(B, m, out_channels)``
            with ``query_points``, in ``x``'s dtype and device.

        Raises:
            ValueError: on shapes that do not match (the message names them).
        """
        x = _tensor(x, "x")
        if x.ndim != 3 or x.shape[2] != self.channels:
            raise ValueError(
                f"x must have shape (B, n_points, {self.channels}) (channels last), "
                f"got {tuple(x.shape)}"
            )
        batch, n = x.shape[:2]
        t = as_time(t, x)
        p = self._points(points, x, "points", n)
        key_padding: Tensor | None = None
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (batch, n):
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                dtype = f" {mask.dtype}" if isinstance(mask, Tensor) else ""
                raise ValueError(
                    f"mask must be a boolean tensor of shape ({batch}, {n}), got {shape}{dtype}"
                )
            mask = mask.to(x.device)
            # A row without real points would attend to nothing (NaN): let it attend to all;
            # its output is zeroed below.
            key_padding = ~mask & mask.any(dim=1, keepdim=True)
            # padded points may hold anything (NaN too): a zero attention weight times NaN is
            # NaN, so their values are replaced before they reach the layers
            x = torch.where(mask[..., None], x, 0.0)
            p = torch.where(mask[..., None], p, 0.0)
        time = self.time(t)
        biases = self.time_bias(time).reshape(batch, self.depth, 1, self.width)
        h = self.embed(torch.cat([self.features(p), x], dim=-1))
        for i, layer in enumerate(self.layers):
            h = layer(h + biases[:, i], src_key_padding_mask=key_padding)
        if query_points is None:
            out = self.head(self.norm(h))
            return out if mask is None else torch.where(mask[..., None], out, 0.0)
        if self.query_embed is None:
            raise ValueError("query_points need a decoder: build the model with decoder_depth >= 1")
        q_points = self._points(query_points, x, "query_points", None)
        q = self.query_embed(self.features(q_points)) + time[:, None]
        for block in self.decoder:
            q = block(q, h, key_padding)
        out = self.head(self.norm(q))
        return out if mask is None else torch.where(mask.any(dim=1)[:, None, None], out, 0.0)
