"""Integration tests against the real DeepLabCut 3.0.2 (``make test-integrations``: a second
venv with the regular torch build, torchvision and deeplabcut; ``make test`` never collects
this folder). No network: models are built without ImageNet weights (``pretrained_backbone=
False``); a user on their own machine gets the pretrained ones as usual."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPENFIELD = REPO.parent / "shared" / "datasets" / "openfield-Pranav-2018-10-30"

pytest.importorskip("deeplabcut", reason="DeepLabCut is not installed (run make test-integrations)")


def make_shuffle(src: Path, dst: Path, net_type: str = "resnet_50", frames: int | None = None) -> Path:
    """Copy a DeepLabCut project to ``dst``, point its config at the copy and create shuffle 1
    (``deeplabcut.create_training_dataset``, PyTorch engine). ``frames``: keep only the first
    that many labelled frames of each video (a faster project). Returns the config path."""
    import deeplabcut  # noqa: PLC0415
    from deeplabcut.utils import auxiliaryfunctions  # noqa: PLC0415

    shutil.copytree(src, dst)
    cfg_path = dst / "config.yaml"
    cfg = auxiliaryfunctions.read_config(str(cfg_path))
    cfg["project_path"] = str(dst)
    videos = sorted(p.name for p in (dst / "labeled-data").iterdir() if p.is_dir())
    cfg["video_sets"] = {str(dst / "videos" / f"{v}.mp4"): {"crop": "0, 640, 0, 480"} for v in videos}
    auxiliaryfunctions.write_config(str(cfg_path), cfg)
    if frames is not None:
        import pandas as pd  # noqa: PLC0415

        for h5 in (dst / "labeled-data").glob("*/CollectedData_*.h5"):
            df = pd.read_hdf(h5).iloc[:frames]
            df.to_hdf(h5, key="df_with_missing", mode="w")
            df.to_csv(h5.with_suffix(".csv"))
    deeplabcut.create_training_dataset(str(cfg_path), Shuffles=[1], net_type=net_type,
                                       engine=deeplabcut.Engine.PYTORCH)
    return cfg_path


@pytest.fixture(scope="session")
def openfield_config(tmp_path_factory) -> Path:
    """A temp copy of the shared openfield project with shuffle 1 created (resnet_50)."""
    if not OPENFIELD.exists():
        pytest.skip(f"{OPENFIELD} not found")
    return make_shuffle(OPENFIELD, tmp_path_factory.mktemp("dlc") / "openfield")


def pytorch_config_path(config: Path, shuffle: int = 1) -> Path:
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader  # noqa: PLC0415

    return Path(DLCLoader(config=str(config), shuffle=shuffle, trainset_index=0).model_config_path)
