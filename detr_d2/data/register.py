"""Your own COCO-format dataset from the command line: ``--register-coco NAME JSON IMAGE_ROOT``.

    parser = default_argument_parser()          # or any argparse parser
    add_register_coco_argument(parser)
    args = parser.parse_args()
    register_coco_from_args(args)               # in every process, before the config is used
    ...
    resolve_num_classes(cfg, args.opts)         # before cfg.freeze()

A set is registered with Detectron2's ``register_coco_instances`` plus its class names, read from
the json's categories (sorted by id, as ``load_coco_json`` orders them) at registration, so the
model's class count can be checked before any data is loaded. The json is checked once
(``json_check.check_coco_json``) and the report logged.

Also here: the schedule in epochs (``SOLVER.EPOCHS`` / ``SOLVER.LR_DROP_EPOCHS``, converted to
iterations from the dataset size), for configs that have those keys.
"""

import argparse
import logging
import math
import os
from typing import List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..config import is_detr_config
from .json_check import CocoJsonReport, check_coco_json

__all__ = [
    "add_register_coco_argument",
    "register_coco_from_args",
    "register_coco_dataset",
    "resolve_num_classes",
    "epochs_to_iters",
    "apply_epoch_schedule",
    "dataset_size",
]

logger = logging.getLogger(__name__)

FLAG = "--register-coco"
NUM_CLASSES_KEY = "MODEL.DETR.NUM_CLASSES"


def add_register_coco_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the repeatable ``--register-coco NAME JSON IMAGE_ROOT`` to ``parser`` (any argparse
    parser); the parsed value, ``args.register_coco``, is a list of [name, json, image_root]."""
    parser.add_argument(
        FLAG,
        nargs=3,
        action="append",
        default=None,
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format instances dataset under NAME (use it in DATASETS.TRAIN / "
        "DATASETS.TEST); repeatable. Give it before the KEY VALUE config options.",
    )
    return parser


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
    if len(set(ids)) != len(ids):
        raise ValueError(f"{json_file}: category ids must be unique, got {ids}")

    # the same values load_coco_json sets when the set is loaded (it asserts they do not change)
    metadata = {
        "thing_classes": report.categories,
        "thing_dataset_id_to_contiguous_id": {cat_id: i for i, cat_id in enumerate(ids)},
    }
    register_coco_instances(name, metadata, json_file, image_root)
    return report


# ---- MODEL.DETR.NUM_CLASSES from the data --------------------------------------------------------


def _default_num_classes() -> int:
    from detectron2.config import get_cfg

    from ..config import add_detr_config

    return add_detr_config(get_cfg()).MODEL.DETR.NUM_CLASSES


def resolve_num_classes(cfg, opts: Sequence[str] = (), strict: bool = True):
    """Take ``MODEL.DETR.NUM_CLASSES`` from the data unless the user chose it; call after the
    datasets are registered, before ``cfg.freeze()``.

    The data's count is ``len(thing_classes)`` of the first dataset of DATASETS.TRAIN, then
    DATASETS.TEST, that is registered and whose metadata lists its classes (``--register-coco``
    sets do from registration; a name not registered is logged and left to the data loader's
    error). Whether the user chose NUM_CLASSES:

    * on the command line: ``MODEL.DETR.NUM_CLASSES`` is one of the keys of ``opts`` (the
      KEY VALUE list given to ``cfg.merge_from_list``);
    * in a yaml: the value differs from ``add_detr_config``'s default (80). The default is COCO's
      count, which Base-DETR.yaml repeats; a yaml saying 80 is indistinguishable from one that
      inherits it, so 80 counts as "not chosen" there and follows the data (logged).

    Not chosen: set from the data. Chosen and different from the data: ``ValueError`` naming both
    numbers and where the value came from (with ``strict=False``, as the analysis tools use it, a
    warning: counting FLOPs of a model does not need its data). That the other datasets agree is
    checked when they are loaded (``detr_d2.engine.check_num_classes``). Only DETR
    meta-architectures are touched.
    Returns ``cfg``.
    """
    if not is_detr_config(cfg):
        return cfg
    named = [("DATASETS.TRAIN", n) for n in cfg.DATASETS.TRAIN]
    named += [("DATASETS.TEST", n) for n in cfg.DATASETS.TEST]
    registered = set(DatasetCatalog.list())
    for where, name in named:
        if name not in registered:
            logger.warning(
                f"{where} '{name}' is not registered: register a COCO-format set with "
                f"{FLAG} {name} path/to/annotations.json path/to/images"
            )
    classes = [
        (where, name, MetadataCatalog.get(name).get("thing_classes"))
        for where, name in named
        if name in registered
    ]
    classes = [c for c in classes if c[2] is not None]
    if not classes:
        return cfg
    where, reference, num = classes[0][0], classes[0][1], len(classes[0][2])

    value = cfg.MODEL.DETR.NUM_CLASSES
    on_command_line = NUM_CLASSES_KEY in list(opts)[0::2]
    if on_command_line or value != _default_num_classes():
        if value != num:
            origin = "on the command line" if on_command_line else "in the config file"
            message = (
                f"{NUM_CLASSES_KEY} is {value} ({origin}) but {where} '{reference}' has {num} "
                f"classes. Set it to {num}, or leave it out to take the count from the data."
            )
            if strict:
                raise ValueError(message)
            logger.warning(message)
    elif value != num:
        logger.info(
            f"{NUM_CLASSES_KEY} = {num}, the class count of {where} '{reference}' "
            f"(was the default {value})"
        )
        cfg.MODEL.DETR.NUM_CLASSES = num
    return cfg


# ---- schedule in epochs --------------------------------------------------------------------------


def dataset_size(cfg) -> int:
    """Images one epoch of DATASETS.TRAIN visits: all of them, or with
    DATALOADER.FILTER_EMPTY_ANNOTATIONS those with a non-crowd annotation (as the train loader).
    Loads the datasets' dicts."""
    total = 0
    for name in cfg.DATASETS.TRAIN:
        dicts = DatasetCatalog.get(name)
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            dicts = [
                d for d in dicts if any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", []))
            ]
        total += len(dicts)
    return total


