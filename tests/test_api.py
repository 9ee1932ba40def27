"""fit / load / sample / evaluate and the fit, sample and evaluate commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import manifoldfm
from manifoldfm.api import SPACES, FitResult, evaluate, fit, load, sample
from manifoldfm.cli import main
from manifoldfm.data import read_points
from manifoldfm.manifolds import SE3, SO3

FAST = {"steps": 12, "batch_size": 16, "eval_every": 6, "progress": False}


def _data(space: str, n: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if space == "euclidean":
        return torch.randn(n, 2, generator=g, dtype=torch.float64) * 3.0 + 10.0
    if space == "sphere":
        return torch.nn.functional.normalize(
            torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1
        )
    if space == "torus":
        return torch.rand(n, 2, generator=g, dtype=torch.float64) * (2 * math.pi)
    if space == "so3":
        return SO3().random_uniform(n, generator=g, dtype=torch.float64)
    if space == "functions":  # random-phase sines with random amplitudes, 16 grid points
        s = torch.linspace(0, 1, 16, dtype=torch.float64)
        phase = torch.rand(n, 1, generator=g, dtype=torch.float64) * (2 * math.pi)
        amp = 1.0 + torch.rand(n, 1, generator=g, dtype=torch.float64)
        return 5.0 + amp * torch.sin(2 * math.pi * s + phase)
    x = SE3().random(n, generator=g, dtype=torch.float64)
    x[:, :3, 3] = x[:, :3, 3] * 5.0 - 2.0
    return x


def _on_space(space: str, y: torch.Tensor) -> None:
    assert torch.isfinite(y).all()
    if space == "sphere":
        assert torch.allclose(y.norm(dim=1), torch.ones(len(y), dtype=y.dtype), atol=1e-4)
    elif space == "torus":
        assert bool((y >= 0).all()) and bool((y < 2 * math.pi + 1e-6).all())
    elif space in ("so3", "se3"):
        r = y[:, :3, :3]
        eye = torch.eye(3, dtype=y.dtype).expand_as(r)
        assert torch.allclose(r.transpose(1, 2) @ r, eye, atol=1e-4)
        assert torch.allclose(torch.linalg.det(r), torch.ones(len(y), dtype=y.dtype), atol=1e-4)
        if space == "se3":
            bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=y.dtype)
            assert torch.equal(y[:, 3], bottom.expand(len(y), 4))


@pytest.mark.parametrize("space", SPACES)
def test_fit_load_sample_resume_evaluate(space, tmp_path):
    x = _data(space)
    run = tmp_path / "run"
    res = fit(x, space=space, out=run, coupling="ot", **FAST)
    assert isinstance(res, FitResult)
    assert (run / "model.pt").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["version"] == manifoldfm.__version__
    assert config["space"] == space and config["steps_done"] == 12
    assert config["fourier"] == (8 if space == "sphere" else 0)  # the default input bands
    assert [h[0] for h in res.history] == [6, 12]
    assert all(math.isfinite(v) for h in res.history for v in h)
    by_nll = space in ("sphere", "torus", "so3")  # the default selection there
    assert res.config["select"] == ("nll" if by_nll else "loss")
    metric = [v for _, v in res.val_nll] if by_nll else [h[2] for h in res.history]
    assert res.best_step in (6, 12) and res.best_val == min(metric)

    fm = load(run)
    y = fm.sample(32, steps=4, generator=torch.Generator().manual_seed(0))
    assert y.shape == (32, *x.shape[1:])
    _on_space(space, y)
    if space in ("euclidean", "se3", "functions"):  # standardisation undone: near the data
        coords = y[:, :3, 3] if space == "se3" else y
        ref = x[:, :3, 3] if space == "se3" else x
        assert (coords.mean(0) - ref.mean(0)).abs().max() < 3 * ref.std(0).max()
    assert torch.equal(sample(run, 5, steps=3, seed=3), sample(run, 5, steps=3, seed=3))

    res2 = fit(x, space=space, out=run, resume=True, **{**FAST, "steps": 18})
    assert res2.config["steps_done"] == 18
    assert [h[0] for h in res2.history] == [6, 12, 18]
    assert json.loads((run / "config.json").read_text())["steps_done"] == 18

    m = evaluate(run, x[:40], steps=3, nll_steps=3)
    assert m["space"] == space and m["n_data"] == 40
    keys = {
        "euclidean": ("w2", "mmd", "nll"),
        "functions": ("mean_mse", "variance_mse", "autocovariance_mse", "density_mse"),
    }.get(space, ("w2_geodesic", "nll"))
    for k in keys:
        assert math.isfinite(m[k]), (k, m)


def test_resume_after_interruption_is_deterministic(tmp_path, monkeypatch):
    """A run interrupted after its first checkpoint and resumed equals an uninterrupted one."""
    from pathlib import Path

    x = _data("euclidean")
    kw = {**FAST, "ema": 0.5, "patience": None}
    a = fit(x, space="euclidean", out=tmp_path / "a", **kw)

    original = Path.write_text

    def interrupt(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", interrupt)
        with pytest.raises(KeyboardInterrupt):
            fit(x, space="euclidean", out=tmp_path / "b", **kw)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["steps_done"] == 6
    b = fit(x, space="euclidean", out=tmp_path / "b", resume=True, **kw)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert a.history == b.history and a.best_step == b.best_step


def test_euclidean_log_prob_includes_standardisation():
    """A flow fitted to data scaled by 10 gives densities 2 log 10 lower in 2-D."""
    x = _data("euclidean")
    kw = {**FAST, "steps": 4}
    lp1 = fit(x, space="euclidean", **kw).fitted.log_prob(x[:8], steps=4)
    lp10 = fit(x * 10, space="euclidean", **kw).fitted.log_prob(x[:8] * 10, steps=4)
    torch.testing.assert_close(lp10, lp1 - 2 * math.log(10), atol=1e-3, rtol=1e-4)


def test_se3_log_prob_includes_standardisation():
    """Translations scaled by 10 (same standardised data) give densities 3 log 10 lower."""
    x = _data("se3")
    y = x.clone()
    y[:, :3, 3] *= 10
    kw = {**FAST, "steps": 4}
    lp1 = fit(x, space="se3", **kw).fitted.log_prob(x[:6], steps=4)
    lp10 = fit(y, space="se3", **kw).fitted.log_prob(y[:6], steps=4)
    torch.testing.assert_close(lp10, lp1 - 3 * math.log(10), atol=1e-3, rtol=1e-4)


def test_se3_source_log_density():
    """Haar x N(0, I): the log-density integrates the change of variables of a contraction."""
    from manifoldfm.solvers import log_likelihood

    fm = fit(_data("se3"), space="se3", steps=1, batch_size=16, progress=False).fitted
    se3 = fm.manifold
    x1 = fm.source.sample(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = x1[:, :3, 3]
    expected = -math.log(8 * math.pi**2) - 0.5 * (t * t).sum(1) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(fm.source.log_prob(x1), expected)

    def contract(x, _t):  # translation velocity -t: divergence -3, rotation at rest
        rot, tr = se3.split(x)
        return se3.join(torch.zeros_like(rot), -tr, tangent=True)

    res = log_likelihood(contract, x1, fm.source, steps=20, manifold=se3)
    torch.testing.assert_close(res.delta_logp, torch.full((5,), 3.0, dtype=torch.float64))


#: a learning rate so large that the validation metrics never improve after the first evaluation
WRECK = {"steps": 400, "batch_size": 16, "eval_every": 2, "lr": 50.0, "ema": 0.0}


def test_early_stopping():
    x = _data("euclidean")
    res = fit(x, space="euclidean", patience=2, progress=False, **WRECK)
    assert res.stopped_early
    assert res.config["steps_done"] < 400
    assert res.history[-1][0] == res.config["steps_done"]
    assert res.config["steps_done"] <= res.best_step + 2 * 2


@pytest.mark.parametrize("space", ["sphere", "euclidean"])
def test_val_nll_is_recorded(space):
    res = fit(_data(space), space=space, val_nll_every=2, **{**FAST, "steps": 8, "eval_every": 2})
    assert [s for s, _ in res.val_nll] == [4, 8]
    assert all(math.isfinite(v) for _, v in res.val_nll)
    assert res.config["select"] == ("nll" if space == "sphere" else "loss")
    assert res.config["val_nll_every"] == 2


@pytest.mark.parametrize("space", ["torus", "euclidean"])
def test_select_nll_keeps_the_weights_of_the_lowest_validation_nll(space):
    """select="nll" measures the NLL at every evaluation and keeps the argmin's EMA weights."""
    x = _data(space, 64)
    # val_fraction=0 validates on all the points, so the kept model's NLL can be recomputed
    res = fit(
        x,
        space=space,
        select="nll",
        val_fraction=0.0,
        lr=3e-2,
        **FAST | {"steps": 30, "eval_every": 5},
    )
    steps = [s for s, _ in res.val_nll]
    assert steps == [h[0] for h in res.history] == [5, 10, 15, 20, 25, 30]
    best_step, best_nll = min(res.val_nll, key=lambda sv: sv[1])
    assert (res.best_step, res.best_val) == (best_step, best_nll)
    assert res.config["select"] == "nll" and res.config["best_step"] == best_step
    again = -float(res.fitted.log_prob(x, steps=20).mean())
    assert again == pytest.approx(best_nll, rel=1e-5, abs=1e-5)
    # the loss-selected run of the same seed keeps the weights of its lowest validation loss
    by_loss = fit(
        x,
        space=space,
        select="loss",
        val_fraction=0.0,
        lr=3e-2,
        **FAST | {"steps": 30, "eval_every": 5},
    )
    assert by_loss.best_val == min(h[2] for h in by_loss.history)


