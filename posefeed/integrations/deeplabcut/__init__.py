"""posefeed inside DeepLabCut 3 (``pip install 'posefeed[deeplabcut]'``).

``import posefeed.integrations.deeplabcut`` registers posefeed's target generators in
DeepLabCut's ``TARGET_GENERATORS`` (``PosefeedHeatmapGaussianGenerator``,
``PosefeedHeatmapPlateauGenerator``, ``PosefeedPartAffinityFieldGenerator``,
``PosefeedDEKRGenerator``), so a ``pytorch_config.yaml`` can name them by ``type``
(``posefeed dlc use-generators`` switches a shuffle's config) and DeepLabCut's own
``train_network`` trains with them. ``make_loaders`` gives posefeed loaders in DeepLabCut's
batch format for a shuffle; ``train_network`` trains DeepLabCut's model with them.
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
from posefeed.integrations.deeplabcut.loaders import (Loaders, UnsupportedAugmentation,
                                                      make_loaders, map_augmentation)
from posefeed.integrations.deeplabcut.training import train_network

register()

__all__ = ["GENERATORS", "Loaders", "PosefeedDEKRGenerator", "PosefeedHeatmapGaussianGenerator",
           "PosefeedHeatmapPlateauGenerator", "PosefeedPartAffinityFieldGenerator",
           "UnsupportedAugmentation", "make_loaders", "map_augmentation", "register",
           "train_network", "use_generators"]
