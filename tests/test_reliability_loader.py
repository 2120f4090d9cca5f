"""PoseLoader's arguments as users get them wrong: each is refused at construction with a
message naming the argument (before: a ZeroDivisionError, a LinAlgError, numpy's seed
message at the first batch, a torch shape error in the loss, or silently 0 batches)."""
from __future__ import annotations

import shutil

import pytest

pytest.importorskip("nvidia.dali")

from posefeed.datasets import load_coco  # noqa: E402
from posefeed.pipelines import PoseLoader  # noqa: E402


@pytest.fixture(scope="module")
def table(coco_json):
    return load_coco(coco_json)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
    ({"batch_size": -4}, r"batch_size must be an int >= 1, got -4"),
    ({"batch_size": 2.5}, r"batch_size must be an int >= 1, got 2.5"),
    ({"input_size": (0, 10)}, r"input_size must be \(width, height\), two ints >= 1 in "
                              r"pixels, got \(0, 10\)"),
    ({"input_size": (-192, -256)}, r"input_size must be .* got \(-192, -256\)"),
    ({"input_size": (192,)}, r"input_size must be"),
    ({"seed": -1}, r"seed must be an int >= 0"),
    ({"num_threads": 0}, r"num_threads must be None .* or an int >= 1, got 0"),
    ({"shard": (2, 2)}, r"shard must be \(rank, world\) with 0 <= rank < world, got \(2, 2\)"),
    ({"mode": "bottomup"}, r"mode must be 'topdown' or 'frame', got 'bottomup'"),
    ({"on_bad_image": "ignore"}, r"on_bad_image must be 'raise' or 'skip'"),
])
def test_bad_arguments_are_refused_at_construction(table, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PoseLoader(table, device="cpu", **kwargs)


def test_batch_larger_than_the_dataset_with_drop_last_is_refused(table):
    """12 instances, batch 64, drop_last=True: 0 batches, so a training loop did nothing for
    all its epochs, silently."""
    with pytest.raises(ValueError, match=rf"0 batches per epoch: {len(table)} instances "
                                         r"\(topdown mode\) .* fewer than batch_size 64"):
        PoseLoader(table, device="cpu", batch_size=64, drop_last=True)
    loader = PoseLoader(table, device="cpu", batch_size=64, drop_last=False)
    assert len(loader) == 1


def test_more_ranks_than_samples_is_refused(table):
    with pytest.raises(ValueError, match=r"world size 64 leave 0 per shard"):
        PoseLoader(table, device="cpu", batch_size=1, shard=(0, 64), drop_last=True)


def test_a_codec_built_for_another_input_size_is_refused(table):
    """A SimCC codec for 192x256 under a 256x256 loader used to end in a raw torch shape
    error in the loss."""
    from posefeed.targets.gaussian_heatmap import GaussianHeatmap
    from posefeed.targets.simcc import SimCC

    with pytest.raises(ValueError, match=r"codec SimCC encodes for input_size \(192, 256\), "
                                         r"the loader's input_size is \(256, 256\)"):
        PoseLoader(table, SimCC((192, 256)), device="cpu", input_size=(256, 256), batch_size=4)
    with pytest.raises(ValueError, match=r"codec GaussianHeatmap"):
        PoseLoader(table, [SimCC((256, 256)), GaussianHeatmap((192, 256), (48, 64))],
                   device="cpu", input_size=(256, 256), batch_size=4)
    PoseLoader(table, SimCC((256, 256)), device="cpu", input_size=(256, 256), batch_size=4)


def test_a_stride_codec_whose_grid_misses_the_input_is_refused(table):
    from posefeed.targets.dlc_heatmap import DLCHeatmap

    with pytest.raises(ValueError, match=r"heatmap_size \(24, 32\) at stride 4, which covers "
                                         r"96x128 input pixels"):
        PoseLoader(table, DLCHeatmap(4, (24, 32)), device="cpu", input_size=(192, 256), batch_size=4)
    PoseLoader(table, DLCHeatmap(4, (48, 64)), device="cpu", input_size=(192, 256), batch_size=4)


def test_host_cache_skip_names_the_file_s_real_problem(coco_json, tmp_path, caplog):
    """With cache="host" the skip line said only DALI's "Current pipeline object is no longer
    valid"; it names the truncation now."""
    shutil.copytree(coco_json.parent, tmp_path, dirs_exist_ok=True)
    f = tmp_path / "000000040083.jpg"
    f.write_bytes(f.read_bytes()[:8000])
    table = load_coco(tmp_path / coco_json.name)
    with caplog.at_level("WARNING", logger="posefeed.pipelines"):
        with PoseLoader(table, device="cpu", batch_size=2, cache="host",
                        on_bad_image="skip") as loader:
            next(iter(loader))
    lines = [r.getMessage() for r in caplog.records if "000000040083.jpg" in r.getMessage()]
    assert lines and all("truncated" in line for line in lines), lines
    assert not any("no longer valid" in line for line in lines)
