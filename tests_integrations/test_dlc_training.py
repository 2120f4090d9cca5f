"""train_network (and `posefeed dlc train`) on a temp copy of openfield: DeepLabCut's model and
runner fed by posefeed's loaders and generators for 2 epochs at a small input size; the loss
falls, DeepLabCut's snapshot is written in the shuffle's train folder and
deeplabcut.evaluate_network runs on it. The shuffle's backbone is switched to ResNet-18 (and
built without ImageNet weights: no network here) and the project cut to its first 40 frames, so
training and evaluation take a minute or two on 2 CPU cores."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import OPENFIELD, make_shuffle, pytorch_config_path

#: options left out of the shuffle's recipe: none (DeepLabCut's default recipe maps completely)
LEAVE_OUT: tuple[str, ...] = ()


@pytest.fixture()
def small_shuffle(tmp_path) -> Path:
    if not OPENFIELD.exists():
        pytest.skip(f"{OPENFIELD} not found")
    config = make_shuffle(OPENFIELD, tmp_path / "openfield", frames=40)  # 38 train, 2 test frames
    path = pytorch_config_path(config)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["backbone"]["model_name"] = "resnet18"
    cfg["model"]["backbone_output_channels"] = 512
    for head in cfg["model"]["heads"].values():
        head["heatmap_config"]["channels"][0] = 512
        head["locref_config"]["channels"][0] = 512
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def test_train_network_two_epochs_then_evaluate(small_shuffle):
    import deeplabcut

    from posefeed.integrations.deeplabcut import train_network

    loaders = train_network(small_shuffle, epochs=2, batch_size=4, device="cpu", pretrained=False,
                            ignore=LEAVE_OUT, input_size=(96, 96), loader_device="cpu")
    assert len(loaders.train) == 38 // 4 and len(loaders.test) == 2
    losses = loaders.history["train_loss"]
    assert len(losses) == 2 and losses[1] < losses[0]
    snapshot = loaders.model_folder / "snapshot-002.pt"
    assert snapshot.is_file()
    # the config on disk still names DeepLabCut's generator: evaluation needs no posefeed
    assert "HeatmapGaussianGenerator" in pytorch_config_path(small_shuffle).read_text()
    deeplabcut.evaluate_network(str(small_shuffle), Shuffles=[1])
    results = list(Path(small_shuffle).parent.glob("evaluation-results-pytorch/**/*.csv"))
    assert results, "evaluate_network wrote no results"
    df = pd.concat(pd.read_csv(p) for p in results)
    assert len(df) > 0


def test_cli_train_one_epoch(small_shuffle):
    from typer.testing import CliRunner

    from posefeed.cli import _register, app

    _register()
    args = ["dlc", "train", str(small_shuffle), "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--no-pretrained", "--input-size", "64x64"] + [a for opt in LEAVE_OUT for a in ("--ignore", opt)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "trained 1 epochs" in " ".join(r.output.split())
    assert (Path(small_shuffle).parent / "dlc-models-pytorch").exists()
    assert list(Path(small_shuffle).parent.glob("dlc-models-pytorch/**/snapshot-001.pt"))
