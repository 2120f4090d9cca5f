"""The command line on bad input, run as a user would run it: a truncated JPEG, a bad option
value, an impossible setting. Every command answers with one paragraph naming the file / row /
setting and exit code 2 (1 for ``bench`` when a runner failed), never a traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posefeed.cli import _register, app

_register()

BAD_JPEG = "000000040083.jpg"


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def truncated_coco(coco_json, tmp_path) -> Path:
    """coco-mini with one JPEG cut to a third of its bytes (its header still reads)."""
    folder = tmp_path / "coco"
    shutil.copytree(coco_json.parent, folder)
    f = folder / BAD_JPEG
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    return folder / coco_json.name


def assert_message(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), \
        repr(res.exception)
    for n in needles:
        assert n in res.output, (n, res.output)


def test_show_on_a_truncated_jpeg_names_the_file_and_exits_2(truncated_coco, tmp_path):
    res = invoke("show", truncated_coco, "--out", tmp_path / "g.png", "--n", "4",
                 "--device", "cpu")
    assert_message(res, 2, BAD_JPEG, "table row", "error:")
    assert not (tmp_path / "g.png").exists()


def test_show_skips_a_truncated_jpeg_when_asked(truncated_coco, tmp_path):
    res = invoke("show", truncated_coco, "--out", tmp_path / "g.png", "--n", "4",
                 "--device", "cpu", "--on-bad-image", "skip")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_on_a_truncated_jpeg_names_the_file_and_exits_2(truncated_coco, tmp_path):
    res = invoke("train", truncated_coco, "--out", tmp_path / "run", "--epochs", "1",
                 "--batch-size", "2", "--device", "cpu", "--input-size", "64x64",
                 "--train-fraction", "0.5")
    assert_message(res, 2, BAD_JPEG, "error:")


@pytest.mark.parametrize("args, needle", [
    (["--guard", "sometimes"], "--guard"),
    (["--on-bad-image", "ignore"], "--on-bad-image"),
    (["--codec", "vitpose"], "--codec"),
    (["--input-size", "0x10"], "0x10"),
    (["--batch-size", "0"], "batch_size"),
    (["--train-fraction", "1.5"], "train_fraction"),
    (["--epochs", "0"], "epochs"),
])
def test_train_bad_arguments_exit_2_naming_the_argument(coco_json, tmp_path, args, needle):
    res = invoke("train", coco_json, "--out", tmp_path / "run", "--device", "cpu", *args)
    assert_message(res, 2, needle)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_exposes_the_trainer_knobs(coco_json, tmp_path, monkeypatch):
    """--accumulate / --no-amp / --grad-clip / --guard / --warmup-iters reach TrainConfig."""
    from posefeed.trainers import recipe

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(model, loader, cfg, **kw):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(recipe, "Trainer", fake_trainer)
    res = invoke("train", coco_json, "--out", tmp_path / "run", "--device", "cpu",
                 "--batch-size", "2", "--input-size", "64x64", "--train-fraction", "0.5",
                 "--accumulate", "3", "--no-amp", "--grad-clip", "0", "--guard", "rollback",
                 "--warmup-iters", "7")
    assert isinstance(res.exception, Stop), res.output
    cfg = seen["cfg"]
    assert (cfg.accumulate, cfg.amp, cfg.grad_clip, cfg.guard.action, cfg.warmup_iters) == \
        (3, False, None, "rollback", 7)


def test_bench_exits_nonzero_when_a_runner_failed(coco_json, tmp_path):
    """Every JPEG truncated: posefeed's runners stop with BadImageError (on_bad_image
    "raise"), the reference loader (OpenCV decodes what is there) runs; the command must not
    report the survivors as a complete benchmark with exit code 0."""
    folder = tmp_path / "coco"
    shutil.copytree(coco_json.parent, folder)
    for f in folder.glob("*.jpg"):
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    js = tmp_path / "b.json"
    res = invoke("bench", folder / coco_json.name, "--iters", "1", "--warmup", "1", "-b", "2",
                 "-j", "1", "--no-cache", "--no-stages", "--json", js)
    assert res.exit_code == 1, res.output
    assert "runners failed" in res.output and "BadImageError" in res.output
    runs = json.loads(js.read_text())["runs"]
    assert runs["posefeed"]["error"] and not runs["reference"]["error"]


def test_inspect_and_show_take_a_coco_category(coco_json, tmp_path):
    """A COCO file whose first keypoint category is an unused 'dog': picked by --category,
    refused naming the categories when two have annotations."""
    data = json.loads(coco_json.read_text())
    person = data["categories"][0]
    dog = dict(person, id=99, name="dog", keypoints=["nose", "tail"], skeleton=[[1, 2]])
    data["categories"] = [dog, person]
    extra = dict(data["annotations"][0], id=10_000, category_id=99,
                 keypoints=[10, 10, 2, 20, 20, 2])
    data["annotations"] = data["annotations"] + [extra]
    f = tmp_path / "two.json"
    shutil.copytree(coco_json.parent, tmp_path, dirs_exist_ok=True)
    f.write_text(json.dumps(data))
    res = invoke("inspect", f)
    assert res.exit_code == 1, res.output
    assert "'dog'" in res.output and "'person'" in res.output and "--category" in res.output
    res = invoke("inspect", f, "--category", "person", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["bodyparts"] == person["keypoints"]
    res = invoke("inspect", f, "--category", str(99), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["bodyparts"] == ["nose", "tail"]
    res = invoke("show", f, "--category", "cat", "--out", tmp_path / "g.png")
    assert_message(res, 2, "no keypoint category 'cat'", "'dog'", "'person'")


def test_an_internal_bug_keeps_its_traceback(coco_json, tmp_path, monkeypatch):
    """Only bad input becomes a message: an exception raised outside posefeed's own code
    (here a ZeroDivisionError from a patched helper) still propagates."""
    from posefeed.cli import errors

    def boom(*a, **k):
        return 1 / 0

    monkeypatch.setattr("posefeed.datasets.resolve_dataset", boom)
    res = invoke("show", coco_json, "--out", tmp_path / "g.png")
    assert isinstance(res.exception, ZeroDivisionError)
    assert not errors.is_bad_input(res.exception)


@pytest.fixture()
def dlc_with_empty_frame(dlc_project, tmp_path) -> Path:
    project = tmp_path / "openfield"
    shutil.copytree(dlc_project, project)
    (project / "labeled-data" / "m4s1" / "img0003.png").write_bytes(b"")
    return project


def test_inspect_counts_images_skipped_at_load(dlc_with_empty_frame):
    res = invoke("inspect", dlc_with_empty_frame, "--on-bad-image", "skip", "--json")
    assert res.exit_code == 1, res.output          # invalid data: an image is unusable
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["skipped_images"] == 1 and summary["frames"] == 115
    assert any("img0003.png" in p and "zero-byte" in p for p in summary["problems"])
    res = invoke("inspect", dlc_with_empty_frame, "--on-bad-image", "skip")
    assert "skipped images: 1" in res.output


def test_show_and_train_reach_skip_on_a_real_project(dlc_with_empty_frame, tmp_path,
                                                     monkeypatch):
    """The README's on_bad_image="skip" from real files: a zero-byte frame among 116 used to
    refuse the dataset at load, whatever PoseLoader was told."""
    res = invoke("show", dlc_with_empty_frame, "--out", tmp_path / "g.png", "--n", "2",
                 "--mode", "frame", "--device", "cpu")
    assert_message(res, 2, "unreadable headers", "img0003.png")
    res = invoke("show", dlc_with_empty_frame, "--out", tmp_path / "g.png", "--n", "2",
                 "--mode", "frame", "--device", "cpu", "--on-bad-image", "skip")
    assert res.exit_code == 0, res.output

    from posefeed.trainers import recipe

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(model, loader, cfg, **kw):
        seen["loader"] = loader
        raise Stop

    monkeypatch.setattr(recipe, "Trainer", fake_trainer)
    res = invoke("train", dlc_with_empty_frame, "--out", tmp_path / "run", "--device", "cpu",
                 "--batch-size", "4", "--input-size", "64x48", "--on-bad-image", "skip")
    assert isinstance(res.exception, Stop), res.output
    assert "1 unreadable images left out" in res.output and "img0003.png" in res.output
    loader = seen["loader"]
    assert loader.spec.on_bad_image == "skip"
    assert "labeled-data/m4s1/img0003.png" not in loader.table.images


def test_train_on_a_gpu_that_is_not_there_says_so_first(dlc_project, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = invoke("train", dlc_project, "--out", tmp_path / "run", "--device", "gpu")
    assert_message(res, 2, "device 'gpu': CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_every_typed_error_is_one_paragraph_naming_where():
    """The shared mechanism (posefeed.cli.errors) on each of posefeed's own error types: a
    message of a few lines that names the file / rows the error carries."""
    from posefeed.cli.errors import MAX_LINES, describe, is_bad_input
    from posefeed.datasets import AnnotationError
    from posefeed.pipelines import BadImageError, CacheTooLarge, PipelineError
    from posefeed.trainers.checkpoint import CheckpointError

    many = AnnotationError("200 images not found", file="a.h5", row="img0.png", field="image",
                           problems=[f"missing image img{i}.png" for i in range(200)])
    cases = [
        (many, ["a.h5", "'img0.png'", "'image'", "189 more lines"]),
        (BadImageError("cannot decode it: truncated", file="x.jpg", rows=[3, 4]),
         ["x.jpg", "table rows [3, 4]"]),
        (PipelineError("the pipeline failed in epoch 0, batch 2"), ["epoch 0, batch 2"]),
        (CacheTooLarge("the cache needs 9 GB, 2 GB available"), ["9 GB"]),
        (CheckpointError("cannot load checkpoint", file="run/last.pt"), ["run/last.pt"]),
        (FileNotFoundError(2, "No such file or directory", "/data/x.json"),
         ["No such file or directory: /data/x.json"]),
    ]
    for exc, needles in cases:
        assert is_bad_input(exc), exc
        text = describe(exc)
        assert len(text.splitlines()) <= MAX_LINES + 1, text
        for n in needles:
            assert n in text, (n, text)
    assert not is_bad_input(ValueError("raised outside posefeed"))   # no posefeed frame
    assert not is_bad_input(ZeroDivisionError())


def test_bench_skip_leaves_an_empty_jpeg_out_for_every_runner(coco_json, tmp_path):
    """A zero-byte JPEG: refused at load (exit 2) by default; with --on-bad-image skip it
    leaves the table before any runner starts, so the reference loader and posefeed run on
    the same remaining images and the benchmark completes."""
    folder = tmp_path / "coco"
    shutil.copytree(coco_json.parent, folder)
    (folder / BAD_JPEG).write_bytes(b"")
    args = ["bench", folder / coco_json.name, "--iters", "1", "--warmup", "1", "-b", "2",
            "-j", "1", "--no-cache", "--no-stages"]
    res = invoke(*args)
    assert_message(res, 2, "unreadable headers", BAD_JPEG)
    res = invoke(*args, "--on-bad-image", "skip", "--json", tmp_path / "b.json")
    assert res.exit_code == 0, res.output
    assert "1 unreadable images left out" in res.output
    runs = json.loads((tmp_path / "b.json").read_text())["runs"]
    assert all(r["error"] is None for r in runs.values()), runs
