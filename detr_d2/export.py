"""Deployment: plain-tensor views of :class:`Detr` and :class:`DetrPanoptic`, saved as TorchScript,
ONNX or a torch.export program and loaded back (``tools/export_model.py`` is the command line).

Not Detectron2's ``TracingAdapter``: ``Detr.forward`` builds the padding mask from per-image Python
ints (constants to a tracer) and returns ``Instances``; the wrapper runs the same submodules on
tensors only, every size computed in the graph (``tests/test_export.py`` compares it with
``Detr.forward_raw`` + inference). TorchScript traces (shapes as ``aten::size`` ops, so other sizes
run; traced on and for the CPU); ONNX uses ``dynamo=False`` (dynamo needs ``onnxscript``); a
torch.export ``.pt2``'s ``range_constraints`` give its smallest size. Batch, H and W are dynamic;
the example batch must be 2 or more (torch.export specializes a dimension of size 0 or 1)."""

import copy
import logging
import warnings
from typing import Callable, Dict, List, Tuple

import torch
from detectron2.structures import ImageList
from torch import Tensor, nn
from torchvision.ops import box_convert

from .modeling.detr import Detr
from .modeling.inference_backbone import fold_norms_into_convs
from .modeling.panoptic import DetrPanoptic

logger = logging.getLogger(__name__)

INPUT_AXES = {"images": (0, 2, 3), "padding_mask": (0, 1, 2)}  # the batch, height, width dims
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx", "torch_export": "model.pt2"}


def batch_images(images: List[Tensor], size_divisibility: int = 0) -> Tuple[Tensor, Tensor]:
    """B images (3, Hi, Wi) padded at the bottom / right as ``Detr.preprocess_image`` does:
    (B, 3, H, W) float32 and the padding_mask (B, H, W) bool, True at padding."""
    batch = ImageList.from_tensors([im.float() for im in images], size_divisibility)
    return batch.tensor, Detr.padding_mask(batch)


class ExportableDetr(nn.Module):
    """``Detr`` at inference on a padded batch of raw images, tensors in and out.

    forward(images, padding_mask):
        images: (B, 3, H, W) float32, unnormalized, resized pixels in ``INPUT.FORMAT`` order.
        padding_mask: (B, H, W) bool, True at padding (bottom and right, :func:`batch_images`)
    Returns:
        boxes: (B, N, 4) float32, XYXY in pixels of each image's valid region, not clipped.
        scores: (B, N) float32, the best class probability, "no object" excluded.
        classes: (B, N) int64, that class, in [0, K).

    N is ``num_queries``, or ``test_topk`` (sorted by score). ``test_score_thresh`` is not
    applied (a data-dependent size): filter on ``scores``. With ``fast_inference`` the backbone
    has its norms folded into the convolutions: build the wrapper after loading the weights.
    """

    # output names and their dynamic axes besides the batch (ONNX)
    output_axes: Dict[str, Dict[int, str]] = {"boxes": {}, "scores": {}, "classes": {}}

    def __init__(self, model: Detr):
        super().__init__()
        if not isinstance(model, Detr):
            raise TypeError(f"ExportableDetr exports a Detr, got {type(model).__name__}")
        if model.test_score_thresh > 0:
            msg = "is not part of the exported graph; filter on the 'scores' output instead"
            logger.warning(f"MODEL.DETR.TEST_SCORE_THRESH={model.test_score_thresh:g} {msg}")
        self.model, self.channels_last = model, model.fast_inference
        if model.fast_inference:  # a copy whose backbone is the folded one: no unused weights saved
            self.model = copy.copy(model)
            self.model._modules = dict(model._modules)  # ``model`` keeps its own backbone
            self.model.backbone = fold_norms_into_convs(model.backbone)
        self.backbone = self.model.backbone
        self.topk = model.test_topk if 0 < model.test_topk < model.num_queries else 0

    def forward(self, images: Tensor, padding_mask: Tensor) -> Tuple[Tensor, ...]:
        out = self.predict(images, padding_mask)
        return self.postprocess(out["pred_logits"], out["pred_boxes"], padding_mask)

    def predict(self, images: Tensor, padding_mask: Tensor) -> Dict[str, Tensor]:
        """``Detr.forward_raw`` in eval mode, on tensors: "pred_logits" (B, N, K+1),
        "pred_boxes" (B, N, 4) normalized cxcywh, "hs" (B, N, d) the last decoder output,
        "memory" (B, d, h, w), "mask" (B, h, w), "features" (the backbone's) and "projected"
        (B, d, h, w) the transformer's input."""
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        x = x.masked_fill(padding_mask[:, None], 0.0)  # Detr pads with 0 after normalization
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model.forward_tensors(x, padding_mask, self.backbone)
        return dict(out, hs=out["hs"][-1], features=out["backbone_features"])

    def postprocess(self, logits: Tensor, boxes: Tensor, padding_mask: Tensor):
        """``Detr.inference`` on tensors: (boxes, scores, classes), see the class docstring."""
        scores, classes = logits.softmax(-1)[..., :-1].max(-1)
        # valid extent of each image, counted in the graph so it follows the input's values
        heights, widths = (~padding_mask[:, :, 0]).sum(1), (~padding_mask[:, 0, :]).sum(1)
        scale = torch.stack((widths, heights, widths, heights), dim=-1).to(boxes.dtype)
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale[:, None, :]
        if self.topk:
            scores, top = scores.topk(self.topk, dim=1)
            classes = classes.gather(1, top)
            boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
        return boxes, scores, classes


