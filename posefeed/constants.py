"""Numbers posefeed takes from other projects, defined once (no imports: any module may use
them without pulling in a subpackage)."""

#: ImageNet mean / std, RGB, in 0..255 pixel units (MMPose ``PoseDataPreprocessor``,
#: torchvision's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) times 255)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

#: COCO-17 keypoint ids of the upper body (nose .. right_wrist) and the lower body (hips,
#: knees, ankles): MMPose's ``upper_body_ids`` / ``lower_body_ids`` for ``RandomHalfBody``
COCO_UPPER_BODY = tuple(range(11))
COCO_LOWER_BODY = tuple(range(11, 17))
