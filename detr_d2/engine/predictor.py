"""A model with its weights, a predictor for one image and a dataset's images as the model sees
them (demo.py and the tools). Images are numpy (H, W, 3) uint8 BGR; model inputs detectron2's
dicts ("image" (3, h, w) uint8 in ``INPUT.FORMAT`` at test resolution, "height"/"width")."""

import logging
import os
import time
from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..data import build_test_mapper, build_train_mapper
from .checks import load_weights_for_eval

logger = logging.getLogger(__name__)


def load_model(cfg: CfgNode, random_weights: bool = False) -> torch.nn.Module:
    """``build_model(cfg)`` with MODEL.WEIGHTS loaded (class head included). An empty
    MODEL.WEIGHTS is an error unless ``random_weights`` (then a WARNING). A FROZEN_WEIGHTS that
    is no local file is skipped: a complete MODEL.WEIGHTS holds its box weights."""
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
    load_weights_for_eval(model, cfg)
    logger.info(f"Loaded weights {path}")
    return model


class Predictor:
    """Detectron2's DefaultPredictor with the model input exposed (:meth:`inputs`), so that a
    tool can run ``Detr.forward_raw`` on what the model sees. ``model`` None: :func:`load_model`."""

    def __init__(self, cfg: CfgNode, model: Optional[torch.nn.Module] = None):
        self.model = (load_model(cfg) if model is None else model).eval()
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
        self.input_format = cfg.INPUT.FORMAT
        self.augmentations = build_test_mapper(cfg).augmentations  # train_net's test resize
        # class names and colours of DATASETS.TEST[0]; empty metadata without one
        self.metadata = MetadataCatalog.get((*cfg.DATASETS.TEST, "__unused")[0])

    def inputs(self, image: np.ndarray) -> Dict:
        """The model input for one BGR image (H, W, 3) uint8."""
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Dict:
        """The model's output ({"instances"} and/or {"panoptic_seg"}) in ``image``'s coordinates."""
        return self.model([self.inputs(image)])[0]


def dataset_loader(cfg: CfgNode, dataset_name: str, num_images: int = 0):
    """(A streaming test loader (batch 1, test-time resize) over the first ``num_images`` images
    of a registered dataset (0: all), the dataset dicts it reads)."""
    dicts = _first_dicts(dataset_name, num_images)
    mapper, workers = build_test_mapper(cfg), cfg.DATALOADER.NUM_WORKERS
    return build_detection_test_loader(dicts, mapper=mapper, num_workers=workers), dicts


def dataset_inputs(cfg: CfgNode, dataset_name: str, num: int, is_train: bool = False) -> List[Dict]:
    """The first ``num`` images of a registered dataset (0: all) in memory, mapped as in training
    or as train_net's test loader."""
    mapper = build_train_mapper(cfg, dataset_name) if is_train else build_test_mapper(cfg)
    return [mapper(d) for d in _first_dicts(dataset_name, num)]


def _first_dicts(dataset_name: str, num: int) -> List[Dict]:
    dicts = DatasetCatalog.get(dataset_name)
    if 0 < num and len(dicts) < num:
        logger.warning(f"{dataset_name} has only {len(dicts)} images (asked for {num})")
    return dicts[:num] if num > 0 else dicts


def with_progress(items: Iterable, total: int, what="images", every=50, name="") -> Iterator:
    """Yields ``items``, logging "name: done/total what, s per item, ETA" every ``every`` items
    and after the last one."""
    start = time.perf_counter()
    for done, item in enumerate(items, 1):
        yield item
        if every > 0 and (done % every == 0 or done == total):
            elapsed = time.perf_counter() - start
            eta = elapsed / done * max(total - done, 0)
            logger.info(
                f"{name}: {done}/{total} {what}, {elapsed / done:.3f} s each, "
                f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s"
            )
