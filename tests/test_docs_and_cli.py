"""The README tour, the examples and the command line run as documented."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from manifoldfm.cli import main, run_moons_demo

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_commands_are_the_documented_ones():
    text = (ROOT / "README.md").read_text()
    for cmd in ('pip install -e ".[dev]"', "manifoldfm demo moons", "pytest"):
        assert f"\n{cmd}\n" in text, cmd


def test_readme_tour_runs(capsys):
    tour, manifold_tour = _python_blocks((ROOT / "README.md").read_text())
    assert "range(2000)" in tour
    namespace: dict = {}
    exec(compile(tour.replace("range(2000)", "range(5)"), "README tour", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert float(printed[0].removeprefix("tensor(").rstrip(",)")) > 0 and printed[-1] == "200"
    # the manifold snippet continues the tour's session (torch, mfm, g)
    exec(compile(manifold_tour, "README manifold tour", "exec"), namespace)
    assert namespace["sol"].x.shape == (8, 3) and namespace["nll"].shape == (8,)
    assert torch.isfinite(namespace["nll"]).all() and torch.isfinite(namespace["loss"])


def test_cli_demo_smoke(tmp_path, capsys):
    assert (
        main(["demo", "moons", "--smoke", "--out", str(tmp_path), "--coupling", "independent"]) == 0
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["coupling"] == "independent" and metrics["nfe"] == 20
    assert metrics["w2"] > 0 and (tmp_path / "moons.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_cli_bad_arguments():
    with pytest.raises(SystemExit):
        main(["demo", "moons", "--coupling", "sinkhorn"])
    with pytest.raises(ValueError, match="coupling"):
        run_moons_demo(coupling="nope", steps=1)
    with pytest.raises(ValueError, match="positive"):
        run_moons_demo(steps=0)


EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_smoke(script, tmp_path):
    spec = importlib.util.spec_from_file_location(f"example_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    outputs = {p.suffix for p in tmp_path.iterdir()}
    assert {".png", ".json"} <= outputs
