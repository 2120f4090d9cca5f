"""Image files: reading encoded bytes (a few threads), checking each file once (cheap byte
checks), and, after a decoder error, finding the file behind it by decoding the suspects
one by one."""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
from PIL import Image, ImageFile

from posefeed.datasets.images import displayed_size
from posefeed.datasets.table import PoseTable
from posefeed.pipelines import cache as cache_mod

#: threads that read encoded files in the source
READ_THREADS = 4

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_problem(data: bytes, size: tuple[int, int] | None = None) -> str | None:
    """Why ``data`` cannot be fully decoded, or ``None``: the cheap checks
    (`check_image_bytes`), then a full decode with PIL and with OpenCV (a truncated JPEG passes
    the header checks but fails here). Used to find the file behind a decoder error."""
    why = check_image_bytes(data, size)
    if why is not None:
        return why
    try:
        if not ImageFile.LOAD_TRUNCATED_IMAGES:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        return f"PIL cannot decode it: {type(e).__name__}: {e}"
    import cv2  # noqa: PLC0415 - OpenCV only where it runs (posefeed.pipelines imports without it)

    try:
        ok = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) is not None
    except cv2.error as e:
        return f"OpenCV cannot decode it: {e}"
    return None if ok else "OpenCV cannot decode it"


def check_image_bytes(data: bytes, size: tuple[int, int] | None = None) -> str | None:
    """Why ``data`` is not a decodable JPEG/PNG of ``size`` (w, h), or ``None`` when it looks
    fine (magic number, header size, and PIL's ``verify``, which parses the headers / PNG
    chunks without decoding). The size is the displayed one (EXIF orientation applied, the
    rule of `posefeed.datasets.images`)."""
    if len(data) == 0:
        return "empty file"
    if not (data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC)):
        return "not a JPEG or PNG file (bad magic number)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()                # (must come straight after open)
        with Image.open(io.BytesIO(data)) as im:
            got = displayed_size(im)   # the EXIF-oriented size, as the decoders produce
    except Exception as e:  # PIL raises many kinds
        return f"{type(e).__name__}: {e}"
    if size is not None and got != (int(size[0]), int(size[1])):
        return f"image is {got[0]}x{got[1]} but the table says {size[0]}x{size[1]}"
    return None


