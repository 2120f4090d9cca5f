"""Image checks: sizes from file headers (no decoding), and a full decode for ``--deep``."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, UnidentifiedImageError

from posefeed.datasets.errors import AnnotationError


def _header_size(path: Path) -> tuple[int, int] | str:
    """``(width, height)`` from the header, or the reason it could not be read."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"unreadable image header: {e}"


def read_image_sizes(root: Path, images: Sequence[str], *, source: str | Path | None = None,
                     threads: int = 8) -> dict[str, tuple[int, int]]:
    """``{image: (width, height)}`` for each unique image under ``root``, read from headers.

    Raises one `AnnotationError` listing every missing image (``field="image"``), or every
    image whose header is unreadable, naming ``source`` (the annotation file) as the file.
    """
    unique = list(dict.fromkeys(images))
    missing = [im for im in unique if not (root / im).is_file()]
    if missing:
        raise AnnotationError(
            f"{len(missing)} of {len(unique)} images not found under {root}",
            file=source, row=missing[0], field="image",
            problems=[f"missing image {root / m}" for m in missing])
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(unique)))) as pool:
        sizes = list(pool.map(lambda im: _header_size(root / im), unique))
    bad = [(im, s) for im, s in zip(unique, sizes) if isinstance(s, str)]
    if bad:
        raise AnnotationError(
            f"{len(bad)} images have unreadable headers", file=source, row=bad[0][0],
            field="image", problems=[f"{root / im}: {why}" for im, why in bad])
    return dict(zip(unique, sizes))  # type: ignore[arg-type]


@dataclass
class ImageCheck:
    """Result of decoding one image: ``error`` is ``None`` when it decoded fully."""

    image: str
    size: tuple[int, int] | None
    error: str | None


def decode_check(path: Path, image: str) -> ImageCheck:
    """Decode the whole image once; report zero-byte, unreadable or truncated files."""
    try:
        if not path.is_file():
            return ImageCheck(image, None, "missing")
        if path.stat().st_size == 0:
            return ImageCheck(image, None, "zero-byte file")
        with Image.open(path) as im:
            im.load()
            return ImageCheck(image, (int(im.size[0]), int(im.size[1])), None)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return ImageCheck(image, None, f"{type(e).__name__}: {e}")


def deep_check(root: Path, images: Sequence[str], expected: dict[str, tuple[int, int]],
               *, threads: int = 4,
               progress: Callable[[], None] | None = None) -> list[str]:
    """Decode every image (thread pool) and return one line per problem: unreadable,
    truncated or zero-byte images, and decoded sizes that differ from ``expected``."""
    problems: list[str] = []

    def work(im: str) -> ImageCheck:
        res = decode_check(root / im, im)
        if progress is not None:
            progress()
        return res

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for res in pool.map(work, images):
            if res.error is not None:
                problems.append(f"{root / res.image}: {res.error}")
            elif res.image in expected and tuple(expected[res.image]) != res.size:
                w, h = expected[res.image]
                problems.append(f"{root / res.image}: decoded size {res.size[0]}x{res.size[1]}"
                                f" differs from the labels' {w}x{h}")
    return problems
