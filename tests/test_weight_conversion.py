"""Weight conversion: safe loading, torchvision ResNet -> Detectron2, official DETR -> detr_d2.

The official checkpoints are not downloaded: each test builds a synthetic one in the official
format from a small random-weight model (narrow ResNet-50, d=32, 1+1 layers), with the test's own
inverse of the name mapping, and checks that conversion gives the model's weights back exactly.
"""

import argparse
import importlib.util
import logging
import os
import re

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.modeling import build_model
from PIL import Image

from detr_d2.checkpoint import (
    CheckpointConversionError,
    UnsafeCheckpointError,
    check_against_model,
    coco_detection_class_rows,
    coco_panoptic_class_rows,
    convert_official_detr,
    convert_torchvision_resnet,
    load_checkpoint_safely,
    load_official_checkpoint,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG = os.path.join(ROOT, "configs", "detr_r50.yaml")
# ResNet-50 with every width divided by 8 (same key names), d=32, 1 encoder + 1 decoder layer
TINY = {
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 8,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 8,
    "MODEL.DETR.HIDDEN_DIM": 32,
    "MODEL.DETR.NHEADS": 2,
    "MODEL.DETR.DIM_FEEDFORWARD": 64,
    "MODEL.DETR.ENC_LAYERS": 1,
    "MODEL.DETR.DEC_LAYERS": 1,
    "MODEL.DETR.NUM_OBJECT_QUERIES": 5,
}
TINY_OPTS = [str(x) for item in TINY.items() for x in item]  # as KEY VALUE command-line pairs


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


detr_tool = _load_tool("convert_detr_weights")


def _setup_cfg(config_file, opts):
    """The config tools/convert_detr_weights.py builds its target model from."""
    return detr_tool.cli.setup_cfg(argparse.Namespace(config_file=config_file, opts=opts))
backbone_tool = _load_tool("convert_torchvision_backbone")


# ---------------------------------------------------------------- safe loading


class _NotAllowed:
    pass


class _RunsCode:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zipfile", [True, False])
def test_safe_load_accepts_namespace(tmp_path, zipfile):
    path = str(tmp_path / "ok.pth")
    args = argparse.Namespace(
        lr=1e-4,
        backbone="resnet50",
        frozen_weights=None,
        masks=False,
        lr_drop=200,
        dataset_file="coco",
        milestones=[1, 2],
    )
    torch.save(
        {"model": {"w": torch.arange(3.0)}, "args": args},
        path,
        _use_new_zipfile_serialization=zipfile,
    )
    loaded = load_checkpoint_safely(path)
    assert loaded["args"] == args
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0))


def test_safe_load_refuses_custom_class(tmp_path):
    path = str(tmp_path / "custom.pth")
    torch.save({"model": {}, "extra": _NotAllowed()}, path)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_checkpoint_safely(path)
    assert path in str(e.value) and "_NotAllowed" in str(e.value)


@pytest.mark.parametrize("zipfile", [True, False])
def test_safe_load_refuses_code_and_does_not_run_it(tmp_path, zipfile):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    torch.save(
        {"model": {}, "args": _RunsCode(marker)}, path, _use_new_zipfile_serialization=zipfile
    )
    with pytest.raises(UnsafeCheckpointError, match=r"system") as e:
        load_checkpoint_safely(path)
    assert path in str(e.value)
    assert not marker.exists()


# ---------------------------------------------------------------- torchvision ResNet


def _randomize_batch_norms(module):
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.normal_(0, 0.1)


def test_torchvision_resnet50_matches_detectron2(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    _randomize_batch_norms(tv)
    src, dst = str(tmp_path / "resnet50.pth"), str(tmp_path / "R-50-tv.pth")
    torch.save(tv.state_dict(), src)
    assert backbone_tool.main(["--input", src, "--output", dst]) == 0

    saved = torch.load(dst, weights_only=True)
    assert saved["matching_heuristics"] is False
    assert not any("fc." in k or "num_batches_tracked" in k for k in saved["model"])

    class Wrapper(torch.nn.Module):  # what MODEL.WEIGHTS loads into: any model with .backbone
        def __init__(self):
            super().__init__()
            self.backbone = backbone_tool.build_detectron2_resnet(50)

    model = Wrapper().eval()
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(dst))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone(x)["res5"]
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(t))))
    assert ours.shape == expected.shape == (1, 2048, 2, 2)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("torchvision_layout", [True, False])
