"""The device cache's slab and ring, and their sizing, on CPU torch tensors (the logic is the
same on the GPU; the GPU run is in test_pipeline_gpu.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posefeed.pipelines.errors import CacheTooLarge
from posefeed.pipelines.slab import (BatchRing, FrameSlab, check_slab_fits, resolve_headroom,
                                     slab_bytes, slab_shape)

SIZES = np.array([[4, 3], [5, 2], [4, 3]])      # (w, h) of three frames


def frames(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 256, (h, w, 3), dtype=np.uint8) for w, h in SIZES]


def test_slab_is_one_zero_padded_tensor():
    slab = FrameSlab(SIZES, 3)
    assert slab.data.shape == (3, 3, 5, 3) and slab.data.is_contiguous()
    for i, f in enumerate(frames()):
        slab.put(i, f)
    for i, f in enumerate(frames()):
        h, w = f.shape[:2]
        assert np.array_equal(slab[i].numpy(), f)
        pad = slab.data[i].numpy().copy()
        pad[:h, :w] = 0
        assert not pad.any()                       # bottom / right padding is zero


def test_slab_refuses_a_frame_of_the_wrong_size():
    slab = FrameSlab(SIZES, 3)
    with pytest.raises(ValueError, match="slab expects"):
        slab.put(0, np.zeros((4, 4, 3), np.uint8))
    assert slab[0] is None


def test_sizing_arithmetic_by_hand():
    # slab: 3 frames padded to 3x5x3 = 45 B each -> 135; own pixels 36+30+36 = 102 -> 33 pad
    # ring: 4 batches x 2 frames x 45 = 360
    b = slab_bytes(SIZES, 3, batch_size=2, depth=4)
    assert b == {"slab": 135, "ring": 360, "total": 495, "padding": 33}
    assert slab_shape(SIZES, 4) == (3, 3, 5, 4)


def test_headroom_forms():
    assert resolve_headroom(0.25, 1000, "device") == 250
    assert resolve_headroom(300, 1000, "device") == 300
    assert resolve_headroom(None, 1000, "device") == 500
    assert resolve_headroom(None, 1000, "host") == 200
    with pytest.raises(ValueError):
        resolve_headroom(-1, 1000, "device")


def test_cache_too_large_names_the_numbers():
    info = check_slab_fits(SIZES, 3, 2, 4, "device", free=1000, total=2000, headroom=505)
    assert info["total"] == 495 and info["headroom"] == 505
    with pytest.raises(CacheTooLarge) as e:
        check_slab_fits(SIZES, 3, 2, 4, "device", free=1000, total=2000, headroom=506)
    msg = str(e.value)
    assert "cache='device'" in msg and "3 frames padded to 5x3x3" in msg
    assert "ring of 4 batches of 2" in msg and "cache_headroom" in msg


def test_ring_gathers_and_keeps_slots_until_consumed():
    slab = FrameSlab(SIZES, 3)
    for i, f in enumerate(frames()):
        slab.put(i, f)
    ring = BatchRing(slab, batch_size=2, depth=3)
    seen = []
    for ids in ([0, 1], [2, 0], [1, 1]):
        out = ring.gather(np.array(ids))
        seen.append((ids, out, out.clone()))
        assert out.is_contiguous() and out.shape == (2, 3, 5, 3)
        assert torch.equal(out, slab.data[list(ids)])
    with pytest.raises(RuntimeError, match="overrun"):
        ring.gather(np.array([0, 0]))                 # all 3 slots still in use
    ring.consumed()                                   # batch 0 done: its slot is free
    out = ring.gather(np.array([2, 2]))
    assert out.data_ptr() == seen[0][1].data_ptr()    # reused the first slot
    for ids, t, copy in seen[1:]:                     # the others were not touched
        assert torch.equal(t, copy)


def test_ring_waits_on_the_consumer_event_before_reusing_a_slot():
    """Slot k is written again only after the gather stream waited for the event recorded
    when batch k was consumed (no host wait); a stand-in stream records the waits."""
    slab = FrameSlab(SIZES, 3)
    waited = []

    class Stream:                       # what the ring calls on a CUDA stream
        def wait_event(self, ev):
            waited.append(ev)

    events = iter(range(100))
    ring = BatchRing(slab, 1, depth=2, stream=Stream(), make_event=lambda: next(events))
    ring.gather(np.array([0]))
    ring.gather(np.array([1]))
    assert waited == []                 # fresh slots: nothing to wait for
    ring.consumed()                     # event 0: batch 0 consumed
    ring.gather(np.array([2]))          # reuses slot 0
    assert waited == [0]
    ring.consumed()
    ring.consumed()
    ring.gather(np.array([0]))
    ring.gather(np.array([1]))
    assert waited == [0, 1, 2]
