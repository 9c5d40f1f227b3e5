"""Your own COCO-format dataset from the command line: ``--register-coco NAME JSON IMAGE_ROOT``
(``add_register_coco_argument(parser)``, then ``register_coco_from_args(args)`` in every process).
The json is checked once (``json_check``) and its class names go into the metadata right away, so
the class count is known before any data is loaded."""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from detr_d2_cli import REGISTER_COCO as FLAG, add_register_coco_argument  # noqa: F401  (re-export)

from .json_check import check_coco_json

logger = logging.getLogger(__name__)


def register_coco_from_args(args) -> list:
    """Register every ``--register-coco`` set of ``args`` (the catalogs are per process); returns
    their names. ``ValueError`` when the flag came after the KEY VALUE options (read as options)."""
    opts = getattr(args, "opts", None) or []
    if FLAG in opts:
        raise ValueError(
            f"{FLAG} must come before the KEY VALUE config options; it was read as a "
            f"config option: {' '.join(opts)}"
        )
    sets = getattr(args, "register_coco", None) or []
    for name, json_file, image_root in sets:
        register_coco_dataset(name, json_file, image_root)
    return [name for name, _, _ in sets]


def register_coco_dataset(name: str, json_file: str, image_root: str):
    """Register a COCO instances json as dataset ``name`` with ``thing_classes`` (names sorted by
    id) and ``thing_dataset_id_to_contiguous_id`` set now; returns the logged json report.
    The same name with the same files again does nothing (None); a name already used with other
    files raises ``ValueError``."""
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if name in DatasetCatalog.list():
        old = [MetadataCatalog.get(name).get(k) for k in ("json_file", "image_root")]
        old = tuple(p if p is None else os.path.abspath(p) for p in old)
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
    if not report.category_ids:
        raise ValueError(
            f'{json_file} lists no categories: a COCO json needs "categories": '
            '[{"id": 1, "name": "..."}, ...]'
        )

    # the values load_coco_json sets when the set is loaded (it asserts they do not change)
    contiguous = {cat_id: i for i, cat_id in enumerate(report.category_ids)}
    metadata = {"thing_classes": report.categories, "thing_dataset_id_to_contiguous_id": contiguous}
    register_coco_instances(name, metadata, json_file, image_root)
    return report
