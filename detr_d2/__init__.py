"""DETR as a Detectron2 project. Importing registers the meta-architecture and the builtin datasets."""
from .config import add_detr_config

__all__ = ["add_detr_config"]
