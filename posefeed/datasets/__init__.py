"""Annotation ingestion: DeepLabCut and COCO files in, a validated `PoseTable` out."""
from posefeed.datasets.coco import load_coco, write_coco
from posefeed.datasets.dlc import load_dlc, read_dlc_file, write_dlc, write_dlc_config
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.flip import infer_flip_pairs
from posefeed.datasets.images import deep_check, read_image_sizes
from posefeed.datasets.resolve import (SYNTHETIC, dataset_path, default_cache_dir, load_dataset,
                                       resolve_dataset)
from posefeed.datasets.synthetic import (SyntheticConfig, SyntheticDataset, joint_colours,
                                         make_synthetic, render_frame, synthetic_skeleton)
from posefeed.datasets.summary import summarize
from posefeed.datasets.table import PoseTable, bbox_from_keypoints

__all__ = [
    "AnnotationError", "PoseTable", "SYNTHETIC", "SyntheticConfig", "SyntheticDataset",
    "bbox_from_keypoints", "dataset_path", "deep_check", "default_cache_dir", "infer_flip_pairs",
    "joint_colours", "load_coco", "load_dataset", "load_dlc", "make_synthetic",
    "read_dlc_file", "read_image_sizes", "render_frame", "resolve_dataset",
    "summarize", "synthetic_skeleton", "write_coco", "write_dlc", "write_dlc_config",
]