def test_dc5_backbone_matches_torchvisions_dilated_resnet(tmp_path, torchvision_layout):
    """DETR-DC5's res5 is torchvision's layer4 with replace_stride_with_dilation (first block
    undilated: MODEL.DETR.DC5_TORCHVISION); Detectron2's own layout dilates that block too."""
    import torchvision
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from detr_d2 import add_detr_config, merge_config_file

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[0, 0, 1]).eval()
    _randomize_batch_norms(tv)
    src, dst = str(tmp_path / "resnet50.pth"), str(tmp_path / "R-50-tv.pth")
    torch.save(tv.state_dict(), src)
    assert backbone_tool.main(["--input", src, "--output", dst]) == 0
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, os.path.join(ROOT, "configs", "detr_r50_dc5.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DETR.DC5_TORCHVISION = torchvision_layout
    model = build_model(cfg).eval()
    dilations = [block.conv2.dilation for block in model.backbone.res5]
    assert dilations == [(1, 1) if torchvision_layout else (2, 2), (2, 2), (2, 2)]
    DetectionCheckpointer(model).load(dst)

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone(x)["res5"]
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(t))))
    assert ours.shape == expected.shape == (1, 2048, 4, 4)  # stride 16
    assert expected.abs().max() > 0.1
    if torchvision_layout:
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    else:
        assert (ours - expected).abs().max() > 1e-2


def test_dc5_torchvision_layout_needs_a_bottleneck_resnet():
    from detr_d2.modeling.detr import undilate_first_res5_block

    with pytest.raises(ValueError, match="MODEL.DETR.DC5_TORCHVISION"):
        undilate_first_res5_block(torch.nn.Module())


def test_torchvision_resnet101_keys_and_shapes():
    import torchvision

    with torch.device("meta"):  # names and shapes only: no memory, no init time
        tv = torchvision.models.resnet101()
    converted, dropped = convert_torchvision_resnet(tv.state_dict())
    backbone_tool.check_backbone_keys(converted, 101)  # raises on any difference
    assert "fc.weight" in dropped and "fc.bias" in dropped
    assert all(
        k == "fc.weight" or k == "fc.bias" or k.endswith("num_batches_tracked") for k in dropped
    )
    assert converted["backbone.res4.22.conv2.weight"].shape == tv.layer3[22].conv2.weight.shape
    assert converted["backbone.res5.0.shortcut.norm.running_var"].shape == (2048,)


def test_torchvision_unknown_key_fails():
    with torch.device("meta"):
        import torchvision

        sd = torchvision.models.resnet50().state_dict()
    sd["layer5.0.conv1.weight"] = torch.zeros(1, device="meta")
    with pytest.raises(KeyError, match=r"layer5\.0\.conv1\.weight"):
        convert_torchvision_resnet(sd)


# ---------------------------------------------------------------- official DETR


def _to_torchvision(name):
    """Detectron2 ResNet name -> torchvision name (the test's own inverse of the mapping)."""
    if name == "stem.conv1.weight":
        return "conv1.weight"
    if name.startswith("stem.conv1.norm."):
        return "bn1." + name[len("stem.conv1.norm.") :]
    stage, block, conv, rest = re.match(r"res(\d)\.(\d+)\.(\w+?)\.(.+)", name).groups()
    layer = f"layer{int(stage) - 1}.{block}"
    norm = rest.startswith("norm.")
    param = rest[len("norm.") :] if norm else rest
    if conv == "shortcut":
        return f"{layer}.downsample.{1 if norm else 0}.{param}"
    return f"{layer}.bn{conv[-1]}.{param}" if norm else f"{layer}.{conv}.{param}"


