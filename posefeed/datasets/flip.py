"""Left/right flip pairs inferred from bodypart names."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from posefeed.datasets.errors import AnnotationError

_WORD = re.compile(r"left|right", re.IGNORECASE)
_SEP = re.compile(r"([_\-\s.]+)")


def _side_key(name: str) -> tuple[str, str] | None:
    """``(key, side)`` with the side marker replaced by ``*`` in ``key``; ``None`` if no side.

    Recognises ``left``/``right`` anywhere (any case: ``leftear``, ``LeftHand``, ``ear_right``)
    and ``l``/``r`` as a separate token (``l_paw``, ``paw_R``, ``front-l-paw``).
    """
    lower = name.lower()
    m = _WORD.search(lower)
    if m is not None:
        side = "L" if m.group(0) == "left" else "R"
        return lower[: m.start()] + "*" + lower[m.end():], side
    parts = _SEP.split(lower)
    for i, tok in enumerate(parts):
        if tok in ("l", "r"):
            key = parts[:i] + ["*"] + parts[i + 1:]
            return "".join(key), tok.upper()
    return None


def infer_flip_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """``(left, right)`` index pairs of names that differ only in their side marker.

    >>> infer_flip_pairs(["snout", "leftear", "rightear", "paw_L", "paw_R"])
    [(1, 2), (3, 4)]
    """
    groups: dict[str, dict[str, list[int]]] = {}
    for i, name in enumerate(names):
        hit = _side_key(str(name))
        if hit is not None:
            key, side = hit
            groups.setdefault(key, {"L": [], "R": []})[side].append(i)
    pairs = []
    for sides in groups.values():
        if len(sides["L"]) == 1 and len(sides["R"]) == 1:
            pairs.append((sides["L"][0], sides["R"][0]))
    return sorted(pairs)


def resolve_flip_pairs(
    names: Sequence[str], flip_pairs: Iterable[tuple[int | str, int | str]] | None = None
) -> list[tuple[int, int]]:
    """Caller-given pairs (indices or names) or, when ``None``, the pairs inferred from names."""
    if flip_pairs is None:
        return infer_flip_pairs(names)
    index = {str(n): i for i, n in enumerate(names)}
    out = []
    for pair in flip_pairs:
        a, b = pair
        ij = []
        for p in (a, b):
            if isinstance(p, str):
                if p not in index:
                    raise AnnotationError(f"flip pair names unknown bodypart {p!r}",
                                          field="flip_pairs")
                ij.append(index[p])
            else:
                if not 0 <= int(p) < len(names):
                    raise AnnotationError(f"flip pair index {p} outside 0..{len(names) - 1}",
                                          field="flip_pairs")
                ij.append(int(p))
        out.append((ij[0], ij[1]))
    return out
