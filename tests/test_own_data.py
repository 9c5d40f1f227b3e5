"""Your own data: --register-coco, NUM_CLASSES from the data, fine-tuning from a checkpoint of
another class count, the json check, the epoch schedule and tools/visualize_data.py, on a 160 px
copy of 16 COCO images (tests/data/tiny_coco, see its SOURCE.txt)."""

import argparse
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from PIL import Image

from detr_d2 import merge_config_file
from detr_d2.config import cap_num_workers
from detr_d2.engine.checkpoint import (
    CheckpointShapeError,
    DetrCheckpointer,
    WeightsMismatchError,
    is_class_head_key,
)
from detr_d2.data.json_check import check_coco_json
from detr_d2.data.register import (
    add_register_coco_argument,
    register_coco_dataset,
    register_coco_from_args,
)
from detr_d2.engine.checks import resolve_num_classes
from detr_d2.solver import apply_epoch_schedule, epochs_to_iters
from log_capture import log_records  # tests/log_capture.py
from tiny import TINY_MODEL_OPTS  # tests/tiny.py

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY_COCO = os.path.join(os.path.dirname(__file__), "data", "tiny_coco")
TINY_JSON = os.path.join(TINY_COCO, "instances.json")
TINY_IMAGES = os.path.join(TINY_COCO, "images")
SUBSET_CATEGORIES = (1, 44, 47)  # person (33 boxes), bottle (20), cup (14)
SMALL_INPUT = {
    "INPUT.MIN_SIZE_TRAIN": (64,),
    "INPUT.MAX_SIZE_TRAIN": 128,
    "INPUT.MIN_SIZE_TEST": 64,
    "INPUT.MAX_SIZE_TEST": 128,
}


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dataset_names():
    """Unique dataset names for one test, unregistered afterwards."""
    names = []

    def new(stem):
        names.append(f"own_data_{stem}_{len(names)}")
        return names[-1]

    yield new
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def tiny_coco():
    with open(TINY_JSON) as f:
        return json.load(f)


def subset_json(tmp_path, category_ids=SUBSET_CATEGORIES, max_images=None, name="subset.json"):
    """tiny_coco restricted to ``category_ids`` and (the first ``max_images`` of) the images
    that show them."""
    data = tiny_coco()
    data["categories"] = [c for c in data["categories"] if c["id"] in category_ids]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in category_ids]
    shown = sorted({a["image_id"] for a in data["annotations"]})[:max_images]
    data["images"] = [im for im in data["images"] if im["id"] in shown]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in shown]
    return write_json(tmp_path / name, data)


def small_cfg(cfg, out_dir, train=(), test=()):
    """The tiny model with tiny inputs, NUM_CLASSES -1 ("from the data")."""
    cfg.MODEL.DETR.NUM_CLASSES = -1
    for key, value in SMALL_INPUT.items():
        cfg.merge_from_list([key, str(value)])
    cfg.INPUT.CROP.ENABLED = False
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.OUTPUT_DIR = str(out_dir)
    return cfg


# ---- --register-coco ----------------------------------------------------------------------------


def test_flag_registers_sets_with_their_class_names(tmp_path, dataset_names):
    train, val = dataset_names("train"), dataset_names("val")
    subset = subset_json(tmp_path)
    parser = add_register_coco_argument(default_argument_parser())
    args = parser.parse_args(
        [
            "--config-file",
            "x.yaml",
            "--register-coco",
            train,
            subset,
            TINY_IMAGES,
            "--register-coco",
            val,
            TINY_JSON,
            TINY_IMAGES,
            "DATASETS.TRAIN",
            f"('{train}',)",
        ]
    )
    assert args.opts == ["DATASETS.TRAIN", f"('{train}',)"]
    assert register_coco_from_args(args) == [train, val]

    meta = MetadataCatalog.get(train)
    assert meta.thing_classes == ["person", "bottle", "cup"]  # sorted by category id
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 44: 1, 47: 2}
    assert meta.evaluator_type == "coco"
    assert len(MetadataCatalog.get(val).thing_classes) == 80  # every category listed counts
    dicts = DatasetCatalog.get(train)  # load_coco_json sets the same metadata again
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0, 1, 2}
    assert os.path.isfile(dicts[0]["file_name"])

    # same name and files: a no-op; other files: an error naming both
    assert register_coco_dataset(train, subset, TINY_IMAGES) is None
    with pytest.raises(ValueError, match="already registered"):
        register_coco_dataset(train, TINY_JSON, TINY_IMAGES)
    with pytest.raises(ValueError, match="before the KEY VALUE"):
        register_coco_from_args(
            parser.parse_args(
                ["DATASETS.TRAIN", "('a',)", "--register-coco", "a", subset, TINY_IMAGES]
            )
        )
    # any argparse parser takes the flag
    plain = add_register_coco_argument(argparse.ArgumentParser())
    assert plain.parse_args([]).register_coco is None