def test_select_last_and_nll_patience(tmp_path):
    x = _data("euclidean")
    res = fit(x, space="euclidean", select="last", **FAST)
    assert res.best_step == 12 and res.best_val == res.history[-1][2]
    # patience counts NLL evaluations: a learning rate that wrecks the model stops the run
    with pytest.warns(RuntimeWarning, match="no finite validation NLL"):
        res = fit(
            x,
            space="euclidean",
            select="nll",
            val_nll_every=2,
            patience=1,
            progress=False,
            **WRECK,
        )
    assert res.stopped_early and res.config["steps_done"] < 400
    assert res.config["steps_done"] == res.val_nll[-1][0]
    # a resumed run keeps the checkpoint's selection, and refuses another one
    run = tmp_path / "run"
    fit(x, space="euclidean", out=run, select="nll", **FAST)
    again = fit(x, space="euclidean", out=run, resume=True, **{**FAST, "steps": 18})
    assert again.config["select"] == "nll" and len(again.val_nll) == 3
    with pytest.raises(ValueError, match="select = 'loss' differs from the checkpoint's 'nll'"):
        fit(x, space="euclidean", out=run, resume=True, select="loss", **FAST)


def test_default_size_and_steps():
    res = fit(_data("torus"), space="torus", steps=1, batch_size=16, progress=False)
    assert (res.config["hidden"], res.config["depth"]) == (256, 4)
    assert res.config["n_val"] == 10 and res.config["n_train"] == 86
    from manifoldfm.api import _default_size, _default_steps

    assert _default_steps(86, 16) == 20000 and _default_steps(10**6, 256) == 50000
    assert _default_steps(100_000, 256) == 100 * 391
    assert _default_steps(86, 16, "functions") == 5000
    assert _default_steps(10**6, 16, "functions") == 20000
    assert _default_size(50_000) == (512, 4) and _default_size(100) == (256, 4)
    assert _default_size(100, "functions") == (32, 3)


