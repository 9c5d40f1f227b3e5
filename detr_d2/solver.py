"""DETR's optimizer: AdamW, a smaller lr for the backbone, and one gradient norm over the model;
the schedule in epochs (SOLVER.EPOCHS and the periods in epochs), converted to iterations."""

import logging
import math
from typing import Tuple

import torch
from detectron2.data import DatasetCatalog
from detectron2.solver import build_optimizer as build_default_optimizer
from detectron2.solver.build import maybe_add_gradient_clipping

logger = logging.getLogger(__name__)


def full_model_clipping(cfg) -> Tuple[float, float]:
    """(max norm, norm type) of SOLVER.CLIP_GRADIENTS CLIP_TYPE "full_model" (max norm 0: off),
    which DetrTrainLoop applies once per step to the accumulated, unscaled gradients."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    on = clip.ENABLED and clip.CLIP_TYPE == "full_model"
    return (float(clip.CLIP_VALUE) if on else 0.0), float(clip.NORM_TYPE)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "SGD": Detectron2's own; "ADAMW": DETR's, backbone parameters at BASE_LR x
    BACKBONE_MULTIPLIER, frozen ones left out, weight decay on all, and Detectron2's per-parameter
    CLIP_GRADIENTS "value" / "norm" ("full_model": the loop clips)."""
    name, clip = cfg.SOLVER.OPTIMIZER.upper(), cfg.SOLVER.CLIP_GRADIENTS
    if name == "SGD" and clip.ENABLED and clip.CLIP_TYPE == "full_model":
        raise ValueError("SOLVER.CLIP_GRADIENTS.CLIP_TYPE full_model needs SOLVER.OPTIMIZER ADAMW")
    if name == "SGD":
        return build_default_optimizer(cfg, model)
    if name != "ADAMW":
        raise ValueError(f'SOLVER.OPTIMIZER must be "SGD" or "ADAMW", got {cfg.SOLVER.OPTIMIZER!r}')
    backbone, rest = [], []
    for key, p in model.named_parameters():
        if p.requires_grad:
            (backbone if key.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest}]  # lr and weight decay: the optimizer's defaults below
    if backbone:
        lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.BACKBONE_MULTIPLIER
        groups.append({"params": backbone, "lr": lr})
    optimizer_cls = torch.optim.AdamW
    if not full_model_clipping(cfg)[0]:  # Detectron2's per-parameter "value" / "norm", or none
        optimizer_cls = maybe_add_gradient_clipping(cfg, optimizer_cls)
    return optimizer_cls(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)


def dataset_size(cfg) -> int:
    """Images of DATASETS.TRAIN one epoch visits (FILTER_EMPTY_ANNOTATIONS as the train loader)."""
    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
    if not cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        return len(dicts)
    return sum(any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", [])) for d in dicts)


def iters_per_epoch(cfg, dataset_size: int) -> int:
    """ceil(dataset_size / (IMS_PER_BATCH x ACCUM_ITERS)) steps (10 images, batch 4: 3 steps)."""
    if dataset_size <= 0:
        raise ValueError("Cannot convert epochs to iterations: the training set is empty")
    return math.ceil(dataset_size / (cfg.SOLVER.IMS_PER_BATCH * cfg.SOLVER.get("ACCUM_ITERS", 1)))


def epochs_to_iters(cfg, dataset_size: int) -> Tuple[int, Tuple[int, ...]]:
    """(MAX_ITER, STEPS) of SOLVER.EPOCHS with the lr dropped after each of LR_DROP_EPOCHS."""
    epochs, drops = cfg.SOLVER.EPOCHS, tuple(cfg.SOLVER.LR_DROP_EPOCHS)
    if any(not 0 < e < epochs for e in drops):
        raise ValueError(f"SOLVER.LR_DROP_EPOCHS {drops} must lie in (0, SOLVER.EPOCHS = {epochs})")
    per_epoch = iters_per_epoch(cfg, dataset_size)
    return round(epochs * per_epoch), tuple(round(e * per_epoch) for e in drops)


def apply_epoch_schedule(cfg):
    """With SOLVER.EPOCHS > 0 (after registering the datasets, before freezing): set MAX_ITER and
    STEPS, and CHECKPOINT_PERIOD / EVAL_PERIOD from their ``*_EPOCHS`` where > 0; logged."""
    if cfg.SOLVER.get("EPOCHS", 0) <= 0:
        return cfg
    size = dataset_size(cfg)
    old = (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS))
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = epochs_to_iters(cfg, size)
    log = f"{cfg.SOLVER.EPOCHS} epochs of {size} images at batch {cfg.SOLVER.IMS_PER_BATCH}: "
    log += f"SOLVER.MAX_ITER = {cfg.SOLVER.MAX_ITER}, SOLVER.STEPS = {cfg.SOLVER.STEPS} (epochs "
    log += f"{tuple(cfg.SOLVER.LR_DROP_EPOCHS)}; was {old[0]}, {old[1]})"
    per_epoch = iters_per_epoch(cfg, size)
    for node, key in ((cfg.SOLVER, "CHECKPOINT_PERIOD"), (cfg.TEST, "EVAL_PERIOD")):
        epochs = node.get(f"{key}_EPOCHS", 0)
        if epochs > 0:
            log += f", {key} = {epochs * per_epoch} ({epochs} epochs; was {node[key]})"
            node[key] = epochs * per_epoch
    logger.info(log)
    return cfg
