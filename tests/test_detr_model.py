import math
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from detr_d2 import add_detr_config
from detr_d2.modeling import PositionEmbeddingSine

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def _image(h, w, seed):
    return torch.randint(
        0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _instances(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


@pytest.mark.parametrize(
    "name,total,backbone",
    [
        ("detr_r50.yaml", 41_521_941, 23_454_912),
        ("detr_r50_dc5.yaml", 41_521_941, 23_454_912),
        ("detr_r101.yaml", 60_461_845, 42_394_816),
    ],
)
def test_parameter_counts_match_paper(name, total, backbone):
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone
    # transformer + input projection: the paper's "17.8M"
    extra = sum(p.numel() for p in model.transformer.parameters()) + sum(
        p.numel() for p in model.input_proj.parameters()
    )
    assert round(extra / 1e6, 1) == 17.9


def test_sine_encoding_values_and_padding_invariance(device):
    enc = PositionEmbeddingSine(num_pos_feats=4)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool, device=device)
    pos = enc(mask)
    assert pos.shape == (1, 8, 2, 3)
    # last row, last column: normalized coordinate 2*pi -> sin ~ 0, cos ~ 1 on the first pair
    assert pos[0, 0, 1, 2].item() == pytest.approx(0.0, abs=1e-4)
    assert pos[0, 1, 1, 2].item() == pytest.approx(1.0, abs=1e-6)
    assert pos[0, 4, 0, 0].item() == pytest.approx(math.sin(2 * math.pi / 3), abs=1e-4)
    padded = torch.ones(1, 4, 5, dtype=torch.bool, device=device)
    padded[:, :2, :3] = False
    assert torch.allclose(enc(padded)[..., :2, :3], pos, atol=1e-6)


def test_outputs_shapes_and_aux(tiny_detr_cfg):
    model = build_model(tiny_detr_cfg).eval()
    with torch.no_grad():
        images = model.preprocess_image(
            [{"image": _image(64, 96, 0)}, {"image": _image(80, 48, 1)}]
        )
        out = model.forward_raw(images)
    assert out["pred_logits"].shape == (2, 7, 6)
    assert out["pred_boxes"].shape == (2, 7, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_boxes"].shape == (2, 7, 4)
    # stride 16: image 0 (64x96) is 4x6 cells of a 5x6 batch, image 1 (80x48) is 5x3
    assert out["mask"].shape == (2, 5, 6)
    assert not out["mask"][0, :4].any() and out["mask"][0, 4].all()
    assert not out["mask"][1, :, :3].any() and out["mask"][1, :, 3:].all()


def test_inference_returns_instances_in_original_coordinates(tiny_detr_cfg):
    model = build_model(tiny_detr_cfg).eval()
    with torch.no_grad():
        (res,) = model([{"image": _image(64, 96, 0), "height": 128, "width": 192}])
    inst = res["instances"]
    assert inst.image_size == (128, 192) and len(inst) == 7
    assert inst.pred_classes.max() < 5  # never the no-object class
    assert inst.pred_boxes.tensor[:, 2].max() <= 192 and (inst.scores <= 1).all()


def test_prediction_does_not_change_when_batched_with_a_larger_image(tiny_detr_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_detr_cfg).eval()
    small, large = _image(64, 96, 0), _image(128, 160, 1)
    with torch.no_grad():
        alone = model.forward_raw(model.preprocess_image([{"image": small}]))
        both = model.forward_raw(model.preprocess_image([{"image": small}, {"image": large}]))
    # Padding never reaches the transformer (key padding mask, padding-invariant positions);
    # the backbone's own zero padding at the image border is the only difference left.
    assert torch.allclose(alone["pred_boxes"][0], both["pred_boxes"][0], atol=2e-2)
    assert (
        alone["pred_logits"][0].argmax(-1) == both["pred_logits"][0].argmax(-1)
    ).float().mean() > 0.8


def test_transformer_ignores_padded_memory(tiny_detr_cfg, device):
    model = build_model(tiny_detr_cfg).eval()
    src = torch.randn(1, 32, 4, 5).to(device)
    mask = torch.zeros(1, 4, 5, dtype=torch.bool, device=device)
    mask[:, :, 3:] = True
    pos = model.position_embedding(mask)
    with torch.no_grad():
        hs1, _ = model.transformer(src, mask, model.query_embed.weight, pos)
        src2 = src.clone()
        src2[..., 3:] = 100 * torch.randn(1, 32, 4, 2).to(device)
        hs2, _ = model.transformer(src2, mask, model.query_embed.weight, pos)
    assert torch.allclose(hs1, hs2, atol=1e-5)


def test_train_step_with_empty_and_nonempty_images(tiny_detr_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_detr_cfg).train()
    batch = [
        {
            "image": _image(64, 64, 0),
            "instances": _instances(64, 64, [[4, 4, 30, 40], [20, 10, 60, 50]], [1, 3]),
        },
        {"image": _image(48, 64, 1), "instances": _instances(48, 64, [], [])},
    ]
    losses = model(batch)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.class_embed.weight.grad.abs().sum() > 0
    assert model.backbone.res4[0].conv1.weight.grad.abs().sum() > 0
    assert model.query_embed.weight.grad.abs().sum() > 0


def test_fast_inference_matches_eager_and_follows_weight_changes(tiny_detr_cfg):
    tiny_detr_cfg.MODEL.RESNETS.NORM = "FrozenBN"
    torch.manual_seed(0)
    model = build_model(tiny_detr_cfg).eval()
    for m in model.backbone.modules():  # non-trivial frozen statistics
        if hasattr(m, "running_var"):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.5, 0.5)
            m.weight.data.uniform_(0.5, 1.5)
    images = model.preprocess_image([{"image": _image(64, 96, 0)}, {"image": _image(80, 48, 1)}])

    def run(fast):
        model.fast_inference = fast
        with torch.no_grad():
            out = model.forward_raw(images)
        return out["pred_logits"], out["pred_boxes"]

    (l0, b0), (l1, b1) = run(False), run(True)
    assert torch.allclose(l0, l1, atol=1e-4) and torch.allclose(b0, b1, atol=1e-4)
    state = {
        k: v + 0.1 if k.startswith("backbone.res4") and v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    model.load_state_dict(state)  # the folded copy must not keep the old weights
    (l2, _), (l3, _) = run(False), run(True)
    assert not torch.allclose(l0, l2, atol=1e-3) and torch.allclose(l2, l3, atol=1e-4)
    assert not any("inference" in k for k in model.state_dict())


# the original DETR's parameter names of one layer (detr/models/transformer.py), which converted
# official weights and existing checkpoints rely on
_ATTN = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
_FFN = ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
_NORMS = {n: [f"norm{i}.{p}" for i in range(1, n + 1) for p in ("weight", "bias")] for n in (2, 3)}


@pytest.mark.parametrize("normalize_before", [False, True])
def test_transformer_layer_parameter_names_are_the_originals(normalize_before):
    from detr_d2.modeling import Transformer

    t = Transformer(32, 2, 1, 1, 64, normalize_before=normalize_before)
    encoder = [f"self_attn.{k}" for k in _ATTN] + _FFN + _NORMS[2]
    decoder = [f"{m}.{k}" for m in ("self_attn", "multihead_attn") for k in _ATTN] + _FFN
    assert sorted(t.encoder.layers[0].state_dict()) == sorted(encoder)
    assert sorted(t.decoder.layers[0].state_dict()) == sorted(decoder + _NORMS[3])
    no_ffn = Transformer(32, 2, 1, 1, 64, normalize_before=normalize_before, use_ffn=False)
    assert sorted(no_ffn.encoder.layers[0].state_dict()) == sorted(
        [f"self_attn.{k}" for k in _ATTN] + ["norm1.weight", "norm1.bias"]
    )
    assert sorted(no_ffn.decoder.layers[0].state_dict()) == sorted(decoder[:8] + _NORMS[2])
    final_norms = {k.rsplit(".", 1)[0] for k in t.state_dict() if ".layers." not in k}
    assert final_norms == {"decoder.norm"} | ({"encoder.norm"} if normalize_before else set())


def test_detr_builds_from_plain_python_arguments_without_a_config():
    """@configurable's point: every part is an argument, so Detr needs no cfg."""
    from detectron2.modeling.backbone import BasicStem, ResNet
    from detectron2.modeling.backbone.resnet import BasicBlock

    from detr_d2.modeling import Detr, HungarianMatcher, SetCriterion, Transformer

    torch.manual_seed(0)
    stem = BasicStem(in_channels=3, out_channels=16, norm="FrozenBN")
    stages = [  # res2-res4, one block each: stride 16, 64 channels
        ResNet.make_stage(BasicBlock, 1, stride_per_block=[s], in_channels=i, out_channels=o)
        for s, i, o in ((1, 16, 16), (2, 16, 32), (2, 32, 64))
    ]
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    model = Detr(
        backbone=ResNet(stem, stages, out_features=["res4"]),
        transformer=Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                                dim_feedforward=64, dropout=0.0),  # fmt: skip
        position_embedding=PositionEmbeddingSine(num_pos_feats=16, normalize=True),
        criterion=SetCriterion(3, HungarianMatcher(1.0, 5.0, 2.0), weights, eos_coef=0.1),
        num_classes=3,
        num_queries=6,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    assert model.backbone_feature == "res4" and model.class_embed.out_features == 4
    batch = [
        {"image": _image(64, 80, 0), "instances": _instances(64, 80, [[4, 8, 40, 50]], [2])},
        {"image": _image(48, 64, 1), "instances": _instances(48, 64, [], [])},
    ]
    losses = model.train()(batch)
    # final layer + 1 auxiliary (2 decoder layers), each with its three weighted losses
    assert set(losses) == {f"{k}{s}" for k in weights for s in ("", "_0")}
    sum(losses.values()).backward()
    assert model.class_embed.weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = model.eval()([{"image": _image(64, 80, 2), "height": 128, "width": 160}])
    inst = out[0]["instances"]
    assert inst.image_size == (128, 160) and len(inst) == 6
    assert (inst.pred_classes < 3).all() and inst.pred_boxes.tensor[:, 2].max() <= 160
