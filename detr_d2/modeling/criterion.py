"""DETR's set loss (paper Sec. 3.1, Eq. 2): match, then classification and box losses; with masks
(Sec. 4.4) DICE and sigmoid focal losses too."""

import contextlib
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss


class Normalizers(NamedTuple):
    """Divisors of the summed losses, averaged over processes: ``num_boxes`` (>= 1) for box / mask
    losses, ``class_weight`` for the classification loss."""

    num_boxes: float
    class_weight: float


def loss_normalizers(num_targets: Sequence[int], num_queries: int, eos_coef: float, device):
    """Normalizers of a batch whose images on this process have ``num_targets`` boxes (one
    all-reduce). ``class_weight`` sums the cross-entropy's class weights over all queries (matched:
    1, others ``eos_coef``): at one process F.cross_entropy's weighted-mean denominator, as the
    original; summed across processes like ``num_boxes`` so that N processes train like one."""
    m = torch.as_tensor(list(num_targets), dtype=torch.float64).clamp(max=num_queries)
    sums = torch.stack([m.sum(), (m + eos_coef * (num_queries - m)).sum()])
    if comm.get_world_size() > 1:  # counts are host numbers: the device only for the all-reduce
        sums = sums.to(device)
        torch.distributed.all_reduce(sums)
    num_boxes, class_weight = (sums / comm.get_world_size()).tolist()
    # eos_coef 0 and no boxes at all: the classification loss sums to 0 too; give 0, not NaN
    return Normalizers(max(num_boxes, 1.0), max(class_weight, 1e-12))


def at_least_float32(x: Tensor) -> Tensor:
    """float16 / bfloat16 (autocast outputs) as float32; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


_EFFECTIVE_BATCH: Optional[Dict] = None  # set by effective_batch()


@contextlib.contextmanager
def effective_batch(num_targets: Sequence[int]):
    """Within it, losses are normalized over the effective batch (all micro-batches of one step,
    ``num_targets`` boxes per image on this process), not each call's: k micro-batches give their
    union's gradient. All-reduced once, in the first forward."""
    global _EFFECTIVE_BATCH
    previous, _EFFECTIVE_BATCH = _EFFECTIVE_BATCH, {"num_targets": list(num_targets)}
    try:
        yield
    finally:
        _EFFECTIVE_BATCH = previous


