"""Save an export wrapper (``wrapper.py``) as TorchScript (``torch.jit.trace``:
shapes are recorded as ``aten::size`` ops, so the trace runs at other sizes; traced on and for the
CPU), ONNX (``torch.onnx.export(dynamo=False)``: the dynamo exporter needs ``onnxscript``) or a
torch.export program (``.pt2``; its ``range_constraints`` give the smallest accepted size), and
load it back. Inputs ``images`` (B, 3, H, W) float32 and ``padding_mask`` (B, H, W) bool, batch,
H and W dynamic; the example batch must be 2 or more (torch.export specializes a dimension of
size 0 or 1). Outputs ``(boxes, scores, classes)``, plus ``mask_logits`` for the panoptic model.
"""

import contextlib
import copy
import warnings
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

INPUT_AXES = {"images": (0, 2, 3), "padding_mask": (0, 1, 2)}  # the batch, height, width dims
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx", "torch_export": "model.pt2"}

Outputs = Tuple[Tensor, ...]
Inputs = Tuple[Tensor, Tensor]


@contextlib.contextmanager
def known_tracer_warnings():
    """Silences the TracerWarnings that shapes read in the wrapper may not generalize: they are
    recorded as ``aten::size`` ops (tests/test_export.py runs the graph at other sizes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_torchscript(module: nn.Module, inputs: Inputs, path: str) -> None:
    with torch.no_grad(), known_tracer_warnings():
        traced = torch.jit.trace(module.eval(), inputs, check_trace=False)
    traced.save(path)


def unpack_attention_projections(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``nn.MultiheadAttention`` layers hold separate q, k, v
    projection weights (same results). Why: with packed weights and key is value
    (``POSITION_EMBEDDING_AT: input``), the ONNX exporter writes the shortcut's key length as
    the constant seen at export, and another image size fails in a ``Reshape``."""
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
    axes = {n: dict(zip(dims, ("batch", "height", "width"))) for n, dims in INPUT_AXES.items()}
    axes.update({name: {0: "batch", **dims} for name, dims in outputs.items()})
    names = dict(input_names=list(INPUT_AXES), output_names=list(outputs), dynamic_axes=axes)
    module = unpack_attention_projections(module)
    with torch.no_grad(), known_tracer_warnings():
        torch.onnx.export(module.eval(), inputs, path, dynamo=False, opset_version=opset, **names)


def export_torch_export(module: nn.Module, inputs: Inputs, path: str) -> None:
    # H and W are Dim.DYNAMIC (export derives their range): named Dims with a chosen minimum
    # fail on guards export cannot prove over it (the mask head's "stride-4 size != 1")
    batch, dynamic = torch.export.Dim("batch", min=1), torch.export.Dim.DYNAMIC
    shapes = {name: dict(zip(dims, (batch, dynamic, dynamic))) for name, dims in INPUT_AXES.items()}
    with torch.no_grad():
        program = torch.export.export(module.eval(), inputs, dynamic_shapes=shapes)
    torch.export.save(program, path)


EXPORTERS = dict(torchscript=export_torchscript, onnx=export_onnx, torch_export=export_torch_export)


def load_exported(path: str, fmt: str) -> Callable[[Tensor, Tensor], Outputs]:
    """``(images, padding_mask) -> (boxes, scores, classes[, mask_logits])`` (CPU tensors): the
    saved model run by its format's own runtime (onnxruntime for ONNX)."""
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
    of queries whose class differs (where two classes' scores nearly tie)."""
    names = ("boxes", "scores", "classes", "mask_logits")
    diff = {name: (e - a).abs().max().item() for name, e, a in zip(names, expected, actual)}
    diff["classes"] = (expected[2] != actual[2]).float().mean().item()
    return diff
