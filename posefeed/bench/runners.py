"""One runner per loader. Each runs inside its own fresh process (see `harness`), builds its
loader from the spec, and returns `measure.measure`'s dict (plus a few facts of its own).

The spec (a JSON dict) has: ``data`` (dataset path), ``batch_size``, ``threads``, ``device``
("cpu" | "gpu"), ``input_size`` [w, h], ``codecs`` (["simcc"] or ["simcc", "heatmap"]),
``iters`` (None: time-based), ``seconds``, ``warmup``, ``seed``, ``min_rows`` (tile small
tables to this many rows; default 32 batches), ``limit`` (use only the first rows), ``model``.

Imports: each runner imports the libraries of its own loader inside its function (torch,
cv2, DALI, posefeed.pipelines, the reference loader, the trainers), so a runner's process,
whose start-up, CPU and memory are what the benchmark reports, holds only what that loader
needs; the parent imports this module for `DESCRIPTIONS` without loading any of them.
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any, Callable, Iterator

import numpy as np

from posefeed.bench.measure import measure

RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {}

#: what each runner measures, for the report
DESCRIPTIONS: dict[str, str] = {}


def runner(name: str, description: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        RUNNERS[name] = fn
        DESCRIPTIONS[name] = description
        return fn
    return wrap


# --------------------------------------------------------------------------------------
# shared set-up
# --------------------------------------------------------------------------------------
def _setup_threads(spec: dict[str, Any]) -> None:
    # per runner: see "Imports" in the module docstring
    import torch

    threads = max(int(spec.get("threads", 1)), 1)
    torch.set_num_threads(threads)
    # per runner: see "Imports" in the module docstring
    import cv2

    cv2.setNumThreads(1)  # never start OpenCV's pool in a process that spawns workers


def _gpu(spec: dict[str, Any]) -> bool:
    return str(spec.get("device", "cpu")) == "gpu"


def _table(spec: dict[str, Any]) -> Any:
    # per runner: see "Imports" in the module docstring
    from posefeed.bench.data import load_table, tile_table

    table = load_table(spec["data"], spec.get("category"),
                       str(spec.get("on_bad_image", "raise")))
    limit = spec.get("limit")
    if limit and len(table) > int(limit):
        table = table.subset(np.arange(int(limit)))
    rows = int(spec.get("min_rows") or 32 * int(spec["batch_size"]))
    return tile_table(table, rows)


def _measure(spec: dict[str, Any], source: Iterator[Any], started: float, **kw: Any) -> dict[str, Any]:
    gpu = _gpu(spec)
    sync = None
    if gpu:
        # per runner: see "Imports" in the module docstring
        import torch

        sync = torch.cuda.synchronize
    return measure(source, warmup=warmup_batches(spec), iters=spec.get("iters"),
                   seconds=float(spec.get("seconds") or 10.0), min_iters=int(spec.get("min_iters", 3)),
                   started=started, gpu=gpu, sync=kw.pop("sync", sync), **kw)


def warmup_batches(spec: dict[str, Any]) -> int:
    """Untimed batches: ``spec["warmup"]``, or by default enough to get past the start-up wave
    (W workers each finish a batch, plus the prefetch queue, at about the same moment):
    ``max(3, 2 * threads + 1)``."""
    w = spec.get("warmup")
    if w:
        return int(w)
    return max(3, 2 * int(spec.get("threads", 1)) + 1)


def endless(loader: Any) -> Iterator[Any]:
    """Batches across epochs (``set_epoch`` between them when the loader has it)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError("the loader produced no batch in a whole epoch")
        epoch += 1


# --------------------------------------------------------------------------------------
# posefeed
# --------------------------------------------------------------------------------------
def make_codecs(names: list[str], input_size: tuple[int, int]) -> list[Any]:
    """The spec's codecs by registry name (`posefeed.targets.build_codec`), at stride 4."""
    # per runner: see "Imports" in the module docstring
    from posefeed.targets import build_codec

    return [build_codec(name, input_size) for name in names]


