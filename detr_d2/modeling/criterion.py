"""DETR's set loss (paper Sec. 3.1, Eq. 2): match, then classification and box losses."""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss


def num_boxes_across_processes(targets: List[Dict[str, Tensor]], device: torch.device) -> float:
    """Average number of target boxes per process (>= 1), the normalizer of every box loss."""
    n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(n)
    return torch.clamp(n / comm.get_world_size(), min=1).item()


class SetCriterion(nn.Module):
    """Hungarian-matched loss, applied to the final and (optionally) every auxiliary decoder output.

    Losses (each computed by the function the loss map names, weighted by ``weight_dict``):
      - "labels": cross-entropy over K+1 classes, the no-object class weighted by ``eos_coef``
        (key ``loss_ce``);
      - "boxes": L1 (``loss_bbox``) and 1 - GIoU (``loss_giou``) of matched boxes, summed and
        divided by the number of target boxes across all processes.
    Auxiliary outputs get the same losses with a ``_{i}`` suffix. A loss whose weight is 0 is not
    returned. ``class_error`` and ``cardinality_error`` are metrics: they go to the event storage,
    never into the returned (summed) loss dict.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float = 0.1,
        losses: Tuple[str, ...] = ("labels", "boxes"),
        deep_supervision: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = losses
        self.deep_supervision = deep_supervision
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self.loss_map = {"labels": self.loss_labels, "boxes": self.loss_boxes}

    @staticmethod
    def _matched(indices: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        """(batch index, prediction index) of every matched prediction, concatenated."""
        batch = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(indices)])
        return batch, torch.cat([i for i, _ in indices])

    def loss_labels(self, outputs, targets, indices, num_boxes) -> Dict[str, Tensor]:
        logits = outputs["pred_logits"]  # (B, N, K+1)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        matched = self._matched(indices)
        target_classes[matched] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices)]
        ).to(logits.device)
        loss = F.cross_entropy(logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        return {"loss_ce": loss}

    def loss_boxes(self, outputs, targets, indices, num_boxes) -> Dict[str, Tensor]:
        src = outputs["pred_boxes"][self._matched(indices)].float()  # (M, 4) cxcywh
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        loss_bbox = F.l1_loss(src, tgt, reduction="sum") / num_boxes
        loss_giou = (
            generalized_box_iou_loss(
                box_convert(src, "cxcywh", "xyxy"),
                box_convert(tgt, "cxcywh", "xyxy"),
                reduction="sum",
            )
            / num_boxes
        )
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @torch.no_grad()
    def metrics(self, outputs, targets, indices) -> Dict[str, float]:
        """class_error: % of matched predictions with the wrong top class; cardinality_error: mean
        |#predictions not classified no-object - #targets| per image."""
        logits = outputs["pred_logits"]
        matched_logits = logits[self._matched(indices)]
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(
            logits.device
        )
        if len(labels):
            acc = (matched_logits.argmax(-1) == labels).float().mean().item() * 100
        else:
            acc = 100.0
        n_pred = (logits.argmax(-1) != self.num_classes).sum(1).float()
        n_tgt = torch.as_tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return {"class_error": 100.0 - acc, "cardinality_error": F.l1_loss(n_pred, n_tgt).item()}

    def _layer_losses(self, outputs, targets, num_boxes, suffix: str = ""):
        indices = self.matcher(outputs, targets)
        losses = {}
        for name in self.losses:
            losses.update(self.loss_map[name](outputs, targets, indices, num_boxes))
        weighted = {
            k + suffix: v * self.weight_dict[k]
            for k, v in losses.items()
            if self.weight_dict.get(k, 0) != 0
        }
        return weighted, indices

    def forward(self, outputs: Dict, targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """
        Args:
            outputs: "pred_logits" (B, N, K+1), "pred_boxes" (B, N, 4) normalized cxcywh, and
                "aux_outputs": a list of such dicts, one per earlier decoder layer.
            targets: B dicts with "labels" (M_i,) and "boxes" (M_i, 4) normalized cxcywh.
        Returns:
            weighted losses, ready to be summed.
        """
        num_boxes = num_boxes_across_processes(targets, outputs["pred_logits"].device)
        losses, indices = self._layer_losses(outputs, targets, num_boxes)
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                losses.update(self._layer_losses(aux, targets, num_boxes, f"_{i}")[0])
        self._log_metrics(self.metrics(outputs, targets, indices))
        return losses

    @staticmethod
    def _log_metrics(metrics: Dict[str, float]):
        try:
            storage = get_event_storage()
        except AssertionError:  # not inside a training loop (e.g. a unit test)
            return
        for k, v in metrics.items():
            storage.put_scalar(k, v)
