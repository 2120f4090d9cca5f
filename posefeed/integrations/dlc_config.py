"""Switch a DeepLabCut 3 shuffle's ``pytorch_config.yaml`` to posefeed's target generators
and back. YAML only: imports no DeepLabCut (DeepLabCut needs ``import
posefeed.integrations.deeplabcut`` in the process that builds the model, to find the names).

Only the ``type:`` lines of the target generators change (found under every head's
``target_generator``, also inside a ``SequentialGenerator``'s ``generators`` list); comments,
key order and every other line of the file stay as they are, and the result is re-read and
checked before it replaces the file. The first switch keeps a copy of the file as it was
(``pytorch_config.yaml.posefeed-backup``, never overwritten afterwards).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# DeepLabCut generator type -> posefeed's drop-in (posefeed.integrations.deeplabcut.GENERATORS
# holds the classes under the same names)
DROP_INS: dict[str, str] = {
    "HeatmapGaussianGenerator": "PosefeedHeatmapGaussianGenerator",
    "HeatmapPlateauGenerator": "PosefeedHeatmapPlateauGenerator",
    "PartAffinityFieldGenerator": "PosefeedPartAffinityFieldGenerator",
    "DEKRGenerator": "PosefeedDEKRGenerator",
}
BACKUP_SUFFIX = ".posefeed-backup"


@dataclass(frozen=True)
class Switch:
    """One generator whose type changed: where (``model.heads.bodypart.target_generator``)
    and the types before and after."""

    where: str
    old: str
    new: str


def generator_types(cfg: Any) -> list[tuple[str, str]]:
    """``(where, type)`` of every target generator in a parsed ``pytorch_config.yaml``."""
    found: list[tuple[str, str]] = []

    def visit_generator(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        if "type" in node:
            found.append((where, str(node["type"])))
        for i, sub in enumerate(node.get("generators") or []):
            visit_generator(sub, f"{where}.generators[{i}]")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{where}.{key}" if where else str(key)
                if key == "target_generator":
                    visit_generator(value, path)
                else:
                    walk(value, path)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(cfg, "")
    return found


def _swap_types(cfg: Any, mapping: dict[str, str]) -> Any:
    """A copy of the parsed config with the generator types mapped (the expected result)."""
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            if key == "target_generator":
                out[key] = _swap_generator(value, mapping)
            else:
                out[key] = _swap_types(value, mapping)
        return out
    if isinstance(cfg, list):
        return [_swap_types(v, mapping) for v in cfg]
    return cfg


def _swap_generator(node: Any, mapping: dict[str, str]) -> Any:
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "type" in out:
        out["type"] = mapping.get(str(out["type"]), out["type"])
    if out.get("generators"):
        out["generators"] = [_swap_generator(g, mapping) for g in out["generators"]]
    return out


def use_generators(path: str | os.PathLike, undo: bool = False) -> list[Switch]:
    """Point every DeepLabCut heatmap generator of a shuffle's ``pytorch_config.yaml`` at
    posefeed's drop-in (``undo=True``: back to DeepLabCut's). Returns what changed (empty:
    nothing to switch; the file is then left untouched). Generator types posefeed has no
    drop-in for stay as they are."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pytorch_config.yaml")
    text = path.read_text()
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError(f"{path}: not a DeepLabCut pytorch_config.yaml (no 'model' section)")
    mapping = {v: k for k, v in DROP_INS.items()} if undo else dict(DROP_INS)
    switches = [Switch(where, old, mapping[old]) for where, old in generator_types(cfg)
                if old in mapping]
    if not switches:
        return []
    pattern = re.compile(r"^(?P<head>\s*(?:-\s+)?type:\s*['\"]?)(?P<name>" +
                         "|".join(re.escape(k) for k in mapping) +
                         r")(?P<tail>['\"]?\s*(?:#.*)?)$", re.MULTILINE)
    new_text = pattern.sub(lambda m: m["head"] + mapping[m["name"]] + m["tail"], text)
    if yaml.safe_load(new_text) != _swap_types(cfg, mapping):
        raise ValueError(f"{path}: could not switch the generator types line by line "
                         "(unusual YAML layout); edit the target_generator 'type' by hand")
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if not undo and not backup.exists():
        shutil.copy2(path, backup)
    tmp = path.with_name(path.name + ".posefeed-tmp")
    tmp.write_text(new_text)
    os.replace(tmp, path)
    return switches
