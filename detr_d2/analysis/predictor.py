"""Running a model on images and datasets, for demo.py and the paper tools
(tools/decoder_layer_study.py, tools/visualize_attention.py, tools/query_slots.py).

Images here are numpy (H, W, 3) uint8 in BGR order, as OpenCV reads them. Model inputs are
detectron2's dicts: "image" a (3, h, w) uint8 tensor in ``INPUT.FORMAT`` at test resolution
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), "height"/"width" the original size, which the
model's outputs are scaled back to.
"""

import argparse
import logging
import os
import re
import sys
import time
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..engine.checkpoint import DetrCheckpointer
from ..data import build_test_mapper
from ..data.register import add_register_coco_argument

__all__ = [
    "Predictor",
    "dataset_metadata",
    "dataset_loader",
    "with_progress",
    "parse_tool_args",
]

logger = logging.getLogger(__name__)


def dataset_metadata(cfg: CfgNode):
    """Metadata (class names, colors) of ``DATASETS.TEST[0]``; empty metadata without one."""
    return MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")


class Predictor:
    """Detectron2's DefaultPredictor for one image at a time, with the model input exposed
    (:meth:`inputs`) so that a tool can run ``Detr.forward_raw`` on exactly what the model sees.

    Args:
        cfg: a config with ``MODEL.DEVICE`` already valid on this machine.
        model: a built model; None builds one and loads ``MODEL.WEIGHTS`` with
            DetectionCheckpointer (a local file, a URL or a ``detectron2://`` path; "" leaves the
            random init, with detectron2's warning).
    """

    def __init__(self, cfg: CfgNode, model: Optional[torch.nn.Module] = None):
        if model is None:
            model = build_model(cfg)
            DetrCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
        self.model = model.eval()
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
        self.input_format = cfg.INPUT.FORMAT
        # the resize of train_net's test loader (DETR's for DETR models, Detectron2's otherwise;
        # none for a MIN_SIZE_TEST of 0)
        self.augmentations = build_test_mapper(cfg).augmentations
        self.metadata = dataset_metadata(cfg)

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

    Unlike ``detr_d2.analysis.inputs.dataset_inputs``, which holds every mapped image in memory,
    this streams: a pass over COCO val (5k images at 800 px) fits anywhere.
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


# An upper-case dotted config key (MODEL.WEIGHTS, INPUT.MIN_SIZE_TEST): where the trailing
# "KEY VALUE" config overrides start when a list option (--input a b ...) swallowed them.
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add what every tool taking a config reads besides its own options: ``--register-coco NAME
    JSON IMAGE_ROOT`` (repeatable) and the positional "KEY VALUE" config overrides ``opts``, which
    :func:`parse_tool_args` accepts anywhere on the command line."""
    add_register_coco_argument(parser)
    parser.add_argument(
        "opts", nargs="*", default=[], help="config overrides, KEY VALUE pairs (MODEL.WEIGHTS ...)"
    )
    return parser


def parse_tool_args(
    parser: argparse.ArgumentParser,
    argv: Optional[Sequence[str]] = None,
    list_options: Sequence[str] = (),
) -> argparse.Namespace:
    """Parse a tool's command line whose config overrides are a positional ``opts`` (nargs="*")
    and may come anywhere: before, between or after the options.

    A list option (a flag of ``list_options``, nargs="+") followed directly by overrides would
    take them as its values: from the first of its values that looks like a config key and is
    not an existing path, up to the next option, the tokens are moved in front of all others.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    moved, kept = [], []
    in_list = in_opts = False
    for token in argv:
        if token.startswith("--"):
            in_list, in_opts = token.split("=")[0] in list_options and "=" not in token, False
        elif in_list and _CONFIG_KEY.match(token) and not os.path.exists(token):
            in_list, in_opts = False, True
        (moved if in_opts else kept).append(token)
    return parser.parse_intermixed_args(moved + kept)