# ---- MODEL.DETR.NUM_CLASSES ---------------------------------------------------------------------


def test_num_classes_minus_one_follows_the_data_any_other_value_is_checked(
    tiny_detr_cfg, tmp_path, dataset_names
):
    train, full = dataset_names("train"), dataset_names("full")
    register_coco_dataset(train, subset_json(tmp_path), TINY_IMAGES)
    register_coco_dataset(full, TINY_JSON, TINY_IMAGES)

    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(train,))
    assert resolve_num_classes(cfg).MODEL.DETR.NUM_CLASSES == 3  # -1: from the data

    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(train,))
    cfg.MODEL.DETR.NUM_CLASSES = 80
    with pytest.raises(ValueError, match=r"NUM_CLASSES is 80 \(on the command line\).* has 3 cl"):
        resolve_num_classes(cfg, ["MODEL.DETR.NUM_CLASSES", "80"])
    with pytest.raises(ValueError, match=r"NUM_CLASSES is 80 \(in the config file\)") as e:
        resolve_num_classes(cfg)  # 80, COCO's count, is a count like any other, not "unset"
    # the message names the values that fix it: a yaml value cannot be "left out"
    assert "NUM_CLASSES 3, or MODEL.DETR.NUM_CLASSES -1 to take the count" in str(e.value)
    assert "leave it out" not in str(e.value)
    cfg.MODEL.DETR.NUM_CLASSES = 3
    assert resolve_num_classes(cfg, ["MODEL.DETR.NUM_CLASSES", "3"]).MODEL.DETR.NUM_CLASSES == 3

    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(full,))
    assert resolve_num_classes(cfg).MODEL.DETR.NUM_CLASSES == 80  # COCO's 80 from its data

    # evaluation only: the training set of the yaml is not registered, the test set decides
    cfg = small_cfg(
        tiny_detr_cfg.clone(), tmp_path, train=("own_data_unregistered",), test=(train,)
    )
    with log_records("detr_d2.engine.checks") as records:
        assert resolve_num_classes(cfg).MODEL.DETR.NUM_CLASSES == 3
    assert "--register-coco own_data_unregistered" in records[0].getMessage()
    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(train,))
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # other models are left alone
    assert resolve_num_classes(cfg).MODEL.DETR.NUM_CLASSES == -1


def test_num_classes_minus_one_without_data_is_an_error_naming_the_key(tiny_detr_cfg, tmp_path):
    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=("own_data_unregistered",))
    with pytest.raises(ValueError, match=r"NUM_CLASSES is -1 \(from the data\) but no dataset"):
        resolve_num_classes(cfg)
    assert resolve_num_classes(cfg, strict=False).MODEL.DETR.NUM_CLASSES == 80  # tools: FLOPs
    cfg.MODEL.DETR.NUM_CLASSES = -1  # never resolved: the model says what is missing
    with pytest.raises(ValueError, match=r"MODEL.DETR.NUM_CLASSES is -1.*resolve_num_classes"):
        build_model(cfg)


def test_finetune_config_takes_the_class_count_of_the_data(tmp_path, dataset_names):
    from detectron2.config import get_cfg

    from detr_d2 import add_detr_config

    cfg = merge_config_file(
        add_detr_config(get_cfg()),
        os.path.join(ROOT, "configs", "finetune", "detr_r50_finetune.yaml"),
    )
    assert cfg.DATASETS.TRAIN == ("my_train",)  # placeholders, for --register-coco sets
    assert cfg.MODEL.DETR.NUM_CLASSES == -1
    with pytest.raises(ValueError, match=r"'my_train'.*register it \(--register-coco\)"):
        resolve_num_classes(cfg)
    train = dataset_names("train")
    register_coco_dataset(train, subset_json(tmp_path), TINY_IMAGES)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (train,)
    assert resolve_num_classes(cfg).MODEL.DETR.NUM_CLASSES == 3
    assert cfg.MODEL.DETR.NUM_OBJECT_QUERIES == 100  # the COCO checkpoint's

    # a short fine-tune on a small set still evaluates and checkpoints before its end
    cfg.SOLVER.IMS_PER_BATCH = 2
    per_epoch = math.ceil(len(DatasetCatalog.get(train)) / 2)
    apply_epoch_schedule(cfg)
    assert cfg.SOLVER.MAX_ITER == 50 * per_epoch
    assert cfg.SOLVER.CHECKPOINT_PERIOD == cfg.TEST.EVAL_PERIOD == 10 * per_epoch


