"""Flow matching on SE(3)^N: short protein backbone fragments as chains of residue frames.

Each training example is a crop of ``--length`` consecutive residues (16 by default) of a
protein chain, represented as ``N`` residue frames (``manifoldfm.frames.from_backbone``: origin
at CA, axes from N, CA and C), a point of ``SE(3)^N`` of shape ``(N, 4, 4)``. With ``--data`` the
crops come from a backbone archive (``.npz`` with ``coords`` ``(R, 3, 3)``: N, CA, C in Angstrom,
``chain_index``, ``entry_index``, ``chain_break_before``), e.g. the PDB structures of the
project's data folder; crops never cross a chain boundary or a chain break. Without ``--data``
(and always with ``--smoke``) synthetic chains are built in the script: ideal-geometry backbones
with helical and extended stretches and noisy dihedral angles.

**Preprocessing.** Every crop is put in a canonical pose: centred on the mean of its CA atoms
(``frames.centre``) and rotated so that the principal axes of its CA atoms are the x, y and z
axes (signs fixed by the direction from the first to the last residue and by the third moment
along the second axis). The velocity network below is not equivariant to rotations, and every
metric reported is invariant to rigid motions, so this loses nothing that is measured.
Translations are then converted to nanometres (``frames.scale_translations``). Train and
held-out crops come from different PDB entries: entries are drawn at random into the held-out
set until it holds about ``--test-frac`` of all crops (entries that would overshoot are
skipped), so no held-out crop overlaps a training crop.

**Model.** Source: independent Haar-uniform rotations and centred Gaussian translations
(``sources.CentredGaussian``, std 1 nm). Path: ``ProductPath`` on ``SE3()`` with a geodesic
rotation path (``--rotation-schedule linear`` or ``exp``, FrameFlow's exponential rate) and the
straight path for the translations, on ``(B, N, 4, 4)`` points; with ``--coupling ot``,
minibatch optimal transport with ``ExactOT(cost=FrameCost())``. Velocity field: an MLP on the
flattened crop (rotations, translations, time embedding) returning, for every residue, a body
angular velocity ``w`` and a translation velocity ``v``, i.e. the tangent vector
``[[R hat(w), v], [0, 0]]``; besides the frames themselves the network sees, for every
residue, the pose of the next residue relative to it, and it predicts the remaining
displacement ``(1 - t) u``, divided by ``max(1 - t, 0.05)`` to give the velocity. Sampling: ``solve_ode(...,
manifold=SE3())``; with the linear rotation schedule the model is also sampled with
FrameFlow's exponential rotation rate (``--sample-rotation-rate``, 10 by default: the rotation
velocity scaled by ``ExponentialRate(rate).velocity_scale(t) * (1 - t)``), reported as
``generated_exp_rotation_sampling``.

**Evaluation.** Generated frames are turned into atoms with ideal geometry
(``frames.to_backbone``: N-CA, CA-C and the angle N-CA-C are ideal by construction), so the
quantities that measure whether the frames form a chain are inter-residue ones: consecutive
CA-CA distances (3.80 Angstrom in trans peptides), the peptide bond C(i)-N(i+1) (1.33
Angstrom), the radius of gyration of the CA atoms, the clash rate (pairs of CA atoms at least two
residues apart closer than 3 Angstrom) and the Ramachandran distribution of (phi, psi) of the
interior residues, computed from the atoms with ``atan2`` dihedrals (total variation distance
between 10-degree histograms, fractions in the helical and extended regions). Crop-level
similarity: squared MMD between the flattened matrices of CA-CA distances. Each is reported for
the held-out crops (their real atoms), the held-out crops rebuilt from their frames with ideal
geometry (what the frame representation keeps), the generated crops, the training crops (the
MMD floor) and the source distribution (noise). Writes ``backbones.png``, ``metrics.json`` and a
few generated backbones as PDB files (``generated_*.pdb``, N, CA, C, O; poly-glycine).

    python examples/protein_backbones.py --data ../shared/data/se3/pdb_structures_backbone.npz
    python examples/protein_backbones.py --data ../shared/data/se3/pdb_structures_backbone.npz --coupling ot
    python examples/protein_backbones.py --smoke --out /tmp/backbones
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import manifoldfm as mfm
from manifoldfm import frames as F
from manifoldfm.nn import MLPVelocity
from manifoldfm.paths import ExponentialRate
from manifoldfm.rotations import hat
from manifoldfm.sources import CentredGaussian

#: Ideal backbone bond lengths (Angstrom) and angles (degrees) of the synthetic chains.
_BONDS = {"N-CA": F.BOND_N_CA, "CA-C": F.BOND_CA_C, "C-N": F.BOND_C_N}
_ANGLE_C_N_CA = 121.7
CLASH_DISTANCE = 3.0  # Angstrom, CA-CA, residues at least two apart


# ----------------------------------------------------------------------------- data


def _place(a: Tensor, b: Tensor, c: Tensor, bond: float, angle: float, torsion: Tensor) -> Tensor:
    """Atom ``d`` with ``|cd| = bond``, angle ``bcd = angle`` (deg), dihedral ``abcd = torsion``."""
    bc = c - b
    bc = bc / bc.norm(dim=-1, keepdim=True)
    n = torch.linalg.cross(b - a, bc)
    n = n / n.norm(dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc)
    th, tor = math.radians(angle), torch.deg2rad(torsion)
    along = -bond * math.cos(th)
    across = bond * math.sin(th)
    return (
        c
        + along * bc
        + (across * torch.cos(tor))[..., None] * m
        + (across * torch.sin(tor))[..., None] * n
    )


def build_chain(phi: Tensor, psi: Tensor) -> Tensor:
    """Ideal backbones ``(B, L, 3, 3)`` (N, CA, C) from dihedrals ``(B, L)`` in degrees (omega 180)."""
    b, length = phi.shape
    dt = phi.dtype
    n = torch.zeros(b, 3, dtype=dt)
    ca = torch.tensor([F.BOND_N_CA, 0.0, 0.0], dtype=dt).expand(b, 3)
    th = math.radians(F.ANGLE_N_CA_C)
    c = ca + F.BOND_CA_C * torch.tensor([-math.cos(th), math.sin(th), 0.0], dtype=dt)
    atoms = [torch.stack([n, ca, c], dim=1)]
    omega = torch.full((b,), 180.0, dtype=dt)
    for i in range(1, length):
        n = _place(atoms[-1][:, 0], ca, c, _BONDS["C-N"], F.ANGLE_CA_C_N, psi[:, i - 1])
        ca_new = _place(ca, c, n, _BONDS["N-CA"], _ANGLE_C_N_CA, omega)
        c = _place(c, n, ca_new, _BONDS["CA-C"], F.ANGLE_N_CA_C, phi[:, i])
        ca = ca_new
        atoms.append(torch.stack([n, ca, c], dim=1))
    return torch.stack(atoms, dim=1)


def synthetic_chains(
    n_chains: int, length: int, generator: torch.Generator
) -> dict[str, np.ndarray]:
    """A backbone archive of ideal chains with helical and extended stretches.

    Every chain alternates stretches of 6-14 residues that are alpha-helical
    (phi, psi = -63, -42) or extended (-120, 130), with 8-degree Gaussian noise on each angle.
    """
    phi = torch.empty(n_chains, length, dtype=torch.float64)
    psi = torch.empty_like(phi)
    pos = torch.zeros(n_chains, dtype=torch.long)
    helix = torch.rand(n_chains, generator=generator) < 0.5
    while int(pos.min()) < length:
        run = torch.randint(6, 15, (n_chains,), generator=generator)
        idx = torch.arange(length)
        inside = (idx >= pos[:, None]) & (idx < (pos + run)[:, None])
        phi = torch.where(inside, torch.where(helix, -63.0, -120.0)[:, None], phi)
        psi = torch.where(inside, torch.where(helix, -42.0, 130.0)[:, None], psi)
        pos, helix = pos + run, ~helix
    phi = phi + 8.0 * torch.randn(phi.shape, generator=generator, dtype=torch.float64)
    psi = psi + 8.0 * torch.randn(psi.shape, generator=generator, dtype=torch.float64)
    coords = build_chain(phi, psi).reshape(-1, 3, 3)
    chain = torch.arange(n_chains).repeat_interleave(length)
    start = torch.zeros(n_chains, length, dtype=torch.bool)
    start[:, 0] = True
    return {
        "coords": coords.float().numpy(),
        "chain_index": chain.numpy(),
        "entry_index": chain.numpy(),
        "chain_break_before": start.reshape(-1).numpy(),
    }


def crop_starts(archive: dict[str, np.ndarray], length: int) -> np.ndarray:
    """Start indices of all crops of ``length`` residues inside one unbroken chain segment."""
    chain = archive["chain_index"]
    brk = archive["chain_break_before"].astype(bool).copy()
    brk[0] = True
    brk[1:] |= chain[1:] != chain[:-1]
    segment = np.cumsum(brk)
    n = segment.shape[0] - length + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    ok = segment[:n] == segment[length - 1 :]
    return np.nonzero(ok)[0]


def split_by_entry(
    entries: np.ndarray, test_frac: float, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over crops: whole entries go to the held-out set."""
    ids, counts = np.unique(entries, return_counts=True)
    target = test_frac * entries.shape[0]
    held: list[int] = []
    total = 0
    for k in torch.randperm(ids.shape[0], generator=generator).tolist():
        if total + counts[k] <= target:
            held.append(int(ids[k]))
            total += int(counts[k])
    test = np.isin(entries, np.asarray(held, dtype=entries.dtype))
    if not test.any() and ids.shape[0] > 1:  # every entry overshoots: take the smallest
        test = entries == ids[np.argmin(counts)]
    return ~test, test


