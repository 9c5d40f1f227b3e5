"""Checks that turn a silently wrong run into an error before it starts: the number of classes of
the model against its datasets, and the weights an evaluation loads (present, and matching the
model key for key and shape for shape)."""

import logging
import os
from typing import Iterable, Optional

from detectron2.data import MetadataCatalog

from .checkpoint import DetrCheckpointer

__all__ = [
    "ConfigDatasetMismatchError",
    "check_num_classes",
    "check_weights_path",
    "dataset_num_classes",
    "metadata_num_classes",
    "load_weights_for_eval",
]

logger = logging.getLogger(__name__)

# Models whose class count is one config key (DETR family: every META_ARCHITECTURE "Detr*").
NUM_CLASSES_KEYS = {
    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
}


class ConfigDatasetMismatchError(ValueError):
    """The config and the datasets disagree (e.g. on the number of classes)."""


def num_classes_key(meta_architecture: str) -> Optional[str]:
    if meta_architecture.startswith("Detr"):
        return "MODEL.DETR.NUM_CLASSES"
    return NUM_CLASSES_KEYS.get(meta_architecture)


def dataset_num_classes(dataset_name: str, meta_architecture: str = "Detr") -> Optional[int]:
    """``metadata_num_classes`` of the registered metadata of ``dataset_name``."""
    return metadata_num_classes(MetadataCatalog.get(dataset_name), meta_architecture)


def metadata_num_classes(meta, meta_architecture: str = "Detr") -> Optional[int]:
    """The number of classes a model of ``meta_architecture`` predicts on a dataset with metadata
    ``meta``; None while the metadata does not say (a COCO json registered with
    register_coco_instances fills it when first loaded).

    DETR: ``len(thing_classes)``; on a panoptic dataset (with ``stuff_dataset_id_to_contiguous_id``)
    the contiguous ids of things and stuff together. R-CNN / RetinaNet: the thing classes.
    """
    things = meta.get("thing_dataset_id_to_contiguous_id")
    stuff = meta.get("stuff_dataset_id_to_contiguous_id")
    if meta_architecture.startswith("Detr") and things is not None and stuff is not None:
        return len(set(things.values()) | set(stuff.values()))
    if things is not None and not meta_architecture.startswith("Detr"):
        return len(things)
    classes = meta.get("thing_classes")
    return None if classes is None else len(classes)


def check_num_classes(cfg, dataset_names: Iterable[str]) -> None:
    """Raise :class:`ConfigDatasetMismatchError` naming the key, both numbers and the dataset when
    the model's number of classes differs from a dataset's. Datasets whose metadata does not yet
    list their classes are skipped (call again after loading them)."""
    key = num_classes_key(cfg.MODEL.META_ARCHITECTURE)
    if key is None:
        return
    node = cfg
    for part in key.split(".")[:-1]:
        node = node[part]
    value = node[key.split(".")[-1]]
    for name in dataset_names:
        n = dataset_num_classes(name, cfg.MODEL.META_ARCHITECTURE)
        if n is not None and n != value:
            classes = MetadataCatalog.get(name).get("thing_classes", [])
            shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
            raise ConfigDatasetMismatchError(
                f"{key} is {value} but dataset {name!r} has {n} classes ({shown}). Set {key} "
                f"{n} (on the command line: {key} {n}), or use the dataset the model was made for."
            )


def check_weights_path(path: str, key: str = "MODEL.WEIGHTS") -> None:
    """For evaluation: raise if ``path`` is empty (the model would be random) or is a local file
    that does not exist. URLs (``detectron2://``, ``https://``) are left to the checkpointer."""
    if not path:
        raise FileNotFoundError(
            f"--eval-only evaluates the weights of {key}, which is empty: the model would be "
            f"randomly initialized. Pass {key} /path/to/model.pth (or --resume with a checkpoint "
            "in OUTPUT_DIR)."
        )
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"{key} file {path!r} does not exist.")


def load_weights_for_eval(model, cfg, resume: bool = False) -> str:
    """Load the weights to evaluate into ``model``: the last complete checkpoint of OUTPUT_DIR if
    ``resume`` and there is one, else MODEL.WEIGHTS. Raises if the file is missing or does not
    match the model (check_weights_path; DetrCheckpointer, strict). Returns the path loaded."""
    checkpointer = DetrCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict=True)
    path = checkpointer.get_checkpoint_file() if resume else ""
    key = "the last checkpoint of OUTPUT_DIR" if path else "MODEL.WEIGHTS"
    path = path or cfg.MODEL.WEIGHTS
    check_weights_path(path, key)
    checkpointer.load(path)
    return path