def test_num_workers_are_capped_to_the_cpu_count(tiny_detr_cfg, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = tiny_detr_cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = 4
    with log_records("detr_d2.config") as records:
        assert cap_num_workers(cfg).DATALOADER.NUM_WORKERS == 2
    assert "NUM_WORKERS = 2, the CPU count (was 4)" in records[0].getMessage()
    cfg.DATALOADER.NUM_WORKERS = 1
    assert cap_num_workers(cfg).DATALOADER.NUM_WORKERS == 1


# ---- training and fine-tuning -------------------------------------------------------------------


def test_trainer_trains_two_iterations_on_a_registered_set(tiny_detr_cfg, tmp_path, dataset_names):
    train_net = _load_module("train_net", os.path.join(ROOT, "train_net.py"))
    train = dataset_names("train")
    parser = add_register_coco_argument(default_argument_parser())
    register_coco_from_args(
        parser.parse_args(["--register-coco", train, subset_json(tmp_path), TINY_IMAGES])
    )
    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(train,))
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.STEPS = ()
    resolve_num_classes(cfg)
    cfg.freeze()

    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2  # detectron2 leaves it at MAX_ITER after the last iteration
    assert trainer.model.class_embed.weight.shape == (4, 32)  # 3 classes + no object
    assert os.path.isfile(tmp_path / "model_final.pth")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_from_80_classes_loads_all_but_the_class_head(
    tiny_detr_cfg, tmp_path, dataset_names
):
    cfg80 = tiny_detr_cfg.clone()
    cfg80.MODEL.DETR.NUM_CLASSES = 80
    torch.manual_seed(0)
    coco = build_model(cfg80)
    # the layout of tools/convert_detr_weights.py's output (and of our model_final.pth)
    path = str(tmp_path / "coco80.pth")
    torch.save({"model": coco.state_dict(), "matching_heuristics": False}, path)

    train = dataset_names("train")
    register_coco_dataset(train, subset_json(tmp_path), TINY_IMAGES)
    cfg3 = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(train,))
    resolve_num_classes(cfg3)
    torch.manual_seed(1)
    model = build_model(cfg3)
    built = _state(model)
    with (
        log_records("detr_d2.engine.checkpoint") as records,
        log_records("fvcore.common.checkpoint") as fvcore_records,
    ):
        DetrCheckpointer(model).load(path)

    loaded, source = _state(model), _state(coco)
    head = {"class_embed.weight", "class_embed.bias"}
    assert set(loaded) == set(source)
    for key in set(loaded) - head:
        assert torch.equal(loaded[key], source[key]), key  # bit for bit
    assert loaded["class_embed.weight"].shape == (4, 32)
    assert loaded["class_embed.bias"].shape == (4,)
    for key in head:  # the model's own initialisation, untouched by the checkpoint
        assert torch.equal(loaded[key], built[key]), key
    messages = [r.getMessage() for r in records]
    assert len(messages) == 1
    assert "class_embed.weight (81, 32) -> (4, 32)" in messages[0]
    assert "class_embed.bias (81,) -> (4,)" in messages[0]
    assert not [r for r in fvcore_records if r.levelno >= logging.WARNING]  # nothing else to say


def test_any_other_shape_mismatch_is_an_error(tiny_detr_cfg, tmp_path):
    assert is_class_head_key("class_embed.weight")
    assert is_class_head_key("roi_heads.box_predictor.bbox_pred.bias")  # Faster R-CNN's
    assert not is_class_head_key("bbox_embed.layers.2.weight")
    assert not is_class_head_key("my_class_embed.weight")
    other = tiny_detr_cfg.clone()
    other.MODEL.DETR.NUM_OBJECT_QUERIES = 9
    other.MODEL.DETR.NUM_CLASSES = 80
    path = str(tmp_path / "other.pth")
    torch.save({"model": build_model(other).state_dict()}, path)
    with pytest.raises(CheckpointShapeError, match=r"query_embed.weight \(9, 32\) -> \(7, 32\)"):
        DetrCheckpointer(build_model(tiny_detr_cfg)).load(path)

    same_queries = tiny_detr_cfg.clone()
    same_queries.MODEL.DETR.NUM_CLASSES = 80
    torch.save({"model": build_model(same_queries).state_dict()}, path)
    with pytest.raises(WeightsMismatchError, match=r"class_embed.weight \(81, 32\) -> \(6, 32\)"):
        DetrCheckpointer(build_model(tiny_detr_cfg), strict=True).load(path)


