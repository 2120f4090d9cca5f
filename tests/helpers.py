"""Builders shared by the test modules (as torchvision's ``common_utils``): small datasets
written to a temporary folder, keypoint arrays, loader helpers. Reference implementations
that values are checked against live in `oracles`; no test module imports another."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from posefeed.datasets import PoseTable
from posefeed.pipelines import AugmentConfig, PoseLoader


def kp(*rows):
    """One sample, one instance: ``rows`` of ``(x, y, v)`` -> ``(1, 1, K, 3)`` float32."""
    return np.asarray(rows, dtype=np.float32)[None, None]


# -- coloured-blob frames: keypoint k is a disc of COLOURS[k] (pipeline geometry tests) ----
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                    [0, 255, 255]], dtype=np.uint8)
BACKGROUND = 60
RADIUS = 7

#: geometry only: flip, shift, scale, rotation; no photometric change, no dropout
GEOMETRY = AugmentConfig.none().with_(flip_prob=0.5, shift_factor=0.16, shift_prob=0.5,
                                      scale_range=(0.7, 1.3), rotate_factor=80.0,
                                      rotate_prob=0.8)


def draw_blobs(size: tuple[int, int], kp: np.ndarray) -> np.ndarray:
    """An RGB ``(h, w, 3)`` image, grey, with a filled disc of colour k at keypoint k
    (all instances of ``kp (N, K, 3)`` with v > 0)."""
    w, h = size
    img = np.full((h, w, 3), BACKGROUND, dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for inst in kp:
        for k, (x, y, v) in enumerate(inst):
            if v > 0:
                img[(xx - x) ** 2 + (yy - y) ** 2 <= RADIUS ** 2] = COLOURS[k]
    return img


def make_blob_table(root: Path, n_images: int = 8, k: int = 4, instances=(1,), seed: int = 0,
                    size=(200, 160), ext: str = "png", bboxes: str = "keypoints") -> PoseTable:
    """Frames with 1+ instances of ``k`` keypoints as coloured blobs (far from each other and
    from the border). Flip pairs (0, 1), (2, 3) when k >= 4."""
    rng = np.random.default_rng(seed)
    images, kps, inds, boxes = [], [], [], []
    for i in range(n_images):
        n = instances[i % len(instances)]
        pts: list[np.ndarray] = []
        while len(pts) < n * k:
            p = rng.uniform(25, np.array(size) - 25)
            if all(np.hypot(*(p - q)) > 4 * RADIUS for q in pts):
                pts.append(p)
        kp = np.concatenate([np.array(pts).reshape(n, k, 2), np.full((n, k, 1), 2.0)], axis=2)
        name = f"img{i:03d}.{ext}"
        Image.fromarray(draw_blobs(size, kp)).save(root / name, quality=98)
        for j in range(n):
            images.append(name)
            kps.append(kp[j])
            inds.append(f"ind{j}")
            if bboxes == "first":  # a small box around keypoint 0 only
                x, y = kp[j, 0, :2]
                boxes.append([x - 12, y - 12, 24, 24])
    pairs = [(0, 1), (2, 3)] if k >= 4 else []
    return PoseTable.from_arrays(images, np.array(kps), [f"kp{j}" for j in range(k)],
                                 [size] * len(images), individuals=inds,
                                 bboxes=np.array(boxes) if boxes else None, flip_pairs=pairs,
                                 root=root)


def batches(loader, n=None):
    out = []
    for i, b in enumerate(loader):
        out.append(b)
        if n is not None and i + 1 >= n:
            break
    return out


def expected_channel(table: PoseTable, flipped: np.ndarray) -> np.ndarray:
    """``(B, K)``: the source keypoint each output channel holds (swapped when flipped)."""
    k = table.num_keypoints
    perm = np.arange(k)
    for a, b in table.flip_pairs:
        perm[a], perm[b] = b, a
    return np.where(flipped[:, None], perm[None, :], np.arange(k)[None, :])


def check_blobs(table, batch, min_checked=1):
    img = batch["image"].numpy().transpose(0, 2, 3, 1)          # (B, H, W, 3) uint8
    kp = batch["keypoints"].numpy()
    aff = batch["affine"].numpy()
    flipped = np.linalg.det(aff[:, :, :2]) < 0                    # a mirror reverses orientation
    chan = expected_channel(table, flipped)
    checked = 0
    for b in range(len(img)):
        for n in range(kp.shape[1]):
            for k in range(kp.shape[2]):
                x, y, v = kp[b, n, k]
                if v == 0:
                    continue
                xi, yi = int(round(x)), int(round(y))
                got = img[b, yi, xi].astype(int)
                want = COLOURS[chan[b, k]].astype(int)
                assert np.abs(got - want).max() < 50, (b, n, k, got, want)
                checked += 1
    assert checked >= min_checked


# -- annotation files ------------------------------------------------------------------------
def tiny_coco(tmp_path: Path) -> dict:
    for name, size in (("a.jpg", (100, 80)), ("b.jpg", (50, 40))):
        Image.new("RGB", size, (10, 20, 30)).save(tmp_path / name)
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "b.jpg", "width": 50, "height": 40}],
        "categories": [{"id": 1, "name": "thing", "keypoints": ["l_paw", "r_paw", "nose"],
                        "skeleton": [[1, 3], [2, 3]]}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 30, 40],
             "keypoints": [10, 20, 2, 30, 20, 1, 20, 5, 2], "num_keypoints": 3},
            {"id": 11, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 10, 10],
             "keypoints": [1, 2, 2, 0, 0, 0, 3, 4, 2], "num_keypoints": 2},
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 10, 10],
             "keypoints": [1, 2, 2, 0, 0, 0, 3, 4, 2], "num_keypoints": 2},
        ],
    }


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def write_images(folder: Path, names, size=(80, 60)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", size, (90, 90, 90)).save(folder / n)


def single_project(tmp_path: Path, body: str, header: str | None = None,
                   bodyparts=("nose", "tail"), images=("img0.png", "img1.png")) -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"scorer": "me", "bodyparts": list(bodyparts),
                                                      "skeleton": []}))
    folder = root / "labeled-data" / "v"
    write_images(folder, images)
    if header is None:
        header = ("scorer,me,me,me,me\nbodyparts,nose,nose,tail,tail\ncoords,x,y,x,y\n")
    (folder / "CollectedData_me.csv").write_text(header + body)
    return folder / "CollectedData_me.csv"


GOOD_BODY = "labeled-data/v/img0.png,1,2,3,4\nlabeled-data/v/img1.png,5,6,7,8\n"


# -- broken image files (reliability tests) ---------------------------------------------------
SIZE = (64, 48)            # (w, h) of every good image


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def corrupt_png_stream(png: bytes) -> bytes:
    """Zero half of the IDAT payload and rewrite the chunk CRCs, so the chunk structure (what
    PIL's ``verify`` checks) is intact but the zlib stream does not inflate."""
    out, i = bytearray(png[:8]), 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i:i + 4])
        kind, data = png[i + 4:i + 8], bytearray(png[i + 8:i + 8 + n])
        if kind == b"IDAT":
            data[2:2 + len(data) // 2] = bytes(len(data) // 2)
        out += struct.pack(">I", n) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        i += 12 + n
    return bytes(out)


def broken_bytes(kind: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """``(file suffix, content)`` of one broken file of ``kind``."""
    arr = rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    jpeg, png = _encode(arr, "JPEG"), _encode(arr, "PNG")
    if kind == "zero":
        return "jpg", b""
    if kind == "trunc_jpeg":
        return "jpg", jpeg[: len(jpeg) // 2]
    if kind == "trunc_png":
        return "png", png[: len(png) // 2]
    if kind == "not_image":
        return "jpg", b"frame_id,x,y\n1,2,3\n" * 4
    if kind == "wrong_size":
        return "jpg", _encode(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), "JPEG")
    if kind == "corrupt_png":
        return "png", corrupt_png_stream(png)
    raise ValueError(kind)


def make_dataset(root: Path, bad: dict[int, str], n: int = 12, fmt: str = "JPEG",
                 seed: int = 0) -> PoseTable:
    """``n`` noise images of `SIZE` (one instance, 3 keypoints each) with the images at the
    indices of ``bad`` replaced by broken files of that kind. Row i uses image i."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names, kps = [], []
    for i in range(n):
        if i in bad:
            suffix, data = broken_bytes(bad[i], rng)
        else:
            suffix = "jpg" if fmt == "JPEG" else "png"
            data = _encode(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8), fmt)
        name = f"im{i:02d}.{suffix}"
        (root / name).write_bytes(data)
        names.append(name)
        pts = rng.uniform(8, 40, (3, 2))
        kps.append(np.concatenate([pts, np.full((3, 1), 2.0)], axis=1))
    return PoseTable.from_arrays(names, np.array(kps), ["a", "b", "c"], [SIZE] * n, root=root)


def make_loader(table: PoseTable, *, input_size: tuple[int, int], seed: int, device: str = "cpu",
                num_threads: int = 1, batch_size: int = 4, **kw) -> PoseLoader:
    """A `PoseLoader` over ``table`` with the small test defaults (batch 4); ``codecs=`` and any
    other keyword go to the loader."""
    return PoseLoader(table, kw.pop("codecs", []), input_size=input_size, seed=seed,
                      device=device, num_threads=num_threads, batch_size=batch_size, **kw)


def both_cpu_kernels(module):
    """An autouse fixture (assign it to a name in a test module) that runs every test of that
    module on both CPU implementations of the codec in ``module``: the vectorised array
    version and the compiled numba kernel (skipped without numba), by patching the module's
    ``_use_cpu_kernel``; the fixture's value is the implementation's name."""

    @pytest.fixture(autouse=True, params=["numpy", "numba"])
    def kernel(request, monkeypatch):
        if request.param == "numba":
            pytest.importorskip("numba")
        monkeypatch.setattr(module, "_use_cpu_kernel", lambda kernel: request.param == "numba")
        return request.param

    return kernel

