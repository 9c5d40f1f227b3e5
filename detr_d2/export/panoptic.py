"""The network part of ``DetrPanoptic`` as a tensor-only module (see ``wrapper.py``). The
panoptic merge (``combine_panoptic``) loops over a data-dependent number of segments, outside
the graph; run it on the outputs (``scores``: the best real class; the original's rule that it
also beats no-object is the same for a threshold of at least 0.5)::

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
    """:class:`ExportableDetr`'s (boxes, scores, classes) for all N queries (stuff included),
    plus mask_logits (B, N, H/4, W/4) float32 over the padded input, as
    ``DetrPanoptic.forward_raw``'s "pred_masks"."""

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
