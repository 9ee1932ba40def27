"""Flow matching on SE(3): the distribution of camera poses of a hand-held RGB-D trajectory.

The data are the ground-truth camera poses of the TUM RGB-D ``fr2/desk`` sequence (a camera
carried around a desk), read with ``--data`` from a CSV file with the columns
``t_s, tx, ty, tz, qx, qy, qz, qw`` (quaternion scalar last, the TUM convention;
``manifoldfm.rotations.pose_from_tum``). Without ``--data`` (and always with ``--smoke``) a
synthetic trajectory is used instead: a camera circling a point while looking at it, with a
bobbing height and noise.

**Preprocessing.** The trajectory is a time series (consecutive poses are nearly equal), so
every ``--every``-th pose is kept and the sequence is cut into ``--blocks`` contiguous blocks
of equal length; every ``--test-every``-th block (blocks 4, 9, 14, ... by default) is held
out. The held-out poses are thus whole stretches of the trajectory that the model never saw,
spread over the whole recording, rather than neighbours of training poses. Translations are
centred on the mean of the training translations and divided by their root-mean-square
distance to that mean (one scale for all three axes, so the geometry is not distorted); the
same transformation is applied to the held-out poses. Rotations are kept as they are.

**Model.** Source: Haar-uniform rotations times standard normal translations
(``SE3().random``). Path: ``ProductPath`` on ``SE3()`` with a geodesic rotation path of its
own schedule (``--rotation-schedule linear``, i.e. ``CondOT``, or ``exp``,
``ExponentialRate``) and the straight ``CondOT`` path for the translation; optionally
minibatch optimal transport (``--coupling ot``: ``ExactOT(cost=FrameCost())``, the squared
SE(3) distance). Velocity field: an MLP on the flattened rotation, the translation and a time
embedding whose six outputs are a body angular velocity ``w`` and a translation velocity
``v``, returned as the tangent vector ``[[R hat(w), v], [0, 0]]``. Samples are drawn with
``solve_ode(..., manifold=SE3())``.

**Metrics** (generated poses vs held-out poses, ``metrics.json``): ``mmd`` (squared MMD, RBF
kernels at 0.5, 1 and 2 times the median distance of the pooled embedding, on the 12-vector
of the flattened rotation and the scaled translation) and ``w2`` (exact 2-Wasserstein
distance with the squared SE(3) geodesic distance, rotation angle in radians plus scaled
translation, as ground cost). The same numbers for two references: the source distribution
(what training starts from) and the training poses (the floor a model can hope for, given that
the held-out blocks differ from the training ones). Writes ``poses.png``: camera positions seen
from above (x-y) and from the side (x-z), histograms of the rotation angle and of the
azimuth and elevation of the optical axis (the frame's z axis).

    python examples/se3_poses.py --data ../shared/data/se3/tum_fr2_desk_poses.csv
    python examples/se3_poses.py --data ../shared/data/se3/tum_fr2_desk_poses.csv --coupling ot
    python examples/se3_poses.py --smoke --out /tmp/se3_poses
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import ot
import torch
from torch import Tensor, nn

import manifoldfm as mfm
from manifoldfm.nn import MLPVelocity
from manifoldfm.paths import ExponentialRate
from manifoldfm.rotations import hat, pose_from_tum, rotation_angle


class PoseVelocity(nn.Module):
    """Velocity field on SE(3): an MLP on ``(vec(R), t, time)`` with a tangent output.

    The MLP returns six numbers per pose, a body angular velocity ``w`` and a translation
    velocity ``v``; the tangent vector at ``x = (R, t)`` is ``[[R hat(w), v], [0, 0]]``,
    tangent by construction. Works for points of shape ``(B, 4, 4)``.
    """

    def __init__(self, hidden: int, depth: int) -> None:
        super().__init__()
        self.se3 = mfm.SE3()
        self.mlp = MLPVelocity(12, hidden, depth, out_dim=6)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        rot, trans = x[..., :3, :3], x[..., :3, 3]
        out = self.mlp(torch.cat([rot.reshape(-1, 9), trans], dim=-1), t)
        return self.se3.join(rot @ hat(out[:, :3]), out[:, 3:], tangent=True)


def synthetic_trajectory(n: int, generator: torch.Generator) -> Tensor:
    """Rows ``tx ty tz qx qy qz qw`` of a camera circling the origin and looking at it.

    Two loops around a circle of radius 1.5 m with a height oscillating around 1.2 m; the
    optical axis (the frame's z axis) points at a spot near the origin, the frame's x axis is
    horizontal; noise of 5 cm on the positions and of a few degrees on the orientations.
    """
    s = torch.linspace(0.0, 4.0 * math.pi, n, dtype=torch.float64)
    pos = torch.stack(
        [1.5 * torch.cos(s), 1.5 * torch.sin(s), 1.2 + 0.2 * torch.sin(3.0 * s)], dim=-1
    )
    pos = pos + 0.05 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    target = 0.1 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    z = target - pos
    z = z / z.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(z)
    x = torch.linalg.cross(up, z)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)
    rot = torch.stack([x, y, z], dim=-1)
    jitter = mfm.rotations.rotvec_to_quat(
        0.05 * torch.randn(n, 3, generator=generator, dtype=torch.float64), scalar_first=False
    )
    rot = rot @ mfm.rotations.quat_to_rotmat(jitter, scalar_first=False)
    quat = mfm.rotations.rotmat_to_quat(rot, scalar_first=False)
    return torch.cat([pos, quat], dim=-1)


def load_poses(args: argparse.Namespace, generator: torch.Generator) -> tuple[Tensor, str]:
    """The (subsampled) trajectory as float64 poses ``(N, 4, 4)`` and a name."""
    if args.data is not None and not args.smoke:
        table = np.loadtxt(args.data, delimiter=",", skiprows=1, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != 8:
            raise ValueError(
                f"{args.data} must have the columns t_s, tx, ty, tz, qx, qy, qz, qw; "
                f"got a table of shape {table.shape}"
            )
        rows = torch.from_numpy(table[:: args.every, 1:])
        name = f"{Path(args.data).stem} (every {args.every}th pose)"
    else:
        rows = synthetic_trajectory(args.n_synthetic, generator)
        name = "synthetic circling camera"
    return pose_from_tum(rows, normalize=True), name


def block_split(n: int, blocks: int, test_every: int) -> tuple[Tensor, Tensor]:
    """Indices of training and held-out poses: every ``test_every``-th contiguous block out."""
    block = torch.div(torch.arange(n) * blocks, n, rounding_mode="floor")
    test = (block % test_every) == test_every - 1
    return torch.nonzero(~test).flatten(), torch.nonzero(test).flatten()


def embed(x: Tensor) -> Tensor:
    """The 12-vector ``(vec(R), t)`` of poses ``(B, 4, 4)``: the embedding used by the MMD."""
    return torch.cat([x[:, :3, :3].reshape(-1, 9), x[:, :3, 3]], dim=-1)


def geodesic_w2(x: Tensor, y: Tensor) -> float:
    """Exact W2 between two pose sets with the squared SE(3) distance as ground cost."""
    cost = mfm.FrameCost()(x[:, None].double(), y[:, None].double())  # (N, M), float64
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    value = ot.emd2(a, b, cost.numpy(), numItermax=max(100_000, 50 * cost.numel()))
    return math.sqrt(max(float(value), 0.0))


def compare(x: Tensor, reference: Tensor) -> dict[str, float]:
    """MMD on the pose embedding and geodesic W2 of ``x`` against ``reference``."""
    return {
        "mmd": float(mfm.metrics.mmd(embed(x).double(), embed(reference).double())),
        "w2": geodesic_w2(x, reference),
    }


def train(
    model: nn.Module, data: Tensor, args: argparse.Namespace, generator: torch.Generator
) -> float:
    """Fit ``model`` by Riemannian CFM on SE(3); returns the mean loss of the last 100 steps."""
    se3 = mfm.SE3()
    rot_schedule = mfm.CondOT() if args.rotation_schedule == "linear" else ExponentialRate(10.0)
    path = mfm.ProductPath(
        [mfm.GeodesicPath(mfm.SO3(), rot_schedule), mfm.AffinePath(mfm.CondOT())], manifold=se3
    )
    coupling = mfm.ExactOT(cost=mfm.FrameCost()) if args.coupling == "ot" else None
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    recent: list[float] = []
    for _ in range(args.steps):
        idx = torch.randint(data.shape[0], (args.batch_size,), generator=generator)
        x1 = data[idx]
        x0 = se3.random(args.batch_size, generator=generator, dtype=data.dtype)
        if coupling is not None:
            pair = coupling(x0[:, None], x1[:, None], generator=generator)
            x0, x1 = pair.x0[:, 0], pair.x1[:, 0]
        s = path.sample(x0, x1, torch.rand(args.batch_size, generator=generator))
        loss = mfm.cfm_loss(model(s.xt, s.t), s, manifold=se3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent = [*recent[-99:], float(loss.detach())]
    return sum(recent) / max(len(recent), 1)


def optical_axis_angles(x: Tensor) -> tuple[Tensor, Tensor]:
    """Azimuth and elevation (degrees) of the frames' z axes (the camera's optical axis)."""
    z = x[:, :3, 2]
    az = torch.rad2deg(torch.atan2(z[:, 1], z[:, 0]))
    el = torch.rad2deg(torch.atan2(z[:, 2], torch.hypot(z[:, 0], z[:, 1])))
    return az, el


def plot(path: Path, test: Tensor, train: Tensor, gen: Tensor, title: str) -> None:
    """Camera positions (top and side views) and orientation histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (i, j, name) in zip(axes[0, :2], [(0, 1, "top view (x-y)"), (0, 2, "side (x-z)")]):
        sets = [
            (train, "training", "0.75"),
            (test, "held-out", "k"),
            (gen, "generated", "tab:blue"),
        ]
        for x, label, color in sets:
            t = x[:, :3, 3].numpy()
            ax.scatter(t[:, i], t[:, j], s=3, alpha=0.4, color=color, label=label)
        ax.set_title(f"camera positions, {name} (scaled units)", fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(markerscale=4, fontsize=8)
    sets = [(test, "held-out", "k"), (gen, "generated", "tab:blue"), (train, "training", "0.6")]
    panels = [
        (axes[0, 2], lambda x: torch.rad2deg(rotation_angle(x[:, :3, :3])), "rotation angle (deg)"),
        (axes[1, 0], lambda x: optical_axis_angles(x)[0], "optical axis azimuth (deg)"),
        (axes[1, 1], lambda x: optical_axis_angles(x)[1], "optical axis elevation (deg)"),
        (axes[1, 2], lambda x: x[:, 2, 3], "camera height z (scaled units)"),
    ]
    for ax, fn, name in panels:
        values = [fn(x).numpy() for x, _, _ in sets]
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        bins = np.linspace(lo, hi, 40) if hi > lo else 40
        for v, (_, label, color) in zip(values, sets):
            ax.hist(v, bins=bins, density=True, histtype="step", color=color, label=label, lw=1.5)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Train, sample, evaluate against held-out poses, write ``poses.png`` and ``metrics.json``."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=None, help="TUM trajectory CSV (see above)")
    p.add_argument("--every", type=int, default=5, help="keep every k-th pose of the file")
    p.add_argument("--blocks", type=int, default=20, help="contiguous blocks of the split")
    p.add_argument("--test-every", type=int, default=5, help="hold out every k-th block")
    p.add_argument("--n-synthetic", type=int, default=4000, help="synthetic trajectory length")
    p.add_argument("--rotation-schedule", choices=("linear", "exp"), default="linear")
    p.add_argument("--coupling", choices=("independent", "ot"), default="independent")
    p.add_argument("--steps", type=int, default=5000, help="training steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--ode-steps", type=int, default=50, help="RK4 steps of the sampler")
    p.add_argument("--n-eval", type=int, default=1000, help="poses per set in the metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/se3_poses"))
    p.add_argument("--smoke", action="store_true", help="tiny run on synthetic data for CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.n_synthetic, args.steps, args.batch_size, args.hidden = 400, 20, 64, 32
        args.depth, args.ode_steps, args.n_eval = 2, 4, 100
    for name in ("every", "blocks", "test_every", "steps", "n_eval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.test_every < 2 or args.blocks < args.test_every:
        p.error("need --test-every >= 2 and --blocks >= --test-every")

    g = torch.Generator().manual_seed(args.seed)
    poses, name = load_poses(args, g)
    train_idx, test_idx = block_split(poses.shape[0], args.blocks, args.test_every)
    if train_idx.numel() < 2 or test_idx.numel() < 2:
        p.error(f"{poses.shape[0]} poses are too few for the split")
    centre = poses[train_idx, :3, 3].mean(0)
    scale = float((poses[train_idx, :3, 3] - centre).square().sum(-1).mean().sqrt())
    se3 = mfm.SE3()
    scaled = se3.join(poses[:, :3, :3], (poses[:, :3, 3] - centre) / scale)
    train_x, test_x = scaled[train_idx].float(), scaled[test_idx].float()

    torch.manual_seed(args.seed)  # the weight initialisation
    model = PoseVelocity(args.hidden, args.depth)
    start = time.perf_counter()
    final_loss = train(model, train_x, args, g)
    train_seconds = time.perf_counter() - start
    model.eval()

    n_eval = min(args.n_eval, test_x.shape[0])
    with torch.no_grad():
        x0 = se3.random(n_eval, generator=g)
        sol = mfm.solve_ode(model, x0, steps=args.ode_steps, method="rk4", manifold=se3)
    gen = se3.projx(sol.x.double())  # float32 rounding off the float64 tolerance
    test_eval = scaled[test_idx[torch.randperm(test_idx.numel(), generator=g)[:n_eval]]]
    train_eval = scaled[train_idx[torch.randperm(train_idx.numel(), generator=g)[:n_eval]]]
    src = se3.random(n_eval, generator=g, dtype=torch.float64)
    rot = sol.x[:, :3, :3].double()
    deviation = float((rot.mT @ rot - torch.eye(3, dtype=rot.dtype)).abs().max())

    metrics: dict[str, object] = {
        "data": name,
        "n_train": int(train_idx.numel()),
        "n_test": int(test_idx.numel()),
        "n_eval": n_eval,
        "translation_centre_m": [round(float(c), 4) for c in centre],
        "translation_scale_m": round(scale, 4),
        "rotation_schedule": args.rotation_schedule,
        "coupling": args.coupling,
        "generated": compare(gen, test_eval),
        "source_baseline": compare(src, test_eval),
        "train_reference": compare(train_eval, test_eval),
        "max_orthonormality_error": deviation,
        "final_loss": final_loss,
        "train_steps": args.steps,
        "train_seconds": round(train_seconds, 2),
        "nfe": int(sol.nfe),
    }
    print(json.dumps(metrics, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot(args.out / "poses.png", test_eval, train_eval, gen, f"SE(3) flow matching: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
