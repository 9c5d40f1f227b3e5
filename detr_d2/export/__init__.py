"""Deployment: tensor-only wrappers of the models and their TorchScript, ONNX and torch.export
forms (``tools/export_model.py`` is the command line)."""

# ruff: noqa: F401  (the package's API, re-exported)
from .formats import EXPORTERS, FILE_NAMES, load_exported, output_differences
from .wrapper import ExportableDetr, ExportableDetrPanoptic, batch_images, exportable