def _to_official(ours, panoptic=False, seed=0):
    """Our state dict -> official DETR naming, with the class head re-indexed by COCO ids and
    random rows for the ids our model does not have."""
    official = {}
    for k, v in ours.items():
        if k.startswith("backbone."):
            k = "backbone.0.body." + _to_torchvision(k[len("backbone.") :])
        elif k.startswith("position_embedding."):
            k = "backbone.1." + k[len("position_embedding.") :]
        if panoptic and not k.startswith(("bbox_attention.", "mask_head.")):
            k = "detr." + k
        official[k] = v
    prefix = "detr." if panoptic else ""
    meta = _get_builtin_metadata("coco_panoptic_standard" if panoptic else "coco")
    id_to_row = {
        **meta["thing_dataset_id_to_contiguous_id"],
        **meta.get("stuff_dataset_id_to_contiguous_id", {}),
    }
    num_rows, no_object = (251, 250) if panoptic else (92, 91)
    g = torch.Generator().manual_seed(seed)
    for param in ("weight", "bias"):
        ours_rows = ours[f"class_embed.{param}"]
        full = torch.randn((num_rows,) + ours_rows.shape[1:], generator=g).to(ours_rows.device)
        for coco_id, row in id_to_row.items():
            full[coco_id] = ours_rows[row]
        full[no_object] = ours_rows[-1]
        official[f"{prefix}class_embed.{param}"] = full
    return official


def _official_args(**kw):
    args = dict(
        lr=1e-4,
        lr_backbone=1e-5,
        batch_size=2,
        backbone="resnet50",
        dilation=False,
        position_embedding="sine",
        enc_layers=1,
        dec_layers=1,
        dim_feedforward=64,
        hidden_dim=32,
        dropout=0.1,
        nheads=2,
        num_queries=5,
        pre_norm=False,
        masks=False,
        aux_loss=True,
        frozen_weights=None,
        dataset_file="coco",
        coco_path="/coco",
        output_dir="",
        device="cuda",
        seed=42,
        distributed=True,
        gpu=0,
    )
    args.update(kw)
    return argparse.Namespace(**args)


def _save_official(path, model_state, args=None, **extra):
    # the 2020 model-zoo files predate torch's zip format
    torch.save(
        {"model": model_state, "args": args or _official_args(), **extra},
        path,
        _use_new_zipfile_serialization=False,
    )


@pytest.fixture(scope="module")
def tiny_model():
    """A small random-weight Detr (eval mode) with non-trivial FrozenBN statistics."""
    cfg = _setup_cfg(CONFIG, TINY_OPTS)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    state = {}
    for k, v in model.state_dict().items():
        if k in ("pixel_mean", "pixel_std"):
            continue
        r = torch.rand(v.shape, generator=g)
        state[k] = r + 0.5 if k.endswith("running_var") else (r - 0.5) * 0.4
    model.load_state_dict(state, strict=False)
    return model


@pytest.fixture(scope="module")
def tiny_state(tiny_model):
    return {
        k: v.clone()
        for k, v in tiny_model.state_dict().items()
        if k not in ("pixel_mean", "pixel_std")
    }


