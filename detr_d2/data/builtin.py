"""Registers the generated "shapes" datasets on import (generated on first load, a few seconds):
shapes_* (COCO instances, 6 things) and shapes_panoptic_* (COCO panoptic "standard" format like
detectron2's ``coco_2017_*_panoptic``, 6 things + 3 stuff)."""

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .shapes import STUFF_CATEGORIES, THING_CATEGORIES, generate_shapes, shapes_paths

# dataset name -> (split directory, number of images, seed)
SHAPES_SPLITS = {
    "shapes_train": ("train", 2000, 0),
    "shapes_val": ("val", 200, 1),
    "shapes_tiny_train": ("tiny_train", 64, 2),
    "shapes_tiny_val": ("tiny_val", 32, 3),
}
# the same splits, panoptic, seeded 10 higher: shapes_panoptic_train, ...
SHAPES_PANOPTIC_SPLITS = {
    name.replace("shapes_", "shapes_panoptic_"): (split, n, seed + 10)
    for name, (split, n, seed) in SHAPES_SPLITS.items()
}


def _metadata(categories):
    """Detectron2's metadata of ``categories``; with stuff its "standard" panoptic metadata:
    contiguous ids over things (0..5) and stuff (6..8) together, thing_/stuff_classes both list
    all of them."""
    names, colors = [c["name"] for c in categories], [c["color"] for c in categories]
    things = {c["id"]: i for i, c in enumerate(categories) if c["isthing"]}
    meta = dict(thing_classes=names, thing_colors=colors, thing_dataset_id_to_contiguous_id=things)
    stuff = {c["id"]: i for i, c in enumerate(categories) if not c["isthing"]}
    if stuff:
        meta.update(stuff_classes=names, stuff_colors=colors)
        meta["stuff_dataset_id_to_contiguous_id"] = stuff
    return meta


def load_shapes_panoptic_json(json_file, image_root, panoptic_root, meta):
    """Detectron2's ``load_coco_panoptic_json``, but the image file names (PNG) come from the json
    instead of assuming ".jpg"; segments_info category ids are contiguous."""
    with open(json_file) as f:
        data = json.load(f)
    images = {im["id"]: im for im in data["images"]}
    things = meta["thing_dataset_id_to_contiguous_id"]
    contiguous = {**things, **meta["stuff_dataset_id_to_contiguous_id"]}
    dicts = []
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        segments = [
            dict(s, category_id=contiguous[s["category_id"]], isthing=s["category_id"] in things)
            for s in ann["segments_info"]
        ]
        dicts.append(
            {"file_name": os.path.join(image_root, image["file_name"]), "image_id": image["id"],
             "height": image["height"], "width": image["width"],
             "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
             "segments_info": segments}
        )  # fmt: skip
    return dicts


def register_shapes(name, root, split, num_images, seed, panoptic=False):
    """Register shapes split ``split`` under ``root`` as dataset ``name``: COCO instances, or with
    ``panoptic`` COCO panoptic (its things as COCO instances in ``json_file``)."""
    paths = shapes_paths(root, split, panoptic)
    meta = _metadata(THING_CATEGORIES + (STUFF_CATEGORIES if panoptic else []))

    def load():
        generate_shapes(root, split, num_images, seed, panoptic)
        if not panoptic:
            return load_coco_json(paths["instances_json"], paths["image_root"], name)
        return load_shapes_panoptic_json(
            paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], meta
        )

    DatasetCatalog.register(name, load)
    kind = {"evaluator_type": "coco"}
    if panoptic:
        kind = dict(evaluator_type="coco_panoptic_seg", ignore_label=255, label_divisor=1000)
        kind.update(panoptic_root=paths["panoptic_root"], panoptic_json=paths["panoptic_json"])
    MetadataCatalog.get(name).set(
        json_file=paths["instances_json"], image_root=paths["image_root"], **kind, **meta
    )


def register_all_shapes(root):
    """Register every dataset of SHAPES_SPLITS and SHAPES_PANOPTIC_SPLITS under ``root``."""
    for name, (split, num_images, seed) in {**SHAPES_SPLITS, **SHAPES_PANOPTIC_SPLITS}.items():
        register_shapes(name, root, split, num_images, seed, panoptic="panoptic" in name)


register_all_shapes(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
