"""Weight conversion: official DETR checkpoints and torchvision ResNets -> detr_d2 / Detectron2
state dicts, read without unpickling arbitrary objects."""

from .detr_official import (
    CheckpointConversionError,
    ConvertedDetr,
    DetrSpec,
    check_against_model,
    coco_detection_class_rows,
    coco_panoptic_class_rows,
    convert_official_detr,
    load_official_checkpoint,
)
from .safe_load import UnsafeCheckpointError, load_checkpoint_safely, load_pickle_safely
from .torchvision_resnet import convert_torchvision_resnet, torchvision_to_detectron2_name

__all__ = [
    "CheckpointConversionError",
    "ConvertedDetr",
    "DetrSpec",
    "UnsafeCheckpointError",
    "check_against_model",
    "coco_detection_class_rows",
    "coco_panoptic_class_rows",
    "convert_official_detr",
    "convert_torchvision_resnet",
    "load_checkpoint_safely",
    "load_official_checkpoint",
    "load_pickle_safely",
    "torchvision_to_detectron2_name",
]
