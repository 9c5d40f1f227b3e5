"""Deployment: tensor-only wrappers of the models and their TorchScript, ONNX and torch.export
forms (``tools/export_model.py`` is the command line)."""

from .formats import EXPORTERS, FILE_NAMES, load_exported, output_differences
from .wrapper import ExportableDetr, ExportableDetrPanoptic, batch_images, exportable

__all__ = ["ExportableDetr", "ExportableDetrPanoptic", "exportable", "batch_images"]
__all__ += ["EXPORTERS", "FILE_NAMES", "load_exported", "output_differences"]
