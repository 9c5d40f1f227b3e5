"""Datasets and data loading. Importing registers the generated "shapes" datasets."""

from . import builtin  # noqa: F401  (registers shapes_* in DatasetCatalog / MetadataCatalog)
from .detr_dataset_mapper import DetrDatasetMapper, build_test_mapper
from .image_io import read_image
from .panoptic_mapper import DetrPanopticDatasetMapper
from .tensor_resize import TensorResizeTransform

__all__ = [
    "DetrDatasetMapper",
    "DetrPanopticDatasetMapper",
    "TensorResizeTransform",
    "build_test_mapper",
    "read_image",
]
