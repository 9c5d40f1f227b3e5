"""DETR's optimizer: AdamW, a smaller lr for the backbone, and one gradient norm over the model."""

from typing import Tuple

import torch
from detectron2.solver import build_optimizer as build_default_optimizer
from detectron2.solver.build import maybe_add_gradient_clipping


def detr_param_groups(
    model: torch.nn.Module, base_lr: float, weight_decay: float, backbone_multiplier: float
):
    """Two groups: backbone parameters at ``base_lr * backbone_multiplier``, the rest at
    ``base_lr``; frozen parameters are left out. Weight decay applies to all, as in DETR."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": base_lr}]
    if backbone:
        groups.append({"params": backbone, "lr": base_lr * backbone_multiplier})
    for g in groups:
        g["weight_decay"] = weight_decay
    return groups


def full_model_clipping(cfg) -> Tuple[float, float]:
    """(max norm, norm type) of DETR's clipping of all gradients together (SOLVER.CLIP_GRADIENTS
    with CLIP_TYPE "full_model": CLIP_VALUE, NORM_TYPE); max norm 0 when off. The training loop
    (DetrTrainLoop) applies it once per optimizer step, to the accumulated, unscaled gradients."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    on = clip.ENABLED and clip.CLIP_TYPE == "full_model"
    return (float(clip.CLIP_VALUE) if on else 0.0), float(clip.NORM_TYPE)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER "SGD" is Detectron2's own optimizer, untouched; "ADAMW" is DETR's
    (SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY, SOLVER.BACKBONE_MULTIPLIER, Detectron2's per-parameter
    SOLVER.CLIP_GRADIENTS "value"/"norm" inside its step). CLIP_TYPE "full_model" is not the
    optimizer's: the training loop clips (see :func:`full_model_clipping`)."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if name == "SGD":
        if clip.ENABLED and clip.CLIP_TYPE == "full_model":
            raise ValueError(
                'SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model" needs SOLVER.OPTIMIZER "ADAMW"'
            )
        return build_default_optimizer(cfg, model)
    if name != "ADAMW":
        raise ValueError(f'SOLVER.OPTIMIZER must be "SGD" or "ADAMW", got {cfg.SOLVER.OPTIMIZER!r}')
    groups = detr_param_groups(
        model, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.BACKBONE_MULTIPLIER
    )
    optimizer_cls = torch.optim.AdamW
    if not full_model_clipping(cfg)[0]:  # Detectron2's per-parameter "value" / "norm", or none
        optimizer_cls = maybe_add_gradient_clipping(cfg, optimizer_cls)
    return optimizer_cls(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