def canonical_pose(frames: Tensor) -> Tensor:
    """Crops ``(B, N, 4, 4)`` centred on their CA mean and rotated to their principal axes."""
    centred, _ = F.centre(frames)
    ca = centred[..., :3, 3]
    _, vecs = torch.linalg.eigh(ca.mT @ ca)  # ascending eigenvalues
    e1, e2 = vecs[..., 2], vecs[..., 1]
    s1 = torch.where(((ca[:, -1] - ca[:, 0]) * e1).sum(-1) < 0, -1.0, 1.0).to(ca.dtype)
    e1 = e1 * s1[:, None]
    s2 = torch.where(((ca @ e2[..., None]) ** 3).sum((-2, -1)) < 0, -1.0, 1.0).to(ca.dtype)
    e2 = e2 * s2[:, None]
    q = torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=-1)  # proper rotation
    rot = q.mT[:, None] @ centred[..., :3, :3]
    trans = ca @ q
    return mfm.SE3().join(rot, trans)


# ----------------------------------------------------------------------------- model


class FrameChainVelocity(nn.Module):
    """Velocity field on ``SE(3)^N``: an MLP over the whole crop with per-frame tangent outputs.

    Input, per residue ``i``: its rotation ``R_i`` (flattened) and translation ``t_i``, and the
    pose of the next residue seen from residue ``i``, ``R_i^T R_{i+1}`` and
    ``R_i^T (t_{i+1} - t_i)`` (zeros for the last residue): the quantities that decide
    whether consecutive frames form a chain, given to the network directly. With a time
    embedding. Output: for each frame a body angular velocity ``w`` and a translation velocity
    ``v``, returned as ``[[R hat(w), v], [0, 0]]`` (tangent by construction), shape
    ``(B, N, 4, 4)``. The MLP predicts the remaining displacement ``(1 - t) (w, v)`` (what the
    linear schedule's target ``log_{x_t}(x_1) / (1 - t)`` is made of), divided by
    ``max(1 - t, 0.05)``: the network's output stays of order one up to ``t = 1``.
    """

    min_remaining = 0.05

    def __init__(self, n: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.n = n
        self.mlp = MLPVelocity(24 * n, hidden, depth, out_dim=6 * n)
        self.se3 = mfm.SE3()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        rot, trans = x[..., :3, :3], x[..., :3, 3]
        rel_rot = rot[:, :-1].mT @ rot[:, 1:]
        rel_trans = (rot[:, :-1].mT @ (trans[:, 1:] - trans[:, :-1])[..., None])[..., 0]
        rel = torch.cat([rel_rot.reshape(b, self.n - 1, 9), rel_trans], dim=-1)
        rel = torch.cat([rel, rel.new_zeros(b, 1, 12)], dim=1)
        feats = torch.cat([rot.reshape(b, self.n, 9), trans, rel], dim=-1).reshape(b, -1)
        out = self.mlp(feats, t).reshape(b, self.n, 6)
        out = out / (1.0 - t).clamp_min(self.min_remaining)[:, None, None]
        return self.se3.join(rot @ hat(out[..., :3]), out[..., 3:], tangent=True)


class ExponentialRotationSampler(nn.Module):
    """Sampling-time rotation speed-up of a field trained with the linear rotation schedule.

    FrameFlow's inference schedule: the rotation part of the velocity is multiplied by
    ``ExponentialRate(rate).velocity_scale(t) * (1 - t) = c (1 - t) / (1 - exp(-c (1 - t)))``, so that the rotations follow the
    exponential-rate schedule towards the predicted data rotations; translations unchanged.
    """

    def __init__(self, model: nn.Module, rate: float) -> None:
        super().__init__()
        self.model = model
        self.schedule = ExponentialRate(rate)
        self.se3 = mfm.SE3()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        v = self.model(x, t)
        d_rot, d_trans = v[..., :3, :3], v[..., :3, 3]
        # c (1 - t) / (1 - exp(-c (1 - t))), finite at t = 1 (where it tends to 1)
        s = self.schedule.rate * (1.0 - t)
        tiny = s < 1e-6
        safe = torch.where(tiny, torch.ones_like(s), s)
        factor = torch.where(tiny, torch.ones_like(s), safe / -torch.expm1(-safe))
        factor = factor[:, None, None, None]
        return self.se3.join(d_rot * factor, d_trans, tangent=True)


def sample_source(
    batch: int, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Haar rotations and centred Gaussian translations (nm), shape ``(batch, n, 4, 4)``."""
    rot = mfm.SO3().random_uniform(batch, n, generator=generator, dtype=dtype)
    trans = CentredGaussian(n).sample(batch, generator=generator, dtype=dtype)
    return mfm.SE3().join(rot, trans)


def train(
    model: nn.Module, data: Tensor, args: argparse.Namespace, generator: torch.Generator
) -> float:
    """Riemannian CFM on ``SE(3)^N``; returns the mean loss of the last 100 steps."""
    se3 = mfm.SE3()
    rot_schedule = mfm.CondOT() if args.rotation_schedule == "linear" else ExponentialRate(10.0)
    path = mfm.ProductPath(
        [mfm.GeodesicPath(mfm.SO3(), rot_schedule), mfm.AffinePath(mfm.CondOT())], manifold=se3
    )
    coupling = mfm.ExactOT(cost=mfm.FrameCost()) if args.coupling == "ot" else None
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    recent: list[float] = []
    n = data.shape[1]
    for _ in range(args.steps):
        x1 = data[torch.randint(data.shape[0], (args.batch_size,), generator=generator)]
        x0 = sample_source(args.batch_size, n, generator, data.dtype)
        if coupling is not None:
            pair = coupling(x0, x1, generator=generator)
            x0, x1 = pair.x0, pair.x1
        s = path.sample(x0, x1, torch.rand(args.batch_size, generator=generator))
        loss = mfm.cfm_loss(model(s.xt, s.t), s, manifold=se3) / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent = [*recent[-99:], float(loss.detach())]
    return sum(recent) / max(len(recent), 1)


# ----------------------------------------------------------------------------- evaluation


def dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> Tensor:
    """Dihedral angles (degrees, in (-180, 180]) of the atom quadruples, by ``atan2``."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b0, b1)
    n2 = torch.linalg.cross(b1, b2)
    m1 = torch.linalg.cross(b1 / b1.norm(dim=-1, keepdim=True), n1)
    return torch.rad2deg(torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1)))


