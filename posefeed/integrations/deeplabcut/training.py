"""``train_network``: DeepLabCut 3's own model, runner and snapshots, fed by posefeed.

Mirrors ``deeplabcut.train_network`` (``apis/training.py``): the shuffle's
``pytorch_config.yaml`` builds DeepLabCut's ``PoseModel`` and ``PoseTrainingRunner``; the
heads' heatmap generators become posefeed's drop-ins; posefeed's loaders (`make_loaders`)
replace DeepLabCut's ``DataLoader``; ``runner.fit`` trains and writes ``snapshot-NNN.pt`` into
the shuffle's ``train`` folder as DeepLabCut does, so ``deeplabcut.evaluate_network`` and
``analyze_videos`` read the result unchanged (they need ``import
posefeed.integrations.deeplabcut`` only if the file names posefeed's generators).

Top-down shuffles: as in DeepLabCut, the shuffle's object detector is trained first (when its
``detector.train_settings.epochs`` > 0, ``detector_epochs`` overriding it), by DeepLabCut's own
``train`` with DeepLabCut's own loader (posefeed feeds pose models, not detectors; a detector
step is box regression on whole frames, not the keypoint data layer), then the pose model on
posefeed's crops around the labelled boxes, exactly as DeepLabCut trains it (ground-truth
boxes, not detections).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Iterable

import deeplabcut.pose_estimation_pytorch.utils as dlc_utils
from deeplabcut.pose_estimation_pytorch.data import DLCLoader
from deeplabcut.pose_estimation_pytorch.models import PoseModel
from deeplabcut.pose_estimation_pytorch.runners import build_training_runner
from deeplabcut.pose_estimation_pytorch.runners.logger import destroy_file_logging, setup_file_logging
from deeplabcut.pose_estimation_pytorch.task import Task

from posefeed.integrations.deeplabcut.generators import GENERATORS
from posefeed.integrations.deeplabcut.loaders import Loaders, make_loaders

log = logging.getLogger("posefeed.integrations")


def with_posefeed_generators(model_cfg: dict) -> dict:
    """A copy of a ``model`` config whose heads' generators are posefeed's drop-ins (types
    posefeed has none for stay)."""
    cfg = copy.deepcopy(model_cfg)

    def swap(gen: Any) -> None:
        if isinstance(gen, dict):
            if gen.get("type") in GENERATORS:
                gen["type"] = GENERATORS[gen["type"]].__name__
            for sub in gen.get("generators") or []:
                swap(sub)

    for head in (cfg.get("heads") or {}).values():
        swap(head.get("target_generator"))
    return cfg


def train_network(config: str | Path, shuffle: int = 1, trainingsetindex: int = 0,
                  epochs: int | None = None, batch_size: int | None = None,
                  device: str | None = None, modelprefix: str = "",
                  save_epochs: int | None = None, display_iters: int | None = None,
                  snapshot_path: str | Path | None = None, pretrained: bool = True,
                  augment: bool = True, ignore: Iterable[str] = (),
                  input_size: tuple[int, int] | None = None,
                  posefeed_generators: bool = True, max_snapshots_to_keep: int | None = None,
                  loader_device: str = "auto", detector_epochs: int | None = None,
                  detector_batch_size: int | None = None,
                  detector_path: str | Path | None = None) -> Loaders:
    """Train a DeepLabCut 3 shuffle with DeepLabCut's model, runner and snapshots and
    posefeed's loaders (and generators, unless ``posefeed_generators=False``).

    Arguments as ``deeplabcut.train_network`` (``epochs``, ``batch_size``, ``save_epochs``,
    ``display_iters`` override the shuffle's config, which is saved back as DeepLabCut does).
    ``pretrained=False`` builds the backbone without ImageNet weights (no download; a
    ``snapshot_path`` also skips them, as in DeepLabCut). ``augment``, ``ignore``,
    ``input_size``: see `make_loaders`. ``device``: the model's (default: the config's, as
    DeepLabCut resolves it); ``loader_device``: posefeed's pipeline. ``detector_epochs``,
    ``detector_batch_size``, ``detector_path`` (a snapshot to resume from): a top-down
    shuffle's detector, as in DeepLabCut (0 epochs: not trained; they are an error on a
    shuffle without a detector). Returns the loaders used (``detector_trained`` says whether
    the detector stage ran)."""
    dlc = DLCLoader(config=str(config), shuffle=shuffle, trainset_index=trainingsetindex,
                    modelprefix=modelprefix)
    cfg = dlc.model_cfg
    if batch_size is not None:
        cfg.train_settings.batch_size = batch_size
    if epochs is not None:
        cfg.train_settings.epochs = epochs
    if save_epochs is not None:
        cfg.runner.snapshots.save_epochs = save_epochs
    if display_iters is not None:
        cfg.train_settings.display_iters = display_iters
    if max_snapshots_to_keep is not None:
        cfg["runner"]["snapshots"]["max_snapshots"] = max_snapshots_to_keep
    detector = _detector_config(cfg, dlc.pose_task, detector_epochs, detector_batch_size,
                                display_iters, detector_path)
    cfg.to_yaml(dlc.model_config_path)  # DeepLabCut saves the overridden config too
    setup_file_logging(Path(dlc.model_folder) / "train.txt")
    try:
        dlc_utils.fix_seeds(cfg["train_settings"]["seed"])
        if detector is not None:
            _train_detector(dlc, detector, device, detector_path, max_snapshots_to_keep)
        model_cfg = cfg["model"]
        if posefeed_generators:
            model_cfg = with_posefeed_generators(model_cfg)
        model = PoseModel.build(copy.deepcopy(model_cfg),
                                pretrained_backbone=pretrained and snapshot_path is None)
        if device is None:
            device = dlc_utils.resolve_device(cfg)
        model.to(device)
        runner = build_training_runner(runner_config=cfg["runner"], model_folder=Path(dlc.model_folder),
                                       task=dlc.pose_task, model=model, device=device,
                                       snapshot_path=snapshot_path)
        loaders = make_loaders(config, shuffle=shuffle, trainingsetindex=trainingsetindex,
                               device=loader_device, batch_size=cfg["train_settings"]["batch_size"],
                               augment=augment, ignore=ignore, modelprefix=modelprefix,
                               input_size=input_size)
        log.info("posefeed train_network: %d train batches, %d test frames", len(loaders.train),
                 len(loaders.test))
        runner.fit(loaders.train, loaders.test, epochs=cfg["train_settings"]["epochs"],
                   display_iters=cfg["train_settings"]["display_iters"])
        loaders.history = {k: list(v) for k, v in runner.history.items()}
        loaders.detector_trained = detector is not None
        return loaders
    finally:
        destroy_file_logging()


def _detector_config(cfg: Any, task: Task, epochs: int | None, batch_size: int | None,
                     display_iters: int | None, path: str | Path | None) -> Any:
    """A top-down shuffle's detector run config with the overrides applied (written back with
    the shuffle's config, as DeepLabCut does), or None when no detector stage runs."""
    detector = cfg.get("detector")
    asked = {k: v for k, v in (("detector_epochs", epochs), ("detector_batch_size", batch_size),
                               ("detector_path", path)) if v is not None}
    if task != Task.TOP_DOWN or detector is None:
        if asked:
            raise ValueError(f"{', '.join(asked)}: this shuffle is {task.name.lower()} and has "
                             f"no detector to train")
        return None
    settings = detector["train_settings"]
    if epochs is not None:
        settings["epochs"] = int(epochs)
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    if display_iters is not None:
        settings["display_iters"] = display_iters
    return detector if settings["epochs"] > 0 else None


def _train_detector(dlc: Any, detector: Any, device: str | None, path: str | Path | None,
                    max_snapshots: int | None) -> None:
    """DeepLabCut's own detector training (its ``train`` with ``Task.DETECT`` and its loader),
    with the run config DeepLabCut's ``train_network`` gives it."""
    from deeplabcut.pose_estimation_pytorch.apis.training import train  # noqa: PLC0415 - the detector stage only

    detector["device"] = dlc.model_cfg["device"]
    detector["train_settings"]["weight_init"] = dlc.model_cfg["train_settings"].get("weight_init")
    log.info("posefeed train_network: training DeepLabCut's detector for %d epochs with "
             "DeepLabCut's loader", detector["train_settings"]["epochs"])
    train(loader=dlc, run_config=detector, task=Task.DETECT, device=device, snapshot_path=path,
          max_snapshots_to_keep=max_snapshots)
