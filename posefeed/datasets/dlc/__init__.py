"""DeepLabCut annotations: ``CollectedData_*.h5`` / ``.csv`` files and project folders.

Single-animal files have three column levels ``(scorer, bodyparts, coords)``, multi-animal
files four ``(scorer, individuals, bodyparts, coords)`` with unique bodyparts under the
individual ``"single"``. Rows are images, indexed by a path string
(``"labeled-data/m4s1/img0000.png"``) or a 3-level tuple
(``("labeled-data", "m4s1", "img0000.png")``), relative to the project folder.

Conventions in the resulting `PoseTable`: a labelled keypoint gets ``v = 2`` (DeepLabCut has
no occlusion flag); a NaN keypoint is stored as ``x = y = 0, v = 0``, and so is a keypoint
with only one of ``x``, ``y`` labelled (a repair, not an error); ``inf`` is an error naming
the file, row and field; a keypoint outside its image is set to ``v = 0`` with a line in
``table.problems``. Single-animal rows are
kept even when nothing is labelled (a frame with no animal); in multi-animal files an
individual with nothing labelled in a frame is not an instance and its row is dropped.

Modules, in the order the data flows:

- `files`: one file -> its raw DataFrame (`read_dlc_file`; CSV and HDF5, both index forms).
- `instances`: raw DataFrame -> instance rows, one function for the single-animal and one
  for the multi-animal layout, checked against the project's `ProjectLayout`.
- `project`: ``config.yaml`` (`read_config`, bodyparts, individuals, skeleton) and
  `load_dlc` (a project folder or one file -> `PoseTable`).
- `writers`: `PoseTable` -> CollectedData file (`write_dlc`) and ``config.yaml``
  (`write_dlc_config`).
"""
from posefeed.datasets.dlc.files import (DEFAULT_INDIVIDUAL, MULTI_LEVELS, SINGLE_LEVELS, UNIQUE,
                                         read_dlc_file)
from posefeed.datasets.dlc.instances import (Instances, ProjectLayout, multi_animal_instances,
                                             single_animal_instances)
from posefeed.datasets.dlc.project import load_dlc, project_layout, read_config
from posefeed.datasets.dlc.writers import (dlc_config, dlc_frame, is_multianimal, write_dlc,
                                           write_dlc_config)

__all__ = [
    "DEFAULT_INDIVIDUAL", "Instances", "MULTI_LEVELS", "ProjectLayout", "SINGLE_LEVELS", "UNIQUE",
    "dlc_config", "dlc_frame", "is_multianimal", "load_dlc", "multi_animal_instances",
    "project_layout", "read_config", "read_dlc_file", "single_animal_instances", "write_dlc",
    "write_dlc_config",
]