def _assert_same_state(got, expected):
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def test_class_row_mapping_follows_coco_ids():
    det = coco_detection_class_rows()
    names = _get_builtin_metadata("coco")["thing_classes"]
    assert len(det) == 81 and len(set(det)) == 81
    assert (det[0], names[0]) == (1, "person")  # COCO id 1 -> contiguous 0
    assert (det[79], names[79]) == (90, "toothbrush")  # COCO id 90 -> contiguous 79
    assert det[80] == 91  # no-object: official row 91 -> our last row
    assert not {0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & set(det)  # ids COCO never uses

    pan = coco_panoptic_class_rows()
    stuff = _get_builtin_metadata("coco_panoptic_standard")["stuff_classes"]
    assert len(pan) == 134 and pan[:80] == det[:80]  # things first, in the detection order
    assert (pan[80], stuff[80]) == (92, "banner")  # then stuff by id
    assert (pan[132], stuff[132]) == (200, "rug-merged")
    assert pan[133] == 250  # no-object


def test_detr_round_trip_through_tool(tmp_path, tiny_state):
    src, dst = str(tmp_path / "detr-official.pth"), str(tmp_path / "detr_d2.pth")
    official = _to_official(tiny_state)
    official["backbone.0.body.bn1.num_batches_tracked"] = torch.tensor(0)  # dropped, reported
    _save_official(src, official, optimizer={"state": {}}, epoch=499)
    _, args, others = load_official_checkpoint(src)
    assert args.backbone == "resnet50" and others == ["epoch", "optimizer"]

    assert (
        detr_tool.main(["--input", src, "--output", dst, "--config-file", CONFIG] + TINY_OPTS) == 0
    )
    saved = torch.load(dst, weights_only=True)
    assert saved["__author__"] == detr_tool.AUTHOR and saved["matching_heuristics"] is False
    _assert_same_state(saved["model"], tiny_state)

    # the class rows land where the COCO id says
    w = official["class_embed.weight"]
    assert torch.equal(saved["model"]["class_embed.weight"][0], w[1])  # person
    assert torch.equal(saved["model"]["class_embed.weight"][79], w[90])  # toothbrush
    assert torch.equal(saved["model"]["class_embed.weight"][80], w[91])  # no object
    assert torch.equal(saved["model"]["class_embed.bias"][11], official["class_embed.bias"][13])


@pytest.mark.parametrize(
    "config, backbone",
    [
        ("detr_r50", "resnet50"),
        ("detr_r50_dc5", "resnet50"),
        ("detr_r101", "resnet101"),
        ("detr_r101_dc5", "resnet101"),
    ],
)
def test_detr_full_size_configs_accept_official_layout(config, backbone):
    """Keys and shapes of a full-size official checkpoint fit our shipped configs (meta tensors:
    no memory, no compute)."""
    cfg = _setup_cfg(
        os.path.join(ROOT, "configs", f"{config}.yaml"), ["MODEL.DEVICE", "meta"]
    )
    with torch.device("meta"):
        model = build_model(cfg)
    ours = {k: v for k, v in model.state_dict().items() if "pixel_" not in k}
    official = _to_official(ours)
    assert official["class_embed.weight"].shape == (92, 256)
    args = _official_args(
        backbone=backbone,
        enc_layers=6,
        dec_layers=6,
        hidden_dim=256,
        dilation=config.endswith("dc5"),
        num_queries=100,
    )
    result = convert_official_detr(official, args)
    check_against_model(result.model, model.state_dict())


def test_detr_missing_key_fails_naming_it(tmp_path, tiny_state, caplog):
    official = _to_official(tiny_state)
    del official["transformer.decoder.layers.0.norm3.bias"]
    del official["backbone.0.body.layer2.1.bn2.running_var"]
    with pytest.raises(CheckpointConversionError) as e:
        convert_official_detr(official, _official_args())
    assert "transformer.decoder.layers.0.norm3.bias" in str(e.value)
    assert "backbone.res3.1.conv2.norm.running_var" in str(e.value)

    src = str(tmp_path / "missing.pth")
    _save_official(src, official)
    with caplog.at_level(logging.ERROR):
        assert detr_tool.main(["--input", src, "--output", str(tmp_path / "out.pth")]) == 1
    assert "transformer.decoder.layers.0.norm3.bias" in caplog.text
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize(
    "extra",
    [
        "backbone.2.weight",
        "transformer.encoder.layers.1.norm1.bias",
        "detr.query_embed.weight",
        "aux_head.weight",
    ],
)
def test_detr_extra_key_fails_naming_it(tiny_state, extra):
    official = _to_official(tiny_state)
    official[extra] = torch.zeros(3)
    with pytest.raises(CheckpointConversionError, match=re.escape(extra)):
        convert_official_detr(official, _official_args())


def test_detr_missing_layer_noticed_from_args(tiny_state):
    official = _to_official(tiny_state)
    with pytest.raises(CheckpointConversionError, match=r"transformer\.encoder\.layers\.1\."):
        convert_official_detr(official, _official_args(enc_layers=2))


def test_detr_config_mismatch_fails(tmp_path, tiny_state, caplog):
    src = str(tmp_path / "detr-official.pth")
    _save_official(src, _to_official(tiny_state))
    argv = ["--input", src, "--output", str(tmp_path / "out.pth"), "--config-file", CONFIG]
    with caplog.at_level(logging.ERROR):
        assert detr_tool.main(argv + TINY_OPTS + ["MODEL.DETR.DEC_LAYERS", "2"]) == 1
    assert "transformer.decoder.layers.1.self_attn.in_proj_weight" in caplog.text
    with caplog.at_level(logging.ERROR):
        assert detr_tool.main(argv + TINY_OPTS + ["MODEL.DETR.HIDDEN_DIM", "64"]) == 1
    assert (
        "shape mismatches" in caplog.text
        and "query_embed.weight (5, 32) vs model (5, 64)" in caplog.text
    )


def test_detr_panoptic_round_trip(tmp_path):
    """Box model under ``detr.``, 251-row head -> top level, 134 rows; mask head unchanged."""
    cfg = _setup_cfg(CONFIG, TINY_OPTS + ["MODEL.DETR.NUM_CLASSES", "133"])
    box_model = build_model(cfg)
    ours = {
        k: torch.randn(v.shape)
        for k, v in box_model.state_dict().items()
        if k not in ("pixel_mean", "pixel_std")
    }
    d, heads, fpn = 32, 2, (32, 16, 8)  # the official mask head's layers, at tiny widths
    mask = {
        "bbox_attention.q_linear": (d, d),
        "bbox_attention.k_linear": (d, d),
        "mask_head.lay1": (d + heads, d + heads, 3, 3),
        "mask_head.gn1": (d + heads,),
        "mask_head.lay2": (16, d + heads, 3, 3),
        "mask_head.gn2": (16,),
        "mask_head.lay3": (8, 16, 3, 3),
        "mask_head.gn3": (8,),
        "mask_head.lay4": (4, 8, 3, 3),
        "mask_head.gn4": (4,),
        "mask_head.lay5": (2, 4, 3, 3),
        "mask_head.gn5": (2,),
        "mask_head.out_lay": (1, 2, 3, 3),
        "mask_head.adapter1": (16, fpn[0], 1, 1),
        "mask_head.adapter2": (8, fpn[1], 1, 1),
        "mask_head.adapter3": (4, fpn[2], 1, 1),
    }
    for name, shape in mask.items():
        ours[name + ".weight"] = torch.randn(shape)
        ours[name + ".bias"] = torch.randn(shape[0])
    official = _to_official(ours, panoptic=True)
    assert "detr.backbone.0.body.layer4.2.bn3.weight" in official
    assert official["detr.class_embed.weight"].shape == (251, 32)

    src, dst = str(tmp_path / "detr-panoptic.pth"), str(tmp_path / "panoptic.pth")
    _save_official(src, official, args=_official_args(masks=True, dataset_file="coco_panoptic"))
    assert detr_tool.main(["--input", src, "--output", dst, "--panoptic"]) == 0
    converted = torch.load(dst, weights_only=True)["model"]
    _assert_same_state(converted, ours)
    check_against_model(converted, {**box_model.state_dict(), **{k: ours[k] for k in ours}})
    assert torch.equal(converted["class_embed.weight"][80], official["detr.class_embed.weight"][92])
    assert torch.equal(converted["class_embed.bias"][133], official["detr.class_embed.bias"][250])

    official["query_embed.weight"] = official.pop("detr.query_embed.weight")
    with pytest.raises(CheckpointConversionError, match=r"without 'detr\.'.*: query_embed\.weight"):
        convert_official_detr(official)


def test_detr_learned_position_and_pre_norm():
    """Variants the model zoo does not use: backbone.1.{row,col}_embed and the encoder's norm."""
    opts = ["MODEL.DETR.POSITION_EMBEDDING", "learned", "MODEL.DETR.PRE_NORM", "True"]
    model = build_model(_setup_cfg(CONFIG, TINY_OPTS + opts))
    ours = {k: torch.randn(v.shape) for k, v in model.state_dict().items() if "pixel_" not in k}
    official = _to_official(ours)
    assert "backbone.1.row_embed.weight" in official
    assert "transformer.encoder.norm.weight" in official
    result = convert_official_detr(
        official, _official_args(position_embedding="learned", pre_norm=True)
    )
    check_against_model(result.model, model.state_dict())
    _assert_same_state(result.model, ours)
    # without args the keys alone tell the architecture
    _assert_same_state(convert_official_detr(official).model, ours)


def test_detr_panoptic_layout_fits_panoptic_model():
    """A full-size official panoptic layout fits our panoptic meta-architecture (meta tensors)."""
    from detectron2.config import get_cfg

    from detr_d2 import add_detr_config, merge_config_file

    cfg = get_cfg()
    add_detr_config(cfg)  # includes the panoptic keys; DetrPanoptic registers on import
    merge_config_file(cfg, CONFIG)
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "DetrPanoptic", "MODEL.DEVICE", "meta"])
    cfg.merge_from_list(["MODEL.DETR.NUM_CLASSES", "133", "MODEL.WEIGHTS", ""])
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    with torch.device("meta"):
        model = build_model(cfg)
    ours = {k: v for k, v in model.state_dict().items()}
    official = _to_official(ours, panoptic=True)
    assert official["detr.class_embed.weight"].shape == (251, 256)
    assert official["mask_head.lay1.weight"].shape == (264, 264, 3, 3)  # d + heads channels
    result = convert_official_detr(official, _official_args(masks=True, enc_layers=6, dec_layers=6))
    check_against_model(result.model, model.state_dict())