def posefeed_loader(spec: dict[str, Any], table: Any, *, cache: str | None = None,
                    targets: bool = True, augment: bool = True) -> Any:
    # per runner: see "Imports" in the module docstring
    from posefeed.pipelines import AugmentConfig, PoseLoader, rtmpose_schedule

    input_size = tuple(int(v) for v in spec.get("input_size", (192, 256)))
    codecs = make_codecs(list(spec.get("codecs", ["simcc"])), input_size) if targets else []
    schedule = rtmpose_schedule(420) if augment else [(0, AugmentConfig.none())]
    return PoseLoader(table, codecs, mode="topdown", input_size=input_size,
                      batch_size=int(spec["batch_size"]), schedule=schedule,
                      device="gpu" if _gpu(spec) else "cpu", seed=int(spec.get("seed", 0)),
                      shuffle=True, drop_last=True, num_threads=int(spec["threads"]), cache=cache,
                      on_bad_image=str(spec.get("on_bad_image", "raise")))


def _posefeed_run(spec: dict[str, Any], started: float, **kw: Any) -> dict[str, Any]:
    _setup_threads(spec)
    table = _table(spec)
    loader = posefeed_loader(spec, table, **kw)
    res = _measure(spec, endless(loader), started)
    res["rows"] = len(table)
    res["images"] = len(table.images)
    return res


