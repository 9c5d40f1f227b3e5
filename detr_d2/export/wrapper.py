"""Plain-tensor views of :class:`Detr` and :class:`DetrPanoptic` for deployment (TorchScript,
ONNX, torch.export). Not Detectron2's ``TracingAdapter``: ``Detr.forward`` builds the padding
mask from per-image Python ints (constants to a tracer) and returns ``Instances``, no ONNX or
torch.export values. The wrapper runs the same submodules on tensors only, every size computed
inside the graph (``tests/test_export.py`` checks it against ``Detr.forward_raw`` + inference)."""

import logging
from typing import Dict, List, Tuple

import torch
from detectron2.structures import ImageList
from torch import Tensor, nn
from torchvision.ops import box_convert

from ..modeling.detr import Detr
from ..modeling.panoptic import DetrPanoptic
from ..modeling.inference_backbone import fold_norms_into_convs

logger = logging.getLogger(__name__)


def batch_images(images: List[Tensor], size_divisibility: int = 0) -> Tuple[Tensor, Tensor]:
    """B images (3, Hi, Wi) padded at the bottom / right as ``Detr.preprocess_image`` does:
    (B, 3, H, W) float32 and the padding_mask (B, H, W) bool, True at padding."""
    batch = ImageList.from_tensors([im.float() for im in images], size_divisibility)
    return batch.tensor, Detr.padding_mask(batch)


class ExportableDetr(nn.Module):
    """``Detr`` at inference on a padded batch of raw images, tensors in and out.

    forward(images, padding_mask):
        images: (B, 3, H, W) float32, unnormalized, resized pixels in ``INPUT.FORMAT`` order.
        padding_mask: (B, H, W) bool, True at padding (bottom and right, see
            :func:`batch_images`).
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
        self.channels_last = model.fast_inference
        self.backbone = (
            fold_norms_into_convs(model.backbone) if self.channels_last else model.backbone
        )
        self.model = model
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), False)
        k = model.test_topk
        self.topk = k if 0 < k < model.num_queries else 0

    def forward(self, images: Tensor, padding_mask: Tensor) -> Tuple[Tensor, ...]:
        out = self.predict(images, padding_mask)
        return self.postprocess(out["pred_logits"], out["pred_boxes"], padding_mask)

    def predict(self, images: Tensor, padding_mask: Tensor) -> Dict[str, Tensor]:
        """``Detr.forward_raw`` in eval mode, on tensors: "pred_logits" (B, N, K+1),
        "pred_boxes" (B, N, 4) normalized cxcywh, "hs" (B, N, d) the last decoder output,
        "memory" (B, d, h, w), "mask" (B, h, w), "features" (the backbone's) and "projected"
        (B, d, h, w) the transformer's input."""
        x = (images - self.pixel_mean) / self.pixel_std
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
        self.topk = 0
        self.bbox_attention = model.bbox_attention
        self.mask_head = model.mask_head
        self.mask_in_features = list(model.mask_in_features)

    def forward(self, images: Tensor, padding_mask: Tensor) -> Tuple[Tensor, ...]:
        out = self.predict(images, padding_mask)
        attention = self.bbox_attention(out["hs"], out["memory"], out["mask"])
        mask_logits = self.mask_head(
            out["projected"], attention, [out["features"][f] for f in self.mask_in_features]
        )
        return (*self.postprocess(out["pred_logits"], out["pred_boxes"], padding_mask), mask_logits)


def exportable(model: Detr) -> nn.Module:
    """The export wrapper of ``model`` (in eval mode, weights loaded)."""
    return (ExportableDetrPanoptic if isinstance(model, DetrPanoptic) else ExportableDetr)(model)
