"""The tutorial pages run as documented: their code blocks, in order, in one session.

Each page's ``python`` blocks are executed in one namespace (in a temporary working directory),
every ``text`` block that directly follows a ``python`` block must be exactly what that block
printed, and a few of the objects the page leaves behind are checked.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "pages" / "tutorials"

_FENCE = re.compile(r"```(python|text|bash)\n(.*?)```", flags=re.S)


def _python_blocks(text: str) -> list[tuple[str, str | None]]:
    """``(code, expected_output)`` per ``python`` block; the output is the ``text`` block right after it."""
    out: list[tuple[str, str | None]] = []
    last_end = None  # end of the previous fence when it was a python block
    for m in _FENCE.finditer(text):
        kind, body = m.group(1), m.group(2)
        follows = last_end is not None and text[last_end : m.start()].strip() == ""
        if kind == "python":
            out.append((body, None))
        elif kind == "text" and follows:
            out[-1] = (out[-1][0], body)
        last_end = m.end() if kind == "python" else None
    return out


def _run_page(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    blocks = _python_blocks((TUTORIALS / name).read_text())
    assert blocks, f"{name} has no python blocks"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"tutorial_{Path(name).stem}"}
    default_dtype = torch.get_default_dtype()
    try:
        for k, (code, expected) in enumerate(blocks):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(code, f"{name}, block {k + 1}", "exec"), namespace)
            if expected is not None:
                assert buf.getvalue() == expected, (
                    f"{name}, block {k + 1} printed {buf.getvalue()!r}, the page shows {expected!r}"
                )
    finally:
        torch.set_default_dtype(default_dtype)
    return namespace


def test_fence_parser_pairs_outputs_with_their_block():
    text = "```python\nprint(1)\n```\n\n```text\n1\n```\n\n```python\nx = 2\n```\n"
    assert _python_blocks(text) == [("print(1)\n", "1\n"), ("x = 2\n", None)]


def test_poses_and_frames(tmp_path, monkeypatch):
    ns = _run_page("poses-and-frames.md", tmp_path, monkeypatch)
    se3 = ns["se3"]
    # generated frames: rigid motions, finite, of the documented shape
    x = ns["sol"].x
    assert x.shape == (4, ns["N"], 4, 4) and torch.isfinite(x).all()
    r = x[..., :3, :3]
    assert torch.allclose(r.mT @ r, torch.eye(3, dtype=x.dtype).expand_as(r), atol=1e-8)
    assert torch.equal(
        x[..., 3, :], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=x.dtype).expand(4, ns["N"], 4)
    )
    # data frames rebuilt from atoms are on SE(3) and centred
    data = ns["data"]
    assert se3.check_point_on_manifold(data, atol=1e-8, rtol=0.0)
    assert data[..., :3, 3].mean(dim=1).abs().max() < 1e-10
    # Kabsch: the aligned partners' translations are at least as close as the unaligned ones
    gen = torch.Generator().manual_seed(1)
    pair = ns["coupling"](ns["frame_source"](16, gen), data[:16], generator=gen)
    aligned = ns["cost"].align(pair.x1, pair.x0)
    assert se3.check_point_on_manifold(aligned, atol=1e-8, rtol=0.0)

    def gap(y):
        return (y[..., :3, 3] - pair.x0[..., :3, 3]).square().sum((-2, -1))

    assert (gap(aligned) <= gap(pair.x1) + 1e-9).all()
    # single poses: quaternions back out, unit norm; the fitted run samples poses
    assert torch.allclose(ns["q"].norm(dim=-1), torch.ones(32, dtype=ns["q"].dtype))
    assert torch.isfinite(ns["loss"])
    assert (ns["folder"] / "run" / "model.pt").exists()


def test_functions(tmp_path, monkeypatch):
    ns = _run_page("functions.md", tmp_path, monkeypatch)
    n = ns["n"]
    # samples on the training grid and on the 2x finer grid, finite
    assert ns["generated"].shape == (256, 1, n) and torch.isfinite(ns["generated"]).all()
    assert ns["fine"].shape == (256, 1, 2 * n) and torch.isfinite(ns["fine"]).all()
    # the FNO gives nearly the same output for one function at two resolutions
    assert float(ns["gap"]) < 1e-2
    # quadrature weights of the periodic grid: a probability vector
    assert torch.allclose(ns["weights"].sum(), torch.tensor(1.0))
    # conditional samples pass through the observations (exactly with CondOT)
    out, observed, truth = ns["out"], ns["observed"], ns["truth"]
    assert out.x.shape == (16, n) and torch.isfinite(out.x).all()
    assert torch.allclose(out.x[:, observed], truth[observed].expand(16, -1), atol=1e-5)
    # the statistics are finite numbers; the irregular-point model kept its layout
    assert all(v is None or v == v for v in ns["stats"].as_dict().values())
    assert ns["at_sensors"].shape == (8, 24, 1) and torch.isfinite(ns["at_sensors"]).all()
    assert ns["fine_fields"].shape == (8, 1, 32, 32) and torch.isfinite(ns["fine_fields"]).all()


def test_gdl_model(tmp_path, monkeypatch):
    ns = _run_page("gdl-model.md", tmp_path, monkeypatch)
    # point clouds: guided samples of the documented shape, centred, finite
    clouds = ns["clouds"]
    assert clouds.shape == (16, 6, 3) and torch.isfinite(clouds).all()
    assert clouds.mean(dim=1).abs().max() < 1e-5
    # the user's network is rotation-equivariant (checked again with another rotation)
    model, so3 = ns["model"], ns["mfm"].SO3()
    gen = torch.Generator().manual_seed(3)
    q = so3.random_uniform(generator=gen)
    x, t = torch.randn(2, 6, 3, generator=gen), torch.rand(2, generator=gen)
    with torch.no_grad():
        assert torch.allclose(model(x @ q.mT, t), model(x, t) @ q.mT, atol=1e-5)
    # mixed state: generated points on the product manifold
    state, mixed = ns["state"], ns["mixed"]
    assert mixed.shape == (64, 7) and torch.isfinite(mixed).all()
    assert state.check_point_on_manifold(mixed, atol=1e-5, rtol=0.0)
    # likelihoods: one finite value per held-out point
    res = ns["res"]
    assert res.log_prob.shape == (32,) and torch.isfinite(res.log_prob).all()
    # the geoopt parameter stayed on the sphere; the custom manifold is usable
    assert abs(float(ns["mean_direction"].norm()) - 1.0) < 1e-5
    box = ns["box"]
    y = box.expmap(torch.tensor([4.5, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(y, torch.tensor([0.5, 0.0, 0.0]))
