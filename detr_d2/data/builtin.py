"""Registers the generated "shapes" datasets on import. (detectron2's own COCO datasets are
registered by detectron2 itself, under the same ``$DETECTRON2_DATASETS`` root.)

Names (split, images):
    shapes_train (2000), shapes_val (200), shapes_tiny_train (64), shapes_tiny_val (32):
        COCO instances, 6 thing classes, evaluator_type "coco".
    shapes_panoptic_train (2000), shapes_panoptic_val (200), shapes_panoptic_tiny_train (64),
    shapes_panoptic_tiny_val (32): COCO panoptic, "standard" format (like detectron2's
        ``coco_2017_*_panoptic``), 6 things + 3 stuff, evaluator_type "coco_panoptic_seg".

A split is generated on disk the first time its DatasetCatalog function runs (a few seconds).
"""

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .shapes import STUFF_CATEGORIES, THING_CATEGORIES, generate_shapes, shapes_paths

__all__ = [
    "SHAPES_SPLITS",
    "SHAPES_PANOPTIC_SPLITS",
    "register_shapes_instances",
    "register_shapes_panoptic",
    "register_all_shapes",
]

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
    """Detectron2's "standard" panoptic metadata: contiguous ids run over things and stuff together
    (things 0..5, stuff 6..8), and thing_/stuff_classes both list all of them."""
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
    """Like detectron2's ``load_coco_panoptic_json``, but takes each image's file name (PNG) from
    the json instead of assuming ".jpg".

    Returns:
        list[dict]: one per image, with file_name, image_id, height, width, pan_seg_file_name and
            segments_info (list of dict: id, category_id (contiguous), isthing, area,
            bbox [x, y, w, h] absolute, iscrowd).
    """
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
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "image_id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                "segments_info": segments,
            }
        )
    return dicts


def register_shapes_panoptic(name, root, split, num_images, seed):
    """Register the panoptic shapes split ``split`` under ``root`` as dataset ``name``, with the
    metadata detectron2's COCOPanopticEvaluator reads."""
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
