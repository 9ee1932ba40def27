"""fit on functions, run-folder protection, and training under torchrun (gloo, 2 processes)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from manifoldfm.api import evaluate, fit, load
from manifoldfm.cli import main
from manifoldfm.data import read_points

SMALL = {"batch_size": 32, "hidden": 8, "depth": 2, "progress": False}


def _curves(n: int = 64, points: int = 16, noise: float = 0.05) -> torch.Tensor:
    """One shape, ``2 sin(2 pi s) + 3``, plus a little independent noise per curve."""
    g = torch.Generator().manual_seed(0)
    s = torch.linspace(0, 1, points, dtype=torch.float64)
    return (
        3.0
        + 2.0 * torch.sin(2 * math.pi * s)
        + noise * torch.randn(n, points, generator=g, dtype=torch.float64)
    )


def test_functions_learn_the_mean_curve_and_sample_on_any_grid(tmp_path):
    x = _curves()
    res = fit(x, space="functions", steps=120, eval_every=40, lr=3e-3, out=tmp_path, **SMALL)
    c = res.config
    assert c["length_scale"] == 0.02 and c["sigma_min"] == 1e-4 and c["dim"] == 16
    assert c["model"] == "FNO1d width 8 depth 2 modes 8"
    fm = load(tmp_path)
    g = torch.Generator().manual_seed(0)
    y = fm.sample(200, steps=8, generator=g).double()
    # the source (GP noise around the scalar mean) misses the sine; the model must find it
    src = fm.source.sample(200, generator=g, dtype=torch.float64)
    norm = c["normalisation"]
    src = src * norm["std"][0] + norm["mean"][0]
    target = x.mean(0)
    err_model = float((y.mean(0) - target).square().mean())
    err_source = float((src.mean(0) - target).square().mean())
    assert err_model < 0.1 * err_source, (err_model, err_source)
    # resolution-free sampling: a 31-point grid holds the 16-point grid's shape
    fine = fm.sample(200, steps=8, grid_size=31, generator=g).double()
    assert fine.shape == (200, 31)
    s31 = torch.linspace(0, 1, 31, dtype=torch.float64)
    truth31 = 3.0 + 2.0 * torch.sin(2 * math.pi * s31)
    assert float((fine.mean(0) - truth31).square().mean()) < 0.1 * err_source
    # evaluate compares on the data's own grid, whatever the training grid
    m = evaluate(tmp_path, _curves(40, 31), steps=8)
    assert m["grid_size"] == 31 and "nll" not in m
    for k in ("mean_mse", "variance_mse", "autocovariance_mse", "density_mse"):
        assert math.isfinite(m[k]) and m[k] >= 0
    with pytest.raises(ValueError, match="not defined for functions"):
        fm.log_prob(x[:2])
    with pytest.raises(ValueError, match="grid_size"):
        fm.sample(2, grid_size=2)


def test_functions_arguments():
    x = _curves(16)
    with pytest.raises(ValueError, match="length_scale applies to functions only"):
        fit(torch.randn(16, 2), space="euclidean", length_scale=0.1, steps=1, progress=False)
    with pytest.raises(ValueError, match="length_scale must be a positive number"):
        fit(x, space="functions", length_scale=-1.0, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"shape \(N, n\) values"):
        fit(torch.randn(8, 4, 4), space="functions", steps=1, progress=False)
    with pytest.raises(ValueError, match="at least 4 grid points"):
        fit(torch.randn(8, 3), space="functions", steps=1, progress=False)
    res = fit(x, space="functions", length_scale=0.2, steps=2, **SMALL)
    assert res.fitted.source.n_points == 16 and res.config["length_scale"] == 0.2
    with pytest.raises(ValueError, match="grid_size applies to functions only"):
        fit(torch.randn(16, 2), space="euclidean", steps=1, progress=False).fitted.sample(
            2, grid_size=8
        )


def test_resume_keeps_the_checkpoints_settings(tmp_path):
    x = _curves(32)
    fit(x, space="functions", steps=2, out=tmp_path, lr=2e-3, length_scale=0.1, **SMALL)
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        fit(x, space="functions", steps=3, out=tmp_path, resume=True, length_scale=0.2)
    with pytest.raises(ValueError, match="hidden = 16 differs"):
        fit(x, space="functions", steps=3, out=tmp_path, resume=True, hidden=16)
    with pytest.raises(ValueError, match="exclude each other"):
        fit(x, space="functions", steps=3, out=tmp_path, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="length_scale must be a positive number"):
        fit(x, space="functions", steps=1, length_scale=True)
    res = fit(x, space="functions", steps=3, out=tmp_path, resume=True, lr=1.0, progress=False)
    c = res.config
    assert c["steps_done"] == 3 and c["lr"] == 2e-3 and c["length_scale"] == 0.1
    assert c["hidden"] == 8 and c["batch_size"] == 32


def test_functions_are_read_on_the_periodic_grid():
    from manifoldfm.api import _grid

    x = _curves(16, points=12)
    fm = fit(x, space="functions", steps=1, **SMALL).fitted
    torch.testing.assert_close(fm.source.points, _grid(12))
    assert torch.equal(_grid(12)[:, 0], torch.arange(12, dtype=torch.float64) / 12)
    # point i of n and point 2 i of 2 n are the same location
    assert torch.equal(_grid(24)[::2], _grid(12))


def test_run_folder_is_never_replaced_silently(tmp_path):
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    fit(x, space="euclidean", steps=2, out=tmp_path, **SMALL)
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit(x, space="euclidean", steps=2, out=tmp_path, **SMALL)
    assert (tmp_path / "model.pt").read_bytes() == before
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["fit", "x.csv", "--space", "euclidean", "--out", str(tmp_path)])
    res = fit(x, space="euclidean", steps=3, out=tmp_path, overwrite=True, **SMALL)
    assert res.config["steps_done"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["steps_done"] == 3


def test_cli_functions_fit_sample_evaluate(tmp_path, capsys):
    csv = tmp_path / "curves.csv"
    np.savetxt(csv, _curves(48).numpy(), delimiter=",")
    run = tmp_path / "run"
    argv = ["fit", str(csv), "--space", "functions", "--out", str(run), "--steps", "4"]
    argv += ["--batch-size", "16", "--hidden", "8", "--depth", "2", "--length-scale", "0.1"]
    assert main([*argv, "--no-progress"]) == 0
    assert "trained 4 steps" in capsys.readouterr().out
    out = tmp_path / "s.csv"
    assert main(["sample", str(run), "-n", "5", "--out", str(out), "--steps", "2"]) == 0
    assert out.with_suffix(".png").stat().st_size > 0
    assert read_points(out, space="functions").points.shape == (5, 16)
    fine = tmp_path / "fine.npy"
    cmd = ["sample", str(run), "-n", "3", "--out", str(fine), "--steps", "2", "--grid-size", "40"]
    assert main(cmd) == 0
    assert np.load(fine).shape == (3, 40)
    mj = tmp_path / "m.json"
    assert main(["evaluate", str(run), str(csv), "--out", str(mj), "--steps", "2"]) == 0
    assert math.isfinite(json.loads(mj.read_text())["autocovariance_mse"])


# ---------------------------------------------------------------------------------------------
# torch.distributed: two processes on the gloo backend, launched by torchrun
# ---------------------------------------------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from manifoldfm.api import fit

    out = Path(sys.argv[1])
    dist.init_process_group("gloo")  # the caller's group: fit uses it and leaves it open
    rank = dist.get_rank()
    saves = []
    real_save = torch.save
    def counting_save(obj, f, *a, **k):  # files only (collectives pickle to buffers)
        if isinstance(f, (str, Path)):
            saves.append(str(f))
        return real_save(obj, f, *a, **k)
    torch.save = counting_save
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(120, 3, generator=g), dim=1)
    kw = dict(space="sphere", batch_size=16, hidden=16, depth=2, ema=0.5, eval_every=4,
              patience=None, progress=False)
    try:  # arguments that differ between processes are refused on every process
        fit(x, steps=8, out=out / "bad", **{**kw, "batch_size": 16 + rank})
        refused = False
    except ValueError as exc:
        refused = "different arguments on different processes" in str(exc)
    straight = fit(x, steps=8, out=out / "straight", **kw)
    # interrupt every process at its second checkpoint, before anything is written
    real_gather, calls = dist.all_gather_object, []
    def interrupting_gather(*a, **k):
        if isinstance(a[1], torch.Tensor):  # the generator states gathered by a checkpoint
            calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_gather(*a, **k)
    dist.all_gather_object = interrupting_gather
    try:
        fit(x, steps=8, out=out / "resumed", **kw)
    except KeyboardInterrupt:
        pass
    dist.all_gather_object = real_gather
    steps_before = json.loads((out / "resumed" / "config.json").read_text())["steps_done"]
    resumed = fit(x, steps=8, out=out / "resumed", resume=True, **kw)
    flat = torch.cat([p.detach().flatten() for p in straight.model.parameters()])
    every = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(every, flat)
    report = {
        "rank": rank,
        "saves": len(saves),
        "ranks_equal": all(torch.equal(every[0], e) for e in every),
        "resume_equal": all(
            torch.equal(a, b)
            for a, b in zip(straight.model.parameters(), resumed.model.parameters())
        ),
        "history_equal": straight.history == resumed.history,
        "world_size": straight.config["world_size"],
        "steps_before": steps_before,
        "refused": refused,
        "initialised_after": dist.is_initialized(),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()
    """
)


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_fit_under_torchrun_in_the_callers_process_group(tmp_path):
    (tmp_path / "driver.py").write_text(_DRIVER)
    proc = _torchrun(["driver.py", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["ranks_equal"] and r1["ranks_equal"]  # DDP keeps the replicas identical
    assert r0["saves"] > 0 and r1["saves"] == 0  # checkpoints are written once, by rank 0
    assert r0["refused"] and r1["refused"]
    assert r0["steps_before"] == 4  # interrupted after its first checkpoint
    assert r0["resume_equal"] and r0["history_equal"]  # resumed == uninterrupted
    assert r0["initialised_after"]  # a group fit did not create is left to its owner
    state = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    a, b = state["generators"]
    assert not torch.equal(a, b)  # each process draws its own batches


def test_cli_fit_under_torchrun(tmp_path):
    x = torch.nn.functional.normalize(torch.randn(100, 3, generator=torch.Generator()), dim=1)
    np.savetxt(tmp_path / "p.csv", x.numpy(), delimiter=",", header="x,y,z", comments="")
    args = ["-m", "manifoldfm", "fit", "p.csv", "--space", "sphere", "--out", "run"]
    args += ["--steps", "6", "--eval-every", "3", "--batch-size", "16", "--hidden", "16"]
    proc = _torchrun([*args, "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 6 steps") == 1  # one report, from rank 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["steps_done"] == 6
    y = load(tmp_path / "run").sample(8, steps=2)
    assert torch.allclose(y.norm(dim=1), torch.ones(8), atol=1e-5)


def test_fit_page_functions_snippet_runs(capsys):
    import re

    text = (Path(__file__).resolve().parents[1] / "docs/pages/api/fit.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "functions" in b)
    exec(compile(snippet, "fit.md functions snippet", "exec"), {})
    assert capsys.readouterr().out.strip() == "(4, 128)"


def test_checkpoints_without_a_length_scale_keep_the_former_default(tmp_path):
    # runs from before the length scale was recorded trained with 0.05 (the default then);
    # loading or resuming them must not switch to the current default
    x = _curves()
    fit(x, space="functions", steps=2, out=tmp_path, **SMALL)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    assert config["length_scale"] == 0.02  # the current default
    del config["length_scale"]
    path.write_text(json.dumps(config))
    assert load(tmp_path).source.kernel.base_kernel.lengthscale.item() == pytest.approx(0.05)
    res = fit(x, space="functions", steps=3, out=tmp_path, resume=True, **SMALL)
    assert res.config["length_scale"] == 0.05
    with pytest.raises(ValueError, match=r"length_scale = 0\.02 differs"):
        fit(x, space="functions", steps=4, out=tmp_path, resume=True, length_scale=0.02, **SMALL)