# ---- the json check -----------------------------------------------------------------------------


def test_xyxy_boxes_are_reported_in_one_warning(tmp_path, dataset_names):
    data = tiny_coco()
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"] = [x, y, x + w, y + h]
    xyxy = write_json(tmp_path / "xyxy.json", data)
    with log_records("detr_d2.data.register") as records:
        report = register_coco_dataset(dataset_names("xyxy"), xyxy, TINY_IMAGES)
    assert report.looks_like_xyxy
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "LOOKS LIKE [x1, y1, x2, y2]" in warnings[0]

    with log_records("detr_d2.data.register") as records:
        report = register_coco_dataset(dataset_names("xywh"), TINY_JSON, TINY_IMAGES)
    assert not report.looks_like_xyxy and report.invalid_boxes == 0
    assert "[x, y, width, height], as COCO expects" in records[0].getMessage()


def test_json_check_counts_each_problem(tmp_path):
    data = tiny_coco()
    image = data["images"][0]
    w = image["width"]
    anns = [a for a in data["annotations"] if a["image_id"] != image["id"]][:4]
    base = dict(anns[0], image_id=image["id"], iscrowd=0)
    data["annotations"] = anns + [
        dict(base, id=-1, bbox=[5, 5, 0, 10]),  # zero width
        dict(base, id=-2, bbox=[w - 5, 5, 20, 10]),  # beyond the right edge
        dict(base, id=-3, bbox=[1, 2, 3]),  # malformed
        dict(base, id=-4, bbox=[5, 5, 10, 10], category_id=999),  # unknown category
        dict(base, id=-5, image_id=123456789),  # unknown image
    ]
    data["images"].append(dict(image, id=42, file_name="not_there.jpg"))
    report = check_coco_json(write_json(tmp_path / "bad.json", data), TINY_IMAGES)
    assert (report.non_positive_boxes, report.boxes_outside_image, report.malformed_boxes) == (
        1,
        1,
        1,
    )
    assert report.invalid_boxes == 3
    assert report.unknown_categories == 1
    assert report.unknown_category_examples == [(-4, image["id"], image["file_name"], 999)]
    assert report.unknown_image_ids == 1
    assert report.missing_images == 1 and report.missing_image_examples[0].endswith("not_there.jpg")
    used = {a["category_id"] for a in data["annotations"]} - {999}
    assert len(report.empty_categories) == 80 - len(used)
    # images 2..16 lost their annotations except the 4 kept; image 42 has none
    assert report.images_without_annotations == 17 - 1 - len({a["image_id"] for a in anns})
    assert not report.looks_like_xyxy
    text = report.format()
    assert "category_id 999" in text and "not_there.jpg" in text

    del data["images"][0]["width"]
    with pytest.raises(ValueError, match=f"image {image['id']} has no width"):
        check_coco_json(write_json(tmp_path / "bad.json", data), TINY_IMAGES)


# ---- schedule in epochs -------------------------------------------------------------------------


def test_epochs_become_iterations_from_the_dataset_size(tiny_detr_cfg, tmp_path, dataset_names):
    train = dataset_names("train")
    register_coco_dataset(train, subset_json(tmp_path), TINY_IMAGES)
    cfg = small_cfg(tiny_detr_cfg.clone(), tmp_path, train=(train,))
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 7, (5,)
    assert apply_epoch_schedule(cfg).SOLVER.MAX_ITER == 7  # no SOLVER.EPOCHS key: unchanged
    cfg.SOLVER.EPOCHS, cfg.SOLVER.LR_DROP_EPOCHS = 0, ()  # the proposed keys, default "off"
    assert apply_epoch_schedule(cfg).SOLVER.MAX_ITER == 7

    cfg.SOLVER.EPOCHS, cfg.SOLVER.LR_DROP_EPOCHS = 10, (8,)
    images = len(DatasetCatalog.get(train))
    per_epoch = math.ceil(images / 2)
    apply_epoch_schedule(cfg)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (10 * per_epoch, (8 * per_epoch,))
    assert epochs_to_iters(cfg, 10) == (50, (40,))
    assert epochs_to_iters(cfg, 9) == (50, (40,))  # a partial last batch is an iteration
    cfg.SOLVER.LR_DROP_EPOCHS = (10,)
    with pytest.raises(ValueError, match="LR_DROP_EPOCHS"):
        epochs_to_iters(cfg, 10)

    # the periods in epochs, where set
    cfg.SOLVER.LR_DROP_EPOCHS, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD = (8,), 99, 98
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS, cfg.TEST.EVAL_PERIOD_EPOCHS = 3, 0
    apply_epoch_schedule(cfg)
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 3 * per_epoch and cfg.TEST.EVAL_PERIOD == 98
    cfg.SOLVER.EPOCHS, cfg.SOLVER.MAX_ITER = 0, 7  # iterations drive: the periods stay as given
    cfg.SOLVER.CHECKPOINT_PERIOD = 5
    assert apply_epoch_schedule(cfg).SOLVER.CHECKPOINT_PERIOD == 5


