"""DetrPanoptic: mask head, mask losses, panoptic inference, frozen box model, a train step."""

import copy

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from PIL import Image

import detr_d2.modeling.panoptic  # noqa: F401  registers DetrPanoptic
from detr_d2.modeling.panoptic import combine_panoptic, resize_mask_logits
from detr_d2.modeling.criterion import SetCriterionWithMasks
from detr_d2.modeling.segmentation import MaskHead, MultiHeadAttentionMap
from detr_d2.solver import build_optimizer

TINY_PANOPTIC = "detr_d2_test_tiny_panoptic"  # 3 things (contiguous 0-2) + 2 stuff (3-4)
if TINY_PANOPTIC not in MetadataCatalog.list():
    MetadataCatalog.get(TINY_PANOPTIC).set(
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
        stuff_dataset_id_to_contiguous_id={4: 3, 5: 4},
    )


@pytest.fixture
def tiny_panoptic_cfg(tiny_detr_cfg):
    """The tiny DETR of conftest (R18 at stride 16, d=32, 4 heads, 7 queries, 5 classes) with a
    mask head over res4/res3/res2."""
    cfg = tiny_detr_cfg
    cfg.MODEL.META_ARCHITECTURE = "DetrPanoptic"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.DETR.BACKBONE_FEATURE = "res4"
    cfg.MODEL.DETR.MASK_HEAD_GROUPS = 2  # d / 16 = 2 channels in the last block
    cfg.DATASETS.TRAIN = (TINY_PANOPTIC,)
    return cfg


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def _sample(h, w, seed):
    """An image with 2 rectangle segments (thing class 1, stuff class 3) as the mapper gives."""
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    masks[0, h // 4 : h // 2, w // 4 : w // 2] = True
    masks[1, h // 2 :, :] = True
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.tensor([1, 3])
    return {"image": _image(h, w, seed), "instances": inst}


def test_attention_map_normalizes_jointly_over_heads_and_positions(device):
    attn = MultiHeadAttentionMap(16, 16, num_heads=4).to(device)
    q, k = torch.randn(2, 3, 16).to(device), torch.randn(2, 16, 5, 6).to(device)
    mask = torch.zeros(2, 5, 6, dtype=torch.bool, device=device)
    mask[1, :, 4:] = True
    w = attn(q, k, mask)
    assert w.shape == (2, 3, 4, 5, 6)
    assert torch.allclose(w.sum((2, 3, 4)), torch.ones(2, 3, device=device))
    assert (w[1, :, :, :, 4:] == 0).all()
    # explicitly: per head, scaled dot products of projected query and key at each position
    qp = attn.q_linear(q[0, 2]).view(4, 4)
    kp = attn.k_linear(k[0].flatten(1).T).T.reshape(4, 4, 5, 6)
    logits = (qp[:, :, None, None] * kp).sum(1) / 2.0
    assert torch.allclose(w[0, 2], logits.flatten().softmax(0).view(4, 5, 6), atol=1e-6)


def test_mask_head_output_shape_and_names(device):
    head = MaskHead(32 + 4, [256, 128, 64], 32, num_groups=2).to(device)
    fpn = [torch.randn(2, 256, 4, 6), torch.randn(2, 128, 8, 12), torch.randn(2, 64, 16, 24)]
    out = head(
        torch.randn(2, 32, 4, 6).to(device),
        torch.rand(2, 3, 4, 4, 6).to(device),  # B=2, N=3, M=4
        [f.to(device) for f in fpn],
    )
    assert out.shape == (2, 3, 16, 24)
    names = {n.split(".")[0] for n, _ in head.named_parameters()}
    assert names == {f"lay{i}" for i in range(1, 6)} | {f"gn{i}" for i in range(1, 6)} | {
        "adapter1",
        "adapter2",
        "adapter3",
        "out_lay",
    }
    assert head.lay5.out_channels == 2 and head.adapter3.out_channels == 4


def test_each_query_mask_follows_its_own_attention_map_and_image(device):
    torch.manual_seed(0)
    head = MaskHead(32 + 4, [256, 128, 64], 32, num_groups=2).eval().to(device)
    features = torch.randn(2, 32, 4, 6).to(device)
    fpn = [torch.randn(2, 256, 4, 6), torch.randn(2, 128, 8, 12), torch.randn(2, 64, 16, 24)]
    fpn = [f.to(device) for f in fpn]
    # jointly normalized maps (sum 1 over heads x positions) peaked at one position per query
    attention = torch.zeros(2, 3, 4, 4, 6)
    attention[:, 0, :, 0, 0] = attention[:, 2, :, 0, 0] = 0.25  # queries 0 and 2: top left
    attention[:, 1, :, 3, 5] = 0.25  # query 1: bottom right
    attention = attention.to(device)
    with torch.no_grad():
        out = head(features, attention, fpn)
        swapped = head(features, attention[:, [1, 0, 2]], fpn)
        alone = head(features[1:], attention[1:], [f[1:] for f in fpn])
    assert torch.equal(out[:, 0], out[:, 2])  # same image and map: same mask
    assert (out[:, 0] - out[:, 1]).abs().amax() > 1e-3  # another map: another mask
    assert torch.allclose(swapped[:, 0], out[:, 1], atol=1e-6)
    # every query of image 1 reads image 1's features, not those of another image in the batch
    assert torch.allclose(alone[0], out[1], atol=1e-5)


def test_model_predicts_one_mask_per_query_at_stride_4(tiny_panoptic_cfg):
    model = build_model(tiny_panoptic_cfg).eval()
    with torch.no_grad():
        inputs = [{"image": _image(64, 96, 0)}, {"image": _image(80, 48, 1)}]
        images = model.preprocess_image(inputs)
        out = model.forward_raw(images)
    assert out["pred_masks"].shape == (2, 7, 20, 24)  # padded batch 80 x 96
    assert out["pred_logits"].shape == (2, 7, 6)


def _focal(x, t, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * ce


def test_mask_losses_against_direct_computation(device):
    # fixed matching: image 0 query 2 <-> target 1, query 0 <-> target 0; image 1 query 1 <-> 0
    indices = [(torch.tensor([2, 0]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))]
    criterion = SetCriterionWithMasks(
        3, lambda outputs, targets: indices, {"loss_mask": 1.0, "loss_dice": 1.0}, losses=("masks",)
    )
    # constant logits per query at stride 2, so the bilinear upsampling to 8 x 6 keeps them
    values = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 1.5, 0.0]])
    outputs = {
        "pred_logits": torch.zeros(2, 3, 4),
        "pred_masks": values[:, :, None, None].expand(2, 3, 4, 3).clone(),
    }
    masks0 = torch.zeros(2, 8, 6, dtype=torch.bool)
    masks0[0, :3, :2] = True
    masks0[1, 4:, :] = True
    masks1 = torch.zeros(1, 8, 6, dtype=torch.bool)
    masks1[0, 1:7, 1:5] = True  # image 1 is 7 x 5 before padding: its padding is background
    targets = [
        {"labels": torch.tensor([0, 1]), "masks": masks0},
        {"labels": torch.tensor([2]), "masks": masks1},
    ]
    on_device = [{k: v.to(device) for k, v in t.items()} for t in targets]
    losses = criterion.to(device)({k: v.to(device) for k, v in outputs.items()}, on_device)

    focal, dice = 0.0, 0.0
    for b, (src, tgt) in enumerate(indices):
        for i, j in zip(src.tolist(), tgt.tolist()):
            x = torch.full((48,), values[b, i].item())
            t = targets[b]["masks"][j].flatten().float()
            focal += _focal(x, t).mean()
            p = torch.sigmoid(x)
            dice += 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    assert losses["loss_mask"].item() == pytest.approx(focal.item() / 3, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice.item() / 3, rel=1e-5)


