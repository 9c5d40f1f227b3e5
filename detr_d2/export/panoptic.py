"""The network part of ``DetrPanoptic`` as a tensor-only module (see ``wrapper.py``).

The panoptic merge itself (keep the confident queries, per-pixel argmax of their masks, stuff
folded by class, small segments dropped and the argmax redone: ``combine_panoptic``, as the
original DETR's PostProcessPanoptic) loops over a data-dependent number of segments; it is not part
of the graph. Run it on the outputs (``classes`` / ``scores`` are the best real class; the
original's rule also requires it to beat no-object, the same for a threshold of at least 0.5)::

    boxes, scores, classes, mask_logits = exported(images, padding_mask)
    keep = scores[i] > cfg.MODEL.DETR.PANOPTIC_CONF_THRESH
    logits = resize_mask_logits(mask_logits[i][keep], images.shape[-2:], (h_i, w_i), (h_i, w_i))
    panoptic_seg, segments_info = combine_panoptic(scores[i][keep], classes[i][keep], logits,
                                                   is_thing, cfg.MODEL.DETR.PANOPTIC_MIN_AREA,
                                                   output_hw)
"""

from typing import Tuple

from torch import Tensor

from ..modeling.panoptic import DetrPanoptic
from .wrapper import ExportableDetr


class ExportableDetrPanoptic(ExportableDetr):
    """:class:`ExportableDetr`'s (boxes, scores, classes) for all N queries (``test_topk`` is not
    applied: the masks are per query), plus

        mask_logits: (B, N, H/4, W/4) float32 mask logits over the padded input (stride of the
            finest ``MASK_HEAD_IN_FEATURES``), as ``DetrPanoptic.forward_raw``'s "pred_masks".

    Boxes and classes cover stuff queries too; ``DetrPanoptic``'s "instances" keep things only.
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
        boxes, scores, classes = self.postprocess(
            out["pred_logits"], out["pred_boxes"], padding_mask
        )
        return boxes, scores, classes, mask_logits
