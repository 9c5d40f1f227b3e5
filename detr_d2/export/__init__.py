"""Deployment: tensor-only wrappers of the models and their TorchScript, ONNX and torch.export
forms (``tools/export_model.py`` is the command line)."""

# ruff: noqa: F401  (the package's API, re-exported)
from torch import nn

from ..modeling import Detr, DetrPanoptic
from .formats import EXPORTERS, FILE_NAMES, load_exported, output_differences
from .panoptic import ExportableDetrPanoptic
from .wrapper import ExportableDetr, batch_images


def exportable(model: Detr) -> nn.Module:
    """The export wrapper of ``model`` (in eval mode, weights loaded)."""
    if isinstance(model, DetrPanoptic):
        return ExportableDetrPanoptic(model)
    return ExportableDetr(model)
