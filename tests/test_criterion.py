import pytest
import torch
import torch.nn.functional as F

from detr_d2.modeling import HungarianMatcher, SetCriterion

WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def _to(device, targets):
    return [{k: v.to(device) for k, v in t.items()} for t in targets]


class FixedMatcher(torch.nn.Module):
    def __init__(self, indices):
        super().__init__()
        self.indices = indices

    def forward(self, outputs, targets):
        return self.indices


def test_giou_loss_matches_hand_computed_value(device):
    # boxes [0,0,2,2] and [1,1,3,3] in a 4x4 image: IoU 1/7, hull 9, GIoU = 1/7 - 2/9
    pred = torch.tensor([[[1.0, 1.0, 2.0, 2.0]]], device=device) / 4  # cxcywh normalized
    tgt = torch.tensor([[2.0, 2.0, 2.0, 2.0]]) / 4
    crit = SetCriterion(1, FixedMatcher([(torch.tensor([0]), torch.tensor([0]))]), WEIGHTS)
    losses = crit.to(device).loss_boxes(
        {"pred_boxes": pred},
        _to(device, [{"labels": torch.tensor([0]), "boxes": tgt}]),
        crit.matcher(None, None),
        num_boxes=1,
    )
    assert losses["loss_giou"].item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(0.25 + 0.25, abs=1e-6)  # cx, cy differ


def test_losses_equal_direct_computation(device):
    torch.manual_seed(0)
    k, n = 3, 4
    logits = torch.randn(2, n, k + 1)
    boxes = torch.rand(2, n, 4) * 0.4 + 0.3
    targets = [
        {
            "labels": torch.tensor([2, 0]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]]),
        },
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.4, 0.3, 0.3]])},
    ]
    indices = [(torch.tensor([3, 1]), torch.tensor([0, 1])), (torch.tensor([0]), torch.tensor([0]))]
    crit = SetCriterion(k, FixedMatcher(indices), WEIGHTS, eos_coef=0.1).to(device)
    outputs = {"pred_logits": logits.to(device), "pred_boxes": boxes.to(device)}
    losses = crit(outputs, _to(device, targets))

    target_classes = torch.full((2, n), k)
    target_classes[0, 3], target_classes[0, 1], target_classes[1, 0] = 2, 0, 1
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    ce = F.cross_entropy(logits.reshape(-1, k + 1), target_classes.reshape(-1), weight=weight)
    src = torch.stack([boxes[0, 3], boxes[0, 1], boxes[1, 0]])
    tgt = torch.cat([targets[0]["boxes"], targets[1]["boxes"]])
    l1 = (src - tgt).abs().sum() / 3
    assert losses["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(5 * l1.item(), rel=1e-5)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_aux_losses_metrics_and_zero_weight(device):
    torch.manual_seed(0)
    out = {
        "pred_logits": torch.randn(1, 5, 3).to(device).requires_grad_(),
        "pred_boxes": torch.rand(1, 5, 4).to(device),
    }
    aux = {"pred_logits": torch.randn(1, 5, 3), "pred_boxes": torch.rand(1, 5, 4)}
    out["aux_outputs"] = [{k: v.to(device) for k, v in aux.items()}] * 2
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    targets = _to(device, targets)
    crit = SetCriterion(2, HungarianMatcher(), dict(WEIGHTS, loss_giou=0.0)).to(device)
    losses = crit(out, targets)
    assert set(losses) == {
        "loss_ce",
        "loss_bbox",
        "loss_ce_0",
        "loss_bbox_0",
        "loss_ce_1",
        "loss_bbox_1",
    }
    assert not any("error" in key for key in losses)  # metrics are never summed into the loss
    metrics = crit.metrics(out, targets, crit.matcher(out, targets))
    assert 0 <= metrics["class_error"] <= 100 and metrics["cardinality_error"] >= 0


def test_empty_image_gives_only_no_object_loss(device):
    out = {"pred_logits": torch.zeros(1, 3, 3), "pred_boxes": torch.rand(1, 3, 4)}
    out = {k: v.to(device) for k, v in out.items()}
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = SetCriterion(2, HungarianMatcher(), WEIGHTS).to(device)(out, _to(device, empty))
    assert losses["loss_ce"].item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), rel=1e-5)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
