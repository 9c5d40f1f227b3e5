"""DETR can memorize a handful of real COCO images: train AP on them gets high (detection issue)."""

import json
import os

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from detr_d2.data import DetrDatasetMapper
from detr_d2.evaluation import build_coco_evaluator
from detr_d2.solver import build_optimizer

DATA = os.path.join(os.path.dirname(__file__), "data", "tiny_coco")
NUM_IMAGES = 4


def _subset_json(tmp_path):
    """The NUM_IMAGES images with the fewest objects (no crowd), as a COCO json."""
    with open(os.path.join(DATA, "instances.json")) as f:
        coco = json.load(f)
    counts = {im["id"]: 0 for im in coco["images"]}
    for a in coco["annotations"]:
        counts[a["image_id"]] += 1
    crowd = {a["image_id"] for a in coco["annotations"] if a["iscrowd"]}
    keep = sorted((i for i in counts if i not in crowd and counts[i] > 0), key=lambda i: counts[i])
    keep = set(keep[:NUM_IMAGES])
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(coco))
    return str(path)


def test_overfits_a_handful_of_real_coco_images(tiny_detr_cfg, tmp_path):
    name = f"tiny_coco_overfit_{os.getpid()}"
    register_coco_instances(name, {}, _subset_json(tmp_path), os.path.join(DATA, "images"))
    dicts = DatasetCatalog.get(name)
    cfg = tiny_detr_cfg
    cfg.MODEL.DETR.NUM_CLASSES = 80
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 20
    cfg.MODEL.DETR.HIDDEN_DIM = 64
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 128
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.INPUT.MIN_SIZE_TEST = 128
    cfg.INPUT.MAX_SIZE_TEST = 160
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    cfg.DATASETS.TEST = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0  # a handful of images: no worker processes (nor their warning)
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    mapper = DetrDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in dicts]  # no augmentation: the same images every step
    model.train()
    for _ in range(150):
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    evaluator = build_coco_evaluator(cfg, name, str(tmp_path))
    loader = build_detection_test_loader(cfg, name, mapper=DetrDatasetMapper(cfg, is_train=False))
    ap = inference_on_dataset(model, loader, evaluator)["bbox"]["AP50"]
    MetadataCatalog.remove(name)
    DatasetCatalog.remove(name)
    assert ap > 80, f"train AP50 after overfitting {NUM_IMAGES} images: {ap:.1f}"
