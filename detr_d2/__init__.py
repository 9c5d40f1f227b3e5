"""DETR as a Detectron2 project. Importing registers the meta-architectures and builtin datasets."""

from . import data  # noqa: F401  registers the builtin generated datasets
from . import modeling  # noqa: F401  registers Detr in META_ARCH_REGISTRY
from .config import add_detr_config, is_detr_config, merge_config_file

__all__ = ["add_detr_config", "is_detr_config", "merge_config_file"]
