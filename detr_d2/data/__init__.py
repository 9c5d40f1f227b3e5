"""Datasets and data loading. Importing registers the generated "shapes" datasets."""

from . import builtin  # noqa: F401  (registers shapes_* in DatasetCatalog / MetadataCatalog)
from .detr_dataset_mapper import DetrDatasetMapper
from .image_io import read_image
from .panoptic_mapper import DetrPanopticDatasetMapper

__all__ = ["DetrDatasetMapper", "DetrPanopticDatasetMapper", "read_image"]
