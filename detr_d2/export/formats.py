"""Save an export wrapper (``wrapper.py``, ``panoptic.py``) as TorchScript, ONNX or a
torch.export program, and load it back.

All three take the wrapper's two inputs, ``images`` (B, 3, H, W) float32 and ``padding_mask``
(B, H, W) bool, with batch, height and width dynamic, and return ``(boxes, scores, classes)``,
plus ``mask_logits`` for the panoptic model.

- TorchScript: ``torch.jit.trace``. The wrapper has no data-dependent Python control flow, and
  shapes read during tracing are recorded as ``aten::size`` ops, so the trace runs at other
  sizes and batch sizes (the tests check this). Traced on CPU: the few tensors created in the
  graph (``arange`` of the sine encoding) stay on CPU, so run it on CPU.
- ONNX: ``torch.onnx.export(dynamo=False)``, the TorchScript-based exporter. The dynamo exporter
  needs ``onnxscript``, which this environment does not have offline, and gains nothing here.
  What needs care exports as plain ops: ``nn.MultiheadAttention`` (sequence-first, so never the
  fused fast path) with ``need_weights=False`` reaches ``scaled_dot_product_attention`` with the
  key padding mask turned into an additive ``attn_mask`` (-inf at padding), which the exporter
  writes as MatMul / Softmax from opset 14 on; the mask's
  ``F.interpolate`` to the feature size becomes a ``Resize`` whose sizes come from a ``Shape``
  of the features; the sine encoding's ``cumsum`` is ``CumSum``. One exporter bug is worked
  around: with packed q/k/v weights, ``nn.MultiheadAttention`` takes a shortcut when key is
  value (``POSITION_EMBEDDING_AT: input``, where no encoding is added to the keys), and the
  exporter writes that shortcut's key length as the constant seen at export, so another image
  size fails in a ``Reshape``. :func:`unpack_attention_projections` exports a copy whose
  projections are separate weights, the path DETR's default config takes anyway.
- torch.export: ``torch.export.export`` with a ``Dim`` for the batch and ``Dim.DYNAMIC`` height
  and width (the mask's dims must equal the image's: a guard checks it); saved as ``.pt2``. The
  program's ``range_constraints`` give the smallest accepted size.

The example inputs should have a batch of 2 or more (and H, W > 1): torch.export specializes a
dimension of size 0 or 1 to that constant.
"""

import contextlib
import copy
import warnings
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

INPUT_NAMES = ("images", "padding_mask")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx", "torch_export": "model.pt2"}

Outputs = Tuple[Tensor, ...]
Inputs = Tuple[Tensor, Tensor]


@contextlib.contextmanager
def known_tracer_warnings():
    """Silences TracerWarnings inside: the tracer warns that shapes and sizes read in the wrapper
    may not generalize, but they are recorded as ``aten::size`` ops and the graph runs at other
    sizes and batch sizes (tests/test_export.py checks it): known and benign here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_torchscript(module: nn.Module, inputs: Inputs, path: str) -> None:
    with torch.no_grad(), known_tracer_warnings():
        traced = torch.jit.trace(module.eval(), inputs, check_trace=False)
    traced.save(path)


def unpack_attention_projections(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``nn.MultiheadAttention`` layers hold separate q, k, v
    projection weights (same values, same results: the packed weight is split the same way
    whenever query, key and value differ)."""
    module = copy.deepcopy(module)
    for attn in module.modules():
        if isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim:
            for name, weight in zip("qkv", attn.in_proj_weight.detach().chunk(3)):
                setattr(attn, f"{name}_proj_weight", nn.Parameter(weight.clone()))
            attn.register_parameter("in_proj_weight", None)
            attn._qkv_same_embed_dim = False  # MultiheadAttention.forward reads this flag
    return module


def export_onnx(module: nn.Module, inputs: Inputs, path: str, opset: int = 17) -> None:
    if opset < 17:
        raise ValueError(f"opset {opset}: use 17 or later (LayerNormalization as one op)")
    outputs = module.output_axes  # name -> its dynamic axes besides the batch
    module = unpack_attention_projections(module)
    dynamic_axes = {
        "images": {0: "batch", 2: "height", 3: "width"},
        "padding_mask": {0: "batch", 1: "height", 2: "width"},
    }
    dynamic_axes.update({name: {0: "batch", **axes} for name, axes in outputs.items()})
    with torch.no_grad(), known_tracer_warnings():
        torch.onnx.export(
            module.eval(),
            inputs,
            path,
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
        )


def export_torch_export(module: nn.Module, inputs: Inputs, path: str) -> None:
    # Height and width are Dim.DYNAMIC: export derives their range itself (a feature map of at
    # least 2 x 2, e.g. H, W >= 17 at stride 16), where named Dims with a chosen minimum make it
    # fail on guards it cannot prove over that range (the mask head's "stride-4 size != 1").
    batch, dynamic = torch.export.Dim("batch", min=1), torch.export.Dim.DYNAMIC
    shapes = {
        "images": {0: batch, 2: dynamic, 3: dynamic},
        "padding_mask": {0: batch, 1: dynamic, 2: dynamic},
    }
    with torch.no_grad():
        program = torch.export.export(module.eval(), inputs, dynamic_shapes=shapes)
    torch.export.save(program, path)


EXPORTERS = {
    "torchscript": export_torchscript,
    "onnx": export_onnx,
    "torch_export": export_torch_export,
}


def load_exported(path: str, fmt: str) -> Callable[[Tensor, Tensor], Outputs]:
    """A function ``(images, padding_mask) -> (boxes, scores, classes[, mask_logits])`` (CPU
    torch tensors) running the saved model with its format's own runtime (onnxruntime for
    ONNX)."""
    if fmt == "torchscript":
        return torch.jit.load(path, map_location="cpu")
    if fmt == "torch_export":
        return torch.export.load(path).module()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(images: Tensor, padding_mask: Tensor) -> Outputs:
            feed = {"images": images.cpu().numpy(), "padding_mask": padding_mask.cpu().numpy()}
            return tuple(torch.from_numpy(x) for x in session.run(None, feed))

        return run
    raise ValueError(f"unknown export format {fmt!r}, expected one of {sorted(EXPORTERS)}")


def output_differences(expected: Outputs, actual: Outputs) -> Dict[str, float]:
    """Largest absolute differences of boxes (pixels), scores and mask logits, and the fraction
    of queries whose class differs (expected only where two classes' scores nearly tie)."""
    names = ("boxes", "scores", "classes", "mask_logits")
    diff = {name: (e - a).abs().max().item() for name, e, a in zip(names, expected, actual)}
    diff["classes"] = (expected[2] != actual[2]).float().mean().item()
    return diff
