"""Broken image files during training (issue 7): real broken files mixed into a dataset.

Kinds: a zero-byte file, a truncated JPEG (first half of a real one), a truncated PNG, a file
that is not an image, a JPEG whose size disagrees with the labels, and a PNG whose zlib
stream is corrupt with valid chunk CRCs (passes PIL's ``verify``, fails inside the OpenCV
stage). The truncated JPEG also passes the cheap checks and fails inside DALI's decoder.

``on_bad_image="raise"`` must name the file and the table row; ``"skip"`` must replace the
sample by the next good sample in table order (the reference here is computed from the
table, not from the loader's code), keep the epoch's length, count and log each replacement,
and give the same batches for the same seed, also across a resume.
"""
from __future__ import annotations

import logging

import pytest
import torch

from posefeed.pipelines import BadImageError, PoseLoader

from helpers import make_dataset

INPUT = (32, 32)
GOOD_ROW = "good"


def loader(table, **kw) -> PoseLoader:
    args = dict(input_size=INPUT, batch_size=4, device="cpu", num_threads=1, seed=3,
                drop_last=False)
    args.update(kw)
    return PoseLoader(table, [], **args)


def indices(batches) -> list[int]:
    return [int(i) for b in batches for i in b["index"].ravel()]


def next_good(row: int, bad: set[int], n: int) -> int:
    """The documented replacement: the next row in table order (wrapping) with a good image."""
    while row in bad:
        row = (row + 1) % n
    return row


KINDS = ["zero", "trunc_jpeg", "trunc_png", "not_image", "wrong_size", "corrupt_png"]


@pytest.mark.parametrize("kind", KINDS)
def test_raise_names_the_file_and_the_row(tmp_path, kind):
    # the broken image in the third batch: two batches come out before the error
    table = make_dataset(tmp_path, {9: kind}, fmt="PNG" if kind == "corrupt_png" else "JPEG")
    ld = loader(table, shuffle=False)
    got = []
    with pytest.raises(BadImageError) as e:
        for b in ld:
            got.append(b)
    path = str(table.image_path(table.images[9]))
    assert e.value.file == path and e.value.rows == [9]
    assert path in str(e.value) and "table row [9]" in str(e.value)
    assert len(got) <= 2 and all(9 not in b["index"] for b in got)


def test_skip_replaces_counts_logs_and_keeps_the_epoch(tmp_path, caplog):
    bad = {1: "zero", 4: "trunc_jpeg", 5: "trunc_png", 8: "not_image", 11: "wrong_size"}
    table = make_dataset(tmp_path, bad, n=14)
    n = len(table)
    caplog.set_level(logging.WARNING, logger="posefeed.pipelines")
    ld = loader(table, shuffle=False, on_bad_image="skip")
    out = list(ld)
    assert len(out) == len(ld) == 4 and [len(b["index"]) for b in out] == [4, 4, 4, 2]
    assert indices(out) == [next_good(r, set(bad), n) for r in range(n)]
    assert ld.skipped == len(bad)
    skipping = [r.getMessage() for r in caplog.records if "skipping bad image" in r.getMessage()]
    assert len(skipping) == len(bad)
    for r in bad:
        assert any(str(table.image_path(table.images[r])) in m for m in skipping)
    # second epoch (shuffled order is not used here): the same replacement, counted again
    assert indices(ld) == indices(out) and ld.skipped == 2 * len(bad)
    # the images of replaced samples are the replacement's (same as a loader on good rows)
    assert all(torch.isfinite(b["image"]).all() for b in out)


def test_skip_same_seed_same_batches_and_resume(tmp_path):
    bad = {0: "trunc_jpeg", 3: "zero", 7: "trunc_png", 10: "not_image"}
    table = make_dataset(tmp_path, bad, n=16)
    n, bad_rows = len(table), set(bad)
    a, b = loader(table, on_bad_image="skip"), loader(table, on_bad_image="skip")
    ea, eb = [list(a) for _ in range(2)], [list(b) for _ in range(2)]
    for x_epoch, y_epoch in zip(ea, eb):
        assert len(x_epoch) == len(a) == 4
        for x, y in zip(x_epoch, y_epoch):
            for k in x:
                assert torch.equal(x[k], y[k]), k
    # every epoch: each row appears once, broken rows mapped to their replacement
    for epoch in ea:
        got = sorted(indices(epoch))
        assert got == sorted(next_good(r, bad_rows, n) for r in range(n))
        assert not set(got) & bad_rows
    assert a.skipped == b.skipped == 2 * len(bad)
    # stop after one batch of epoch 1, resume in a new loader: the same remaining batches
    c = loader(table, on_bad_image="skip")
    c.set_epoch(1)
    first = next(iter(c))
    state = c.state_dict()
    d = loader(table, on_bad_image="skip")
    d.load_state_dict(state)
    rest = list(d)
    for x, y in zip([first] + rest, ea[1]):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert d.skipped == len(bad)     # epoch 1's replacements, counted across the resume


@pytest.mark.parametrize("fmt,kind", [("JPEG", "trunc_jpeg"), ("PNG", "corrupt_png")])
def test_decoder_failure_mid_epoch_skip_continues(tmp_path, fmt, kind, caplog):
    """The file passes the source's checks; DALI's decoder (JPEG) or the OpenCV stage (PNG
    decoded by cv2) fails on it in the third batch. "skip" rebuilds and goes on."""
    table = make_dataset(tmp_path, {9: kind}, n=12, fmt=fmt)
    ld = loader(table, shuffle=False, on_bad_image="skip")
    assert ld.source.reader.bad_reason(9) is None          # the cheap checks pass
    caplog.set_level(logging.WARNING, logger="posefeed.pipelines")
    out = list(ld)
    assert indices(out) == [next_good(r, {9}, 12) for r in range(12)]
    assert ld.skipped == 1
    assert any("fails in the decoder" in r.getMessage() and "im09" in r.getMessage()
               for r in caplog.records)
    # the next epoch knows the file and does not fail again
    assert sorted(indices(ld)) == sorted(next_good(r, {9}, 12) for r in range(12))
    # the batches match a loader on a dataset where that file was marked bad up front
    ref = loader(table, shuffle=False, on_bad_image="skip")
    ref.source.reader.mark_bad(9, "known")
    for x, y in zip(list(ref), out):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["index"], y["index"])


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_host_cache_with_broken_files(tmp_path, mode):
    bad = {2: "trunc_jpeg", 6: "zero"}
    table = make_dataset(tmp_path, bad, n=8)
    ld = loader(table, shuffle=False, on_bad_image=mode, cache="host", image_dtype="uint8")
    if mode == "raise":
        with pytest.raises(BadImageError) as e:     # the checks find the empty file first
            list(ld)
        assert e.value.file == str(table.image_path(table.images[6])) and e.value.rows == [6]
        only = make_dataset(tmp_path / "only", {2: "trunc_jpeg"}, n=8)
        with pytest.raises(BadImageError) as e:     # the decoder finds the truncated one
            list(loader(only, on_bad_image="raise", cache="host"))
        assert e.value.file == str(only.image_path(only.images[2])) and e.value.rows == [2]
        assert "truncated" in str(e.value)           # the file's problem, not DALI's last line
        return
    out = list(ld)
    assert indices(out) == [next_good(r, set(bad), 8) for r in range(8)]
    assert ld.skipped == 2
    ref = list(loader(table, shuffle=False, on_bad_image="skip", image_dtype="uint8"))
    for x, y in zip(out, ref):
        assert torch.equal(x["image"], y["image"])