def phi_psi(atoms: Tensor) -> tuple[Tensor, Tensor]:
    """(phi, psi) of the interior residues of backbones ``(B, N, >=3, 3)``, each ``(B, N - 2)``."""
    n, ca, c = atoms[:, :, 0], atoms[:, :, 1], atoms[:, :, 2]
    phi = dihedral(c[:, :-2], n[:, 1:-1], ca[:, 1:-1], c[:, 1:-1])
    psi = dihedral(n[:, 1:-1], ca[:, 1:-1], c[:, 1:-1], n[:, 2:])
    return phi, psi


def rama_hist(phi: Tensor, psi: Tensor, bins: int = 36) -> np.ndarray:
    """Normalised 2-D histogram of (phi, psi) on ``bins x bins`` cells of [-180, 180)^2."""
    h, _, _ = np.histogram2d(
        phi.reshape(-1).numpy(),
        psi.reshape(-1).numpy(),
        bins=bins,
        range=[[-180.0, 180.0], [-180.0, 180.0]],
    )
    return h / max(h.sum(), 1.0)


def structure_stats(atoms: Tensor) -> dict[str, Tensor]:
    """Per-crop and per-bond quantities of backbones ``(B, N, >=3, 3)`` in Angstrom."""
    n, ca, c = atoms[:, :, 0], atoms[:, :, 1], atoms[:, :, 2]
    ca_ca = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)
    c_n = (n[:, 1:] - c[:, :-1]).norm(dim=-1)
    rg = (ca - ca.mean(1, keepdim=True)).square().sum(-1).mean(-1).sqrt()
    d = torch.cdist(ca, ca)
    idx = torch.arange(ca.shape[1])
    far = (idx[:, None] - idx[None, :]).abs() >= 2
    iu = torch.triu_indices(ca.shape[1], ca.shape[1], offset=1)
    return {
        "ca_ca": ca_ca,
        "c_n": c_n,
        "rg": rg,
        "clash_pairs": (d < CLASH_DISTANCE) & far & (idx[:, None] < idx[None, :]),
        "n_far_pairs": far.triu().sum(),
        "dmat": d[:, iu[0], iu[1]],
    }


