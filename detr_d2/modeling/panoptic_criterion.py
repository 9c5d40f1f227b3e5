"""DETR's set loss with masks (paper Sec. 4.4): DICE + sigmoid focal loss on matched queries."""

from typing import Dict

import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from .criterion import SetCriterion


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """(M,) 1 - DICE (smoothed by 1) of (M, P) mask ``logits`` and binary ``targets`` (their dtype)."""
    probs = logits.sigmoid()
    overlap = (probs * targets).sum(1)
    return 1 - (2 * overlap + 1) / (probs.sum(1) + targets.sum(1) + 1)


class SetCriterionWithMasks(SetCriterion):
    """:class:`SetCriterion` plus "masks": ``loss_mask`` (sigmoid focal, mean over pixels) and
    ``loss_dice``, summed over matched queries, divided by the number of target boxes; final
    decoder layer only (auxiliary outputs carry no ``pred_masks``).

    Extra inputs: ``outputs["pred_masks"]`` (B, N, h, w) logits (stride 4 of the padded batch),
    upsampled (bilinear) to ``targets[i]["masks"]`` (M_i, H, W) bool, zero-padded to the batch.
    """

    def __init__(self, *args, focal_alpha: float = 0.25, focal_gamma: float = 2.0, **kwargs):
        kwargs.setdefault("losses", ("labels", "boxes", "masks"))
        super().__init__(*args, **kwargs)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_map["masks"] = self.loss_masks

    def loss_masks(self, outputs, targets, indices, norm) -> Dict[str, Tensor]:
        if "pred_masks" not in outputs:  # an auxiliary decoder layer
            return {}
        src = outputs["pred_masks"][self._matched(indices)]  # (M, h, w)
        tgt = self._matched_targets(targets, indices, "masks")  # (M, H, W)
        if len(src) == 0:  # keep the graph connected, so every parameter gets a gradient
            zero = outputs["pred_masks"].sum() * 0
            return {"loss_mask": zero, "loss_dice": zero}
        src = F.interpolate(src[:, None].float(), tgt.shape[-2:], mode="bilinear").flatten(1)
        tgt = tgt.flatten(1).to(src)
        focal = sigmoid_focal_loss(src, tgt, self.focal_alpha, self.focal_gamma, reduction="none")
        return {
            "loss_mask": focal.mean(1).sum() / norm.num_boxes,
            "loss_dice": dice_loss(src, tgt).sum() / norm.num_boxes,
        }
