"""Config keys of detr_d2. ``add_detr_config`` only *adds* keys: every default another model (e.g. a
model-zoo Faster R-CNN yaml) relies on is left unchanged."""

import logging
import os

from detectron2.config import CfgNode as CN


def add_detr_config(cfg):
    """Add the DETR keys (``MODEL.DETR.*``, ``SOLVER.OPTIMIZER``, ...) to ``cfg``, in place."""
    if hasattr(cfg.MODEL, "DETR"):
        return cfg
    d = cfg.MODEL.DETR = CN()
    # object classes, without the extra "no object" class; -1: from the data, the class count of
    # the first registered dataset of DATASETS.TRAIN (then TEST) (detr_d2.engine.checks)
    d.NUM_CLASSES = 80
    d.NUM_OBJECT_QUERIES = 100  # N, the number of learned object queries (predictions per image)
    d.HIDDEN_DIM = 256  # d, width of the transformer
    d.NHEADS = 8  # attention heads
    d.DIM_FEEDFORWARD = 2048  # hidden width of each transformer FFN
    d.ENC_LAYERS = 6  # encoder layers
    d.DEC_LAYERS = 6  # decoder layers
    d.DROPOUT = 0.1  # dropout in attention and FFN
    d.PRE_NORM = False  # LayerNorm before (True) or after (False, the paper) each sub-layer
    d.POSITION_EMBEDDING = "sine"  # spatial positional encoding: "sine" | "learned" | "none"
    # where the spatial encoding is added: "every" attention layer (paper) or encoder "input" only
    d.POSITION_EMBEDDING_AT = "every"
    d.QUERY_POS_AT = "every"  # object queries added at "every" decoder layer (paper) or "input"
    d.USE_FFN = True  # FFN in each transformer layer (paper Table 4 ablates it)
    d.DEEP_SUPERVISION = True  # auxiliary losses after every decoder layer
    d.BACKBONE_FEATURE = ""  # backbone output the transformer reads; "" = last of OUT_FEATURES
    d.SIZE_DIVISIBILITY = 0  # pad batched images to a multiple of this (0 = to the largest only)
    # DC5 (MODEL.RESNETS.RES5_DILATION 2): the first res5 block's 3x3 conv undilated, as torchvision
    # (and so the official DETR-DC5 weights); False: Detectron2's layout, every res5 block dilated
    d.DC5_TORCHVISION = True
    # Hungarian matcher costs (independent of the loss weights)
    d.COST_CLASS = 1.0  # weight of -prob(class)
    d.COST_BBOX = 5.0  # weight of L1 distance between normalized cxcywh boxes
    d.COST_GIOU = 2.0  # weight of -GIoU
    # Loss weights; a weight of 0 turns that loss off
    d.CLASS_WEIGHT = 1.0  # cross-entropy
    d.BBOX_WEIGHT = 5.0  # L1 on normalized cxcywh boxes
    d.GIOU_WEIGHT = 2.0  # 1 - GIoU
    d.NO_OBJECT_WEIGHT = 0.1  # relative CE weight of the "no object" class
    # Inference
    d.TEST_SCORE_THRESH = 0.0  # drop detections below this score (0 = keep all, for COCO eval)
    d.TEST_TOPK = 0  # keep at most this many detections per image (0 = all N queries)
    # eval mode: backbone copy with norms folded into convs, channels_last (0.65x time, R50 on CPU)
    d.FAST_INFERENCE = True
    # DetrPanoptic: checkpoint of the box model (all but bbox_attention and mask_head) that stage 2
    # starts from, frozen (no grad, BatchNorm in eval mode); later weights holding the whole box
    # model (MODEL.WEIGHTS, resuming) replace it. "" = nothing frozen (joint training)
    d.FROZEN_WEIGHTS = ""
    # Panoptic DETR (META_ARCHITECTURE "DetrPanoptic")
    d.MASK_WEIGHT = 1.0  # weight of the sigmoid focal loss of matched masks (loss_mask)
    d.DICE_WEIGHT = 1.0  # weight of the DICE loss of matched masks (loss_dice)
    # backbone features (in MODEL.RESNETS.OUT_FEATURES) the mask head adds, strides 16, 8, 4
    d.MASK_HEAD_IN_FEATURES = ["res4", "res3", "res2"]
    d.MASK_HEAD_GROUPS = 8  # GroupNorm groups in the mask head; HIDDEN_DIM / 16 must divide by it
    # panoptic inference: keep queries whose best real-class probability is above this
    d.PANOPTIC_CONF_THRESH = 0.85
    # panoptic inference: segments of at most this many pixels (in the output image) are dropped
    # and their pixels given to the remaining queries
    d.PANOPTIC_MIN_AREA = 4

    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" (Detectron2's default) or "ADAMW" (DETR)
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0  # lr multiplier of backbone parameters (DETR: 0.1)
    # Training length in epochs of DATASETS.TRAIN at IMS_PER_BATCH, converted to MAX_ITER and
    # STEPS when the datasets are known (0: use SOLVER.MAX_ITER and SOLVER.STEPS as given)
    cfg.SOLVER.EPOCHS = 0
    cfg.SOLVER.LR_DROP_EPOCHS = ()  # with EPOCHS > 0: epochs after which lr is multiplied by GAMMA
    # with EPOCHS > 0: SOLVER.CHECKPOINT_PERIOD / TEST.EVAL_PERIOD in whole epochs, converted to
    # iterations as EPOCHS is; 0: the period in iterations as given
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0
    cfg.TEST.EVAL_PERIOD_EPOCHS = 0
    # Micro-batches of IMS_PER_BATCH images per optimizer step (gradient accumulation; losses
    # normalized over all of them). MAX_ITER, STEPS and the periods count optimizer steps
    cfg.SOLVER.ACCUM_ITERS = 1
    # With SOLVER.AMP.ENABLED: the forward's autocast dtype, "bfloat16" (CPU and CUDA, no loss
    # scaling) or "float16" (GradScaler; overflowing steps skipped, counted). Losses stay float32
    cfg.SOLVER.AMP.DTYPE = "bfloat16"
    # float16: this many skipped (non-finite) steps in a row are an error (scale 2^16 -> 2^-4 at 20)
    cfg.SOLVER.AMP.MAX_CONSECUTIVE_SKIPS = 20
    # DETR's random crop: resize the short side to one of these before cropping (pixels)
    cfg.INPUT.DETR_CROP_PRE_RESIZE = (400, 500, 600)
    # Training data: torchvision's antialiased bilinear resize (~7x faster than PIL, at most 1 gray
    # level off on < 1% of pixels); False: PIL, which inference always uses (as DETR)
    cfg.INPUT.DETR_TENSOR_RESIZE = True
    # Output size of DETR's shortest-edge resizes: "detr" (long side truncated; 640x480 at 800 ->
    # 1066x800) or "detectron2" (rounded: 1067x800)
    cfg.INPUT.DETR_RESIZE_RULE = "detr"
    # Skip (counted, logged) images with an unknown category or a missing or unreadable file
    # instead of stopping with an error naming them; evaluation: leave them out of the metrics
    cfg.DATALOADER.SKIP_BAD_IMAGES = False
    # COCOeval implementation, same AP: "hotcoco" (Rust, 0.4-1.6 s for 5k images x 100 detections),
    # "faster_coco_eval" (C++), "pycocotools" (the reference, 46-108 s; always for keypoints)
    cfg.TEST.COCO_EVAL_BACKEND = "hotcoco"
    # PQ implementation: "hotcoco" (fast, the same PQ / SQ / RQ) or "panopticapi" (Detectron2's)
    cfg.TEST.PANOPTIC_EVAL_BACKEND = "hotcoco"
    return cfg


