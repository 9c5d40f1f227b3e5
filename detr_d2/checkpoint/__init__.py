"""Weight conversion: official DETR checkpoints and torchvision ResNets -> detr_d2 / Detectron2
state dicts, read without unpickling arbitrary objects."""

# ruff: noqa: F401  (the package's API, re-exported)
from .detr_official import CheckpointConversionError, ConvertedDetr, DetrSpec, check_against_model
from .detr_official import coco_detection_class_rows, coco_panoptic_class_rows
from .detr_official import convert_official_detr, load_official_checkpoint
from .safe_load import UnsafeCheckpointError, load_checkpoint_safely, load_pickle_safely
from .torchvision_resnet import convert_torchvision_resnet, torchvision_to_detectron2_name
