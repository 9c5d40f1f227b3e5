"""A plain-tensor view of :class:`Detr` for deployment (TorchScript, ONNX, torch.export).

Why a wrapper and not Detectron2's ``TracingAdapter`` / ``scripting_with_instances``: those export
``Detr.forward`` as is, whose input is a list of dicts and whose output is ``Instances``. That
path builds the padding mask with a Python loop over ``image_sizes`` (per-image ints a tracer
records as constants), returns a per-image, possibly data-dependent number of detections, and
``Instances`` / ``Boxes`` are not ONNX or torch.export values. The wrapper below runs the same
submodules on tensors only, so one graph serves the three exporters, and every size (image,
feature map, per-image valid extent) is computed from tensor shapes or values inside the graph,
never taken from a Python int. ``tests/test_export.py`` checks it against ``Detr.forward_raw`` +
``Detr.inference``.
"""

import logging
from typing import Dict, List, Tuple

import torch
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..modeling.detr import Detr
from ..modeling.inference_backbone import fold_norms_into_convs

logger = logging.getLogger(__name__)


def batch_images(images: List[Tensor], size_divisibility: int = 0) -> Tuple[Tensor, Tensor]:
    """Pad images to one batch the way ``Detr.preprocess_image`` does (bottom / right).

    Args:
        images: B tensors (3, Hi, Wi), pixel values in the model's ``INPUT.FORMAT``.
        size_divisibility: the model's ``size_divisibility`` (0: pad to the largest image only).
    Returns:
        images (B, 3, H, W) float32, and padding_mask (B, H, W) bool, True at padding.
    """
    batch = ImageList.from_tensors([im.float() for im in images], size_divisibility)
    return batch.tensor, Detr.padding_mask(batch)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) center-size boxes -> (..., 4) corner boxes, same units."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


class ExportableDetr(nn.Module):
    """``Detr`` at inference on a padded batch of raw images, tensors in and out.

    forward(images, padding_mask):
        images: (B, 3, H, W) float32, unnormalized pixels in the config's ``INPUT.FORMAT`` channel
            order (as ``Detr`` receives them from the mapper, i.e. already resized); pixel
            mean / std are applied inside. Values at padded pixels are ignored.
        padding_mask: (B, H, W) bool, True at padding. Each image's valid pixels must be its
            top-left rectangle (padding at the bottom and right, see :func:`batch_images`); a
            single unpadded image has an all-False mask.
    Returns:
        boxes: (B, N, 4) float32, XYXY in pixels of each image's valid (unpadded) region, not
            clipped to it.
        scores: (B, N) float32, the best class probability, "no object" excluded.
        classes: (B, N) int64, that class, in [0, K).

    N is ``num_queries``, or ``test_topk`` (sorted by score) when 0 < test_topk < num_queries.
    ``test_score_thresh`` would make the output size depend on the data; it is not applied here:
    filter on ``scores`` downstream.

    The wrapper holds the model's submodules (not the criterion), and with ``fast_inference``
    the backbone copy with norms folded into convolutions that ``Detr`` runs in eval mode: build
    it after loading the weights.
    """

    # output names and their dynamic axes besides the batch (ONNX)
    output_axes: Dict[str, Dict[int, str]] = {"boxes": {}, "scores": {}, "classes": {}}

    def __init__(self, model: Detr):
        super().__init__()
        if not isinstance(model, Detr):
            raise TypeError(f"ExportableDetr exports a Detr, got {type(model).__name__}")
        if model.test_score_thresh > 0:
            logger.warning(
                "MODEL.DETR.TEST_SCORE_THRESH=%g is not part of the exported graph; "
                "filter on the 'scores' output instead",
                model.test_score_thresh,
            )
        self.channels_last = model.fast_inference
        self.backbone = (
            fold_norms_into_convs(model.backbone) if model.fast_inference else model.backbone
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
        """The tensor path of ``Detr.forward_raw`` in eval mode.

        Returns "pred_logits" (B, N, K+1), "pred_boxes" (B, N, 4) normalized cxcywh, "hs"
        (B, N, d) the last decoder output, "memory" (B, d, h, w), "mask" (B, h, w), "features"
        (the backbone's outputs) and "projected" (B, d, h, w) the transformer's input.
        """
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
        valid = ~padding_mask
        heights = valid[:, :, 0].sum(1)
        widths = valid[:, 0, :].sum(1)
        scale = torch.stack((widths, heights, widths, heights), dim=-1).to(boxes.dtype)
        boxes = cxcywh_to_xyxy(boxes) * scale[:, None, :]
        if self.topk:
            scores, top = scores.topk(self.topk, dim=1)
            classes = classes.gather(1, top)
            boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
        return boxes, scores, classes
