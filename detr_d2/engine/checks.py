"""Checks that turn a silently wrong run into an error before it starts: the model's class count
against its datasets, and the weights an evaluation loads."""

import functools
import logging
import os
from typing import Iterable, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .checkpoint import DetrCheckpointer

logger = logging.getLogger(__name__)

# Models whose class count is one config key (DETR family: every META_ARCHITECTURE "Detr*").
NUM_CLASSES_KEYS = {
    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
}
NUM_CLASSES_FROM_DATA = -1  # the MODEL.DETR.NUM_CLASSES value that means "the data's class count"


class ConfigDatasetMismatchError(ValueError):
    """The config and the datasets disagree (e.g. on the number of classes)."""


def metadata_num_classes(meta, meta_architecture: str = "Detr") -> Optional[int]:
    """The class count a ``meta_architecture`` model predicts on a dataset with metadata ``meta``
    (None until a lazily registered COCO json is loaded): DETR on panoptic data, the things' and
    stuff's contiguous ids together; else the thing classes."""
    things = meta.get("thing_dataset_id_to_contiguous_id")
    stuff = meta.get("stuff_dataset_id_to_contiguous_id")
    detr = meta_architecture.startswith("Detr")
    if detr and things is not None and stuff is not None:
        return len(set(things.values()) | set(stuff.values()))
    if things is not None and not detr:
        return len(things)
    classes = meta.get("thing_classes")
    return None if classes is None else len(classes)


def check_num_classes(cfg, dataset_names: Iterable[str]) -> None:
    """:class:`ConfigDatasetMismatchError` naming the key, both counts and the dataset when the
    model's class count differs from a dataset's (datasets not yet listing classes: skipped)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    key = "MODEL.DETR.NUM_CLASSES" if arch.startswith("Detr") else NUM_CLASSES_KEYS.get(arch)
    if key is None:
        return
    value = functools.reduce(lambda node, part: node[part], key.split("."), cfg)
    for name in dataset_names:
        n = metadata_num_classes(MetadataCatalog.get(name), arch)
        if n is not None and n != value:
            classes = MetadataCatalog.get(name).get("thing_classes", [])
            shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
            raise ConfigDatasetMismatchError(
                f"{key} is {value} but dataset {name!r} has {n} classes ({shown}). Set {key} "
                f"{n} (on the command line: {key} {n}), or use the dataset the model was made for."
            )


def load_weights_for_eval(model, cfg, resume: bool = False) -> str:
    """Load into ``model`` (strictly) the last complete checkpoint of OUTPUT_DIR if ``resume`` and
    there is one, else MODEL.WEIGHTS; returns the path loaded."""
    checkpointer = DetrCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict=True)
    path = (checkpointer.get_checkpoint_file() if resume else "") or cfg.MODEL.WEIGHTS
    if not path:
        raise FileNotFoundError(
            "--eval-only evaluates the weights of MODEL.WEIGHTS, which is empty: the model would "
            "be randomly initialized. Pass MODEL.WEIGHTS /path/to/model.pth (or --resume with a "
            "checkpoint in OUTPUT_DIR)."
        )
    if "://" not in path and not os.path.isfile(path):  # URLs: the checkpointer's errors
        raise FileNotFoundError(f"MODEL.WEIGHTS file {path!r} does not exist.")
    checkpointer.load(path)
    return path


def resolve_num_classes(cfg, opts=(), strict: bool = True):
    """DETR only, after registering the datasets, before ``cfg.freeze()``: set NUM_CLASSES -1 to
    the class count of the first registered DATASETS.TRAIN (then TEST) set listing its classes, and
    check any other value against it (``ValueError`` naming both and where the value came from,
    ``opts`` being the command line's KEY VALUE list). ``strict=False`` (tools): a warning, and -1
    without data becomes 80. Returns ``cfg``."""
    from ..config import is_detr_config
    from ..data.register import FLAG

    if not is_detr_config(cfg):
        return cfg
    key, value = "MODEL.DETR.NUM_CLASSES", cfg.MODEL.DETR.NUM_CLASSES
    named = [(f"DATASETS.{part}", n) for part in ("TRAIN", "TEST") for n in cfg.DATASETS[part]]
    registered = set(DatasetCatalog.list())
    for where, name in named:
        if name not in registered:
            logger.warning(
                f"{where} '{name}' is not registered: register a COCO-format set with "
                f"{FLAG} {name} path/to/annotations.json path/to/images"
            )
    arch = cfg.MODEL.META_ARCHITECTURE
    counts = [(w, n, metadata_num_classes(MetadataCatalog.get(n), arch)) for w, n in named]
    counts = [c for c in counts if c[1] in registered and c[2] is not None]
    where, name, num = counts[0] if counts else (None, None, None)
    if value == NUM_CLASSES_FROM_DATA and counts:
        cfg.MODEL.DETR.NUM_CLASSES = num
        logger.info(f"{key} = {num} (-1: from the data), the class count of {where} '{name}'")
        return cfg
    if value == NUM_CLASSES_FROM_DATA:
        message = (
            f"{key} is -1 (from the data) but no dataset of DATASETS.TRAIN / DATASETS.TEST "
            f"{[n for _, n in named]} is registered with its classes: register it ({FLAG}) or "
            f"set {key} to the number of classes."
        )
        if not strict:
            cfg.MODEL.DETR.NUM_CLASSES = 80
            message += " Using 80."
    elif counts and value != num:
        origin = "on the command line" if key in list(opts)[0::2] else "in the config file"
        message = (
            f"{key} is {value} ({origin}) but {where} '{name}' has {num} classes. Set "
            f"{key} {num}, or {key} -1 to take the count from the data."
        )
    else:
        return cfg
    if strict:
        raise ConfigDatasetMismatchError(message)
    logger.warning(message)
    return cfg
