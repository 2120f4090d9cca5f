"""`posefeed.targets.build_codec`: each name builds its class with the documented sizes."""
import numpy as np
import pytest

from posefeed.targets import (CODECS, DEKR, DLCHeatmap, GaussianHeatmap, PartAffinityField, SimCC,
                              UDPHeatmap, build_codec)


#: name -> (class, extra keyword arguments the factory needs); add a new entry here too
EXPECTED = {"heatmap": (GaussianHeatmap, {}), "udp_heatmap": (UDPHeatmap, {}),
            "dlc": (DLCHeatmap, {}), "simcc": (SimCC, {}),
            "paf": (PartAffinityField, {"graph": [(0, 1)]}), "dekr": (DEKR, {"num_joints": 3})}


def test_every_entry_builds_the_codec_of_that_name():
    assert set(CODECS) >= set(EXPECTED) and all(callable(f) for f in CODECS.values())
    for name, (cls, kw) in EXPECTED.items():
        codec = build_codec(name, (192, 256), **kw)
        assert type(codec) is cls and codec.name == name


def test_sizes_follow_input_size_and_stride():
    # hand-worked: 192 x 256 input at stride 4 -> 48 x 64 cells; at stride 8 -> 24 x 32
    g = build_codec("heatmap", (192, 256))
    assert (g.input_size, g.heatmap_size, g.sigma) == ((192, 256), (48, 64), 2.0)
    assert build_codec("udp_heatmap", (192, 256), 8).heatmap_size == (24, 32)
    d = build_codec("dlc", (320, 240), 8)
    assert (d.stride, d.heatmap_size, d.pos_dist_thresh) == (8.0, (40, 30), 17.0)
    assert build_codec("dlc", (192, 256)).pos_dist_thresh == 8.5      # 17 px * 4 / 8
    s = build_codec("simcc", (192, 256))
    assert (s.sigma, s.split_ratio, s.label_size) == ((4.9, 5.66), 2.0, (384, 512))


def test_keyword_arguments_reach_the_constructor():
    g = build_codec("heatmap", (192, 256), sigma=3.0, unbiased=True)
    assert (g.sigma, g.unbiased) == (3.0, True)
    assert build_codec("dlc", (64, 64), pos_dist_thresh=17.0).pos_dist_thresh == 17.0
    hm = g.encode(np.array([[[[101.0, 122.0, 2.0]]]], np.float32))["heatmap"]
    # unbiased, sigma 3: float centre (25.25, 30.5) cells; the nearest cell (25, 30) holds
    # exp(-(0.25^2 + 0.5^2) / (2 * 3^2))
    assert hm[0, 0, 30, 25] == pytest.approx(np.exp(-(0.0625 + 0.25) / 18), rel=1e-6)
    assert hm.max() == pytest.approx(hm[0, 0, 30, 25], rel=1e-6)


def test_multi_animal_entries():
    # 512 x 512 input at stride 8: 64 x 64 cells (the issue's PAF case); DEKR at stride 4
    p = build_codec("paf", (512, 512), 8, graph=[(0, 1), (1, 2)])
    assert (p.stride, p.heatmap_size, p.width, p.num_limbs) == (8.0, (64, 64), 20.0, 2)
    assert build_codec("paf", (512, 512), graph=[(0, 1)], width=7).width == 7.0
    d = build_codec("dekr", (512, 384), num_joints=12)
    assert (d.stride, d.heatmap_size, d.pos_dist_thresh, d.bg_weight) == (4.0, (128, 96), 17.0, 0.1)
    with pytest.raises(TypeError, match="graph"):
        build_codec("paf", (512, 512))


def test_unknown_name_lists_the_registered_codecs():
    with pytest.raises(ValueError, match="unknown codec 'nosuch'.*dekr, dlc, heatmap, paf, simcc"):
        build_codec("nosuch", (192, 256))
