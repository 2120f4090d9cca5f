"""EXIF orientation: a JPEG (or PNG) stored rotated or mirrored with an Orientation tag, as
phones and many cameras write them, labelled on the *displayed* view (what every labelling
tool, browser and image viewer shows, and the size they write into COCO JSON).

The rule (docs/design.md): sizes, decoding and checks all use the displayed view, the image
with its EXIF orientation applied (as PIL's ``ImageOps.exif_transpose`` defines it). The
decoders already do (DALI ``decoders.image`` / ``image_slice`` with ``adjust_orientation=True``,
OpenCV ``imdecode``); sizes came from the stored header, so a rotated frame was "wrong size",
its correct keypoints dropped as "outside", and the pipeline failed or letterboxed it the
wrong way. Every one of the eight orientations is built here from a displayed reference
image and read back through every size, check and decode path."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

W, H = 60, 40              # the displayed view
#: the stored pixels for each orientation: the inverse of the EXIF transform (the EXIF
#: spec; PIL's exif_transpose maps these back to the displayed view, checked below)
TO_STORED = {1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
             4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
             6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
             8: [Image.Transpose.ROTATE_270]}
ORIENTATIONS = sorted(TO_STORED)


def displayed() -> np.ndarray:
    """A (H, W, 3) uint8 image no flip or rotation maps onto itself: ramps in x and y and
    a block at the top-left corner."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, W).astype(np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, H).astype(np.uint8)[:, None]
    img[:10, :15, 2] = 255
    return img


def encode(orientation: int, fmt: str = "JPEG") -> bytes:
    im = Image.fromarray(displayed())
    for t in TO_STORED[orientation]:
        im = im.transpose(t)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    extra = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    im.save(buf, fmt, exif=exif.tobytes(), **extra)
    return buf.getvalue()


#: keypoints on the displayed view: the block's corner and the far corner, pixel centres
KEYPOINTS = [(2.0, 3.0), (W - 3.0, H - 2.0)]


@pytest.fixture(scope="module")
def oriented_coco(tmp_path_factory):
    """A COCO set of eight JPEGs, one per orientation, labelled and sized on the displayed
    view (as a labelling tool writes them)."""
    folder = tmp_path_factory.mktemp("exif")
    images, anns = [], []
    for o in ORIENTATIONS:
        name = f"o{o}.jpg"
        (folder / name).write_bytes(encode(o))
        images.append({"id": o, "file_name": name, "width": W, "height": H})
        flat = []
        for x, y in KEYPOINTS:
            flat += [x, y, 2]
        anns.append({"id": o, "image_id": o, "category_id": 1, "iscrowd": 0,
                     "keypoints": flat, "bbox": [0, 0, W, H]})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "thing", "keypoints": ["a", "b"],
                            "skeleton": [[1, 2]]}]}
    path = folder / "coco.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("o", ORIENTATIONS)
def test_the_files_are_built_as_the_exif_spec_says(o):
    from PIL import ImageOps

    back = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encode(o)))))
    assert np.abs(back.astype(int) - displayed()).max() <= 8   # JPEG at quality 100


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("o", ORIENTATIONS)
def test_header_sizes_are_the_displayed_size(tmp_path, o, fmt):
    from posefeed.datasets.images import deep_check, read_image_sizes

    name = f"o{o}.{fmt.lower()}"
    (tmp_path / name).write_bytes(encode(o, fmt))
    assert read_image_sizes(tmp_path, [name]) == {name: (W, H)}
    assert deep_check(tmp_path, [name], {name: (W, H)}) == []


def test_a_table_keeps_the_displayed_sizes_and_keypoints(oriented_coco):
    from posefeed.datasets import load_coco

    table = load_coco(oriented_coco)
    assert table.problems == []                 # no "JSON says" size line, nothing "outside"
    assert table.image_sizes.tolist() == [[W, H]] * 8
    np.testing.assert_allclose(table.keypoints[:, :, :2], [KEYPOINTS] * 8)
    assert (table.keypoints[:, :, 2] == 2).all()


@pytest.mark.parametrize("o", ORIENTATIONS)
def test_source_checks_use_the_displayed_size(o):
    from posefeed.pipelines import source

    assert source.check_image_bytes(encode(o), (W, H)) is None
    assert source.decode_problem(encode(o), (W, H)) is None


@pytest.mark.parametrize("backend, cache", [("opencv", None), ("dali", None),
                                            ("opencv", "host"), ("dali", "host")])
def test_every_decode_path_yields_the_displayed_view(oriented_coco, backend, cache):
    """Frame mode, no augmentation, input size = image size: the batch is the displayed
    view itself (the affine is the identity), for every orientation and decode path."""
    pytest.importorskip("nvidia.dali")
    from posefeed.datasets import load_coco
    from posefeed.pipelines import AugmentConfig, PoseLoader

    table = load_coco(oriented_coco)
    with PoseLoader(table, mode="frame", input_size=(W, H), batch_size=8, device="cpu",
                    schedule=AugmentConfig.none(), shuffle=False, drop_last=False,
                    image_dtype="uint8", cpu_backend=backend, cache=cache) as loader:
        batch = next(iter(loader))
    ref = displayed().astype(int)
    np.testing.assert_allclose(batch["affine"][0].numpy(), [[1, 0, 0], [0, 1, 0]], atol=1e-5)
    for i, row in enumerate(batch["index"][:, 0].tolist()):
        img = batch["image"][i].numpy().transpose(1, 2, 0).astype(int)
        err = np.abs(img - ref)
        assert err.mean() < 2.0 and np.percentile(err, 99) < 12, (ORIENTATIONS[row], err.mean())
        np.testing.assert_allclose(batch["keypoints"][i, 0, :, :2].numpy(), KEYPOINTS,
                                   atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("cache", [None, "host", "device"])
def test_gpu_decode_paths_yield_the_displayed_view(oriented_coco, cache):
    """nvJPEG ("mixed" decoders.image, adjust_orientation=True) and the caches on the GPU."""
    from posefeed.datasets import load_coco
    from posefeed.pipelines import AugmentConfig, PoseLoader

    table = load_coco(oriented_coco)
    with PoseLoader(table, mode="frame", input_size=(W, H), batch_size=8, device="gpu",
                    schedule=AugmentConfig.none(), shuffle=False, drop_last=False,
                    image_dtype="uint8", cache=cache) as loader:
        batch = next(iter(loader))
    ref = displayed().astype(int)
    for i, row in enumerate(batch["index"][:, 0].tolist()):
        img = batch["image"][i].cpu().numpy().transpose(1, 2, 0).astype(int)
        assert np.abs(img - ref).mean() < 2.0, ORIENTATIONS[row]
