"""DETR as a Detectron2 project. Importing registers the meta-architectures and builtin datasets."""

# ruff: noqa: F401  (the package's API, re-exported)
from . import data  # registers the builtin generated datasets
from . import modeling  # registers Detr in META_ARCH_REGISTRY
from .config import add_detr_config, is_detr_config, merge_config_file