@runner("posefeed", "posefeed PoseLoader, topdown RTMPose stage-1 recipe, targets, no cache")
def run_posefeed(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _posefeed_run(spec, started)


@runner("posefeed_cached_host", "posefeed PoseLoader with decoded frames cached in host memory")
def run_posefeed_cached_host(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _posefeed_run(spec, started, cache="host")


@runner("posefeed_cached_device", "posefeed PoseLoader with decoded frames cached on the GPU")
def run_posefeed_cached_device(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _posefeed_run(spec, started, cache="device")


@runner("posefeed_no_targets", "posefeed PoseLoader, augmentation on, no codec")
def run_posefeed_no_targets(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _posefeed_run(spec, started, targets=False)


@runner("posefeed_no_aug", "posefeed PoseLoader, no codec, no augmentation (decode, crop, normalise)")
def run_posefeed_no_aug(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _posefeed_run(spec, started, targets=False, augment=False)


# --------------------------------------------------------------------------------------
# the reference CPU loader
# --------------------------------------------------------------------------------------
def reference_loader(spec: dict[str, Any], table: Any, *, augment: bool = True) -> Any:
    # per runner: see "Imports" in the module docstring
    from posefeed.bench.reference import ReferenceTopdownDataset, make_reference_loader
    from posefeed.pipelines import AugmentConfig

    aug = AugmentConfig.rtmpose_stage1() if augment else AugmentConfig.none()
    input_size = tuple(int(v) for v in spec.get("input_size", (192, 256)))
    ds = ReferenceTopdownDataset.from_table(table, input_size=input_size,
                                            codecs=tuple(spec.get("codecs", ["simcc"])),
                                            augment=aug, seed=int(spec.get("seed", 0)))
    return make_reference_loader(ds, int(spec["batch_size"]), int(spec["threads"]),
                                 seed=int(spec.get("seed", 0)), pin_memory=_gpu(spec),
                                 start_method=str(spec.get("start_method", "spawn")))


def _to_device(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to("cuda", non_blocking=True) for k, v in batch.items()}


def _reference_run(spec: dict[str, Any], started: float, augment: bool = True) -> dict[str, Any]:
    _setup_threads(spec)
    table = _table(spec)
    loader = reference_loader(spec, table, augment=augment)
    source: Iterator[Any] = iter(loader)
    if _gpu(spec):  # what a GPU training loop does with every CPU batch
        source = map(_to_device, source)
    res = _measure(spec, source, started)
    res["rows"] = len(table)
    res["images"] = len(table.images)
    res["workers"] = int(spec["threads"])
    return res


@runner("reference", "torch DataLoader + OpenCV, MMPose-style per-instance decode, same recipe")
def run_reference(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _reference_run(spec, started)


@runner("reference_no_aug", "the reference loader without augmentation")
def run_reference_no_aug(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _reference_run(spec, started, augment=False)


# --------------------------------------------------------------------------------------
# decode only: the floor for any loader that decodes every sample
# --------------------------------------------------------------------------------------
def _row_paths(table: Any, seed: int) -> list[str]:
    """One path per table row (instance), shuffled: the per-instance decode sequence."""
    paths = [str(table.image_path(im)) for im in table.frame[("image", "")].tolist()]
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]


@runner("decode_dali", "DALI decoders.image on the same files (one decode per instance), same threads")
def run_decode_dali(spec: dict[str, Any], started: float) -> dict[str, Any]:
    # per runner: see "Imports" in the module docstring
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    _setup_threads(spec)
    table = _table(spec)
    paths = _row_paths(table, int(spec.get("seed", 0)))
    gpu = _gpu(spec)
    bs = int(spec["batch_size"])
    if gpu:  # so the monitor can read device memory in use (as for the torch-based runners)
        # per runner: see "Imports" in the module docstring
        import torch

        torch.cuda.init()

    @pipeline_def(batch_size=bs, num_threads=int(spec["threads"]), device_id=0 if gpu else None,
                  prefetch_queue_depth=2)
    def decode():
        jpegs, _ = fn.readers.file(files=paths, random_shuffle=False, name="reader")
        return fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)

    pipe = decode()
    pipe.build()

    def batches() -> Iterator[Any]:
        while True:
            (out,) = pipe.run()
            yield {"image": np.zeros((len(out), 0), dtype=np.uint8)}

    res = _measure(spec, batches(), started, samples_per_batch=bs, sync=None)
    res["shapes"] = {"image": [bs, "H", "W", 3]}
    res["decoder"] = "dali-mixed" if gpu else "dali-cpu"
    return res


@runner("decode_cv2", "cv2.imdecode of the same files in a thread pool of the same size")
def run_decode_cv2(spec: dict[str, Any], started: float) -> dict[str, Any]:
    # per runner: see "Imports" in the module docstring
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    _setup_threads(spec)
    table = _table(spec)
    paths = _row_paths(table, int(spec.get("seed", 0)))
    bs = int(spec["batch_size"])
    threads = int(spec["threads"])

    def decode(path: str) -> tuple[int, int]:
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot decode {path}")
        return img.shape[:2]

    def batches() -> Iterator[Any]:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            it = itertools.cycle(paths)
            inflight: deque = deque(pool.submit(decode, next(it)) for _ in range(2 * bs))
            while True:
                shapes = []
                for _ in range(bs):
                    shapes.append(inflight.popleft().result())
                    inflight.append(pool.submit(decode, next(it)))
                yield {"image": np.zeros((bs, 0), dtype=np.uint8)}

    res = _measure(spec, batches(), started, samples_per_batch=bs, sync=None)
    res["shapes"] = {"image": [bs, "H", "W", 3]}
    res["decoder"] = "cv2"
    return res


# --------------------------------------------------------------------------------------
# training: how much of a model's appetite each loader sustains
# --------------------------------------------------------------------------------------
def make_model(spec: dict[str, Any], num_keypoints: int) -> tuple[Any, Callable[[Any, dict], Any], str]:
    """``(model, loss_fn(outputs, batch) -> scalar, description)``: posefeed.trainers' SimCC
    model (small widths on CPU)."""
    # per runner: see "Imports" in the module docstring
    from posefeed.trainers.losses import PoseLoss
    from posefeed.trainers.models import ModelConfig, build_model

    input_size = tuple(int(v) for v in spec.get("input_size", (192, 256)))
    small = spec.get("model", "auto") == "small" or (spec.get("model", "auto") == "auto"
                                                     and not _gpu(spec))
    cfg = (ModelConfig(widths=(16, 32, 64, 96), depths=(1, 1, 1, 1), simcc_hidden=128,
                       simcc_gau=False) if small else ModelConfig())
    model = build_model("simcc", num_keypoints, input_size, cfg)
    crit = PoseLoss()

    def loss_fn(outputs: Any, batch: dict) -> Any:
        return crit(outputs, batch)[0]

    return model, loss_fn, f"posefeed.trainers simcc ({'small' if small else 'default'})"


def _train_step_fn(spec: dict[str, Any], num_keypoints: int) -> tuple[Callable[[dict], None], str, int]:
    # per runner: see "Imports" in the module docstring
    import torch

    gpu = _gpu(spec)
    model, loss_fn, desc = make_model(spec, num_keypoints)
    dev = torch.device("cuda" if gpu else "cpu")
    model.to(dev).train()
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    params = sum(p.numel() for p in model.parameters())

    def step(batch: dict) -> None:
        b = {k: (v.to(dev, non_blocking=True) if hasattr(v, "to") else v) for k, v in batch.items()}
        img = b["image"].float()
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=gpu):
            out = model(img)
        loss = loss_fn({k: v.float() for k, v in out.items()}, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, desc, params


def _fake_batch(spec: dict[str, Any], num_keypoints: int) -> dict[str, Any]:
    """One batch with the loader's keys and shapes (targets from random keypoints)."""
    # per runner: see "Imports" in the module docstring
    import torch

    from posefeed.bench.reference import simcc_targets

    w, h = (int(v) for v in spec.get("input_size", (192, 256)))
    bs = int(spec["batch_size"])
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, [w, h], (bs, num_keypoints, 2)),
                         np.full((bs, num_keypoints, 1), 2.0)], axis=-1).astype(np.float32)
    xs, ys, ws = zip(*(simcc_targets(kp[i], (w, h)) for i in range(bs)))
    batch = {"image": torch.randn(bs, 3, h, w), "keypoints": torch.from_numpy(kp[:, None]),
             "x_labels": torch.from_numpy(np.stack(xs)), "y_labels": torch.from_numpy(np.stack(ys)),
             "keypoint_weight": torch.from_numpy(np.stack(ws))}
    if _gpu(spec):
        batch = _to_device(batch)
    return batch


def _train_run(spec: dict[str, Any], started: float, feed: str) -> dict[str, Any]:
    spec = {**spec, "codecs": ["simcc"]}  # the model has a SimCC head
    _setup_threads(spec)
    table = _table(spec)
    k = len(table.bodyparts)
    step, desc, params = _train_step_fn(spec, k)
    if feed == "appetite":
        source: Iterator[Any] = itertools.repeat(_fake_batch(spec, k))
    elif feed == "posefeed":
        source = endless(posefeed_loader(spec, table))
    else:
        source = iter(reference_loader(spec, table))
    res = _measure(spec, source, started, consume=step)
    res["steps_per_s"] = res["batches"] / res["wall_s"] if res["wall_s"] else None
    res["model"] = desc
    res["parameters"] = params
    return res


@runner("train_appetite", "training steps/s on one batch kept in device memory (the model's appetite)")
def run_train_appetite(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _train_run(spec, started, "appetite")


@runner("train_posefeed", "training steps/s fed by posefeed's loader")
def run_train_posefeed(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _train_run(spec, started, "posefeed")


@runner("train_reference", "training steps/s fed by the reference loader")
def run_train_reference(spec: dict[str, Any], started: float) -> dict[str, Any]:
    return _train_run(spec, started, "reference")


@runner("sleep", "test helper: yields empty batches (harness self-test)")
def run_sleep(spec: dict[str, Any], started: float) -> dict[str, Any]:
    def batches() -> Iterator[Any]:
        while True:
            time.sleep(0.001)
            yield {"image": np.zeros((int(spec.get("batch_size", 1)), 1))}

    return _measure(spec, batches(), started, sync=None)
