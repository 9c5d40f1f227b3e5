"""Bipartite matching between predictions and ground truth (paper Sec. 3.1, Eq. 1)."""

from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment of the N predictions of each image to its M <= N targets.

    Cost of matching prediction i to target j:
        cost_class * -p_i(c_j) + cost_bbox * ||b_i - b_j||_1 + cost_giou * -GIoU(b_i, b_j)
    with boxes as normalized cxcywh (L1) and xyxy (GIoU); the weights are not the loss weights.
    Each image is solved on its own (N, M_i) block, in float32.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("MODEL.DETR.COST_CLASS, COST_BBOX and COST_GIOU can't all be 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, boxes: Tensor, labels: Tensor, tgt_boxes: Tensor):
        """logits: (N, K+1); boxes: (N, 4) cxcywh; labels: (M,); tgt_boxes: (M, 4).
        Returns (N, M)."""
        prob = logits.float().softmax(-1)
        boxes, tgt_boxes = boxes.float(), tgt_boxes.float()
        cost = -self.cost_class * prob[:, labels]
        cost = cost + self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
        giou = generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(self, outputs: Dict, targets: List[Dict]) -> List[Tuple[Tensor, Tensor]]:
        """
        Args:
            outputs: "pred_logits" (B, N, K+1) and "pred_boxes" (B, N, 4) normalized cxcywh.
            targets: B dicts with "labels" (M_i,) int64 and "boxes" (M_i, 4) normalized cxcywh.
        Returns:
            B pairs (index_i, index_j) of int64 tensors of length min(N, M_i): prediction
            index_i[k] is matched to target index_j[k].
        """
        pred_boxes, pred_logits = outputs["pred_boxes"], outputs["pred_logits"]
        finite = torch.isfinite(pred_boxes).all() & torch.isfinite(pred_logits).all()
        sizes = [len(t["labels"]) for t in targets]
        blocks = [
            self.cost_matrix(logits, boxes, t["labels"], t["boxes"]).flatten()
            for logits, boxes, t, m in zip(pred_logits, pred_boxes, targets, sizes)
            if m
        ]
        # one host copy for the whole batch (on a GPU each copy waits for the device); the
        # finite flag is read after it, when the device has nothing left to do
        costs = torch.nan_to_num(torch.cat(blocks)).cpu().numpy() if blocks else None
        # float16 (autocast): an overflow, which the GradScaler skips; match anyway, so the step
        # reaches it with a non-finite loss on every process (no process may stop alone in DDP)
        if not finite and pred_boxes.dtype != torch.float16:
            raise FloatingPointError(
                "HungarianMatcher got non-finite predicted logits or boxes: training has diverged"
            )
        n, start, indices = pred_boxes.shape[1], 0, []
        for m in sizes:
            i = j = []
            if m:
                i, j = linear_sum_assignment(costs[start : start + n * m].reshape(n, m))
                start += n * m
            indices.append(tuple(torch.as_tensor(x, dtype=torch.int64) for x in (i, j)))
        return indices
