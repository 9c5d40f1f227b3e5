"""Running a model on images and datasets (demo.py and the tools), beside Detectron2's
``DefaultPredictor``: the model built with its weights (:func:`load_model`), a predictor for one
image, and a dataset's images mapped as the model sees them.

Images here are numpy (H, W, 3) uint8 in BGR order, as OpenCV reads them. Model inputs are
detectron2's dicts: "image" a (3, h, w) uint8 tensor in ``INPUT.FORMAT`` at test resolution
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), "height"/"width" the original size, which the
model's outputs are scaled back to; for training, "instances" (gt_boxes absolute XYXY,
gt_classes).
"""

import itertools
import logging
import os
import time
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import DetrCheckpointer
from ..data import DetrDatasetMapper, build_test_mapper

__all__ = [
    "Predictor",
    "load_model",
    "dataset_loader",
    "dataset_inputs",
    "with_progress",
]

logger = logging.getLogger(__name__)


def load_model(cfg: CfgNode, random_weights: bool = False) -> torch.nn.Module:
    """``build_model(cfg)`` with MODEL.WEIGHTS loaded (class head included: its class count must
    match), the file logged. An empty MODEL.WEIGHTS is an error naming the key, unless
    ``random_weights`` (a tool's ``--random-weights``): then the random init stays, with a
    WARNING in capitals. A panoptic config's MODEL.DETR.FROZEN_WEIGHTS that is not a local file
    is skipped with a warning (its box weights are part of a complete MODEL.WEIGHTS)."""
    frozen = cfg.MODEL.DETR.FROZEN_WEIGHTS if hasattr(cfg.MODEL, "DETR") else ""
    if frozen and not os.path.isfile(frozen):
        logger.warning(f"MODEL.DETR.FROZEN_WEIGHTS {frozen!r} is not a local file: not loaded")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DETR.FROZEN_WEIGHTS = ""
    model = build_model(cfg)
    if random_weights:
        logger.warning("WARNING: RANDOM WEIGHTS: MODEL.WEIGHTS is not loaded")
        return model
    path = cfg.MODEL.WEIGHTS
    if not path:
        raise ValueError(
            "MODEL.WEIGHTS is empty: the model would run on random weights. Give MODEL.WEIGHTS "
            "path/to/model.pth, or --random-weights to run on random weights on purpose."
        )
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS file {path!r} does not exist")
    DetrCheckpointer(model, strict=True).load(path)
    logger.info(f"Loaded weights {path}")
    return model


class Predictor:
    """Detectron2's DefaultPredictor for one image at a time, with the model input exposed
    (:meth:`inputs`) so that a tool can run ``Detr.forward_raw`` on exactly what the model sees.

    Args:
        cfg: a config with ``MODEL.DEVICE`` already valid on this machine.
        model: a built model; None: :func:`load_model` (MODEL.WEIGHTS required).
    """

    def __init__(self, cfg: CfgNode, model: Optional[torch.nn.Module] = None):
        self.model = (load_model(cfg) if model is None else model).eval()
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
        self.input_format = cfg.INPUT.FORMAT
        # the resize of train_net's test loader (DETR's for DETR models, Detectron2's otherwise;
        # none for a MIN_SIZE_TEST of 0)
        self.augmentations = build_test_mapper(cfg).augmentations
        # class names and colours of DATASETS.TEST[0]; empty metadata without one
        names = cfg.DATASETS.TEST
        self.metadata = MetadataCatalog.get(names[0] if names else "__unused")

    def inputs(self, image: np.ndarray) -> Dict:
        """The model input for one BGR image (H, W, 3) uint8."""
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        image = aug_input.image
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Dict:
        """The model's output for one BGR image: {"instances": ...} and/or {"panoptic_seg": ...},
        in the coordinates of ``image``."""
        return self.model([self.inputs(image)])[0]


def dataset_loader(
    cfg: CfgNode, dataset_name: str, num_images: int = 0
) -> Tuple[torch.utils.data.DataLoader, List[Dict]]:
    """A test loader (batch 1, test-time resize, ``DATALOADER.NUM_WORKERS`` workers) over the
    first ``num_images`` images of a registered dataset (0: all). Returns it with the dataset
    dicts it reads (their "image_id"s are what an evaluator should be restricted to).

    Unlike :func:`dataset_inputs`, which holds every mapped image in memory, this streams: a
    pass over COCO val (5k images at 800 px) fits anywhere.
    """
    dicts = DatasetCatalog.get(dataset_name)
    if num_images > 0:
        if len(dicts) < num_images:
            logger.warning(f"{dataset_name} has only {len(dicts)} images (asked for {num_images})")
        dicts = dicts[:num_images]
    loader = build_detection_test_loader(
        dicts, mapper=build_test_mapper(cfg), num_workers=cfg.DATALOADER.NUM_WORKERS
    )
    return loader, dicts


def dataset_inputs(cfg: CfgNode, dataset_name: str, num: int, is_train: bool = False) -> List[Dict]:
    """The first ``num`` images of a registered dataset, mapped as in training (augmentation,
    instances) or as train_net's test loader (test resolution, DETR's resize rule for DETR)."""
    if not is_train:
        mapper = build_test_mapper(cfg)
    elif cfg.MODEL.META_ARCHITECTURE == "Detr":
        mapper = DetrDatasetMapper(cfg, is_train=True)
    else:
        mapper = DatasetMapper(cfg, is_train=True)
    dicts = DatasetCatalog.get(dataset_name)
    inputs = [mapper(d) for d in itertools.islice(dicts, num)]
    if len(inputs) < num:
        logger.warning(f"{dataset_name} has only {len(inputs)} images (asked for {num})")
    return inputs


def with_progress(
    items: Iterable, total: int, what: str = "images", every: int = 50, name: str = ""
) -> Iterator:
    """Yields ``items``, logging "name: done/total what, s per item, ETA" every ``every`` items
    and after the last one (the first ``every`` items include the warm-up)."""
    start = time.perf_counter()
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        if every > 0 and (done % every == 0 or done == total):
            elapsed = time.perf_counter() - start
            eta = elapsed / done * max(total - done, 0)
            logger.info(
                f"{name}: {done}/{total} {what}, {elapsed / done:.3f} s each, "
                f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s"
            )
