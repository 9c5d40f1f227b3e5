"""Panoptic DETR (paper Sec. 4.4): the box model plus a mask head, one mask per object query, things
and stuff alike; a pixel-wise argmax over the confident queries' masks gives the panoptic output
(:func:`combine_panoptic`)."""

import logging
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.file_io import PathManager
from PIL import Image
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys

from ..checkpoint.safe_load import load_checkpoint_safely
from .criterion import SetCriterionWithMasks
from .detr import Detr, absolute_xyxy
from .segmentation import MaskHead, MultiHeadAttentionMap

logger = logging.getLogger(__name__)


def add_panoptic_config(cfg):
    """The panoptic keys are in ``add_detr_config``; kept for older scripts."""
    from ..config import add_detr_config

    return add_detr_config(cfg)


def _is_thing_from_metadata(cfg, num_classes: int) -> List[bool]:
    """Which contiguous classes are things, from the first dataset's panoptic metadata."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    meta = MetadataCatalog.get(names[0]) if names else None
    if meta is None or not hasattr(meta, "stuff_dataset_id_to_contiguous_id"):
        logger.warning(
            f"No panoptic metadata (stuff_dataset_id_to_contiguous_id) for {names[:1]}: every "
            "class is treated as a thing (no stuff merging)."
        )
        return [True] * num_classes
    thing_ids = set(meta.thing_dataset_id_to_contiguous_id.values())
    return [c in thing_ids for c in range(num_classes)]


@META_ARCH_REGISTRY.register()
class DetrPanoptic(Detr):
    """DETR with a mask head (``bbox_attention``, ``mask_head``: the official names).

    Input: as :class:`Detr`, with ``gt_masks`` (BitMasks) in training. Output in eval, per image
    (in the original "height"/"width"): "panoptic_seg" (see :func:`combine_panoptic`) and
    "instances": every query whose best real class is a thing, with ``pred_masks`` (bool
    (T, H, W), sigmoid > 0.5), ``pred_boxes`` (XYXY), ``scores``, ``pred_classes``.

    With ``frozen_weights`` (stage 2 of the paper's recipe) the box model (every module but the
    two above) is frozen (``requires_grad=False``, BatchNorm in eval mode) and only the mask
    losses are computed. Its weights come from the loaded weights when those hold the whole box
    model (a stage-2 checkpoint is self-contained), else from ``frozen_weights``, read at
    construction if the file exists; see :meth:`load_state_dict`.
    """

    @configurable
    def __init__(
        self,
        *,
        is_thing: Sequence[bool],
        num_attention_heads: int,
        mask_in_features: Sequence[str] = ("res4", "res3", "res2"),
        mask_head_groups: int = 8,
        panoptic_conf_thresh: float = 0.85,
        panoptic_min_area: int = 4,
        frozen_weights: str = "",
        **kwargs,
    ):
        """is_thing: K bools; num_attention_heads: M maps per query; mask_in_features: 3
        backbone features, coarse to fine; panoptic_conf_thresh: queries whose most likely class
        (no object included) is real with probability above this are kept (0.85 in DETR);
        frozen_weights: the box model's checkpoint ("": joint training); kwargs: :class:`Detr`'s.
        """
        super().__init__(**kwargs)
        if len(is_thing) != self.num_classes:
            raise ValueError(f"is_thing has {len(is_thing)} entries for {self.num_classes} classes")
        shapes = self.backbone.output_shape()
        if absent := [f for f in mask_in_features if f not in shapes]:
            raise ValueError(
                f"The mask head needs backbone features {absent}: add them to "
                f"MODEL.RESNETS.OUT_FEATURES (has {list(shapes)})"
            )
        d = self.transformer.d_model
        self.bbox_attention = MultiHeadAttentionMap(d, d, num_attention_heads)
        channels = [shapes[f].channels for f in mask_in_features]
        self.mask_head = MaskHead(d + num_attention_heads, channels, d, mask_head_groups)
        self.mask_in_features = list(mask_in_features)
        self.panoptic_conf_thresh, self.panoptic_min_area = panoptic_conf_thresh, panoptic_min_area
        self.register_buffer("is_thing", torch.as_tensor(list(is_thing), dtype=torch.bool), False)
        self.frozen_weights, self.box_model_frozen = frozen_weights, bool(frozen_weights)
        self.box_weights_from = ""  # the file the box model's weights came from ("": none yet)
        if frozen_weights:
            for name, p in self.named_parameters():
                if self.in_box_model(name):
                    p.requires_grad_(False)
            self.train(self.training)
            if PathManager.exists(frozen_weights):
                self.load_frozen_weights(frozen_weights)
            else:  # fine for a complete checkpoint (eval, resume); else an error once needed
                logger.info(
                    f"MODEL.DETR.FROZEN_WEIGHTS {frozen_weights} does not exist: the box model "
                    "must come from the weights loaded next (MODEL.WEIGHTS or a resumed checkpoint)"
                )

    @classmethod
    def build_criterion(cls, cfg):
        """Detr's set loss plus the mask losses; with a frozen box model only the mask losses,
        on the final layer (the box losses would be constants)."""
        d = cfg.MODEL.DETR
        frozen = bool(d.FROZEN_WEIGHTS)
        return super().build_criterion(
            cfg,
            SetCriterionWithMasks,
            extra_weights={"loss_mask": d.MASK_WEIGHT, "loss_dice": d.DICE_WEIGHT},
            losses=("masks",) if frozen else ("labels", "boxes", "masks"),
            deep_supervision=d.DEEP_SUPERVISION and not frozen,
        )

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        return dict(
            super().from_config(cfg), frozen_weights=d.FROZEN_WEIGHTS,
            is_thing=_is_thing_from_metadata(cfg, d.NUM_CLASSES), num_attention_heads=d.NHEADS,
            mask_in_features=d.MASK_HEAD_IN_FEATURES, mask_head_groups=d.MASK_HEAD_GROUPS,
            panoptic_conf_thresh=d.PANOPTIC_CONF_THRESH, panoptic_min_area=d.PANOPTIC_MIN_AREA,
        )  # fmt: skip

    @staticmethod
    def in_box_model(name: str) -> bool:
        """Whether a parameter / buffer / module name belongs to the box model (every module but
        the two DetrPanoptic adds; MODEL.DETR.FROZEN_WEIGHTS)."""
        return not (name + ".").startswith(("bbox_attention.", "mask_head."))

    def _box_keys(self) -> List[str]:
        """State-dict keys of the box model but ``num_batches_tracked`` (absent from converted
        weights, unused by a frozen model)."""
        keys = [k for k in nn.Module.state_dict(self) if self.in_box_model(k)]
        return [k for k in keys if not k.endswith("num_batches_tracked")]

    def _no_box_weights(self, reason: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"MODEL.DETR.FROZEN_WEIGHTS {self.frozen_weights} does not exist and {reason}. "
            "Train the box stage first (the mask-stage configs expect its "
            "OUTPUT_DIR/model_final.pth), or give MODEL.WEIGHTS a complete panoptic checkpoint."
        )

    def load_frozen_weights(self, path: str):
        """Fill the box model from ``path``, a file whose state dict (maybe under "model") has
        all box-model keys."""
        checkpoint = load_checkpoint_safely(PathManager.get_local_path(path))
        state = checkpoint.get("model", checkpoint)
        box_keys = self._box_keys()
        missing = [k for k in box_keys if k not in state]
        if missing:
            raise ValueError(
                f"FROZEN_WEIGHTS {path} lacks {len(missing)} box-model tensors, e.g. {missing[:5]}"
            )
        box_state = {k: torch.as_tensor(state[k]) for k in box_keys}
        nn.Module.load_state_dict(self, box_state, strict=False)
        self.box_weights_from = path
        logger.info(f"Box model loaded from {path} and frozen ({len(box_keys)} tensors)")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """With a frozen box model: a ``state_dict`` holding the whole box model loads as a whole;
        one holding part of it (e.g. an ImageNet backbone) or none loads only the mask head, the
        box model keeping FROZEN_WEIGHTS (its keys are then not reported missing)."""
        box_keys = self._box_keys() if self.box_model_frozen else []
        held = [k for k in box_keys if k in state_dict]
        if len(held) == len(box_keys):  # nothing frozen, or the whole box model
            result = super().load_state_dict(state_dict, strict, assign)
            if self.box_model_frozen and self.box_weights_from:
                logger.info(
                    f"The loaded weights hold the box model: it replaces FROZEN_WEIGHTS "
                    f"{self.box_weights_from}, which only starts stage 2"
                )
            self.box_weights_from = "the loaded weights"
            return result
        if not self.box_weights_from:
            raise self._no_box_weights(
                f"the loaded weights hold {len(held)} of the {len(box_keys)} box-model tensors"
            )
        if held:
            logger.warning(
                f"The loaded weights hold {len(held)} of the {len(box_keys)} box-model tensors: "
                f"skipped, the box model keeps FROZEN_WEIGHTS {self.box_weights_from}"
            )
        state_dict = {k: v for k, v in state_dict.items() if not self.in_box_model(k)}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self.in_box_model(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"Error loading DetrPanoptic: missing keys {missing}, "
                f"unexpected keys {result.unexpected_keys}"
            )
        return _IncompatibleKeys(missing, result.unexpected_keys)

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "box_model_frozen", False):  # running statistics stay frozen too
            for name, m in self.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and self.in_box_model(name):
                    m.eval()
        return self

    def forward_raw(self, images: ImageList) -> Dict:
        """:meth:`Detr.forward_raw` plus "pred_masks": (B, N, H/4, W/4) mask logits over the
        padded batch."""
        if self.box_model_frozen and not self.box_weights_from:
            raise self._no_box_weights("no weights loaded into the model hold the box model")
        outputs = super().forward_raw(images)
        features = outputs["backbone_features"]
        attention = self.bbox_attention(outputs["hs"][-1], outputs["memory"], outputs["mask"])
        outputs["pred_masks"] = self.mask_head(
            outputs["projected"], attention, [features[f] for f in self.mask_in_features]
        )
        return outputs

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """:meth:`Detr.prepare_targets` plus "masks" (M, H, W) bool: each image's gt_masks
        zero-padded to the batch's padded size (H, W)."""
        targets = super().prepare_targets(batched_inputs, images)
        for t, x in zip(targets, batched_inputs):
            masks = x["instances"].gt_masks.tensor.to(self.device)
            padded = masks.new_zeros((len(masks), *images.tensor.shape[-2:]))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            t["masks"] = padded
        return targets

    def postprocess(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList):
        """Per image {"panoptic_seg", "instances"} (see the class docstring) from its logits
        (N, K+1), boxes (N, 4) normalized cxcywh and mask logits (N, h, w) over the padded batch."""
        padded_hw = tuple(images.tensor.shape[-2:])
        per_image = zip(outputs["pred_logits"], outputs["pred_boxes"], outputs["pred_masks"])
        results = []
        for (logits, boxes, masks), x, hw in zip(per_image, batched_inputs, images.image_sizes):
            output_hw = (x.get("height", hw[0]), x.get("width", hw[1]))
            probs = logits.softmax(-1)
            # the original's rule: the most likely class, no-object included, is real and above
            # the threshold (for a threshold >= 0.5 the same as the best real class alone)
            top_scores, top_classes = probs.max(-1)
            keep = (top_classes != probs.shape[-1] - 1) & (top_scores > self.panoptic_conf_thresh)
            mask_logits = resize_mask_logits(masks[keep], padded_hw, hw, hw)
            kept = (top_scores[keep], top_classes[keep], mask_logits, self.is_thing.tolist())
            panoptic_seg = combine_panoptic(*kept, self.panoptic_min_area, output_hw)
            scores, classes = probs[:, :-1].max(-1)
            idx = self.select_detections(scores, self.is_thing[classes])
            xyxy = absolute_xyxy(boxes[idx], output_hw)
            instances = Instances(output_hw, pred_boxes=Boxes(xyxy), scores=scores[idx])
            instances.pred_boxes.clip(output_hw)
            instances.pred_classes = classes[idx]
            chunks = masks[idx].split(16)  # N full-resolution float masks at once can be large
            pred_masks = [resize_mask_logits(m, padded_hw, hw, output_hw) > 0 for m in chunks]
            instances.pred_masks = torch.cat(pred_masks)  # split gives one chunk even of 0 masks
            results.append({"panoptic_seg": panoptic_seg, "instances": instances})
        return results


