"""Resuming a run the way users get it wrong: another codec, another batch size, a corrupt
``last.pt``. Each is refused with a message saying what differs, or handled and said."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from posefeed.trainers.checkpoint import CheckpointError
from posefeed.trainers.models import ModelConfig, build_model
from posefeed.trainers.trainer import Trainer, TrainConfig

torch.set_num_threads(2)


class SquareLoader:
    """``n // batch`` toy batches (a bright square and its 1-keypoint heatmap) per epoch,
    shuffled from (seed, epoch); ``state_dict`` holds the epoch."""

    def __init__(self, n: int = 32, batch: int = 8, size: int = 32):
        self.xy = np.random.default_rng(0).integers(4, size - 4, (n, 2))
        self.n, self.batch, self.size, self.epoch = n, batch, size, 0

    def __len__(self):
        return self.n // self.batch

    def set_epoch(self, e):
        self.epoch = e

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, s):
        self.epoch = s["epoch"]

    def __iter__(self):
        order = np.random.default_rng([0, self.epoch]).permutation(self.n)
        s, hs = self.size, self.size // 4
        g = torch.arange(hs, dtype=torch.float32)
        for b in range(len(self)):
            idx = order[b * self.batch:(b + 1) * self.batch]
            img = torch.full((len(idx), 3, s, s), -1.0)
            hm = torch.zeros(len(idx), 1, hs, hs)
            for j, i in enumerate(idx):
                x, y = self.xy[i]
                img[j, :, y - 1:y + 2, x - 1:x + 2] = 2.0
                hm[j, 0] = torch.exp(-((g[None] - x / 4) ** 2 + (g[:, None] - y / 4) ** 2) / 2)
            yield {"image": img, "heatmap": hm, "keypoint_weight": torch.ones(len(idx), 1)}


def model(kind: str = "heatmap", k: int = 1):
    torch.manual_seed(0)
    return build_model(kind, k, (32, 32), ModelConfig(stride=8, widths=(8, 16), depths=(1, 1),
                                                      head_channels=16))


def config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=4, lr=1e-2, warmup_iters=2, eval_every=100,
                                 device="cpu", eta_min=2e-4), **kw})


def quiet(lines=None):
    return (lambda s: None) if lines is None else lines.append


def crash_after(epochs: int, out, loader=None, **kw) -> Trainer:
    t = Trainer(model(), loader or SquareLoader(), config(), out_dir=out, log=quiet(), **kw)
    t.config.epochs = epochs          # the run was meant to be 4 epochs: "killed" after these
    t.fit()
    t.config.epochs = 4
    return t


def test_resume_with_another_batch_size_finishes_the_cosine(tmp_path):
    """Epochs 0-1 at batch 8 (4 steps/epoch), resumed at batch 4 (8 steps/epoch): the lr
    schedule's position is rescaled, so the last step lands on eta_min as in a straight run
    (unscaled, the run ended at step 24 of 32, lr still far above eta_min)."""
    crash_after(2, tmp_path)
    lines: list[str] = []
    t = Trainer(model(), SquareLoader(batch=4), config(), out_dir=tmp_path, log=quiet(lines))
    assert t.resume()
    assert t.scheduler.last_iter == 2 * 8            # 2 epochs of the new 8 steps
    assert any("8 optimizer steps per epoch instead of 4" in line for line in lines), lines
    t.fit()
    assert t.scheduler.last_iter == t.scheduler.total_iters == 32
    assert t.scheduler.get_last_lr()[0] == pytest.approx(2e-4, rel=1e-9)


def test_resume_mid_epoch_with_another_batch_size_is_refused(tmp_path):
    t = Trainer(model(), SquareLoader(), config(checkpoint_every_steps=2), out_dir=tmp_path,
                log=quiet())
    t.config.epochs = 1
    t.fit()
    t.ckpt.save_last(dict(t.state_dict(), epoch_progress={"iter": 2, "losses": [1.0, 1.0],
                                                          "n_samples": 16, "seconds": 1.0}))
    t2 = Trainer(model(), SquareLoader(batch=4), config(), out_dir=tmp_path, log=quiet())
    with pytest.raises(CheckpointError, match="middle of an epoch.*4 optimizer steps per "
                                              "epoch, this run 8"):
        t2.resume()


def test_resume_with_another_codec_says_what_differs(tmp_path):
    crash_after(1, tmp_path, run_info={"codec": "heatmap", "input_size": [32, 32]})
    t = Trainer(model("simcc"), SquareLoader(), config(), out_dir=tmp_path, log=quiet(),
                run_info={"codec": "simcc", "input_size": (32, 32)})
    with pytest.raises(CheckpointError, match=r"codec 'heatmap' \(checkpoint\) vs 'simcc' "
                                              r"\(this run\)") as e:
        t.resume()
    assert "input_size" not in str(e.value)        # (32, 32) and [32, 32] are the same


def test_resume_into_another_model_without_run_info_is_a_short_message(tmp_path):
    """A checkpoint from before run_info existed, loaded into another head: the error is a
    CheckpointError of a few lines, not torch's tensor-by-tensor state_dict listing."""
    crash_after(1, tmp_path)
    t = Trainer(model("heatmap", k=3), SquareLoader(), config(), out_dir=tmp_path, log=quiet())
    with pytest.raises(CheckpointError, match="do not fit this model") as e:
        t.resume()
    assert len(str(e.value).splitlines()) == 1


def test_corrupt_last_pt_is_said_and_the_older_file_used(tmp_path):
    crash_after(2, tmp_path)
    ckpt = tmp_path / "checkpoints"
    (ckpt / "last.pt").write_bytes(b"\x00" * 100)          # e.g. a disk-full copy
    lines: list[str] = []
    t = Trainer(model(), SquareLoader(), config(), out_dir=tmp_path, log=quiet(lines))
    assert t.resume()
    assert t.epoch == 2                                   # epoch_0002.pt
    said = [line for line in lines if "last.pt" in line]
    assert said and "epoch_0002.pt" in said[0], lines


def test_every_checkpoint_corrupt_is_refused_not_a_fresh_start(tmp_path):
    crash_after(1, tmp_path)
    for f in (tmp_path / "checkpoints").glob("*.pt"):
        f.write_bytes(b"not a checkpoint")
    t = Trainer(model(), SquareLoader(), config(), out_dir=tmp_path, log=quiet())
    with pytest.raises(CheckpointError, match="no checkpoint .* can be loaded"):
        t.resume()


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    from posefeed.datasets.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synthetic"), n_frames=16, n_keypoints=4,
                          max_instances=1, image_size=(96, 80), seed=2)


def test_cli_resume_with_another_codec_exits_2_naming_it(tiny_synthetic, tmp_path):
    from posefeed.cli import _register, app

    _register()
    args = ["train", str(tiny_synthetic.dlc_project), "--out", str(tmp_path / "run"),
            "--device", "cpu", "--batch-size", "4", "--input-size", "32x32", "--epochs", "1",
            "--train-fraction", "0.75"]
    res = CliRunner().invoke(app, args + ["--codec", "heatmap"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, args + ["--codec", "simcc", "--resume"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "state_dict" not in res.output
    assert "codec 'heatmap' (checkpoint) vs 'simcc' (this run)" in res.output
