"""Your own COCO-format dataset from the command line: ``--register-coco NAME JSON IMAGE_ROOT``.

    parser = default_argument_parser()          # or any argparse parser
    add_register_coco_argument(parser)
    args = parser.parse_args()
    register_coco_from_args(args)               # in every process, before the config is used

A set is registered with Detectron2's ``register_coco_instances`` plus its class names, read from
the json's categories (sorted by id, as ``load_coco_json`` orders them) at registration, so the
model's class count can be taken from it (``detr_d2.engine.resolve_num_classes``) before any
data is loaded. The json is checked once (``json_check.check_coco_json``) and the report logged.
"""

import argparse
import logging
import os
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from detr_d2_cli import REGISTER_COCO as FLAG
from detr_d2_cli import add_register_coco_argument  # noqa: F401  (the flag lives with the parser)

from .json_check import CocoJsonReport, check_coco_json

__all__ = [
    "add_register_coco_argument",
    "register_coco_from_args",
    "register_coco_dataset",
]

logger = logging.getLogger(__name__)



def register_coco_from_args(args: argparse.Namespace) -> List[str]:
    """Register every ``--register-coco`` set of ``args``; returns their names.

    Call it in each process (``launch`` starts fresh ones for multi-GPU): the catalogs are per
    process. Raises ``ValueError`` when the flag ended up among the config options (after a
    KEY VALUE pair, argparse hands everything to ``opts``).
    """
    opts = getattr(args, "opts", None) or []
    if FLAG in opts:
        raise ValueError(
            f"{FLAG} must come before the KEY VALUE config options; it was read as a "
            f"config option: {' '.join(opts)}"
        )
    names = []
    for name, json_file, image_root in getattr(args, "register_coco", None) or []:
        register_coco_dataset(name, json_file, image_root)
        names.append(name)
    return names


def register_coco_dataset(name: str, json_file: str, image_root: str) -> Optional[CocoJsonReport]:
    """Register a COCO instances json as dataset ``name``, with its class names in the metadata.

    Metadata set now (``load_coco_json`` sets the same values again when the set is loaded):
    ``thing_classes`` (category names sorted by id), ``thing_dataset_id_to_contiguous_id``,
    ``json_file``, ``image_root`` (both absolute) and ``evaluator_type`` "coco".

    Registering a name again with the same files does nothing (returns None); with other files,
    or a name Detectron2 or detr_d2 already uses, raises ``ValueError``. Otherwise checks the
    json once, logs the report (a warning when it found problems) and returns it.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        old = tuple(
            p if p is None else os.path.abspath(p)
            for p in (meta.get("json_file"), meta.get("image_root"))
        )
        if old == (json_file, image_root):
            return None
        raise ValueError(
            f"Dataset name '{name}' is already registered with json {old[0]} and images "
            f"{old[1]}; cannot register it again with json {json_file} and images {image_root}. "
            "Choose another name."
        )
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{FLAG} {name}: json file {json_file} not found")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{FLAG} {name}: image folder {image_root} not found")

    report = check_coco_json(json_file, image_root)
    log = logger.warning if report.has_problems else logger.info
    log(f"Dataset '{name}': " + report.format())
    ids = report.category_ids
    if not ids:
        raise ValueError(
            f'{json_file} lists no categories: a COCO json needs "categories": '
            '[{"id": 1, "name": "..."}, ...]'
        )

    # the same values load_coco_json sets when the set is loaded (it asserts they do not change)
    metadata = {
        "thing_classes": report.categories,
        "thing_dataset_id_to_contiguous_id": {cat_id: i for i, cat_id in enumerate(ids)},
    }
    register_coco_instances(name, metadata, json_file, image_root)
    return report
