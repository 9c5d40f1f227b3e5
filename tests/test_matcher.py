import itertools

import pytest
import torch

from detr_d2.modeling import HungarianMatcher


def _random_problem(gen, b, n, ms, k=4, device="cpu"):
    logits = torch.randn(b, n, k + 1, generator=gen).to(device)
    boxes = (torch.rand(b, n, 4, generator=gen) * 0.5 + 0.25).to(device)
    targets = [
        {
            "labels": torch.randint(0, k, (m,), generator=gen).to(device),
            "boxes": (torch.rand(m, 4, generator=gen) * 0.5 + 0.25).to(device),
        }
        for m in ms
    ]
    return {"pred_logits": logits, "pred_boxes": boxes}, targets


def test_matching_is_optimal_against_brute_force(device):
    gen = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(1.0, 5.0, 2.0)
    for _ in range(10):
        outputs, targets = _random_problem(gen, 1, 5, [3], device=device)
        ((i, j),) = matcher(outputs, targets)
        cost = matcher.cost_matrix(
            outputs["pred_logits"][0],
            outputs["pred_boxes"][0],
            targets[0]["labels"],
            targets[0]["boxes"],
        )
        got = cost[i, j].sum().item()
        best = min(
            sum(cost[p, t].item() for t, p in enumerate(perm))
            for perm in itertools.permutations(range(5), 3)
        )
        assert got == pytest.approx(best, abs=1e-5)
        assert len(set(i.tolist())) == 3 and sorted(j.tolist()) == [0, 1, 2]


def test_cost_terms_use_their_own_weights(device):
    logits = torch.tensor([[0.0, 0.0]], device=device)  # K=1: prob(class 0) = 0.5
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]], device=device)
    target = torch.tensor([[0.5, 0.5, 0.2, 0.4]], device=device)
    label = torch.tensor([0], device=device)
    cost = HungarianMatcher(3.0, 5.0, 2.0).cost_matrix(logits, boxes, label, target)
    # L1 = 0.2; GIoU of nested boxes = IoU = 0.04 / 0.08 = 0.5
    assert cost.item() == pytest.approx(-3 * 0.5 + 5 * 0.2 - 2 * 0.5, abs=1e-6)


def test_batched_equals_per_image_and_empty_targets(device):
    gen = torch.Generator().manual_seed(1)
    matcher = HungarianMatcher()
    outputs, targets = _random_problem(gen, 3, 6, [2, 0, 4], device=device)
    batched = matcher(outputs, targets)
    for b in range(3):
        single = matcher({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
    assert batched[1][0].numel() == 0 and batched[1][0].dtype == torch.int64


def test_non_finite_predictions_raise_clear_error(device):
    outputs = {
        "pred_logits": torch.zeros(1, 2, 3, device=device),
        "pred_boxes": torch.full((1, 2, 4), float("nan"), device=device),
    }
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    with pytest.raises(FloatingPointError, match="non-finite"):
        HungarianMatcher()(outputs, targets)


def test_a_batch_reaches_the_host_in_one_copy(device, monkeypatch):
    """Every image's cost block goes to the host (scipy) in one copy: on a GPU each copy waits
    for the device, and a per-image copy stalled training B times per decoder layer."""
    gen = torch.Generator().manual_seed(2)
    outputs, targets = _random_problem(gen, 4, 6, [2, 0, 3, 5], device=device)
    expected = [
        HungarianMatcher()({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        for b in range(4)
    ]
    copies, to_host = [], torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **k: copies.append(1) or to_host(t))
    got = HungarianMatcher()(outputs, targets)
    assert len(copies) == 1
    for (i, j), (ei, ej) in zip(got, expected):
        assert torch.equal(i, ei) and torch.equal(j, ej)