def test_detr_panoptic_flag_rejects_detection_checkpoint(tmp_path, tiny_state, caplog):
    src = str(tmp_path / "detr-official.pth")
    _save_official(src, _to_official(tiny_state))
    with caplog.at_level(logging.ERROR):
        assert (
            detr_tool.main(["--input", src, "--output", str(tmp_path / "o.pth"), "--panoptic"]) == 1
        )
    assert "no mask head" in caplog.text


def test_detr_verify_outputs(tmp_path, tiny_model, tiny_state, caplog):
    """The self-check reproduces 'official' outputs made by the same weights."""
    image = np.random.RandomState(0).randint(0, 256, (48, 64, 3), dtype=np.uint8)
    image_path = str(tmp_path / "img.png")
    Image.fromarray(image).save(image_path)
    with torch.no_grad():
        images = tiny_model.preprocess_image([{"image": torch.as_tensor(image).permute(2, 0, 1)}])
        out = tiny_model.forward_raw(images)
    rows = coco_detection_class_rows()
    logits = torch.randn(1, 5, 92)  # unused COCO ids get arbitrary logits
    logits[..., rows] = out["pred_logits"]
    reference = {"pred_logits": logits, "pred_boxes": out["pred_boxes"].clone()}
    ref_path, src = str(tmp_path / "ref.pt"), str(tmp_path / "detr-official.pth")
    torch.save(reference, ref_path)
    _save_official(src, _to_official(tiny_state))
    dst = str(tmp_path / "converted.pth")

    argv = [
        "--input",
        src,
        "--output",
        dst,
        "--config-file",
        CONFIG,
        "--verify-image",
        image_path,
        "--verify-outputs",
        ref_path,
        "--verify-tolerance",
        "1e-5",
    ] + TINY_OPTS
    with caplog.at_level(logging.INFO):
        assert detr_tool.main(argv) == 0
    assert "self-check: max |ours - official| of pred_logits" in caplog.text

    cfg = detr_tool.cli.setup_cfg(detr_tool.get_parser().parse_args(argv))
    fresh = build_model(cfg)
    diffs = detr_tool.verify(fresh, dst, image_path, ref_path, rows, "RGB")
    assert diffs["pred_logits"] < 1e-5 and diffs["pred_boxes"] < 1e-5

    reference["pred_logits"][..., 1] += 0.5  # "person" off by 0.5: reported, and fails the check
    torch.save(reference, ref_path)
    diffs = detr_tool.verify(fresh, dst, image_path, ref_path, rows, "RGB")
    assert diffs["pred_logits"] == pytest.approx(0.5, abs=1e-4)
    assert detr_tool.main(argv) == 1
