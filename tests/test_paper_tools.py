"""demo.py and the paper tools (decoder-layer study, attention maps, query slots) on the tiny
random DETR, a few tiny images and a 3-image generated shapes dataset."""

import importlib.util
import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from detr_d2.data.builtin import register_shapes
from detr_d2.modeling.panoptic import resize_mask_logits

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATASET = "paper_tools_shapes"


def _tool(path):
    """Import a script (demo.py, tools/<name>.py) as a module; they are not a package."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"paper_tool_{name}", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path, argv):
    tool = _tool(path)
    return tool.main(tool.get_parser().parse_args(argv))


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    """3 generated 128 px shapes images, registered as a COCO instances dataset."""
    if DATASET not in DatasetCatalog.list():
        root = str(tmp_path_factory.mktemp("datasets"))
        register_shapes(DATASET, root, "paper_tools", num_images=3, seed=7)
    return DATASET


@pytest.fixture
def tiny_yaml(tiny_detr_cfg, shapes_dataset, tmp_path):
    cfg = tiny_detr_cfg.clone()
    cfg.DATASETS.TEST = (shapes_dataset,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.OUTPUT_DIR = str(tmp_path / "output")
    path = tmp_path / "tiny_detr.yaml"
    path.write_text(cfg.dump())
    return str(path)


def _write_images(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = os.path.join(folder, f"img{i}.png")
        cv2.imwrite(path, np.random.RandomState(i).randint(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _nonempty_png(path):
    image = cv2.imread(str(path))
    return image is not None and image.size > 0 and image.std() > 0


# --- demo.py -------------------------------------------------------------------------------


def test_demo_draws_each_image(tiny_yaml, tmp_path):
    paths = _write_images(tmp_path / "images", [(40, 60), (50, 30)])
    out = tmp_path / "drawn"
    # config overrides right after the --input list are taken as overrides, not as images
    written = _run(
        "demo.py",
        [
            "--config-file",
            tiny_yaml,
            "--input",
            *paths,
            "MODEL.DETR.TEST_TOPK",
            "5",
            "--output-dir",
            str(out),
            "--confidence-threshold",
            "0",
            "--random-weights",
        ],
    )
    assert written == [str(out / "img0.png"), str(out / "img1.png")]
    # small images are drawn upscaled (long side 512 px), so that the labels are readable
    for path, (h, w) in zip(written, [(341, 512), (512, 307)]):
        assert cv2.imread(path).shape == (h, w, 3)

    # a folder in, a single image file out, at the image's own scale
    single = tmp_path / "single" / "one.jpg"
    _write_images(tmp_path / "one", [(36, 48)])
    argv = ["--config-file", tiny_yaml, "--input", str(tmp_path / "one"), "--output", str(single)]
    written = _run("demo.py", argv + ["--scale", "1", "--random-weights"])
    assert written == [str(single)] and cv2.imread(str(single)).shape == (36, 48, 3)

    # without MODEL.WEIGHTS (and without --random-weights): an error naming the key
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        _run("demo.py", argv)


def test_demo_video(tiny_yaml, tmp_path):
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48), True)
    assert writer.isOpened(), "opencv cannot write mp4 here"
    for i in range(3):
        writer.write(np.random.RandomState(i).randint(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    written = _run(
        "demo.py",
        [
            "--config-file",
            tiny_yaml,
            "--video-input",
            video,
            "--output-dir",
            str(tmp_path / "out"),
            "--confidence-threshold",
            "0",
            "--random-weights",
        ],
    )
    assert written == [str(tmp_path / "out" / "clip.mp4")]
    reader = cv2.VideoCapture(written[0])
    frames = []
    while True:
        ok, frame = reader.read()
        if not ok:
            break
        frames.append(frame)
    reader.release()
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


def test_demo_draws_panoptic_segments():
    demo = _tool("demo.py")
    segments = torch.zeros(20, 30, dtype=torch.int32)
    segments[2:10, 3:12] = 1
    segments[12:, :] = 2
    info = [
        {"id": 1, "category_id": 0, "isthing": True, "score": 0.9},
        {"id": 2, "category_id": 1, "isthing": False},
    ]
    metadata = MetadataCatalog.get("paper_tools_panoptic_meta")
    metadata.set(thing_classes=["circle", "sky"], stuff_classes=["circle", "sky"])
    image = np.full((20, 30, 3), 128, np.uint8)
    drawn = demo.draw({"panoptic_seg": (segments, info)}, image, metadata, 0.5)
    assert drawn.shape == (20, 30, 3) and not np.array_equal(drawn, image)


def test_panoptic_demo_honours_the_threshold_and_hints_at_it(tiny_detr_cfg, tmp_path):
    """A DetrPanoptic model: --confidence-threshold is the queries' threshold, and "0 segments"
    comes with a hint naming it (issue 15, item 8)."""
    import detr_d2.modeling.panoptic  # noqa: F401  registers DetrPanoptic

    cfg = tiny_detr_cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "DetrPanoptic"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.DETR.BACKBONE_FEATURE = "res4"
    cfg.MODEL.DETR.MASK_HEAD_GROUPS = 2
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    (yaml := tmp_path / "panoptic.yaml").write_text(cfg.dump())
    (image,) = _write_images(tmp_path / "images", [(48, 64)])
    messages, logger = [], logging.getLogger("detr_d2.demo")
    handler, level = logging.Handler(), logger.level
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        argv = ["--config-file", str(yaml), "--input", image, "--random-weights"]
        argv += ["--output-dir", str(tmp_path / "out")]
        _run("demo.py", argv)  # random weights: no query reaches the config's 0.85
        torch.manual_seed(0)  # the same random model on every run
        _run("demo.py", argv + ["--confidence-threshold", "0"])  # every query kept
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    default, lowered = [m for m in messages if "segments" in m]
    assert "0 segments (no query scored above 0.85: try a lower --confidence-threshold)" in default
    assert " 0 segments" not in lowered and "segments in" in lowered


# --- decoder-layer study -----------------------------------------------------------------------


def test_nms_is_per_class():
    inst = Instances((50, 50))
    inst.pred_boxes = Boxes(torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [0, 0, 10, 10.0]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.7])
    inst.pred_classes = torch.tensor([0, 0, 1])
    kept = _tool("tools/decoder_layer_study.py").apply_nms(inst)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7])


def test_decoder_layer_study(tiny_yaml, tmp_path):
    out = tmp_path / "study"
    results = _run(
        "tools/decoder_layer_study.py",
        ["--config-file", tiny_yaml, "--random-weights", "--output-dir", str(out)],
    )
    assert results["layers"] == [1, 2] and results["num_images"] == 3  # DEC_LAYERS = 2
    for setting in ("without_nms", "with_nms"):
        for metric in ("AP", "AP50"):
            values = results[setting][metric]
            assert len(values) == 2 and all(0 <= v <= 100 for v in values)
    recorded = json.loads((out / "decoder_layers.json").read_text())
    assert recorded["with_nms"]["AP"] == results["with_nms"]["AP"]
    assert _nonempty_png(out / "decoder_layers.png")


def _write_coco(root, num_images=2):
    """A COCO instances json with classes "cat", "dog" over tiny random images."""
    _write_images(os.path.join(root, "images"), [(48, 64)] * num_images)
    coco = {
        "images": [
            {"id": i + 1, "file_name": f"img{i}.png", "height": 48, "width": 64}
            for i in range(num_images)
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1 + i % 2,
                "bbox": [8, 6, 20, 16],
                "area": 320,
                "iscrowd": 0,
            }
            for i in range(num_images)
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path, os.path.join(root, "images")


def test_decoder_layer_study_on_registered_coco_json(tiny_yaml, tmp_path):
    json_file, image_root = _write_coco(str(tmp_path / "mine"))
    results = _run(
        "tools/decoder_layer_study.py",
        [
            "--config-file",
            tiny_yaml,
            "--random-weights",
            "--register-coco",
            "paper_tools_coco",
            json_file,
            image_root,
            "--dataset",
            "paper_tools_coco",
            "--output-dir",
            str(tmp_path / "study"),
            "MODEL.DETR.NUM_CLASSES",
            "2",
        ],
    )
    assert results["dataset"] == "paper_tools_coco" and results["num_images"] == 2
    assert len(results["with_nms"]["AP"]) == 2
    assert MetadataCatalog.get("paper_tools_coco").thing_classes == ["cat", "dog"]


# --- attention ----------------------------------------------------------------------------------


def test_attention_maps_shapes_and_normalization(tiny_detr_cfg):
    tool = _tool("tools/visualize_attention.py")
    model = build_model(tiny_detr_cfg).eval()
    images = model.preprocess_image(
        [
            {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)}
            for h, w in [(64, 96), (40, 64)]
        ]
    )
    with torch.no_grad():
        plain = model.forward_raw(images)
    out = tool.detr_attention(model, images)
    attn = model.transformer.decoder.layers[-1].multihead_attn
    assert not attn._forward_hooks and not attn._forward_pre_hooks  # hooks removed
    torch.testing.assert_close(out["pred_boxes"], plain["pred_boxes"])  # outputs unchanged

    h, w = out["memory"].shape[-2:]
    assert (h, w) == (4, 6)  # stride 16 on the padded 64x96 batch
    enc, dec, mask = out["encoder_attention"], out["decoder_attention"], out["mask"]
    assert enc.shape == (2, h * w, h, w) and dec.shape == (2, 7, h, w)
    assert mask[1].any() and not mask[0].any()  # the second image is padded
    for maps in (enc, dec):
        valid = (maps * ~mask[:, None]).sum((-2, -1))
        torch.testing.assert_close(valid, torch.ones_like(valid))
        assert (maps * mask[:, None]).abs().max() == 0  # nothing on padding

    # over the original image: (H, W), the padding cut off
    heat = resize_mask_logits(dec[1, :1], (64, 96), images.image_sizes[1], (80, 128))
    assert heat.shape == (1, 80, 128) and heat.min() >= 0


def test_image_points_to_feature_indices():
    # original 100x200 resized to 50x100, padded to 64x128, a 4x8 feature map (stride 16)
    idx = _tool("tools/visualize_attention.py").image_points_to_feature_indices(
        [(0, 0), (199, 99), (70, 40)], (100, 200), (50, 100), (64, 128), (4, 8)
    )
    # (199, 99) -> input (99.5, 49.5) -> cell (col 6, row 3); (70, 40) -> (35, 20) -> (2, 1)
    assert idx.tolist() == [0, 3 * 8 + 6, 1 * 8 + 2]


def test_visualize_attention_tool(tiny_yaml, tmp_path):
    (image,) = _write_images(tmp_path / "images", [(48, 80)])
    out = tmp_path / "attention"
    result = _run(
        "tools/visualize_attention.py",
        [
            "--config-file",
            tiny_yaml,
            "--input",
            image,
            "--points",
            "10,10",
            "70,40",
            "--random-weights",
            "--threshold",
            "0",
            "--topk",
            "3",
            "--output-dir",
            str(out),
        ],
    )
    assert result["points"] == [(10.0, 10.0), (70.0, 40.0)]
    assert result["encoder"].shape == (2, 48, 80)
    assert result["decoder"].shape == (3, 48, 80) and len(result["queries"]) == 3
    assert _nonempty_png(result["encoder_png"]) and _nonempty_png(result["decoder_png"])

    # default points: the detections' centres; no detection above 0.99 -> the best one only
    result = _run(
        "tools/visualize_attention.py",
        [
            "--config-file",
            tiny_yaml,
            "--input",
            image,
            "--output-dir",
            str(out),
            "--threshold",
            "0.99",
            "--random-weights",
        ],
    )
    assert len(result["queries"]) == 1 and len(result["points"]) == 1
    (x0, y0, x1, y1), (x, y) = result["boxes"][0], result["points"][0]
    assert (x, y) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2), abs=1e-3)

    # a point outside the 80x48 image: an error naming the point and the size
    argv = ["--config-file", tiny_yaml, "--input", image, "--points", "10,10", "80,20"]
    with pytest.raises(ValueError, match=r"--points 80,20 outside the image .* of 80x48 pixels"):
        _run("tools/visualize_attention.py", argv + ["--random-weights"])


# --- query slots -------------------------------------------------------------------------------


def test_box_colors():
    tool = _tool("tools/query_slots.py")
    COLORS, box_colors = tool.COLORS, tool.box_colors
    boxes = torch.tensor([[0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.9, 0.4], [0.5, 0.5, 0.3, 0.8]])
    assert [tuple(c) for c in box_colors(boxes)] == [
        COLORS["small"],
        COLORS["horizontal"],
        COLORS["vertical"],
    ]


def test_query_slots_tool(tiny_yaml, tmp_path):
    output = tmp_path / "slots" / "slots.png"
    result = _run(
        "tools/query_slots.py",
        [
            "--config-file",
            tiny_yaml,
            "--slots",
            "0",
            "3",
            "6",
            "MODEL.WEIGHTS",
            "",
            "--random-weights",
            "--num-images",
            "2",
            "--output",
            str(output),
        ],
    )
    assert result["slots"] == [0, 3, 6] and result["num_images"] == 2
    assert len(result["figure"].axes) == 3
    assert [ax.get_title() for ax in result["figure"].axes] == ["slot 0", "slot 3", "slot 6"]
    assert _nonempty_png(output)
