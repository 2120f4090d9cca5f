"""`PoseLoader`'s arguments checked at construction, each error naming the argument, so a
wrong value never reaches deep code (a ``ZeroDivisionError`` in the order, a ``LinAlgError``
in the crop matrices, numpy's seed message at the first batch, a torch shape error in the
loss) or silently does the wrong thing (0 batches per epoch, negative sizes)."""
from __future__ import annotations

import numbers
from typing import Any, Sequence


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_loader_arguments(*, mode: str, input_size: Any, batch_size: Any, seed: Any,
                           num_threads: Any, shard: Any, on_bad_image: str) -> None:
    """Raise ``ValueError`` naming the first argument that cannot work."""
    if mode not in ("topdown", "frame"):
        raise ValueError(f"mode must be 'topdown' or 'frame', got {mode!r}")
    try:
        size = tuple(input_size)
    except TypeError:
        size = ()
    if len(size) != 2 or not all(_is_int(v) and v >= 1 for v in size):
        raise ValueError(f"input_size must be (width, height), two ints >= 1 in pixels, got "
                         f"{input_size!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (numpy seeds the order with it), got "
                         f"{seed!r}")
    if num_threads is not None and (not _is_int(num_threads) or num_threads < 1):
        raise ValueError(f"num_threads must be None (all usable CPUs) or an int >= 1, got "
                         f"{num_threads!r}")
    try:
        pair = tuple(shard) if shard is not None else (0, 1)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) for v in pair) or not 0 <= pair[0] < pair[1]:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    if on_bad_image not in ("raise", "skip"):
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")


def check_codecs(codecs: Sequence[Any], input_size: tuple[int, int]) -> None:
    """Every codec must encode for the loader's input: a codec with an ``input_size`` must
    have the loader's; one with a ``stride`` and a ``heatmap_size`` (DeepLabCut heatmaps,
    part affinity fields) must cover the input to within one stride on each axis."""
    w, h = input_size
    for codec in codecs:
        name = type(codec).__name__
        size = getattr(codec, "input_size", None)
        if size is not None and tuple(int(v) for v in size) != (w, h):
            raise ValueError(f"codec {name} encodes for input_size {tuple(size)}, the loader's "
                             f"input_size is {(w, h)}: build the codec with "
                             f"input_size={(w, h)}")
        stride, grid = getattr(codec, "stride", None), getattr(codec, "heatmap_size", None)
        if size is None and stride is not None and grid is not None:
            covered = (grid[0] * float(stride), grid[1] * float(stride))
            if abs(covered[0] - w) >= float(stride) or abs(covered[1] - h) >= float(stride):
                raise ValueError(
                    f"codec {name} has heatmap_size {tuple(grid)} at stride {stride:g}, which "
                    f"covers {covered[0]:g}x{covered[1]:g} input pixels; the loader's "
                    f"input_size is {w}x{h}: use heatmap_size ({w / float(stride):g}, "
                    f"{h / float(stride):g}) (rounded to the model's output)")


def check_batches(num_batches: int, *, num_samples: int, batch_size: int, drop_last: bool,
                  world: int, mode: str) -> None:
    """An epoch of 0 batches (a training loop would do nothing for all its epochs) is an
    error saying why."""
    if num_batches > 0:
        return
    what = "instances" if mode == "topdown" else "frames"
    per = num_samples // world
    raise ValueError(
        f"0 batches per epoch: {num_samples} {what} ({mode} mode) split over world size "
        f"{world} leave {per} per shard, fewer than batch_size {batch_size} with "
        f"drop_last=True; use a smaller batch_size, drop_last=False, or fewer ranks")