def _combine(logits, classes, scores=None, output_hw=None):
    scores = torch.linspace(0.99, 0.9, len(classes)) if scores is None else scores
    is_thing = [True, True, True, False, False]  # classes 0-2 things, 3-4 stuff
    scores, classes = scores.to(logits.device), torch.tensor(classes, device=logits.device)
    return combine_panoptic(scores, classes, logits, is_thing, 4, output_hw)


def test_combine_panoptic_folds_stuff_drops_tiny_segments_and_never_overlaps(device):
    """The original DETR's PostProcessPanoptic, step by step (module docstring)."""
    logits = torch.full((4, 10, 10), -5.0, device=device)
    logits[0, :, :5] = 5.0  # thing 0: left half
    logits[1, :5, 5:] = 5.0  # stuff 3: top right
    logits[2, 5:, 5:] = 5.0  # stuff 3 again: bottom right, folded into query 1, then dropped
    logits[1, 5:, 5:] = 2.0  # ... and query 1 is second best there: it takes the bottom right
    logits[3, 0:2, 0:2] = 9.0  # thing 1: 4 pixels, dropped; query 0 takes them back
    logits[0, 0:2, 0:2] = 4.0
    scores = torch.tensor([0.9, 0.95, 0.99, 0.97])
    seg, info = _combine(logits, [0, 3, 3, 1], scores)
    assert seg.shape == (10, 10) and seg.dtype == torch.int32
    assert [(s["category_id"], s["isthing"], s["area"]) for s in info] == [
        (0, True, 50),
        (3, False, 50),
    ]
    assert info[1]["score"] == pytest.approx(0.95)  # query 1's own score: query 2 is gone
    assert (seg[:, :5] == info[0]["id"]).all() and (seg[:, 5:] == info[1]["id"]).all()
    # the dropped duplicate's pixels go to the best remaining query, whichever it is
    logits[0, 5:, 5:] = 3.0
    seg, info = _combine(logits, [0, 3, 3, 1], scores)
    assert [(s["category_id"], s["area"]) for s in info] == [(0, 75), (3, 25)]
    # a 5-pixel segment survives min_area 4
    logits[0, 5:, 5:] = -5.0
    logits[3, 2, 0] = 9.0
    seg, info = _combine(logits, [0, 3, 3, 1], scores)
    assert [s["area"] for s in info] == [45, 50, 5]
    assert sorted(seg.unique().tolist()) == [1, 2, 3]
    # nothing kept: all void
    seg, info = _combine(logits[:0], [])
    assert info == [] and (seg == 0).all() and seg.shape == (10, 10)


