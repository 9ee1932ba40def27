"""Functional flow matching of 2-D fields: Gaussian-process noise -> random smooth fields.

The data are random fields on the unit square. By default (``--fields gp``) they are draws of
a Gaussian process with a Matern-5/2 kernel of length scale ``--data-length-scale`` (0.2) on the
grid (``GPSource``, sampled exactly by FFT circulant embedding): their power spectrum decays
like a power law, so every wavenumber of the grid carries power. ``--fields fourier`` uses
``manifoldfm.data.random_fourier_fields`` instead (a few random Fourier modes): band-limited
fields whose power beyond the wavenumber radius ``modes * sqrt(2)`` is zero, where the log
spectrum comparison is dominated by the empty annuli.
A Fourier neural operator (``manifoldfm.functional.FNO2d``) is trained on a ``--size`` grid
(32 x 32 by default) along the FFM-OT path ``AffinePath(CondOT(sigma_min))`` from GP noise
(Matern-5/2 kernel, ``GPSource`` on the same grid; ``--noise white`` for ``WhiteNoise``).

Generated fields are compared with fresh held-out fields by
``manifoldfm.metrics.functional_statistics``: MSE of the pointwise mean and variance, of the
value histogram and of the log10 radially averaged power spectrum
(``manifoldfm.metrics.radial_power_spectrum``). Resolution freedom: the same model integrates GP
noise drawn on a grid twice as fine (64 x 64); those samples are compared with held-out fields
drawn at 64 x 64 (both data families are defined at every point of the torus) and, subsampled
to the training grid, with the 32 x 32 held-out fields. Each comparison comes with the same
statistics for a second independent set of true fields (the sampling noise floor). Writes
``functional_2d.png`` (real and generated fields at both resolutions, radial spectra) and
``metrics.json`` into ``--out``.

    python examples/functional_2d.py
    python examples/functional_2d.py --fields fourier --noise white --out outputs/functional_2d_f
    python examples/functional_2d.py --smoke --out /tmp/functional_2d
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gpytorch
import torch
from torch import Tensor

import manifoldfm as mfm
from manifoldfm.data import random_fourier_fields
from manifoldfm.functional import FNO2d, GPSource, WhiteNoise, grid_points
from manifoldfm.metrics import functional_statistics, radial_power_spectrum


def periodic_grid(size: int) -> Tensor:
    """The points ``(i / size, j / size)`` of a periodic ``size x size`` grid, ``(size^2, 2)``."""
    return grid_points((size, size), 0.0, (size - 1) / size, dtype=torch.float64)


def make_source(kind: str, size: int, length_scale: float, std: float) -> GPSource | WhiteNoise:
    if kind == "white":
        return WhiteNoise(periodic_grid(size), std=std)
    base = gpytorch.kernels.MaternKernel(nu=2.5)
    base.lengthscale = length_scale
    kernel = gpytorch.kernels.ScaleKernel(base)
    kernel.outputscale = std**2
    return GPSource(kernel, periodic_grid(size))


class FieldSampler:
    """Draws the data fields ``(n, 1, size, size)`` at any grid size."""

    def __init__(self, kind: str, modes: int, decay: float, length_scale: float) -> None:
        self.kind, self.modes, self.decay, self.length_scale = kind, modes, decay, length_scale
        self._gp: dict[int, GPSource] = {}

    def __call__(self, n: int, size: int, g: torch.Generator) -> Tensor:
        if self.kind == "fourier":
            return random_fourier_fields(n, size, modes=self.modes, decay=self.decay, generator=g)
        if size not in self._gp:
            kernel = gpytorch.kernels.MaternKernel(nu=2.5)
            kernel.lengthscale = self.length_scale
            self._gp[size] = GPSource(kernel, periodic_grid(size))
        src = self._gp[size]
        return src.to_grid(src.sample(n, generator=g, dtype=torch.float32))[:, None]


def stats(generated: Tensor, reference: Tensor) -> dict[str, float | None]:
    out = functional_statistics(generated.double(), reference.double()).as_dict()
    return {k: v for k, v in out.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fields", choices=("gp", "fourier"), default="gp")
    p.add_argument("--size", type=int, default=32, help="training grid size per axis")
    p.add_argument("--field-modes", type=int, default=4, help="Fourier modes of the data")
    p.add_argument("--decay", type=float, default=2.0, help="spectral decay of the data")
    p.add_argument("--data-length-scale", type=float, default=0.2, help="of --fields gp")
    p.add_argument("--train-fields", type=int, default=2000)
    p.add_argument("--noise", choices=("gp", "white"), default="gp")
    p.add_argument("--length-scale", type=float, default=0.1, help="of the GP noise")
    p.add_argument("--noise-std", type=float, default=1.0)
    p.add_argument("--sigma-min", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=1000, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--ode-steps", type=int, default=10, help="midpoint steps")
    p.add_argument("--n-gen", type=int, default=64, help="generated fields per resolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/functional_2d"))
    p.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.ode_steps, args.n_gen, args.train_fields = 10, 3, 16, 64
        args.size, args.width, args.modes, args.depth = 16, 8, 4, 2

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    size, fine_size = args.size, 2 * args.size
    draw = FieldSampler(args.fields, args.field_modes, args.decay, args.data_length_scale)
    train = draw(args.train_fields, size, g)
    mean, std = float(train.mean()), float(train.std())
    test = draw(args.n_gen, size, g)
    test2 = draw(args.n_gen, size, g)  # a second true set: the noise floor of the statistics
    test_fine = draw(args.n_gen, fine_size, g)
    test_fine2 = draw(args.n_gen, fine_size, g)

    source = make_source(args.noise, size, args.length_scale, args.noise_std)
    fine_source = make_source(args.noise, fine_size, args.length_scale, args.noise_std)
    model = FNO2d(1, width=args.width, modes=args.modes, depth=args.depth)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    path = mfm.AffinePath(mfm.CondOT(args.sigma_min))
    weights = torch.full((size, size), 1.0 / size**2)  # mean square over the grid
    start = time.perf_counter()
    losses = []
    for _ in range(args.steps):
        idx = torch.randint(train.shape[0], (args.batch_size,), generator=g)
        x1 = (train[idx] - mean) / std
        x0 = source.to_grid(source.sample(args.batch_size, generator=g))[:, None]
        s = path.sample(x0, x1, torch.rand(args.batch_size, generator=g))
        loss = mfm.cfm_loss(model(s.xt, s.t), s, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    train_seconds = time.perf_counter() - start
    model.eval()

    with torch.no_grad():
        x0 = source.to_grid(source.sample(args.n_gen, generator=g))[:, None]
        gen = mfm.solve_ode(model, x0, steps=args.ode_steps, method="midpoint").x * std + mean
        x0f = fine_source.to_grid(fine_source.sample(args.n_gen, generator=g))[:, None]
        fine = mfm.solve_ode(model, x0f, steps=args.ode_steps, method="midpoint").x * std + mean
    sample_seconds = time.perf_counter() - start - train_seconds

    results = {
        "data": f"{args.fields} fields",
        "grid": [size, size],
        "fine_grid": [fine_size, fine_size],
        "standardisation": {"mean": mean, "std": std, "note": "z = (x - mean) / std, scalars"},
        "noise": args.noise
        if args.noise == "white"
        else f"gp matern-5/2 length scale {args.length_scale}",
        "sigma_min": args.sigma_min,
        "model": f"FNO2d width {args.width} modes {args.modes} depth {args.depth}",
        "steps": args.steps,
        "final_loss_mean_last_100": sum(losses[-100:]) / len(losses[-100:]),
        "train_seconds": train_seconds,
        "sample_seconds": sample_seconds,
        "ode": f"midpoint, {args.ode_steps} steps ({2 * args.ode_steps} evaluations)",
        "metrics_scale": "raw (the standardisation is undone)",
        "generated_vs_test": stats(gen, test),
        "fine_vs_fine_test": stats(fine, test_fine),
        "fine_subsampled_vs_test": stats(fine[..., ::2, ::2], test),
        "floor_test2_vs_test": stats(test2, test),
        "floor_fine_test2_vs_fine_test": stats(test_fine2, test_fine),
        "source_vs_test": stats(x0 * std + mean, test),
    }
    print(json.dumps(results, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 4, figsize=(14, 10))
    rows = (
        (test, f"held-out {size}x{size}"),
        (gen, f"generated {size}x{size}"),
        (fine, f"generated {fine_size}x{fine_size}"),
    )
    lim = float(test.abs().max())
    for r, (fields, name) in enumerate(rows):
        for c in range(3):
            ax = axes[r, c]
            ax.imshow(fields[c, 0].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
            ax.set_title(name)
            ax.set_xticks([])
            ax.set_yticks([])
    spectra = (
        (test, f"held-out {size}", "C0", "-"),
        (gen, f"generated {size}", "C1", "-"),
        (test_fine, f"held-out {fine_size}", "C0", ":"),
        (fine, f"generated {fine_size}", "C1", ":"),
    )
    for r, (selection, title) in enumerate(
        ((spectra[:2], "radial power spectrum"), (spectra[2:], "fine grid"), (spectra, "both"))
    ):
        ax = axes[r, 3]
        for fields, name, color, ls in selection:
            ax.semilogy(radial_power_spectrum(fields)[0].numpy(), color=color, ls=ls, label=name)
        ax.set_xlabel("wavenumber")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "functional_2d.png", dpi=100)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
