"""train_network (and `posefeed dlc train`) on a temp copy of openfield: DeepLabCut's model and
runner fed by posefeed's loaders and generators for 2 epochs at a small input size; the loss
falls, DeepLabCut's snapshot is written in the shuffle's train folder and
deeplabcut.evaluate_network runs on it. The shuffle's backbone is switched to ResNet-18 (and
built without ImageNet weights: no network here) and the project cut to its first 40 frames, so
training and evaluation take a minute or two on 2 CPU cores."""
from __future__ import annotations

import math
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


@pytest.fixture()
def crowd_top_down(tmp_path) -> Path:
    """A top-down shuffle of a synthetic 3-animal project (8 frames of 256x192), its pose
    backbone switched to ResNet-18 as above, top_down_crop 64 x 64 (a fast CPU step)."""
    from posefeed.datasets.synthetic import make_synthetic  # noqa: PLC0415 - posefeed's data

    make_synthetic(tmp_path / "src", n_frames=8, n_keypoints=6, image_size=(256, 192), seed=5,
                   animals=3)
    config = make_shuffle(tmp_path / "src", tmp_path / "td", net_type="top_down_resnet_50")
    path = pytorch_config_path(config)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["backbone"]["model_name"] = "resnet18"
    cfg["model"]["backbone_output_channels"] = 512
    for head in cfg["model"]["heads"].values():
        for key in ("heatmap_config", "locref_config"):
            if key in head:
                head[key]["channels"][0] = 512
    cfg["data"]["train"]["top_down_crop"] = {"width": 64, "height": 64}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


TOP_DOWN_LEAVE_OUT = ("affine.top_down_rotation", "motion_blur.top_down", "gaussian_noise.top_down")


def _offline_detector_weights(config: Path, torch_home: Path) -> str:
    """DeepLabCut 3.0.2 always builds its detector with torchvision's COCO weights (its
    ``train`` passes ``pretrained=True`` unless a snapshot is given), which this machine
    cannot download: a randomly initialised state dict of the shuffle's detector
    architecture (SSDLite by default, or a Faster R-CNN variant) in a temp ``TORCH_HOME``
    stands in for the file (torch loads a cached file without its hash check). Everything
    else is DeepLabCut's real detector training. Returns the detector's type."""
    import torch
    import torchvision.models as models

    model = yaml.safe_load(pytorch_config_path(config).read_text())["detector"]["model"]
    name = ("ssdlite320_mobilenet_v3_large" if model["type"] == "SSDLite"
            else model.get("variant", "fasterrcnn_mobilenet_v3_large_fpn"))
    weights = models.get_model_weights(name).COCO_V1
    ckpt = torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    ckpt.parent.mkdir(parents=True)
    net = models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    torch.save(net.state_dict(), ckpt)
    return model["type"]


def test_train_network_top_down_detector_then_pose_model_then_evaluate(crowd_top_down,
                                                                       tmp_path, monkeypatch):
    """A top-down shuffle end to end: DeepLabCut's detector trained first by DeepLabCut's
    own ``train`` (1 epoch, its loader), then the pose model on posefeed's crops (the loss
    falls), both snapshots where DeepLabCut writes them, and deeplabcut.evaluate_network
    (detector + pose model) runs on the result."""
    import deeplabcut

    from posefeed.integrations.deeplabcut import train_network

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert _offline_detector_weights(crowd_top_down, tmp_path / "torch") == "SSDLite"
    loaders = train_network(crowd_top_down, epochs=2, batch_size=4, device="cpu",
                            pretrained=False, ignore=TOP_DOWN_LEAVE_OUT, loader_device="cpu",
                            detector_epochs=1, detector_batch_size=2)
    assert loaders.detector_trained
    cfg = yaml.safe_load(pytorch_config_path(crowd_top_down).read_text())
    assert cfg["detector"]["train_settings"]["epochs"] == 1     # saved back, as DeepLabCut does
    assert list(loaders.model_folder.glob("snapshot-detector-*.pt"))
    batch = next(iter(loaders.train))
    assert batch["image"].shape == (4, 3, 64, 64)            # crops around each instance
    losses = loaders.history["train_loss"]
    assert len(losses) == 2 and losses[1] < losses[0] and all(map(math.isfinite, losses))
    assert (loaders.model_folder / "snapshot-002.pt").is_file()
    deeplabcut.evaluate_network(str(crowd_top_down), Shuffles=[1])
    results = list(Path(crowd_top_down).parent.glob("evaluation-results-pytorch/**/*.csv"))
    assert results, "evaluate_network wrote no results"


def test_train_network_detector_options(crowd_top_down, small_shuffle, monkeypatch):
    import deeplabcut.pose_estimation_pytorch.apis.training as dlc_training

    from posefeed.integrations.deeplabcut import train_network

    calls = []
    monkeypatch.setattr(dlc_training, "train", lambda *a, **kw: calls.append(kw))
    # 0 detector epochs: the pose model only (as DeepLabCut)
    loaders = train_network(crowd_top_down, epochs=1, batch_size=4, device="cpu",
                            pretrained=False, ignore=TOP_DOWN_LEAVE_OUT, loader_device="cpu",
                            detector_epochs=0)
    assert calls == [] and not loaders.detector_trained
    assert (loaders.model_folder / "snapshot-001.pt").is_file()
    # a bottom-up shuffle has no detector: asking for one is an error, before any training
    with pytest.raises(ValueError, match="detector_epochs.*bottom_up.*no detector"):
        train_network(small_shuffle, epochs=1, device="cpu", pretrained=False,
                      detector_epochs=2)
    assert not list(Path(small_shuffle).parent.glob("dlc-models-pytorch/**/snapshot-*.pt"))