def resize_mask_logits(masks: Tensor, padded_hw, image_hw, output_hw) -> Tensor:
    """Mask logits (Q, h, w) over a padded batch -> (Q, *output_hw): upsampled (bilinear) to
    ``padded_hw``, cropped to the image's ``image_hw``, resized (bilinear) to ``output_hw`` (the
    original stretches the padded masks over the image, shifting them in batches of mixed sizes)."""
    if len(masks) == 0:
        return masks.new_zeros((0, *output_hw))
    x = F.interpolate(masks[None].float(), size=padded_hw, mode="bilinear", align_corners=False)
    x = x[:, :, : image_hw[0], : image_hw[1]]
    if tuple(image_hw) != tuple(output_hw):
        x = F.interpolate(x, size=output_hw, mode="bilinear", align_corners=False)
    return x[0]


def _resize_nearest(index_map: Tensor, output_hw) -> Tensor:
    """(h, w) int64 -> (H, W) int64 on the CPU, by PIL's nearest filter (the original's)."""
    if tuple(index_map.shape) == tuple(output_hw):
        return index_map.cpu()
    image = Image.fromarray(index_map.cpu().numpy().astype(np.int32), mode="I")
    resized = image.resize((output_hw[1], output_hw[0]), resample=Image.NEAREST)
    return torch.from_numpy(np.asarray(resized).astype(np.int64))


