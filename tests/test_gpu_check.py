"""``make gpu-check`` on a machine without a GPU: it plans every step, runs what needs no GPU,
and says for each skipped step that (and why) it was skipped."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_skips_gpu_steps_with_the_reason(tmp_path):
    mod = load()
    args = argparse.Namespace(seconds=1.0)
    steps = mod.plan(args, False, "no CUDA here", tmp_path)
    names = [s["name"] for s in steps]
    assert any("--device gpu --train (synthetic JPEG)" in n for n in names)
    assert any("openfield PNG" in n for n in names) and any("codec" in n for n in names)
    gpu_steps = [s for s in steps if s["needs_gpu"]]
    assert gpu_steps and all("no CUDA here" in s["skip"] or "not on this machine" in s["skip"]
                             for s in gpu_steps)
    assert all("skip" not in s for s in steps if not s["needs_gpu"])
    bench = next(s for s in steps if "synthetic JPEG" in s["name"])
    assert {"--device", "gpu", "--train", "--cache"} <= set(bench["cmd"])


def test_report_says_what_was_skipped(tmp_path, monkeypatch):
    mod = load()
    monkeypatch.setattr(mod, "gpu_status", lambda: (False, "no CUDA here"))
    ran = []
    monkeypatch.setattr(mod, "run", lambda cmd, timeout: ran.append(cmd) or
                        {"status": "ok", "seconds": 0.1, "command": " ".join(cmd),
                         "output_tail": ""})
    assert mod.main(["--out", str(tmp_path)]) == 0
    assert len(ran) == 2                                 # GPU tests (they skip) + host cost
    md = (tmp_path / "gpu-check.md").read_text()
    assert md.count("| skipped: ") == 3 and "skipped: needs a GPU: no CUDA here" in md
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["gpu"].startswith("none")