def summarise(atoms: Tensor, reference: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Scalar metrics of a set of backbones, with distances to ``reference`` if given."""
    s = structure_stats(atoms)
    phi, psi = phi_psi(atoms)
    helix = ((phi > -160) & (phi < -20) & (psi > -120) & (psi < 50)).double().mean()
    sheet = ((phi < -45) & ((psi > 90) | (psi < -150))).double().mean()
    clashes = s["clash_pairs"].sum((-2, -1))
    out = {
        "ca_ca_mean": float(s["ca_ca"].mean()),
        "ca_ca_std": float(s["ca_ca"].std()),
        "ca_ca_within_0.2A_of_3.8": float(((s["ca_ca"] - 3.8).abs() < 0.2).double().mean()),
        "c_n_next_mean": float(s["c_n"].mean()),
        "c_n_next_std": float(s["c_n"].std()),
        "c_n_next_within_0.1A_of_1.33": float(((s["c_n"] - 1.329).abs() < 0.1).double().mean()),
        "rg_mean": float(s["rg"].mean()),
        "rg_std": float(s["rg"].std()),
        "clash_pair_rate": float(clashes.sum() / (s["n_far_pairs"] * atoms.shape[0])),
        "crops_with_clash": float((clashes > 0).double().mean()),
        "rama_helical_frac": float(helix),
        "rama_extended_frac": float(sheet),
    }
    if reference is not None:
        out["rama_tv_distance"] = float(0.5 * np.abs(rama_hist(phi, psi) - reference["rama"]).sum())
        out["rg_w1"] = float(
            np.abs(np.sort(s["rg"].numpy()) - np.sort(reference["rg"].numpy())).mean()
        )
        out["dmat_mmd"] = float(mfm.metrics.mmd(s["dmat"], reference["dmat"]))
    return out


def write_backbones(out: Path, atoms: Tensor, count: int) -> list[str]:
    """Write ``count`` backbones ``(B, N, 4, 3)`` as PDB files; their file names."""
    names = []
    for k in range(min(count, atoms.shape[0])):
        name = f"generated_{k}.pdb"
        F.write_pdb(out / name, atoms[k])
        names.append(name)
    return names


def plot(
    path: Path, sets: dict[str, Tensor], rama: dict[str, tuple[Tensor, Tensor]], title: str
) -> None:
    """Histograms of CA-CA, C-N(next) and Rg, Ramachandran plots and a few CA traces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    colors = {
        "held-out": "k",
        "rebuilt": "tab:green",
        "generated": "tab:blue",
        "generated, exp. rotation rate": "tab:red",
        "source": "0.6",
    }
    stats = {k: structure_stats(v) for k, v in sets.items()}
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    panels = [
        ("ca_ca", "consecutive CA-CA distance (A)", (2.0, 6.0)),
        ("c_n", "peptide bond C(i)-N(i+1) (A)", (0.0, 4.0)),
        ("rg", "radius of gyration of CA (A)", None),
    ]
    for ax, (key, name, rng) in zip(axes[0], panels):
        every = np.concatenate([s[key].reshape(-1).numpy() for s in stats.values()])
        lo, hi = rng if rng is not None else (float(every.min()), float(every.max()))
        width = (hi - lo) / 60 if hi > lo else 1.0
        for k, s in stats.items():
            v = s[key].reshape(-1).numpy()
            inside = v[(v >= lo) & (v <= hi)]  # a density over all values, clipped to the range
            if inside.size == 0:
                continue
            ax.hist(
                inside,
                bins=60,
                range=(lo, hi),
                weights=np.full(inside.size, 1.0 / (v.size * width)),
                histtype="step",
                color=colors[k],
                ls="--" if k == "rebuilt" else "-",
                label=k,
            )
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    for ax, key in zip(axes[1, :2], rama):
        phi, psi = rama[key]
        ax.hist2d(
            phi.reshape(-1).numpy(),
            psi.reshape(-1).numpy(),
            bins=72,
            range=[[-180, 180], [-180, 180]],
            cmap={"held-out": "Greys", "generated": "Blues"}.get(key, "Reds"),
            cmin=1,
            norm=LogNorm(),
        )
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xlabel("phi (deg)")
        ax.set_ylabel("psi (deg)")
        ax.set_title(f"Ramachandran: {key}", fontsize=10)
    ax = axes[1, 2]
    for row, k in enumerate(k for k in sets if k == "rebuilt" or k.startswith("generated")):
        x_end = 0.0
        for i in range(min(4, sets[k].shape[0])):
            ca = sets[k][i, :, 1].numpy()
            ca = ca - ca.min(0)
            ax.plot(ca[:, 0] + x_end, ca[:, 1] - 35.0 * row, "-o", ms=3, color=colors[k])
            x_end += float(ca[:, 0].max()) + 8.0
    ax.set_aspect("equal")
    ax.set_title("CA traces (x-y): held-out (top), generated (colours as above)", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def load_archive(args: argparse.Namespace, generator: torch.Generator) -> tuple[dict, str]:
    """The backbone archive (numpy arrays) and a name."""
    if args.data is not None and not args.smoke:
        with np.load(args.data) as z:
            keys = ("coords", "chain_index", "entry_index", "chain_break_before")
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"{args.data} lacks the arrays {missing}")
            archive = {k: z[k] for k in keys}
        if archive["coords"].ndim != 3 or archive["coords"].shape[1:] != (3, 3):
            raise ValueError(f"coords must be (R, 3, 3), got {archive['coords'].shape}")
        return archive, Path(args.data).stem
    return synthetic_chains(args.n_synthetic, 64, generator), "synthetic helix/strand chains"


def crops_to_frames(archive: dict, starts: np.ndarray, length: int) -> Tensor:
    """Canonical frames ``(B, N, 4, 4)`` (float64, nm) of the crops starting at ``starts``."""
    idx = torch.from_numpy(starts)[:, None] + torch.arange(length)
    xyz = torch.from_numpy(archive["coords"]).double()[idx]  # (B, N, 3, 3)
    frames = F.from_backbone(xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :])
    return F.scale_translations(canonical_pose(frames), 1.0 / F.ANGSTROM_PER_NM)


