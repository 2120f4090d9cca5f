"""posefeed inside DeepLabCut 3 (``pip install 'posefeed[deeplabcut]'``).

``import posefeed.integrations.deeplabcut`` registers posefeed's target generators in
DeepLabCut's ``TARGET_GENERATORS`` (``PosefeedHeatmapGaussianGenerator``,
``PosefeedHeatmapPlateauGenerator``, ``PosefeedPartAffinityFieldGenerator``,
``PosefeedDEKRGenerator``), so a ``pytorch_config.yaml`` can name them by ``type``
(``posefeed dlc use-generators`` switches a shuffle's config) and DeepLabCut's own
``train_network`` trains with them.
"""
from __future__ import annotations

try:
    import deeplabcut.pose_estimation_pytorch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("posefeed.integrations.deeplabcut needs DeepLabCut 3 (PyTorch engine): "
                      "pip install 'posefeed[deeplabcut]'") from e

from posefeed.integrations.dlc_config import use_generators
from posefeed.integrations.deeplabcut.generators import (GENERATORS, PosefeedDEKRGenerator,
                                                         PosefeedHeatmapGaussianGenerator,
                                                         PosefeedHeatmapPlateauGenerator,
                                                         PosefeedPartAffinityFieldGenerator,
                                                         register)

register()

__all__ = ["GENERATORS", "PosefeedDEKRGenerator", "PosefeedHeatmapGaussianGenerator",
           "PosefeedHeatmapPlateauGenerator", "PosefeedPartAffinityFieldGenerator", "register",
           "use_generators"]