def combine_panoptic(scores, classes, mask_logits, is_thing, min_area: int, output_hw=None):
    """Non-overlapping segments of the kept queries, as the original's PostProcessPanoptic:
    (1) every pixel goes to the query of highest mask logit; (2) queries of one stuff class fold
    into the first of them; (3) the query map is resized to the output with PIL's nearest filter;
    (4) queries of at most ``min_area`` pixels are removed and steps 1 and 3 redone until none is
    that small. Segment ids start at 1 (Detectron2's ``panoptic_seg``, 0 = void), the original's
    at 0.

    Args:
        scores, classes: (Q,) tensors, confidence and contiguous class id of each kept query.
        mask_logits: (Q, h, w) their mask logits over the image at network-input resolution.
        is_thing: for each contiguous class id, whether it is a thing.
        min_area: queries covering at most this many output pixels are removed.
        output_hw: (H, W) of the output, or None: (h, w).
    Returns:
        Detectron2's ``panoptic_seg``: int32 (H, W) segment ids on ``mask_logits``' device
        (0 = void, where no query is kept) and per segment (in query order) {"id" (1..S),
        "category_id" (contiguous), "isthing", "score", "area" (pixels)}.
    """
    num = len(scores)
    output_hw = tuple(output_hw or mask_logits.shape[-2:])
    device = mask_logits.device
    # step 2: the first query of each stuff class stands for all of them
    first_of_class: Dict[int, int] = {}
    fold = torch.arange(num, device=device)
    for q, c in enumerate(classes.tolist()):
        if not is_thing[c]:
            fold[q] = first_of_class.setdefault(c, q)
    alive = torch.ones(num, dtype=torch.bool, device=device)
    index, area, first_pass = None, None, True
    while alive.any():
        queries = alive.nonzero()[:, 0]
        winner = queries[mask_logits[queries].argmax(0)]  # (h, w) query index
        if first_pass:
            winner = fold[winner]
        index = _resize_nearest(winner, output_hw)
        area = torch.bincount(index.flatten(), minlength=num).to(device)
        small = alive & (area <= min_area)
        if not small.any():
            break
        alive &= ~small
        first_pass = False
    panoptic = torch.zeros(output_hw, dtype=torch.int32, device=device)
    segments_info: List[Dict] = []
    if not alive.any():
        return panoptic, segments_info
    new_id = torch.zeros(num, dtype=torch.int32)
    for q in alive.nonzero()[:, 0].tolist():
        new_id[q] = len(segments_info) + 1
        c = int(classes[q])
        info = {"id": len(segments_info) + 1, "category_id": c, "isthing": bool(is_thing[c])}
        segments_info.append(dict(info, score=float(scores[q]), area=int(area[q])))
    return new_id[index].to(device), segments_info
