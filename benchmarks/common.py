"""Shared helpers for the side-by-side benchmarks (timing, machine description, toy model, I/O).

Only the benchmark scripts import the comparison libraries; this module needs torch and
manifoldfm alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS",
    "ToyMLP",
    "compare_timings",
    "machine_info",
    "markdown_table",
    "set_threads",
    "summarize",
    "sync",
    "write_json",
]


def set_threads(n: int = 2) -> None:
    """Pin torch's intra-op (and, where still allowed, inter-op) thread pools to ``n`` threads."""
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set, or a parallel region already ran
        torch.set_num_interop_threads(n)


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _calibrate(fn: Callable[[], Any], device: torch.device | str, target_s: float) -> int:
    """Number of back-to-back calls that take about ``target_s`` (at least 1)."""
    n = 1
    while True:
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= target_s or n >= 1 << 16:
            return n
        n = max(n + 1, int(n * min(10.0, 1.2 * target_s / max(elapsed, 1e-9))))


def compare_timings(
    fns: Mapping[str, Callable[[], Any]],
    *,
    device: torch.device | str = "cpu",
    rounds: int = 25,
    warmup: int = 3,
    target_s: float = 0.02,
) -> dict[str, dict[str, float]]:
    """Time several callables on the same inputs, interleaved, in this one process.

    Every callable is first warmed up (``warmup`` rounds over all of them, so that the memory
    allocator reaches its steady state before anything is timed), then the number of calls per
    measurement is calibrated so that one measurement takes about ``target_s`` seconds.
    The measurements are interleaved over ``rounds`` rounds, the order rotating each round (so
    that load from other processes on a shared machine, and allocator state left by the
    previous candidate, hit every candidate alike), and the median over rounds is reported.

    Returns:
        ``{name: summarize(samples)}``: median, quartiles, minimum and raw samples of the time
        per call in microseconds, and the calls per round.
    """
    names = list(fns)
    for _ in range(warmup):  # warm every candidate before timing any (allocator steady state)
        for name in names:
            fns[name]()
    inner = {name: _calibrate(fns[name], device, target_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for k in range(len(names)):  # rotate the order every round
            name = names[(r + k) % len(names)]
            fn, n = fns[name], inner[name]
            sync(device)
            start = time.perf_counter()
            for _ in range(n):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    return {name: summarize(xs, calls_per_round=inner[name]) for name, xs in samples.items()}


def summarize(samples_us: Sequence[float], **extra: Any) -> dict[str, Any]:
    """Median, quartiles and minimum of per-call times (µs), with the raw samples."""
    xs = list(samples_us)
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return {
        "median_us": statistics.median(xs),
        "q25_us": q[0],
        "q75_us": q[2],
        "min_us": min(xs),
        "rounds": len(xs),
        **extra,
        "samples_us": xs,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> dict[str, Any]:
    """Commit of the working tree and whether the library's files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "manifoldfm"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": head, "uncommitted_library_files": dirty}


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Date, host description and library versions, stored with every result file."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "device": str(device),
        "git": _git(),
        "versions": {
            d: _version(d) for d in ("torch", "manifoldfm", "torchcfm", "flow_matching", "pot")
        },
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON (via a temporary file, so readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; the first column is left-aligned, the others right."""
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class ToyMLP(nn.Module):
    """The velocity network used by every library in the 2-D benchmark.

    ``v(x, t) = MLP([x, t])``: time is appended to the input as one extra feature, followed
    by ``depth`` hidden layers of ``width`` units with SELU activations and a linear output.

    Args:
        dim: data dimension.
        width: hidden units per layer.
        depth: number of hidden layers.
    """

    def __init__(self, dim: int = 2, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d_in = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.SELU()]
            d_in = width
        layers.append(nn.Linear(d_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Velocity at points ``x`` ``(B, dim)`` and times ``t`` (``(B,)`` or a scalar)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        return self.net(torch.cat([x, t], dim=-1))
