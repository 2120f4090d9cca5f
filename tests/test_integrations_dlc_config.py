"""Switching a DeepLabCut shuffle's pytorch_config.yaml to posefeed's generators and back
(posefeed.integrations.dlc_config and `posefeed dlc use-generators`), without DeepLabCut."""
from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from posefeed.cli import _register, app
from posefeed.integrations.dlc_config import BACKUP_SUFFIX, generator_types, use_generators

# the layout DeepLabCut 3.0.2's create_training_dataset writes (trimmed), plus a second head
# with a SequentialGenerator to show nested generators switch too
CONFIG = """\
# Config schema version. Do not edit manually.
config_version: 0
model:
  backbone:
    type: ResNet
    model_name: resnet50_gn
  heads:
    bodypart:
      type: HeatmapHead
      predictor:
        type: HeatmapPredictor
        location_refinement: true
      target_generator:
        type: HeatmapGaussianGenerator   # DeepLabCut's default
        num_heatmaps: 4
        pos_dist_thresh: 17
        heatmap_mode: KEYPOINT
      criterion:
        heatmap:
          type: WeightedMSECriterion
    identity:
      type: HeatmapHead
      target_generator:
        type: SequentialGenerator
        generators:
        - type: HeatmapPlateauGenerator
          num_heatmaps: 2
        - type: PartAffinityFieldGenerator
          graph: [[0, 1]]
        - type: SimCCGenerator
runner:
  type: PoseTrainingRunner
"""


def test_switch_backup_and_undo(tmp_path):
    path = tmp_path / "pytorch_config.yaml"
    path.write_text(CONFIG)
    switches = use_generators(path)
    assert [(s.where, s.old, s.new) for s in switches] == [
        ("model.heads.bodypart.target_generator", "HeatmapGaussianGenerator", "PosefeedHeatmapGaussianGenerator"),
        ("model.heads.identity.target_generator.generators[0]", "HeatmapPlateauGenerator",
         "PosefeedHeatmapPlateauGenerator"),
        ("model.heads.identity.target_generator.generators[1]", "PartAffinityFieldGenerator",
         "PosefeedPartAffinityFieldGenerator")]
    text = path.read_text()
    # only the three type lines changed; the comment after the first one is kept
    diff = [(a, b) for a, b in zip(CONFIG.splitlines(), text.splitlines()) if a != b]
    assert diff == [("        type: HeatmapGaussianGenerator   # DeepLabCut's default",
                     "        type: PosefeedHeatmapGaussianGenerator   # DeepLabCut's default"),
                    ("        - type: HeatmapPlateauGenerator", "        - type: PosefeedHeatmapPlateauGenerator"),
                    ("        - type: PartAffinityFieldGenerator",
                     "        - type: PosefeedPartAffinityFieldGenerator")]
    assert dict(generator_types(yaml.safe_load(text)))["model.heads.identity.target_generator.generators[2]"] \
        == "SimCCGenerator"                                     # no drop-in: unchanged
    backup = tmp_path / ("pytorch_config.yaml" + BACKUP_SUFFIX)
    assert backup.read_text() == CONFIG
    assert use_generators(path) == []                           # already switched: untouched
    assert len(use_generators(path, undo=True)) == 3
    assert path.read_text() == CONFIG
    path.write_text(CONFIG.replace("pos_dist_thresh: 17", "pos_dist_thresh: 12"))
    use_generators(path)
    assert backup.read_text() == CONFIG                         # the first backup is kept


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        use_generators(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        use_generators(bad)
    bad.write_text("runner: {}\n")
    with pytest.raises(ValueError, match="no 'model' section"):
        use_generators(bad)
    flow = tmp_path / "flow.yaml"   # a layout the line edit cannot handle: refused, file untouched
    flow.write_text("model: {heads: {b: {target_generator: {type: HeatmapGaussianGenerator}}}}\n")
    with pytest.raises(ValueError, match="by hand"):
        use_generators(flow)
    assert "Posefeed" not in flow.read_text() and not (tmp_path / ("flow.yaml" + BACKUP_SUFFIX)).exists()


def test_cli(tmp_path):
    _register()
    path = tmp_path / "pytorch_config.yaml"
    path.write_text(CONFIG)
    r = CliRunner().invoke(app, ["dlc", "use-generators", str(path)])
    assert r.exit_code == 0, r.output
    assert "HeatmapGaussianGenerator -> PosefeedHeatmapGaussianGenerator" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["dlc", "use-generators", str(path), "--undo"])
    assert r.exit_code == 0 and path.read_text() == CONFIG
    r = CliRunner().invoke(app, ["dlc", "use-generators", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "no such" in " ".join(r.output.split())


def test_cli_train_without_deeplabcut_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("deeplabcut") is not None:
        pytest.skip("DeepLabCut is installed here (tests_integrations covers `posefeed dlc train`)")
    _register()
    r = CliRunner().invoke(app, ["dlc", "train", str(tmp_path / "config.yaml")])
    assert r.exit_code == 2 and "pip install 'posefeed[deeplabcut]'" in " ".join(r.output.split())