def is_detr_config(cfg) -> bool:
    """Whether ``cfg`` builds a DETR model (META_ARCHITECTURE Detr*; DETR's data mappers)."""
    return cfg.MODEL.META_ARCHITECTURE.startswith("Detr")


def cap_num_workers(cfg):
    """Lower DATALOADER.NUM_WORKERS to the usable CPUs (more only compete), before freezing."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus and cfg.DATALOADER.NUM_WORKERS > cpus:
        logging.getLogger(__name__).info(
            f"DATALOADER.NUM_WORKERS = {cpus}, the CPU count (was {cfg.DATALOADER.NUM_WORKERS})"
        )
        cfg.DATALOADER.NUM_WORKERS = cpus
    return cfg


def merge_config_file(cfg, path: str):
    """``cfg.merge_from_file(path)``; ``_BASE_: "model_zoo://COCO-Detection/..."`` extends a config
    of Detectron2's model zoo (the baseline recipe, unchanged). A bad key or value raises a
    ``ValueError`` naming the file."""
    import yaml
    from detectron2.model_zoo import get_config_file

    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        base = raw.get("_BASE_", "")
        if isinstance(base, str) and base.startswith("model_zoo://"):
            cfg.merge_from_file(get_config_file(base[len("model_zoo://") :]))
            raw.pop("_BASE_")
            cfg.merge_from_other_cfg(CN(raw))
        else:
            cfg.merge_from_file(path)
    except (KeyError, ValueError, TypeError, AssertionError, yaml.YAMLError) as e:
        raise ValueError(f"Invalid config file {path}: {e}") from e
    return cfg