class ImageReader:
    """Reads encoded bytes of the table's unique images, validating each file once.

    ``frames``, when given, holds decoded frames (the cache) and replaces reading.
    """

    def __init__(self, table: PoseTable, frames=None, ring=None, dense_bytes: bool = False):
        self.table = table
        self.paths = [str(table.image_path(im)) for im in table.images]
        first = ~table.frame[("image", "")].duplicated().to_numpy()
        #: ``(num_images, 2)`` (w, h) the table expects for each image
        self.sizes = table.image_sizes[first]
        self.frames = frames
        #: a `posefeed.pipelines.slab.BatchRing` over ``frames`` (a `FrameSlab`): batches are
        #: gathered into its preallocated dense batches (the GPU path's caches)
        self.ring = ring
        #: encoded bytes as one zero-padded ``(B, L)`` uint8 array instead of a list (the
        #: GPU graph: DALI converts a list sample by sample in Python; the decoders stop at
        #: the JPEG EOI / PNG IEND marker, so the zero padding is never read)
        self.dense_bytes = bool(dense_bytes)
        self._bad: dict[int, str] = {}
        self._checked = np.zeros(len(self.paths), dtype=bool)
        self._bad_mask = np.zeros(len(self.paths), dtype=bool)
        self._pool: ThreadPoolExecutor | None = None
        if frames is not None:
            for i, f in enumerate(frames):
                if f is None:
                    self._bad[i] = "failed to decode"
                    self._bad_mask[i] = True
            self._checked[:] = True

    @property
    def checked(self) -> np.ndarray:
        """``(num_images,)`` bool: the file has been read and checked."""
        return self._checked

    @property
    def any_bad(self) -> bool:
        """Some file is known to be bad."""
        return bool(self._bad)

    @property
    def bad(self) -> np.ndarray:
        """``(num_images,)`` bool: the file is known to be bad."""
        return self._bad_mask

    def bad_reason(self, image_id: int) -> str | None:
        """Why the image is bad (reads and checks it the first time), or ``None``."""
        if not self._checked[image_id]:
            self._read(image_id)
        return self._bad.get(image_id)

    def mark_bad(self, image_id: int, why: str) -> None:
        """Record that an image failed to decode (found by the decoder, after the checks)."""
        self._checked[image_id] = True
        self._bad[image_id] = why
        self._bad_mask[image_id] = True

    def read(self, image_id: int) -> bytes:
        """The file's bytes (empty when it cannot be read)."""
        try:
            with open(self.paths[image_id], "rb") as f:
                return f.read()
        except OSError:
            return b""

    def close(self) -> None:
        """Stop the reading threads (a later read starts them again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _read(self, image_id: int) -> bytes:
        path = self.paths[image_id]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            data, why = b"", f"{type(e).__name__}: {e}"
        else:
            why = None if self._checked[image_id] else \
                check_image_bytes(data, tuple(self.sizes[image_id]))
        if not self._checked[image_id]:
            self._checked[image_id] = True
            if why is not None:
                self._bad[image_id] = why
                self._bad_mask[image_id] = True
        return data

    def get(self, image_id: int):
        """Encoded bytes (1-D uint8 array) or the cached decoded frame."""
        if self.frames is not None:
            return self.frames[image_id]
        return np.frombuffer(self._read(image_id), dtype=np.uint8)

    def _get_chunk(self, image_ids: np.ndarray) -> list:
        return [self.get(i) for i in image_ids.tolist()]

    def get_many(self, image_ids: np.ndarray) -> list:
        """`get` for a batch; files are read by a few threads (reads release the GIL), each
        unique image once."""
        if self.ring is not None:
            return self.ring.gather(np.asarray(image_ids))
        if self.frames is not None:
            return [self.frames[i] for i in image_ids]
        unique, inverse = np.unique(image_ids, return_inverse=True)
        pool = None
        if len(unique) > 4:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="posefeed-read")
            pool = self._pool
            # one task per thread, each reading its share of the files: the calling thread
            # makes READ_THREADS submissions, not one per file
            chunks = np.array_split(unique, min(READ_THREADS, len(unique)))
            data = [d for part in pool.map(self._get_chunk, chunks) for d in part]
        else:
            data = [self.get(int(i)) for i in unique]
        if self.dense_bytes:        # the rows are copied in by the same threads
            return pad_bytes(data, inverse.ravel(), pool.map if pool is not None else None)
        return [data[j] for j in inverse.ravel()]


def pad_bytes(data: list[np.ndarray], order: np.ndarray, map_chunks=None) -> np.ndarray:
    """``(len(order), L)`` uint8: row ``r`` holds ``data[order[r]]`` followed by zeros, ``L``
    the longest (at least 1).

    Each of ``data`` is copied once into a zero-filled ``(len(data), L)`` array, by
    ``map_chunks`` (e.g. a thread pool's ``map``) over ``READ_THREADS`` chunks of them, or
    here; the rows of ``order`` are then one gather (``take``). Measured: 64 JPEGs of ~110 KB,
    ~1.5 ms, where a mask over all ``B x L`` bytes and a masked assignment took 27 ms."""
    order = np.asarray(order, dtype=np.int64).ravel()
    lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    used = np.unique(order)
    width = max(int(lengths[used].max()) if len(used) else 0, 1)
    rows = np.zeros((len(data), width), dtype=np.uint8)
    if len(used):
        chunks = np.array_split(used, min(READ_THREADS, len(used)))
        for _ in (map_chunks or map)(partial(_copy_rows, rows, data), chunks):
            pass
    if len(order) == len(data) and np.array_equal(order, np.arange(len(data))):
        return rows
    return rows.take(order, axis=0)


def _copy_rows(rows: np.ndarray, data: list[np.ndarray], which: np.ndarray) -> None:
    """``rows[j, :len(data[j])] = data[j]`` for ``j`` in ``which`` (a reader thread's share)."""
    for j in which.tolist():
        d = data[j]
        rows[j, :len(d)] = d


def find_undecodable(reader: ImageReader, image_ids: list[int]) -> dict[int, str]:
    """Which of ``image_ids`` (not yet known bad) fail to decode, and why: the byte checks
    and a full PIL / OpenCV decode of each, then, when those all pass, DALI's own CPU
    decoder one file at a time (some files only DALI's decoder rejects). Empty when every
    file decodes, or when the reader holds decoded frames (nothing left to decode)."""
    if reader.frames is not None:
        return {}
    candidates = [i for i in image_ids if not reader.bad[i]]
    found: dict[int, str] = {}
    for i in candidates:
        why = decode_problem(reader.read(i), tuple(reader.sizes[i]))
        if why is not None:
            found[i] = why
    if not found and candidates:
        failures: dict[int, str] = {}
        paths = [reader.paths[i] for i in candidates]
        cache_mod.decode_all(paths, "host", None, 1, batch_size=len(paths), failures=failures)
        found = {candidates[j]: why for j, why in failures.items()}
    return found
