"""DETR's set loss with masks (paper Sec. 4.4): DICE + sigmoid focal loss on matched queries."""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from .criterion import SetCriterion


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """1 - DICE coefficient (smoothed by 1) of each mask.

    Args:
        logits: (M, P) mask logits over P pixels.
        targets: (M, P) binary targets, same dtype as logits.
    Returns:
        (M,) losses.
    """
    probs = logits.sigmoid()
    overlap = (probs * targets).sum(1)
    return 1 - (2 * overlap + 1) / (probs.sum(1) + targets.sum(1) + 1)


class SetCriterionWithMasks(SetCriterion):
    """:class:`SetCriterion` plus the "masks" loss: ``loss_mask`` (sigmoid focal loss, averaged
    over pixels) and ``loss_dice``, each summed over matched queries and divided by the number of
    target boxes. Masks are supervised on the final decoder layer only: the auxiliary outputs
    carry no ``pred_masks`` and get no mask loss.

    Extra inputs: ``outputs["pred_masks"]`` (B, N, h, w) mask logits (stride 4 of the padded
    batch) and ``targets[i]["masks"]`` (M_i, H, W) bool, every image's masks zero-padded to the
    same padded batch size (H, W). Predictions are upsampled (bilinear) to (H, W) before the loss.
    """

    def __init__(self, *args, focal_alpha: float = 0.25, focal_gamma: float = 2.0, **kwargs):
        kwargs.setdefault("losses", ("labels", "boxes", "masks"))
        super().__init__(*args, **kwargs)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loss_map["masks"] = self.loss_masks

    def loss_masks(self, outputs, targets, indices, norm) -> Dict[str, Tensor]:
        if "pred_masks" not in outputs:  # an auxiliary decoder layer
            return {}
        src = outputs["pred_masks"][self._matched(indices)]  # (M, h, w)
        tgt = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)])  # (M, H, W)
        if len(src) == 0:  # keep the graph connected, so every parameter gets a gradient
            zero = outputs["pred_masks"].sum() * 0
            return {"loss_mask": zero, "loss_dice": zero}
        src = F.interpolate(
            src[:, None].float(), size=tgt.shape[-2:], mode="bilinear", align_corners=False
        )
        src = src.flatten(1)
        tgt = tgt.flatten(1).to(src)
        focal = sigmoid_focal_loss(src, tgt, self.focal_alpha, self.focal_gamma, reduction="none")
        return {
            "loss_mask": focal.mean(1).sum() / norm.num_boxes,
            "loss_dice": dice_loss(src, tgt).sum() / norm.num_boxes,
        }