def test_bad_arguments(tmp_path):
    x = _data("euclidean")
    with pytest.raises(ValueError, match="unknown space 'plane'"):
        fit(x, space="plane")
    with pytest.raises(ValueError, match="unknown coupling 'sinkhorn'"):
        fit(x, space="euclidean", coupling="sinkhorn")
    with pytest.raises(ValueError, match="batch_size"):
        fit(x, space="euclidean", batch_size=1)
    with pytest.raises(ValueError, match=r"so3 data must have shape \(N, 3, 3\)"):
        fit(x, space="so3")
    with pytest.raises(ValueError, match="resume=True needs"):
        fit(x, space="euclidean", resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(x, space="euclidean", out=tmp_path / "none", resume=True)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load(tmp_path)
    with pytest.raises(ValueError, match="unknown select 'best'"):
        fit(x, space="euclidean", select="best")
    with pytest.raises(ValueError, match="functions have no likelihood"):
        fit(_data("functions"), space="functions", select="nll")
    with pytest.raises(ValueError, match="functions have no likelihood"):
        fit(_data("functions"), space="functions", val_nll_every=1)
    with pytest.raises(ValueError, match="patience needs a selection metric"):
        fit(x, space="euclidean", select="last", patience=3)
    run = tmp_path / "run"
    fit(x, space="euclidean", out=run, steps=2, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        fit(_data("torus", 50), space="torus", out=run, resume=True, progress=False)


def test_cli_fit_sample_evaluate(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    lat = torch.rand(80, generator=g) * 60 - 30
    lon = torch.rand(80, generator=g) * 360 - 180
    csv = tmp_path / "points.csv"
    csv.write_text("lat_deg,lon_deg\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in zip(lat, lon)))
    run = tmp_path / "run"
    argv = [
        "fit",
        str(csv),
        "--space",
        "sphere",
        "--out",
        str(run),
        "--steps",
        "8",
        "--batch-size",
        "16",
        "--eval-every",
        "4",
        "--coupling",
        "ot",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "trained 8 steps" in capsys.readouterr().out
    argv_nll = [*argv[:5], str(tmp_path / "run_nll"), *argv[6:], "--select", "nll"]
    assert main(argv_nll) == 0
    assert "best validation NLL" in capsys.readouterr().out
    assert json.loads((tmp_path / "run_nll" / "config.json").read_text())["select"] == "nll"
    for name in ("s.csv", "s.npy"):
        out = tmp_path / name
        assert main(["sample", str(run), "-n", "30", "--out", str(out), "--steps", "3"]) == 0
        assert out.with_suffix(".png").stat().st_size > 0
        info = json.loads(out.with_suffix(".json").read_text())
        assert info["n"] == 30 and info["space"] == "sphere" and info["steps"] == 3
        cols = [0, 1, 2] if name.endswith(".npy") else None
        pts = read_points(out, space="sphere", columns=cols).points
        assert pts.shape == (30, 3)
        _on_space("sphere", pts)
    metrics = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                str(run),
                str(csv),
                "--out",
                str(metrics),
                "--steps",
                "3",
                "--nll-steps",
                "3",
            ]
        )
        == 0
    )
    m = json.loads(metrics.read_text())
    assert m["n_data"] == 80 and math.isfinite(m["nll"]) and math.isfinite(m["w2_geodesic"])
    assert metrics.with_suffix(".png").stat().st_size > 1000  # samples over the data
    with pytest.raises(SystemExit):
        main(["fit", str(csv), "--space", "plane", "--out", str(run)])
    with pytest.raises(SystemExit):
        main(["fit", str(csv), "--space", "sphere", "--out", str(run), "--coupling", "x"])
    with pytest.raises(ValueError, match=r"\.npy or \.csv"):
        main(["sample", str(run), "-n", "3", "--out", str(tmp_path / "s.txt"), "--steps", "1"])


@pytest.mark.parametrize("space", ["torus", "so3", "se3", "euclidean", "functions"])
def test_cli_csv_round_trip(space, tmp_path):
    """Samples written as CSV read back by read_points as the same points."""
    from manifoldfm.cli import plot_points, write_points

    x = _data(space, 10)
    f = tmp_path / "p.csv"
    write_points(f, x, space)
    torch.testing.assert_close(read_points(f, space=space).points, x, atol=1e-8, rtol=1e-8)
    np.save(tmp_path / "p.npy", x.numpy())
    plot_points(tmp_path / "p.png", x, space)
    assert (tmp_path / "p.png").stat().st_size > 0
    plot_points(tmp_path / "q.png", x, space, reference=x.flip(0), title="over data")
    assert (tmp_path / "q.png").stat().st_size > 0


def test_fit_page_select_snippet_runs(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs/pages/api/fit.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "select=" in b)
    exec(compile(snippet, "fit.md select snippet", "exec"), {})
    assert capsys.readouterr().out.strip() == "True"


def test_pose_plots_show_angles_axes_and_translations(tmp_path, monkeypatch):
    """so3: angle histogram + map of rotation axes; se3 adds the translations in 3-D with arrows."""
    import matplotlib.figure

    from manifoldfm.cli import plot_points

    seen = {}
    original = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        seen["axes"] = [(ax.name, len(ax.collections)) for ax in self.axes]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    x = _data("se3", 50)
    plot_points(tmp_path / "r.png", x[:, :3, :3], "so3", reference=x[:10, :3, :3])
    assert [name for name, _ in seen["axes"]] == ["rectilinear", "mollweide"]
    assert seen["axes"][1][1] == 2  # axes of the data and of the samples
    plot_points(tmp_path / "p.png", x, "se3", reference=x[:10])
    assert [name for name, _ in seen["axes"]] == ["rectilinear", "mollweide", "3d"]
    assert seen["axes"][2][1] == 3  # two point clouds and the arrows of the poses


def test_fourier_bands_are_recorded_and_rebuilt(tmp_path):
    x = _data("torus")
    run = tmp_path / "run"
    res = fit(x, space="torus", out=run, fourier=3, **FAST)
    assert res.config["fourier"] == 3
    assert res.model.features.fourier == 3 and res.model.features.out_features == 16
    fm = load(run)
    assert fm.model.features.fourier == 3
    t = torch.rand(5, generator=torch.Generator().manual_seed(0))
    z = torch.rand(5, 2, generator=torch.Generator().manual_seed(1)) * 6.0
    torch.testing.assert_close(fm.model(z, t), res.model(z, t))
    again = fit(x, space="torus", out=run, resume=True, **{**FAST, "steps": 18})
    assert again.config["fourier"] == 3
    with pytest.raises(ValueError, match="fourier = 1 differs from the checkpoint's 3"):
        fit(x, space="torus", out=run, resume=True, fourier=1, **FAST)
    with pytest.raises(ValueError, match="fourier must be an integer >= 0"):
        fit(x, space="torus", fourier=-1)
    with pytest.raises(ValueError, match="not to functions"):
        fit(_data("functions"), space="functions", fourier=2)


def test_select_nll_measures_the_last_step_and_never_keeps_the_initial_weights():
    x = _data("euclidean")
    # fewer evaluations than val_nll_every: the NLL is still measured at the last step
    res = fit(x, space="euclidean", select="nll", val_nll_every=7, **{**FAST, "eval_every": 2})
    assert [s for s, _ in res.val_nll] == [12] and res.best_step == 12
    # a diverged flow: every NLL is +inf, the run keeps its last EMA weights and warns
    with pytest.warns(RuntimeWarning, match="no finite validation NLL"):
        bad = fit(x, space="euclidean", select="nll", lr=50.0, ema=0.0, **FAST)
    assert all(v == math.inf for _, v in bad.val_nll)
    assert bad.best_step == 12 and bad.config["best_step"] == 12


def test_resuming_a_checkpoint_from_before_select_and_fourier(tmp_path):
    x = _data("torus")
    run = tmp_path / "run"
    fit(x, space="torus", out=run, select="loss", **FAST)
    cfg_file = run / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for key in ("select", "fourier", "val_nll_every"):
        del cfg[key]
    cfg_file.write_text(json.dumps(cfg))
    for kwargs in ({"select": "nll"}, {"fourier": 8}):
        with pytest.raises(ValueError, match="differs from the checkpoint"):
            fit(x, space="torus", out=run, resume=True, **kwargs, **FAST)
    res = fit(x, space="torus", out=run, resume=True, **{**FAST, "steps": 18})
    assert res.config["select"] == "loss" and res.config["fourier"] == 0


def test_default_selection_and_bands_depend_on_space_and_dimension():
    five = torch.rand(40, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = fit(five * 6.0, space="torus", steps=2, batch_size=8, progress=False)
    assert res.config["select"] == "loss"  # a 5-torus: exact divergences cost more
    assert res.config["fourier"] == 0
    with pytest.raises(ValueError, match="bounded coordinates"):
        fit(_data("euclidean"), space="euclidean", fourier=2)
    assert fit(_data("euclidean"), space="euclidean", fourier=0, steps=2).config["fourier"] == 0


def test_resume_keeps_the_split_whatever_seed_and_fraction_it_is_given(tmp_path, monkeypatch):
    # the split is made before the checkpoint's settings are read: it must still be the
    # checkpoint's (its seed and n_val), or validation points would leak into training
    import manifoldfm.api as api

    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    real = api._standardise

    def spy(points, space, norm):
        seen.append(points.clone())
        return real(points, space, norm)

    monkeypatch.setattr(api, "_standardise", spy)
    out = tmp_path / "run"
    kw = {"space": "euclidean", "out": out, "batch_size": 8, "progress": False}
    api.fit(x, steps=4, seed=3, val_fraction=0.25, **kw)
    first = {tuple(r.tolist()) for r in seen[0]}
    seen.clear()
    api.fit(x, steps=6, resume=True, val_fraction=0.1, **kw)  # seed left at its default
    assert {tuple(r.tolist()) for r in seen[0]} == first


def test_sample_counts_numpy_integers_and_the_cli_refuses_zero_before_loading(tmp_path, capsys):
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fit(x, space="euclidean", out=tmp_path / "run", steps=2, batch_size=8, progress=False)
    assert load(tmp_path / "run").sample(np.int64(3), steps=2).shape == (3, 2)
    with pytest.raises(SystemExit) as exc:
        main(["sample", str(tmp_path / "nowhere"), "-n", "0", "--out", str(tmp_path / "s.npy")])
    assert exc.value.code == 2 and "-n must be >= 1, got 0" in capsys.readouterr().err


def test_evaluate_refuses_a_png_for_its_metrics(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path), str(tmp_path / "d.csv"), "--out", str(tmp_path / "m.png")])
    assert exc.value.code == 2 and "names the metrics file" in capsys.readouterr().err
