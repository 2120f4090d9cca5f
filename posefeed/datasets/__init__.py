"""Annotation ingestion: DeepLabCut and COCO files in, a validated `PoseTable` out."""
from posefeed.datasets.errors import AnnotationError
from posefeed.datasets.table import PoseTable, bbox_from_keypoints

__all__ = ["AnnotationError", "PoseTable", "bbox_from_keypoints"]