def epochs_to_iters(cfg, dataset_size: int) -> Tuple[int, Tuple[int, ...]]:
    """(MAX_ITER, STEPS) for ``SOLVER.EPOCHS`` epochs with the learning rate dropped after each
    of ``SOLVER.LR_DROP_EPOCHS``, at ``SOLVER.IMS_PER_BATCH`` x ``SOLVER.ACCUM_ITERS`` images per
    iteration (all GPUs; an iteration is an optimizer step).

    An epoch is ceil(dataset_size / (IMS_PER_BATCH x ACCUM_ITERS)) iterations, so a partial last
    batch counts as one: a 10-image set at batch 4 gives 3 iterations per epoch.
    """
    epochs, drops = cfg.SOLVER.EPOCHS, tuple(cfg.SOLVER.LR_DROP_EPOCHS)
    if epochs <= 0:
        raise ValueError(f"SOLVER.EPOCHS must be > 0 to convert, got {epochs}")
    if dataset_size <= 0:
        raise ValueError("Cannot convert epochs to iterations: the training set is empty")
    if any(not 0 < e < epochs for e in drops):
        raise ValueError(
            f"SOLVER.LR_DROP_EPOCHS {drops} must lie between 0 and SOLVER.EPOCHS "
            f"({epochs}), exclusive"
        )
    batch = cfg.SOLVER.IMS_PER_BATCH * cfg.SOLVER.get("ACCUM_ITERS", 1)  # effective batch
    per_epoch = math.ceil(dataset_size / batch)
    return round(epochs * per_epoch), tuple(round(e * per_epoch) for e in drops)


def apply_epoch_schedule(cfg):
    """With ``SOLVER.EPOCHS > 0``, set SOLVER.MAX_ITER and SOLVER.STEPS from the epochs and the
    size of DATASETS.TRAIN (logged); before ``cfg.freeze()``, after the datasets are registered.
    A no-op when EPOCHS is 0 or the config has no such key. Returns ``cfg``."""
    if cfg.SOLVER.get("EPOCHS", 0) <= 0:
        return cfg
    size = dataset_size(cfg)
    max_iter, steps = epochs_to_iters(cfg, size)
    logger.info(
        f"{cfg.SOLVER.EPOCHS} epochs of {size} images at batch {cfg.SOLVER.IMS_PER_BATCH} "
        f"x {cfg.SOLVER.get('ACCUM_ITERS', 1)} accumulated: "
        f"SOLVER.MAX_ITER = {max_iter}, SOLVER.STEPS = {steps} "
        f"(epochs {tuple(cfg.SOLVER.LR_DROP_EPOCHS)}); was {cfg.SOLVER.MAX_ITER}, "
        f"{tuple(cfg.SOLVER.STEPS)}"
    )
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = max_iter, steps
    return cfg
