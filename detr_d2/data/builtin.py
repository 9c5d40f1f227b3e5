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
SHAPES_PANOPTIC_SPLITS = {
    "shapes_panoptic_train": ("train", 2000, 10),
    "shapes_panoptic_val": ("val", 200, 11),
    "shapes_panoptic_tiny_train": ("tiny_train", 64, 12),
    "shapes_panoptic_tiny_val": ("tiny_val", 32, 13),
}


def _instances_metadata():
    return {
        "thing_classes": [c["name"] for c in THING_CATEGORIES],
        "thing_colors": [c["color"] for c in THING_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(THING_CATEGORIES)},
    }


def _panoptic_metadata():
    """Detectron2's "standard" panoptic metadata: contiguous ids over things (0..5) and stuff
    (6..8) together; thing_/stuff_classes both list all of them."""
    categories = THING_CATEGORIES + STUFF_CATEGORIES
    names = [c["name"] for c in categories]
    colors = [c["color"] for c in categories]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if not c["isthing"]
        },
    }


def register_shapes_instances(name, root, split, num_images, seed):
    """Register shapes split ``split`` under ``root`` as COCO instances dataset ``name``."""
    paths = shapes_paths(root, split)

    def load():
        generate_shapes(root, split, num_images, seed)
        return load_coco_json(paths["instances_json"], paths["image_root"], name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=paths["instances_json"],
        image_root=paths["image_root"],
        evaluator_type="coco",
        **_instances_metadata(),
    )


def load_shapes_panoptic_json(json_file, image_root, panoptic_root, meta):
    """Detectron2's ``load_coco_panoptic_json``, but the image file names (PNG) come from the json
    instead of assuming ".jpg"; segments_info category ids are contiguous."""
    with open(json_file) as f:
        data = json.load(f)
    images = {im["id"]: im for im in data["images"]}
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = meta["stuff_dataset_id_to_contiguous_id"]
    dicts = []
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        segments = []
        for seg in ann["segments_info"]:
            isthing = seg["category_id"] in things
            cat = (things if isthing else stuff)[seg["category_id"]]
            segments.append(dict(seg, category_id=cat, isthing=isthing))
        dicts.append(
            {"file_name": os.path.join(image_root, image["file_name"]), "image_id": image["id"],
             "height": image["height"], "width": image["width"],
             "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
             "segments_info": segments}
        )  # fmt: skip
    return dicts


def register_shapes_panoptic(name, root, split, num_images, seed):
    """Register panoptic shapes split ``split`` under ``root`` as dataset ``name``."""
    paths = shapes_paths(root, split, panoptic=True)
    meta = _panoptic_metadata()

    def load():
        generate_shapes(root, split, num_images, seed, panoptic=True)
        return load_shapes_panoptic_json(
            paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], meta
        )

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        panoptic_root=paths["panoptic_root"],
        image_root=paths["image_root"],
        panoptic_json=paths["panoptic_json"],
        json_file=paths["instances_json"],
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **meta,
    )


def register_all_shapes(root):
    """Register every dataset of SHAPES_SPLITS and SHAPES_PANOPTIC_SPLITS under ``root``."""
    for name, (split, num_images, seed) in SHAPES_SPLITS.items():
        register_shapes_instances(name, root, split, num_images, seed)
    for name, (split, num_images, seed) in SHAPES_PANOPTIC_SPLITS.items():
        register_shapes_panoptic(name, root, split, num_images, seed)


register_all_shapes(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