def test_combine_panoptic_resizes_the_argmax_with_pils_nearest_filter(device):
    """The argmax is taken at network-input resolution and the map of query indices resized to
    the output with PIL's nearest filter; areas are counted in output pixels."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 13, 17, generator=g)
    seg, info = _combine(logits.to(device), [0, 1, 2], output_hw=(29, 11))
    winner = logits.argmax(0).numpy().astype(np.int32)
    expected = np.asarray(Image.fromarray(winner, mode="I").resize((11, 29), Image.NEAREST)) + 1
    assert seg.shape == (29, 11) and np.array_equal(seg.cpu().numpy(), expected)
    assert [s["area"] for s in info] == [int((expected == k).sum()) for k in (1, 2, 3)]


@pytest.mark.parametrize("favoured_class", [None, 0, 3])
def test_inference_outputs_panoptic_seg_and_thing_instances(tiny_panoptic_cfg, favoured_class):
    torch.manual_seed(0)  # the random model's segments do not depend on the tests run before
    model = build_model(tiny_panoptic_cfg).eval()
    model.panoptic_conf_thresh = 0.0  # an untrained model: keep every query
    if favoured_class is not None:  # every query predicts this class
        with torch.no_grad():
            model.class_embed.weight.zero_()
            model.class_embed.bias.zero_()
            model.class_embed.bias[favoured_class] = 5.0
    inputs = [
        {"image": _image(64, 96, 0), "height": 100, "width": 150},
        {"image": _image(80, 48, 1)},
    ]
    with torch.no_grad():
        results = model(inputs)
        logits = model.forward_raw(model.preprocess_image(inputs))["pred_logits"]
    for res, (h, w), lg in zip(results, [(100, 150), (80, 48)], logits):
        seg, info = res["panoptic_seg"]
        assert seg.shape == (h, w) and seg.dtype == torch.int32
        assert len(info) > 0 and sorted(seg.unique().tolist()) == [s["id"] for s in info]
        for s in info:
            assert s["area"] == (seg == s["id"]).sum().item() > 4
            assert s["isthing"] == (s["category_id"] < 3)
        stuff = [s["category_id"] for s in info if not s["isthing"]]
        assert len(stuff) == len(set(stuff))  # one segment per stuff class
        if favoured_class == 3:
            assert [(s["category_id"], s["area"]) for s in info] == [(3, h * w)]
        inst = res["instances"]
        n_things = (lg[:, :-1].argmax(-1) < 3).sum().item()
        assert inst.image_size == (h, w) and len(inst) == n_things
        assert n_things == {None: n_things, 0: 7, 3: 0}[favoured_class]
        assert (inst.pred_classes < 3).all()
        assert inst.pred_masks.shape == (len(inst), h, w) and inst.pred_masks.dtype == torch.bool
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()


def test_train_step_joint_box_and_mask_losses(tiny_panoptic_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_panoptic_cfg).train()
    losses = model([_sample(64, 96, 0), _sample(80, 48, 1)])
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_ce_0"} <= set(
        losses
    )
    assert "loss_mask_0" not in losses  # masks on the final decoder layer only
    sum(losses.values()).backward()
    for name in (
        "mask_head.out_lay.weight",
        "bbox_attention.q_linear.weight",
        "class_embed.weight",
        "backbone.res4.0.conv1.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.fixture
def frozen_setup(tiny_panoptic_cfg, tmp_path):
    """A box model checkpoint (Detr, trainable BatchNorm) and a panoptic cfg that freezes it."""
    cfg = tiny_panoptic_cfg
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    box_cfg = cfg.clone()
    box_cfg.MODEL.META_ARCHITECTURE = "Detr"
    torch.manual_seed(1)
    box_model = build_model(box_cfg)
    for name, buf in box_model.named_buffers():
        if "running_mean" in name:
            buf.normal_()  # distinguishable from a fresh model's zeros
    box_state = {k: v.clone() for k, v in box_model.state_dict().items()}
    path = str(tmp_path / "box_model.pth")
    torch.save({"model": box_state, "iteration": 10}, path)
    cfg.MODEL.DETR.FROZEN_WEIGHTS = path
    return cfg, box_state


def test_frozen_weights_are_loaded_frozen_and_unchanged_by_a_train_step(frozen_setup):
    cfg, box_state = frozen_setup
    torch.manual_seed(2)
    model = build_model(cfg).train()
    state = model.state_dict()
    for k, v in box_state.items():
        assert torch.equal(state[k], v), k
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("mask_head.", "bbox_attention.")), name
    before = {k: v.clone() for k, v in state.items()}
    optimizer = build_optimizer(cfg, model)
    losses = model([_sample(64, 96, 0), _sample(80, 48, 1)])
    assert set(losses) == {"loss_mask", "loss_dice"}  # box losses would be constants
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    after = model.state_dict()
    for k in box_state:  # parameters and BatchNorm statistics
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["mask_head.out_lay.weight"], before["mask_head.out_lay.weight"])
    assert not torch.equal(
        after["bbox_attention.q_linear.weight"], before["bbox_attention.q_linear.weight"]
    )


def _save_other_model(cfg, path, keep=lambda key: True):
    """A DetrPanoptic of other weights (every tensor differs) saved as {"model": its state dict,
    the keys ``keep`` accepts}; returns that state dict."""
    joint_cfg = cfg.clone()
    joint_cfg.MODEL.DETR.FROZEN_WEIGHTS = ""
    torch.manual_seed(3)
    state = {k: v.clone() for k, v in build_model(joint_cfg).state_dict().items() if keep(k)}
    torch.save({"model": state}, path)
    return state


def test_model_weights_holding_the_box_model_replace_frozen_weights(frozen_setup, tmp_path):
    cfg, box_state = frozen_setup
    path = str(tmp_path / "complete.pth")  # a stage-2 checkpoint: box model and mask head
    other_state = _save_other_model(cfg, path)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(path)  # as train_net loads MODEL.WEIGHTS
    state = model.state_dict()
    for k, v in other_state.items():
        assert torch.equal(state[k], v), k
    assert not torch.equal(state["class_embed.weight"], box_state["class_embed.weight"])
    assert not any(p.requires_grad for n, p in model.named_parameters() if model.in_box_model(n))


def test_model_weights_with_part_of_the_box_model_keep_frozen_weights(frozen_setup, tmp_path):
    cfg, box_state = frozen_setup
    path = str(tmp_path / "partial.pth")  # the mask head and an ImageNet-like backbone
    other_state = _save_other_model(cfg, path, keep=lambda k: not k.startswith("transformer."))
    model = build_model(cfg)
    incompatible = DetectionCheckpointer(model).load(path)
    state = model.state_dict()
    for k, v in box_state.items():
        assert torch.equal(state[k], v), k
    for k in ("mask_head.lay1.weight", "bbox_attention.k_linear.bias"):
        assert torch.equal(state[k], other_state[k]), k
    assert incompatible is None or not any(
        model.in_box_model(k) for k in getattr(incompatible, "missing_keys", [])
    )


def test_frozen_weights_must_hold_the_whole_box_model(frozen_setup, tmp_path):
    cfg, box_state = frozen_setup
    partial = copy.copy(box_state)
    partial.pop("class_embed.weight")
    path = str(tmp_path / "partial.pth")
    torch.save({"model": partial}, path)
    cfg.MODEL.DETR.FROZEN_WEIGHTS = path
    with pytest.raises(ValueError, match="class_embed.weight"):
        build_model(cfg)


def test_missing_frozen_weights_are_an_error_only_when_the_box_model_needs_them(
    frozen_setup, tmp_path
):
    cfg, _ = frozen_setup
    cfg.MODEL.DETR.FROZEN_WEIGHTS = str(tmp_path / "box" / "model_final.pth")
    model = build_model(cfg).train()  # built: the weights loaded next may hold the box model
    message = r"MODEL.DETR.FROZEN_WEIGHTS .*box.*does not exist.*Train the box stage"
    with pytest.raises(FileNotFoundError, match=message + ".*complete panoptic checkpoint"):
        model([_sample(64, 96, 0)])  # training stage 2 without a box model
    partial = str(tmp_path / "partial.pth")
    _save_other_model(cfg, partial, keep=lambda k: not model.in_box_model(k))
    with pytest.raises(FileNotFoundError, match=message):
        DetectionCheckpointer(model).load(partial)
    complete = str(tmp_path / "complete.pth")
    _save_other_model(cfg, complete)
    DetectionCheckpointer(model).load(complete)
    assert set(model([_sample(64, 96, 0)])) == {"loss_mask", "loss_dice"}


def test_missing_backbone_feature_is_explained(tiny_panoptic_cfg):
    tiny_panoptic_cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4"]
    with pytest.raises(ValueError, match="res2"):
        build_model(tiny_panoptic_cfg)


def test_mask_upsampling_is_aligned_with_the_padded_batch(device):
    """A mask over the padded batch maps to the same pixels of each (unpadded) image."""
    masks = torch.full((1, 20, 24), -1.0, device=device)
    masks[0, :4, :6] = 1.0  # top-left 16 x 24 input pixels
    out = resize_mask_logits(masks, (80, 96), (64, 48), (128, 96))
    assert out.shape == (1, 128, 96)
    assert (out[0, :30, :46] > 0).all()
    assert (out[0, 34:, :] < 0).all() and (out[0, :, 50:] < 0).all()
