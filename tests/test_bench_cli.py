"""`posefeed bench`: report assembly, rendering, and one tiny end-to-end run of every runner."""
from __future__ import annotations

import io
import json

import pytest
from typer.testing import CliRunner

from posefeed.bench.report import plot, render, write_json
from posefeed.bench.suite import BenchConfig, assemble, machine_info, plan

TOP_KEYS = ("posefeed", "cached", "reference", "decode_only", "train")


def _run(sps, cpu, **kw):
    return {"samples_per_s": sps, "cpu_s_per_sample": cpu, "peak_rss_mb": 100.0,
            "peak_pss_mb": 90.0, "gpu_mem_peak_mb": None, "startup_s": 1.0, "batches": 5,
            "wall_s": 1.0, "cores_busy": 2.0, "error": None, **kw}


def _fake_report(train=True):
    runs = {
        "reference": _run(100.0, 0.02),
        "posefeed": _run(150.0, 0.010),
        "posefeed_cached_host": _run(400.0, 0.004),
        "decode_dali": _run(600.0, 0.003, decoder="dali-cpu"),
        "decode_cv2": _run(500.0, 0.004, decoder="cv2"),
        "posefeed_no_targets": _run(160.0, 0.009),
        "posefeed_no_aug": _run(200.0, 0.006),
    }
    if train:
        runs["train_appetite"] = _run(64.0, 0.03, steps_per_s=1.0, model="m", parameters=10)
        runs["train_posefeed"] = _run(48.0, 0.04, steps_per_s=0.75)
        runs["train_reference"] = {"error": "boom"}
    cfg = BenchConfig(data="x.json", threads=2, train=train)
    return assemble(cfg, runs, machine_info())


def test_plan_follows_flags():
    assert plan(BenchConfig()) == ["reference", "posefeed", "posefeed_cached_host", "decode_dali",
                                   "decode_cv2", "posefeed_no_targets", "posefeed_no_aug"]
    gpu = plan(BenchConfig(device="gpu", stages=False, train=True))
    assert "posefeed_cached_device" in gpu and "posefeed_no_aug" not in gpu
    assert gpu[-3:] == ["train_appetite", "train_posefeed", "train_reference"]
    assert "posefeed_cached_host" not in plan(BenchConfig(cache=False))


def test_assemble_keys_ratios_stages_train():
    rep = _fake_report()
    for key in TOP_KEYS:
        assert "samples_per_s" in rep[key] and "cpu_s_per_sample" in rep[key]
    m = rep["machine"]
    assert {"cpu", "cores", "gpu", "date"} <= set(m) and m["cores"] >= 1
    assert rep["ratios"]["posefeed"]["samples_per_s"] == pytest.approx(1.5)
    assert rep["ratios"]["posefeed"]["cpu_s_per_sample"] == pytest.approx(0.5)
    assert rep["cached"]["variant"] == "host" and rep["ratios"]["cached"]["samples_per_s"] == pytest.approx(4.0)
    assert rep["decode_only"]["samples_per_s"] == 600.0 and rep["decode_only"]["decoder"] == "dali-cpu"
    costs = rep["stages"]["cost_ms_per_sample"]
    assert costs["targets"]["cpu_ms_per_sample"] == pytest.approx(1.0)
    assert costs["augmentation"]["cpu_ms_per_sample"] == pytest.approx(3.0)
    assert costs["crop_normalise_feed"]["cpu_ms_per_sample"] == pytest.approx(3.0)
    assert costs["decode"]["cpu_ms_per_sample"] == pytest.approx(3.0)
    t = rep["train"]
    assert t["ran"] and t["posefeed"]["fraction_of_appetite"] == pytest.approx(0.75)
    assert t["reference"]["samples_per_s"] is None and t["samples_per_s"] == 48.0
    assert _fake_report(train=False)["train"] == {"samples_per_s": None, "cpu_s_per_sample": None,
                                                   "ran": False}


def test_render_json_and_plot(tmp_path):
    from rich.console import Console

    rep = _fake_report()
    buf = io.StringIO()
    render(rep, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "posefeed" in text and "1.50x" in text and "75%" in text and "goal 1.3x" in text
    p = write_json(rep, tmp_path / "r.json")
    assert set(TOP_KEYS) <= set(json.loads(p.read_text()))
    png = plot(rep, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_targets(tmp_path):
    from posefeed.cli import _register, app

    _register()
    out = tmp_path / "t.json"
    res = CliRunner().invoke(app, ["bench", "--targets", "--iters", "2", "-b", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["targets"]
    assert rows and all(r["ms_per_batch"] > 0 for r in rows)
    assert any(r["codec"] == "SimCC" for r in rows)


def test_cli_end_to_end_every_runner(coco_json, tmp_path):
    """Every runner in its own process, one timed batch each: all produce batches of the
    right shapes and positive numbers (no timing assertions)."""
    from posefeed.cli import _register, app

    _register()
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    res = CliRunner().invoke(app, ["bench", str(coco_json), "--iters", "1", "--warmup", "1",
                                   "-b", "4", "-j", "1", "--train", "--json", str(js),
                                   "--plot", str(png)])
    assert res.exit_code == 0, res.output
    rep = json.loads(js.read_text())
    for key in TOP_KEYS:
        assert rep[key]["samples_per_s"] and rep[key]["samples_per_s"] > 0, (key, rep[key])
        assert rep[key]["cpu_s_per_sample"] is not None
    runs = rep["runs"]
    assert set(runs) == set(plan(BenchConfig(train=True)))
    for name, run in runs.items():
        assert run["error"] is None, (name, run.get("error"), run.get("log_tail"))
        assert run["samples_per_s"] > 0 and run["batches"] == 1
    full = {"image": [4, 3, 256, 192], "keypoints": [4, 1, 17, 3], "x_labels": [4, 17, 384],
            "y_labels": [4, 17, 512], "keypoint_weight": [4, 17], "affine": [4, 2, 3]}
    for name in ("reference", "posefeed", "posefeed_cached_host"):
        shapes = runs[name]["shapes"]
        for k, v in full.items():
            assert shapes[k] == v, (name, k, shapes)
    assert runs["posefeed_no_targets"]["shapes"]["image"] == [4, 3, 256, 192]
    assert "x_labels" not in runs["posefeed_no_targets"]["shapes"]
    assert rep["train"]["appetite"]["fraction_of_appetite"] == pytest.approx(1.0)
    assert rep["train"]["posefeed"]["steps_per_s"] > 0
    assert png.exists() and png.stat().st_size > 1000


def test_median_run_keeps_middle_and_repeats():
    from posefeed.bench.suite import _median_run

    runs = [_run(1.0, 0.1), _run(3.0, 0.1), {"error": "x"}, _run(2.0, 0.1)]
    m = _median_run(runs)
    assert m["samples_per_s"] == 2.0 and m["repeats"] == [1.0, 3.0, None, 2.0]
    assert _median_run([{"error": "x"}])["error"] == "x"
