"""Datasets and data loading. Importing registers the generated "shapes" datasets."""

# ruff: noqa: F401  (the package's API, re-exported)
from . import builtin  # registers shapes_* in DatasetCatalog / MetadataCatalog
from .detr_dataset_mapper import DetrDatasetMapper, DetrPanopticDatasetMapper
from .detr_dataset_mapper import build_test_mapper, build_train_mapper
from .image_io import read_image
from .resize import TensorResizeTransform