# ---- tools/visualize_data.py --------------------------------------------------------------------


@pytest.mark.parametrize("source", ["annotation", "dataloader"])
def test_visualizer_writes_pngs(source, tmp_path, dataset_names):
    tool = _load_module("visualize_data", os.path.join(ROOT, "tools", "visualize_data.py"))
    train = dataset_names("train")
    opts = [
        "DATASETS.TRAIN",
        f"('{train}',)",
        "DATASETS.TEST",
        "()",
        "INPUT.CROP.ENABLED",
        "False",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.IMS_PER_BATCH",
        "2",
    ]
    for key, value in SMALL_INPUT.items():
        opts += [key, str(value)]
    args = tool.get_parser().parse_args(
        [
            "--config-file",
            os.path.join(ROOT, "configs", "Base-DETR.yaml"),
            "--register-coco",
            train,
            subset_json(tmp_path),
            TINY_IMAGES,
            "--source",
            source,
            "--output-dir",
            str(tmp_path / "vis"),
            "--num-images",
            "3",
            "--scale",
            "1",
        ]
        + opts
    )
    paths = tool.main(args)
    assert len(paths) == 3
    for path in paths:
        assert os.path.getsize(path) > 0
        image = np.asarray(Image.open(path))
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        if source == "dataloader":  # what the model is fed: short side 64
            assert min(image.shape[:2]) == 64
        assert image.std() > 0


# ---- the README command, end to end -------------------------------------------------------------


def test_readme_command_fine_tunes_through_train_net(tiny_detr_cfg, tmp_path):
    """``python train_net.py --config-file configs/finetune/... --register-coco ...`` from an
    80-class checkpoint, with the tiny model and 2 iterations; NUM_CLASSES comes from the data."""
    train_net = _load_module("train_net", os.path.join(ROOT, "train_net.py"))
    parser = getattr(train_net, "argument_parser", default_argument_parser)()
    assert "--register-coco" in parser.format_help()
    cfg80 = tiny_detr_cfg.clone()
    cfg80.MODEL.DETR.NUM_CLASSES = 80
    weights = str(tmp_path / "coco80.pth")
    torch.save({"model": build_model(cfg80).state_dict(), "matching_heuristics": False}, weights)
    subset = subset_json(tmp_path)
    val = subset_json(tmp_path, max_images=2, name="val.json")  # inference is the slow part
    tiny = TINY_MODEL_OPTS + [
        "MODEL.DETR.NUM_OBJECT_QUERIES", "7", "INPUT.CROP.ENABLED", "False",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.EPOCHS", "0", "SOLVER.MAX_ITER", "2",
        "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out"),
    ]  # fmt: skip
    for key, value in SMALL_INPUT.items():
        tiny += [key, str(value)]
    command = [
        sys.executable,
        "train_net.py",
        "--config-file",
        "configs/finetune/detr_r50_finetune.yaml",
        "--register-coco",
        "my_train",
        subset,
        TINY_IMAGES,
        "--register-coco",
        "my_val",
        val,
        TINY_IMAGES,
        "DATASETS.TRAIN",
        "('my_train',)",
        "DATASETS.TEST",
        "('my_val',)",
    ]
    command += tiny + ["MODEL.WEIGHTS", weights]  # after the tiny options, which set it to ""
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    final = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu")["model"]
    assert final["class_embed.weight"].shape == (4, 32)
    log = run.stdout + run.stderr
    assert "Evaluation results for my_val" in log  # evaluated after training ...
    assert "| person " in log and "| cup " in log  # ... with the dataset's class names
    assert "Class head re-initialised" in log or "class_embed.weight (81, 32) -> (4, 32)" in log
