"""Configs, models and inputs for the analysis tools (tools/analyze_model.py, tools/benchmark.py).

Inputs are detectron2 batches: lists of dicts with "image" (uint8 (3, H, W), channels in
``INPUT.FORMAT``), "height"/"width" and, for training, "instances" (gt_boxes absolute XYXY,
gt_classes).
"""

import itertools
import logging
import os
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ..engine.checkpoint import DetrCheckpointer
from ..config import add_detr_config, merge_config_file
from ..data.register import resolve_num_classes

__all__ = ["setup_cfg", "build_analysis_model", "synthetic_inputs", "dataset_inputs", "batches"]

logger = logging.getLogger(__name__)


def setup_cfg(config_file: str, opts: Sequence[str] = (), device: Optional[str] = None) -> CfgNode:
    """A frozen config from a yaml (DETR or plain detectron2) and "KEY VALUE" overrides.

    ``device`` overrides MODEL.DEVICE; a CUDA device falls back to CPU, with a warning, when CUDA
    is unavailable.
    """
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, config_file)
    cfg.merge_from_list(list(opts))
    resolve_num_classes(cfg, opts, strict=False)  # a --register-coco set's class count if unset
    if device:
        cfg.MODEL.DEVICE = device
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but CUDA is unavailable: using cpu")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def build_analysis_model(cfg: CfgNode) -> torch.nn.Module:
    """``build_model(cfg)`` with MODEL.WEIGHTS loaded when it is a local file. Anything else (a
    URL, "") leaves the random init, with a warning: nothing is downloaded; so does a panoptic
    config's MODEL.DETR.FROZEN_WEIGHTS that is not a local file. DETR's FLOPs and speed
    do not depend on the weights; an R-CNN's post-processing (boxes surviving NMS) may."""
    frozen = cfg.MODEL.DETR.FROZEN_WEIGHTS if hasattr(cfg.MODEL, "DETR") else ""
    if frozen and not os.path.isfile(frozen):
        logger.warning(f"MODEL.DETR.FROZEN_WEIGHTS {frozen!r} is not a local file: random init")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DETR.FROZEN_WEIGHTS = ""
        cfg.freeze()
    model = build_model(cfg)
    if os.path.isfile(cfg.MODEL.WEIGHTS):
        DetrCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} is not a local file: random init")
    return model


def synthetic_inputs(
    height: int,
    width: int,
    num: int,
    num_classes: int = 1,
    with_instances: bool = False,
    seed: int = 0,
) -> List[Dict]:
    """``num`` random images of exactly (height, width), the network's input size (no resize).

    With ``with_instances``, each gets 1 to 4 random boxes of classes below ``num_classes``.
    """
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(num):
        x = {
            "image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g),
            "height": height,
            "width": width,
        }
        if with_instances:
            k = int(torch.randint(1, 5, (1,), generator=g))
            corners = torch.rand(k, 2, 2, generator=g) * torch.tensor([width, height])
            xyxy = torch.cat([corners.min(1).values, corners.max(1).values + 1], dim=1)
            inst = Instances((height, width))
            inst.gt_boxes = Boxes(xyxy.clamp(max=torch.tensor([width, height] * 2)))
            inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
            x["instances"] = inst
        inputs.append(x)
    return inputs


def _mapper(cfg: CfgNode, is_train: bool):
    from ..data import DetrDatasetMapper, build_test_mapper

    if not is_train:
        return build_test_mapper(cfg)  # as train_net's test loader (DETR's resize rule for DETR)
    if cfg.MODEL.META_ARCHITECTURE == "Detr":
        return DetrDatasetMapper(cfg, is_train=True)
    return DatasetMapper(cfg, is_train=True)


def dataset_inputs(cfg: CfgNode, dataset_name: str, num: int, is_train: bool = False) -> List[Dict]:
    """The first ``num`` images of a registered dataset, mapped as in training (augmentation,
    instances) or at test resolution (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST)."""
    mapper = _mapper(cfg, is_train)
    dicts = DatasetCatalog.get(dataset_name)
    inputs = [mapper(d) for d in itertools.islice(dicts, num)]
    if len(inputs) < num:
        logger.warning(f"{dataset_name} has only {len(inputs)} images (asked for {num})")
    return inputs


def batches(inputs: List[Dict], batch_size: int) -> List[List[Dict]]:
    """Consecutive inputs grouped into batches; a last, smaller batch is dropped (unless it is the
    only one)."""
    out = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    return [b for b in out if len(b) == batch_size] or out[:1]
