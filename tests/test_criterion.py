import pytest
import torch
import torch.nn.functional as F

from detr_d2.modeling import HungarianMatcher, SetCriterion
from detr_d2.modeling.criterion import Normalizers, effective_batch

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
        Normalizers(num_boxes=1, class_weight=1),
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
    crit = SetCriterion(2, HungarianMatcher(), dict(WEIGHTS, loss_ce=0.0)).to(device)
    losses = crit(out, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "bbox", "giou") for s in ("", "_0", "_1")}
    # a zero weight: the term is 0 but in the graph (DDP needs a gradient for every parameter)
    assert losses["loss_ce"].item() == 0 and losses["loss_ce"].requires_grad
    sum(losses.values()).backward()
    assert out["pred_logits"].grad is not None and not out["pred_logits"].grad.any()
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


def _problem(seed, counts, n=6, k=3):
    gen = torch.Generator().manual_seed(seed)
    out = {
        "pred_logits": torch.randn(len(counts), n, k + 1, generator=gen, dtype=torch.float64),
        "pred_boxes": torch.rand(len(counts), n, 4, generator=gen, dtype=torch.float64) * 0.4 + 0.3,
    }
    targets = [
        {
            "labels": torch.randint(0, k, (m,), generator=gen),
            "boxes": torch.rand(m, 4, generator=gen, dtype=torch.float64) * 0.3 + 0.35,
        }
        for m in counts
    ]
    return out, targets


def test_one_process_class_loss_is_the_original_weighted_mean():
    """Normalizing by the class-weight sum (summed across processes) leaves 1 process as it was:
    F.cross_entropy's weighted mean, also with more targets than queries (only N are matched)."""
    for counts in ([2, 0, 1], [0, 0], [8, 3]):  # 8 > N = 6 queries
        out, targets = _problem(1, counts)
        crit = SetCriterion(3, HungarianMatcher(), WEIGHTS, eos_coef=0.1)
        indices = crit.matcher(out, targets)
        target_classes = torch.full((len(counts), 6), 3)
        for b, (i, j) in enumerate(indices):
            target_classes[b, i] = targets[b]["labels"][j]
        weight = crit.empty_weight.double()  # [1, 1, 1, 0.1]: the code before, in float64
        ce = F.cross_entropy(out["pred_logits"].transpose(1, 2), target_classes, weight=weight)
        loss = crit(out, targets)["loss_ce"]
        assert loss.item() == pytest.approx(ce.item(), rel=1e-12), counts


def test_effective_batch_losses_sum_to_the_whole_batch_losses():
    """Within effective_batch(counts of all micro-batches), the micro-batches' losses add up to
    the loss of their union: every normalizer is that of the whole effective batch."""
    counts = [2, 0, 3, 1]
    out, targets = _problem(2, counts)
    crit = SetCriterion(3, HungarianMatcher(), WEIGHTS, eos_coef=0.1, deep_supervision=False)
    whole = crit(out, targets)
    halves = [({k: v[s] for k, v in out.items()}, targets[s]) for s in (slice(0, 2), slice(2, 4))]
    with effective_batch(counts):
        parts = [crit(*half) for half in halves]
    for k in whole:
        assert (parts[0][k] + parts[1][k]).item() == pytest.approx(whole[k].item(), rel=1e-12), k
    # outside the context the first half is normalized by its own 2 boxes, not the batch's 6
    alone = crit(*halves[0])["loss_bbox"]
    assert alone.item() == pytest.approx(3 * parts[0]["loss_bbox"].item(), rel=1e-12)


def test_losses_and_cost_matrix_are_float32_under_bfloat16_autocast():
    out, targets = _problem(3, [2, 1])
    out = {k: v.to(torch.bfloat16) for k, v in out.items()}
    crit = SetCriterion(3, HungarianMatcher(), WEIGHTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = crit(out, targets)
        cost = crit.matcher.cost_matrix(
            out["pred_logits"][0], out["pred_boxes"][0], targets[0]["labels"], targets[0]["boxes"]
        )
    assert {v.dtype for v in losses.values()} == {torch.float32}
    assert cost.dtype == torch.float32


def test_matcher_matches_float16_overflow_but_refuses_non_finite_float32():
    out, targets = _problem(4, [2])
    out["pred_logits"][0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite"):
        HungarianMatcher()(out, targets)
    half = {k: v.half() for k, v in out.items()}  # float16: an overflow the GradScaler skips
    ((i, j),) = HungarianMatcher()(half, targets)
    assert len(i) == len(j) == 2