class ExportableDetrPanoptic(ExportableDetr):
    """:class:`ExportableDetr`'s (boxes, scores, classes) for all N queries (stuff included),
    plus mask_logits (B, N, H/4, W/4) float32 over the padded input, as
    ``DetrPanoptic.forward_raw``'s "pred_masks". The panoptic merge loops over a data-dependent
    number of segments, outside the graph; run it on the outputs (``scores``: the best real
    class; the original's rule that it also beats no-object is the same for a threshold >= 0.5)::

        keep = scores[i] > cfg.MODEL.DETR.PANOPTIC_CONF_THRESH
        logits = resize_mask_logits(mask_logits[i][keep], images.shape[-2:], (h, w), (h, w))
        panoptic_seg, segments_info = combine_panoptic(scores[i][keep], classes[i][keep],
            logits, is_thing, cfg.MODEL.DETR.PANOPTIC_MIN_AREA, output_hw)
    """

    output_axes = dict(ExportableDetr.output_axes, mask_logits={2: "mask_height", 3: "mask_width"})

    def __init__(self, model: DetrPanoptic):
        super().__init__(model)
        self.topk = 0  # all N queries: the merge reads them all

    def forward(self, images: Tensor, padding_mask: Tensor) -> Tuple[Tensor, ...]:
        out, model = self.predict(images, padding_mask), self.model
        attention = model.bbox_attention(out["hs"], out["memory"], out["mask"])
        features = [out["features"][f] for f in model.mask_in_features]
        mask_logits = model.mask_head(out["projected"], attention, features)
        return (*self.postprocess(out["pred_logits"], out["pred_boxes"], padding_mask), mask_logits)


def exportable(model: Detr) -> nn.Module:
    """The export wrapper of ``model`` (in eval mode, weights loaded)."""
    return (ExportableDetrPanoptic if isinstance(model, DetrPanoptic) else ExportableDetr)(model)


def export_torchscript(module: nn.Module, inputs: Tuple[Tensor, Tensor], path: str) -> None:
    # no TracerWarnings that shapes read may not generalize: they are aten::size ops (see above)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
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


def export_onnx(module: nn.Module, inputs: Tuple[Tensor, Tensor], path: str, opset=17) -> None:
    if opset < 17:
        raise ValueError(f"opset {opset}: use 17 or later (LayerNormalization as one op)")
    outputs = module.output_axes  # name -> its dynamic axes besides the batch
    axes = {n: dict(zip(dims, ("batch", "height", "width"))) for n, dims in INPUT_AXES.items()}
    axes.update({name: {0: "batch", **dims} for name, dims in outputs.items()})
    names = dict(input_names=list(INPUT_AXES), output_names=list(outputs), dynamic_axes=axes)
    module = unpack_attention_projections(module)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # as in export_torchscript
        torch.onnx.export(module.eval(), inputs, path, dynamo=False, opset_version=opset, **names)


def export_torch_export(module: nn.Module, inputs: Tuple[Tensor, Tensor], path: str) -> None:
    # H and W are Dim.DYNAMIC (export derives their range): named Dims with a chosen minimum
    # fail on guards export cannot prove over it (the mask head's "stride-4 size != 1")
    batch, dynamic = torch.export.Dim("batch", min=1), torch.export.Dim.DYNAMIC
    shapes = {name: dict(zip(dims, (batch, dynamic, dynamic))) for name, dims in INPUT_AXES.items()}
    with torch.no_grad():
        program = torch.export.export(module.eval(), inputs, dynamic_shapes=shapes)
    torch.export.save(program, path)


EXPORTERS = dict(torchscript=export_torchscript, onnx=export_onnx, torch_export=export_torch_export)


def load_exported(path: str, fmt: str) -> Callable[[Tensor, Tensor], Tuple[Tensor, ...]]:
    """``(images, padding_mask) -> (boxes, scores, classes[, mask_logits])`` (CPU tensors): the
    saved model run by its format's own runtime (onnxruntime for ONNX)."""
    if fmt == "torchscript":
        return torch.jit.load(path, map_location="cpu")
    if fmt == "torch_export":
        return torch.export.load(path).module()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(images: Tensor, padding_mask: Tensor) -> Tuple[Tensor, ...]:
            feed = {"images": images.cpu().numpy(), "padding_mask": padding_mask.cpu().numpy()}
            return tuple(torch.from_numpy(x) for x in session.run(None, feed))

        return run
    raise ValueError(f"unknown export format {fmt!r}, expected one of {sorted(EXPORTERS)}")