class SetCriterion(nn.Module):
    """Hungarian-matched loss on the final and (optionally) every auxiliary decoder output.

    Losses (the loss map's functions, weighted by ``weight_dict``): "labels", ``loss_ce``, K+1-class
    cross-entropy (no-object weighted ``eos_coef``) over :func:`loss_normalizers`' class weight;
    "boxes", L1 (``loss_bbox``) and 1 - GIoU (``loss_giou``) of matched boxes over the number of
    target boxes. Auxiliary outputs add a ``_{i}`` suffix. A weight of 0 multiplies its loss by 0,
    keeping it in the graph (DDP needs a gradient for every parameter). ``class_error`` and
    ``cardinality_error`` go to the event storage, never into the loss dict. Float32, no autocast.
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
        self.num_classes, self.matcher, self.weight_dict = num_classes, matcher, weight_dict
        self.eos_coef, self.losses, self.deep_supervision = eos_coef, losses, deep_supervision
        empty_weight = torch.tensor([1.0] * num_classes + [eos_coef])  # no-object last
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self._eos_weight = float(np.float32(eos_coef))  # as the float32 loss weighs it
        self.loss_map = {"labels": self.loss_labels, "boxes": self.loss_boxes}

    @staticmethod
    def _matched(indices: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        """(batch index, prediction index) of every matched prediction, concatenated."""
        batch = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(indices)])
        return batch, torch.cat([i for i, _ in indices])

    @staticmethod
    def _matched_targets(targets, indices, key: str) -> Tensor:
        """``targets[b][key]`` of every matched target, in the order of :meth:`_matched`."""
        return torch.cat([t[key][j] for t, (_, j) in zip(targets, indices)])

    def loss_labels(self, outputs, targets, indices, norm: Normalizers) -> Dict[str, Tensor]:
        logits = outputs["pred_logits"]  # (B, N, K+1)
        target_classes = torch.full_like(logits[..., 0], self.num_classes, dtype=torch.int64)
        labels = self._matched_targets(targets, indices, "labels")
        target_classes[self._matched(indices)] = labels.to(logits.device)
        logits = at_least_float32(logits)
        weight = self.empty_weight.to(logits.dtype)
        loss = F.cross_entropy(logits.transpose(1, 2), target_classes, weight, reduction="sum")
        return {"loss_ce": loss / norm.class_weight}

    def loss_boxes(self, outputs, targets, indices, norm: Normalizers) -> Dict[str, Tensor]:
        src = at_least_float32(outputs["pred_boxes"][self._matched(indices)])  # (M, 4) cxcywh
        tgt = self._matched_targets(targets, indices, "boxes").to(src)
        src_xyxy, tgt_xyxy = box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
        l1 = F.l1_loss(src, tgt, reduction="sum")
        giou = generalized_box_iou_loss(src_xyxy, tgt_xyxy, reduction="sum")
        return {"loss_bbox": l1 / norm.num_boxes, "loss_giou": giou / norm.num_boxes}

    @torch.no_grad()
    def metrics(self, outputs, targets, indices) -> Dict[str, float]:
        """class_error: % of matched predictions with the wrong top class; cardinality_error: mean
        |#predictions not classified no-object - #targets| per image."""
        logits = outputs["pred_logits"]
        labels = self._matched_targets(targets, indices, "labels")
        hits = logits[self._matched(indices)].argmax(-1) == labels.to(logits.device)
        acc = hits.float().mean().item() * 100 if len(labels) else 100.0
        n_pred = (logits.argmax(-1) != self.num_classes).sum(1).float()
        n_tgt = torch.as_tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return {"class_error": 100.0 - acc, "cardinality_error": F.l1_loss(n_pred, n_tgt).item()}

    def _layer_losses(self, outputs, targets, norm: Normalizers, suffix: str = ""):
        indices = self.matcher(outputs, targets)
        losses = {}
        for name in self.losses:
            losses.update(self.loss_map[name](outputs, targets, indices, norm))
        weighted = {k + suffix: v * self.weight_dict.get(k, 0.0) for k, v in losses.items()}
        return weighted, indices

    def normalizers(self, targets: List[Dict], num_queries: int, device) -> Normalizers:
        """Those of the effective batch (see :func:`effective_batch`), else of ``targets``."""
        eos_coef = self._eos_weight  # read once: .item() of the buffer is a device sync
        if _EFFECTIVE_BATCH is None:
            counts = [len(t["labels"]) for t in targets]
            return loss_normalizers(counts, num_queries, eos_coef, device)
        if "norm" not in _EFFECTIVE_BATCH:  # the step's first forward, on every process
            _EFFECTIVE_BATCH["norm"] = loss_normalizers(
                _EFFECTIVE_BATCH["num_targets"], num_queries, eos_coef, device
            )
        return _EFFECTIVE_BATCH["norm"]

    def forward(self, outputs: Dict, targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """outputs: "pred_logits" (B, N, K+1), "pred_boxes" (B, N, 4) normalized cxcywh, and
        "aux_outputs": a list of such dicts, one per earlier decoder layer; targets: B dicts with
        "labels" (M_i,) and "boxes" (M_i, 4) normalized cxcywh. Returns the weighted losses."""
        logits = outputs["pred_logits"]
        norm = self.normalizers(targets, logits.shape[1], logits.device)
        # each loss casts its inputs to >= float32; no autocast op may lower the precision here
        with torch.autocast(logits.device.type, enabled=False):
            losses, indices = self._layer_losses(outputs, targets, norm)
            if self.deep_supervision:
                for i, aux in enumerate(outputs.get("aux_outputs", [])):
                    losses.update(self._layer_losses(aux, targets, norm, f"_{i}")[0])
            metrics = self.metrics(outputs, targets, indices)
        with contextlib.suppress(AssertionError):  # no event storage outside a training loop
            get_event_storage().put_scalars(**metrics)
        return losses


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """(M,) 1 - DICE (smoothed by 1) of (M, P) mask ``logits`` and binary ``targets`` (of the
    logits' dtype)."""
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

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("losses", ("labels", "boxes", "masks"))
        super().__init__(*args, **kwargs)
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
        focal = sigmoid_focal_loss(src, tgt, reduction="none")  # alpha 0.25, gamma 2 as DETR
        return {
            "loss_mask": focal.mean(1).sum() / norm.num_boxes,
            "loss_dice": dice_loss(src, tgt).sum() / norm.num_boxes,
        }