def main(argv: list[str] | None = None) -> int:
    """Train, generate, evaluate; write ``backbones.png``, ``metrics.json`` and PDB files."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=None, help="backbone .npz (see above)")
    p.add_argument("--length", type=int, default=16, help="residues per crop")
    p.add_argument("--stride", type=int, default=2, help="offset between training crops")
    p.add_argument("--test-frac", type=float, default=0.15, help="held-out fraction of crops")
    p.add_argument("--n-synthetic", type=int, default=300, help="synthetic chains (64 residues)")
    p.add_argument("--rotation-schedule", choices=("linear", "exp"), default="linear")
    p.add_argument("--coupling", choices=("independent", "ot"), default="independent")
    p.add_argument(
        "--sample-rotation-rate",
        type=float,
        default=10.0,
        help="with the linear schedule, also sample with the exponential rotation rate (0: off)",
    )
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--ode-steps", type=int, default=50, help="RK4 steps of the sampler")
    p.add_argument("--n-eval", type=int, default=1000, help="crops per set in the metrics")
    p.add_argument("--n-pdb", type=int, default=4, help="generated backbones written as PDB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/protein_backbones"))
    p.add_argument("--smoke", action="store_true", help="tiny run on synthetic data for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.n_synthetic, args.length, args.steps, args.batch_size = 12, 8, 10, 32
        args.hidden, args.depth, args.ode_steps, args.n_eval, args.n_pdb = 32, 2, 3, 40, 1
    if args.length < 4:
        p.error("--length must be >= 4 (phi and psi need interior residues)")
    if not 0.0 < args.test_frac < 1.0:
        p.error("--test-frac must be in (0, 1)")
    for name in ("stride", "steps", "n_eval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    g = torch.Generator().manual_seed(args.seed)
    archive, name = load_archive(args, g)
    starts = crop_starts(archive, args.length)
    if starts.shape[0] < 4:
        p.error(f"{starts.shape[0]} crops of {args.length} residues: too few")
    train_mask, test_mask = split_by_entry(archive["entry_index"][starts], args.test_frac, g)
    train_starts = starts[train_mask][:: args.stride]
    test_starts = starts[test_mask]
    if train_starts.shape[0] < 2 or test_starts.shape[0] < 2:
        p.error("the split leaves too few training or held-out crops")
    n_eval = min(args.n_eval, test_starts.shape[0])
    pick = torch.randperm(test_starts.shape[0], generator=g)[:n_eval].numpy()
    test_starts = np.sort(test_starts[pick])
    train_x = crops_to_frames(archive, train_starts, args.length).float()
    test_frames = crops_to_frames(archive, test_starts, args.length)

    torch.manual_seed(args.seed)  # the weight initialisation
    model = FrameChainVelocity(args.length, args.hidden, args.depth)
    start = time.perf_counter()
    final_loss = train(model, train_x, args, g)
    train_seconds = time.perf_counter() - start
    model.eval()

    se3 = mfm.SE3()
    with torch.no_grad():
        x0 = sample_source(n_eval, args.length, g)
        sol = mfm.solve_ode(model, x0, steps=args.ode_steps, method="rk4", manifold=se3)
        gen_atoms = F.to_backbone(
            F.scale_translations(se3.projx(sol.x.double()), F.ANGSTROM_PER_NM)
        )
        exp_atoms = None
        if args.rotation_schedule == "linear" and args.sample_rotation_rate > 0:
            fast = ExponentialRotationSampler(model, args.sample_rotation_rate)
            sol_exp = mfm.solve_ode(fast, x0, steps=args.ode_steps, method="rk4", manifold=se3)
            exp_atoms = F.to_backbone(
                F.scale_translations(se3.projx(sol_exp.x.double()), F.ANGSTROM_PER_NM)
            )
    angstrom = F.ANGSTROM_PER_NM
    idx = torch.from_numpy(test_starts)[:, None] + torch.arange(args.length)
    real_atoms = torch.from_numpy(archive["coords"]).double()[idx]
    rebuilt = F.to_backbone(F.scale_translations(test_frames, angstrom))
    src_atoms = F.to_backbone(
        F.scale_translations(sample_source(n_eval, args.length, g, torch.float64), angstrom)
    )
    pick = torch.randperm(train_starts.shape[0], generator=g)[:n_eval].numpy()
    idx = torch.from_numpy(np.sort(train_starts[pick]))[:, None] + torch.arange(args.length)
    train_atoms = torch.from_numpy(archive["coords"]).double()[idx]

    phi, psi = phi_psi(real_atoms)
    ref_stats = structure_stats(real_atoms)
    reference = {"rama": rama_hist(phi, psi), "rg": ref_stats["rg"], "dmat": ref_stats["dmat"]}
    sets = {
        "held-out": real_atoms,
        "rebuilt": rebuilt,
        "generated": gen_atoms,
        "source": src_atoms,
    }
    if exp_atoms is not None:
        sets["generated, exp. rotation rate"] = exp_atoms
    metrics: dict[str, object] = {
        "data": name,
        "crop_length": args.length,
        "n_train_crops": int(train_starts.shape[0]),
        "n_test_crops": int(test_mask.sum()),
        "n_eval": n_eval,
        "rotation_schedule": args.rotation_schedule,
        "coupling": args.coupling,
        "held_out": summarise(real_atoms),
        "held_out_rebuilt_from_frames": summarise(rebuilt, reference),
        "generated": summarise(gen_atoms, reference),
        "generated_exp_rotation_sampling": (
            None if exp_atoms is None else summarise(exp_atoms, reference)
        ),
        "sample_rotation_rate": args.sample_rotation_rate if exp_atoms is not None else None,
        "train_reference": summarise(train_atoms, reference),
        "source_baseline": summarise(src_atoms, reference),
        "final_loss_per_residue": final_loss,
        "train_steps": args.steps,
        "train_seconds": round(train_seconds, 2),
        "nfe": int(sol.nfe),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    metrics["pdb_files"] = write_backbones(args.out, gen_atoms.float(), args.n_pdb)
    print(json.dumps(metrics, indent=2))
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shown = "generated" if exp_atoms is None else "generated, exp. rotation rate"
    rama = {"held-out": (phi, psi), shown: phi_psi(sets[shown])}
    plot(args.out / "backbones.png", sets, rama, f"SE(3)^{args.length} flow matching: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
