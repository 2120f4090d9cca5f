"""``posefeed show`` writes a grid PNG of augmented samples."""
from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from posefeed.cli import _register, app


def test_show_writes_grid(coco_json, tmp_path):
    _register()
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(app, ["show", str(coco_json), "--out", str(out), "--n", "4",
                                   "--device", "cpu", "--width", "96", "--height", "128"])
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_show_frame_mode_stage2(dlc_project, tmp_path):
    _register()
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(app, ["show", str(dlc_project), "--out", str(out), "--n", "2",
                                   "--mode", "frame", "--stage", "2", "--device", "cpu",
                                   "--width", "128", "--height", "96"])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000
