"""Image checks: sizes from file headers (no decoding), and a full decode for ``--deep``.

Orientation rule: every size is the *displayed* size, the image with its EXIF Orientation tag
applied (tags 5-8 swap width and height), because that is the view labelling tools show and
write into their files (COCO ``width`` / ``height``, keypoint coordinates), and the view every
decoder posefeed uses produces (DALI ``decoders.image`` / ``image_slice`` apply the tag by
default, ``adjust_orientation=True``; OpenCV ``imdecode`` applies it unless told not to).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, UnidentifiedImageError

from posefeed.datasets.errors import AnnotationError

log = logging.getLogger("posefeed.datasets")

#: what a loader does with an image whose header cannot be read (or that is missing)
ON_BAD_IMAGE = ("raise", "skip")


#: EXIF Orientation values that transpose the image (90 / 270 degree turns, with or without
#: a mirror): the displayed width is the stored height
TRANSPOSING = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112



#: how to go on when some (not all) images are bad: named in the error, so `skip` is findable
_SKIP_HINT = "; on_bad_image='skip' (CLI: --on-bad-image skip) leaves them out of the table"

def displayed_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as displayed: the stored size, swapped when its
    EXIF Orientation tag is 5-8. Reads only the header's EXIF block."""
    w, h = int(im.size[0]), int(im.size[1])
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the stored size, as decoders do
        orientation = 1
    return (h, w) if orientation in TRANSPOSING else (w, h)


def _header_size(path: Path) -> tuple[int, int] | str:
    """Displayed ``(width, height)`` from the header, or the reason it could not be read."""
    try:
        if path.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(path) as im:
            return displayed_size(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"unreadable image header: {e}"


@dataclass
class HeaderSizes:
    """`header_sizes`' answer: ``sizes[image] = (width, height)`` of the readable images,
    ``bad[image] = why`` of those left out (``on_bad_image="skip"``)."""

    sizes: dict[str, tuple[int, int]]
    bad: dict[str, str] = field(default_factory=dict)


def check_on_bad_image(on_bad_image: str) -> None:
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")


def header_sizes(root: Path, images: Sequence[str], *, source: str | Path | None = None,
                 threads: int = 8, on_bad_image: str = "raise") -> HeaderSizes:
    """Sizes of each unique image under ``root`` from its header (no decoding).

    ``on_bad_image="raise"``: one `AnnotationError` listing every missing image
    (``field="image"``), or every image whose header is unreadable (zero-byte, not an image),
    naming ``source`` (the annotation file) as the file. ``"skip"``: those images are left out
    of ``sizes`` and listed in ``bad`` with the reason, and a warning is logged; when no image
    is readable it raises as "raise" does (an empty dataset is never what was meant).
    """
    check_on_bad_image(on_bad_image)
    root = Path(root)
    unique = list(dict.fromkeys(images))
    missing = [im for im in unique if not (root / im).is_file()]
    if missing and (on_bad_image == "raise" or len(missing) == len(unique)):
        raise AnnotationError(
            f"{len(missing)} of {len(unique)} images not found under {root}"
            f"{_SKIP_HINT if len(missing) < len(unique) else ''}",
            file=source, row=missing[0], field="image",
            problems=[f"missing image {root / m}" for m in missing])
    present = [im for im in unique if im not in set(missing)]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(present) or 1))) as pool:
        found = list(pool.map(lambda im: _header_size(root / im), present))
    unreadable = [(im, s) for im, s in zip(present, found) if isinstance(s, str)]
    if unreadable and (on_bad_image == "raise" or len(unreadable) == len(present)):
        raise AnnotationError(
            f"{len(unreadable)} images have unreadable headers"
            f"{_SKIP_HINT if len(unreadable) < len(present) else ''}", file=source,
            row=unreadable[0][0], field="image",
            problems=[f"{root / im}: {why}" for im, why in unreadable])
    bad = {im: "missing file" for im in missing}
    bad.update(unreadable)
    if bad:
        log.warning("%s: leaving out %d of %d images (on_bad_image='skip'): %s%s",
                    source if source is not None else root, len(bad), len(unique),
                    "; ".join(f"{root / im}: {why}" for im, why in list(bad.items())[:3]),
                    " ..." if len(bad) > 3 else "")
    sizes = {im: s for im, s in zip(present, found) if not isinstance(s, str)}
    return HeaderSizes(sizes, bad)  # type: ignore[arg-type]


def read_image_sizes(root: Path, images: Sequence[str], *, source: str | Path | None = None,
                     threads: int = 8) -> dict[str, tuple[int, int]]:
    """``{image: (width, height)}`` for each unique image under ``root``, read from headers;
    a missing or unreadable image raises (`header_sizes` with ``on_bad_image="raise"``)."""
    return header_sizes(root, images, source=source, threads=threads).sizes


def skipped_lines(source: str | Path, root: Path, bad: dict[str, str],
                  rows: dict[str, list[str]]) -> list[str]:
    """One ``table.problems`` line per image left out: the annotation file, the image file,
    why, and the annotation rows that used it."""
    return [f"{source}: left out image {Path(root) / im} ({why}; on_bad_image='skip'), with "
            f"its {len(rows.get(im, []))} annotation row(s) {rows.get(im, [])[:8]}"
            for im, why in bad.items()]


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
            return ImageCheck(image, displayed_size(im), None)
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
