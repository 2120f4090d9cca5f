"""``posefeed inspect``: human and JSON output, exit codes, --deep image checks."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from posefeed.cli.inspect import inspect_command


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    """An app with only ``inspect`` as a subcommand (as ``posefeed inspect``)."""
    app = typer.Typer(add_completion=False)
    app.callback()(lambda: None)
    app.command("inspect")(inspect_command)
    return app


def run(cli, *args: str):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def test_dlc_project_json(cli, dlc_project):
    res = run(cli, dlc_project, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    with open(dlc_project / "labeled-data/m4s1/CollectedData_Pranav.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert out["frames"] == out["instances"] == len(rows) - 3 == 116
    assert out["bodyparts"] == list(dict.fromkeys(rows[1][1:]))
    assert out["problems"] == []
    assert out["labelled_fraction"] == {b: 1.0 for b in out["bodyparts"]}
    assert out["image_sizes"] == {"640x480": 116}
    assert out["flip_pairs"] == [["leftear", "rightear"]]


def test_dlc_project_human(cli, dlc_project):
    res = run(cli, dlc_project)
    assert res.exit_code == 0, res.output
    for text in ("frames: 116", "instances: 116", "snout", "tailbase", "leftear<->rightear",
                 "640x480", "no problems found"):
        assert text in res.stdout


def test_coco_json_labelled_fraction(cli, coco_json):
    res = run(cli, coco_json, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    raw = json.loads(coco_json.read_text())
    usable = [a for a in raw["annotations"]
              if not a["iscrowd"] and any(v > 0 for v in a["keypoints"][2::3])]
    assert out["instances"] == len(usable) == 12 and out["frames"] == 4
    names = raw["categories"][0]["keypoints"]
    for k, name in enumerate(names):
        labelled = sum(a["keypoints"][3 * k + 2] > 0 for a in usable) / len(usable)
        assert out["labelled_fraction"][name] == pytest.approx(labelled, abs=1e-6)
    assert len(out["flip_pairs"]) == 8


def copy_coco(coco_json: Path, tmp_path: Path) -> Path:
    for f in coco_json.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / coco_json.name


def test_invalid_data_exits_1_with_the_error(cli, coco_json, tmp_path):
    path = copy_coco(coco_json, tmp_path)
    (tmp_path / "000000040083.jpg").unlink()
    (tmp_path / "000000197388.jpg").unlink()
    res = run(cli, path)
    assert res.exit_code == 1
    assert "000000040083.jpg" in res.stderr and "000000197388.jpg" in res.stderr
    assert str(path) in res.stderr
    res = run(cli, path, "--json")
    assert res.exit_code == 1
    err = json.loads(res.stdout)
    assert err["file"] == str(path) and err["field"] == "image" and len(err["problems"]) == 2
    assert run(cli, tmp_path / "nope.json").exit_code == 1


def test_deep_finds_truncated_images(cli, coco_json, tmp_path):
    path = copy_coco(coco_json, tmp_path)
    res = run(cli, path, "--deep", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images_checked"] == 4
    for name in ("000000000785.jpg", "000000196141.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 3])     # header intact, data cut
    res = run(cli, path, "--deep", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert len(out["image_problems"]) == 2
    assert any("000000000785.jpg" in p for p in out["image_problems"])
    assert any("000000196141.jpg" in p for p in out["image_problems"])
    res = run(cli, path, "--deep")
    assert res.exit_code == 1 and "2 problems" in res.stdout


def test_deep_check_size_mismatch_and_zero_bytes(tmp_path):
    from posefeed.datasets import deep_check

    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    found = deep_check(tmp_path, ["a.png", "b.png", "c.png"], {"a.png": (31, 20)})
    assert len(found) == 3
    assert "a.png" in found[0] and "30x20" in found[0] and "31x20" in found[0]
    assert "b.png" in found[1] and "zero-byte" in found[1]
    assert "c.png" in found[2] and "missing" in found[2]


def test_synthetic_into_out_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFEED_CACHE", str(tmp_path / "cache"))
    from posefeed.datasets import dataset_path

    # the default set (200 frames); the CLI must reuse it, not generate it again
    coco = dataset_path("synthetic", out=tmp_path / "syn")
    stamp = coco.stat().st_mtime_ns
    res = run(cli, "synthetic", "--out", tmp_path / "syn", "--json")
    assert res.exit_code == 0, res.output
    assert coco.stat().st_mtime_ns == stamp
    assert not (tmp_path / "cache").exists()
    out = json.loads(res.stdout)
    raw = json.loads(coco.read_text())
    assert out["frames"] == len(raw["images"]) == 200
    assert out["instances"] == len(raw["annotations"])
    assert len(out["bodyparts"]) == 17 and len(out["flip_pairs"]) == 7


def test_registered_in_the_posefeed_app(coco_json):
    from posefeed.cli import _register, app

    _register()
    res = CliRunner().invoke(app, ["inspect", str(coco_json), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["instances"] == 12


def coco_with_missing_images(tmp_path: Path, missing: int) -> Path:
    """A 17-keypoint COCO file over one real 40x30 image and ``missing`` absent ones."""
    Image.new("RGB", (40, 30)).save(tmp_path / "real.png")
    names = ["real.png"] + [f"gone_{i:03d}.png" for i in range(missing)]
    kp = [10.0, 10.0, 2] + [0, 0, 0] * 16
    raw = {"images": [{"id": i, "file_name": n, "width": 40, "height": 30}
                      for i, n in enumerate(names)],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "bbox": [5, 5, 20, 20], "area": 400.0, "num_keypoints": 1,
                            "keypoints": kp} for i in range(len(names))],
           "categories": [{"id": 1, "name": "person", "skeleton": [],
                           "keypoints": [f"k{j}" for j in range(17)]}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(raw))
    return path


def test_many_problems_are_cut_after_twenty_lines_but_kept_in_full(cli, tmp_path):
    from posefeed.datasets import AnnotationError, load_coco

    path = coco_with_missing_images(tmp_path, 29)
    res = run(cli, path, "--on-bad-image", "skip")
    assert res.exit_code == 1
    listed = [ln for ln in res.stdout.splitlines() if ln.startswith("  - ")]
    assert len(listed) == 20 and "gone_000.png" in listed[0] and "gone_019.png" in listed[-1]
    assert "... and 9 more" in res.stdout and "gone_020.png" not in res.stdout
    res = run(cli, path, "--on-bad-image", "skip", "--max-problems", "0")
    assert sum(ln.startswith("  - ") for ln in res.stdout.splitlines()) == 29
    assert "more" not in res.stdout
    out = json.loads(run(cli, path, "--on-bad-image", "skip", "--json").stdout)
    assert out["skipped_images"] == 29
    assert sum("gone_" in p for p in out["problems"]) == 29
    # the raise path: the error's first lines and the count on stderr, all of them in --json
    res = run(cli, path)
    assert res.exit_code == 1 and "gone_000.png" in res.stderr and "more lines" in res.stderr
    assert "gone_028.png" not in res.stderr
    err = json.loads(run(cli, path, "--json").stdout)
    assert sum("gone_" in p for p in err["problems"]) == 29
    with pytest.raises(AnnotationError) as e:          # the Python error keeps every problem
        load_coco(path)
    assert len(e.value.problems) == 29 and "gone_028.png" in str(e.value)
