"""The DETR meta-architecture: backbone -> transformer -> set predictions (paper Sec. 3.2)."""

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn
from torchvision.ops import box_convert

from .criterion import SetCriterion
from .inference_backbone import InferenceBackboneCache
from .matcher import HungarianMatcher
from .position_encoding import build_position_encoding
from .transformer import Transformer


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between (the box head: 3 layers)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def absolute_xyxy(boxes: Tensor, hw) -> Tensor:
    """(M, 4) normalized cxcywh boxes -> absolute XYXY in an image of size ``hw`` (h, w)."""
    h, w = hw
    return box_convert(boxes, "cxcywh", "xyxy") * torch.as_tensor([w, h, w, h]).to(boxes)


def undilate_first_res5_block(backbone: nn.Module) -> None:
    """DC5 as torchvision builds it, for the official DETR-DC5 weights: the 3x3 conv of
    ``backbone.res5[0]`` (a Detectron2 ResNet) set to dilation 1, in place. Detectron2's
    ``RES5_DILATION: 2`` dilates every res5 block (same weights, outputs differ: logits by 0.1-0.2
    on converted DETR-DC5 R50 weights)."""
    res5 = getattr(backbone, "res5", None)
    conv = getattr(res5[0], "conv2", None) if isinstance(res5, nn.Sequential) else None
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (3, 3):
        raise ValueError(
            f"MODEL.DETR.DC5_TORCHVISION needs a Detectron2 ResNet with bottleneck blocks (res5[0]."
            f"conv2 a 3x3 conv); {type(backbone).__name__} has none: set it to False"
        )
    conv.dilation, conv.padding = (1, 1), (1, 1)


@META_ARCH_REGISTRY.register()
class Detr(nn.Module):
    """DETR for Detectron2. Input: Detectron2's list of dicts ("image" (3, H, W); in training
    "instances" with gt_boxes absolute XYXY and gt_classes). Output in eval: per image
    {"instances"} with ``pred_boxes`` (XYXY in the original "height"/"width"), ``scores``,
    ``pred_classes``; in training: the weighted loss dict."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        transformer: Transformer,
        position_embedding: nn.Module,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int,
        pixel_mean: List[float],
        pixel_std: List[float],
        backbone_feature: Optional[str] = None,
        size_divisibility: int = 0,
        test_score_thresh: float = 0.0,
        test_topk: int = 0,
        fast_inference: bool = True,
    ):
        """num_classes K (the class head has K + 1 outputs, last = no object); num_queries N;
        size_divisibility: pad batches to a multiple of this; test_score_thresh, test_topk:
        filtering at inference (0 = off); fast_inference: in eval, run a copy of the backbone
        with its norms folded into the convolutions (same outputs within float rounding)."""
        super().__init__()
        self.backbone = backbone
        self.backbone_feature = backbone_feature or backbone._out_features[-1]
        in_channels = backbone.output_shape()[self.backbone_feature].channels
        hidden_dim = transformer.d_model
        self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.criterion = criterion  # its deep_supervision: losses of the auxiliary outputs too
        self.num_classes, self.num_queries = num_classes, num_queries
        self.size_divisibility, self.fast_inference = size_divisibility, fast_inference
        self.test_score_thresh, self.test_topk = test_score_thresh, test_topk
        self._inference_backbone = InferenceBackboneCache()
        self._register_load_state_dict_pre_hook(lambda *args: self._inference_backbone.clear())
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        if d.NUM_CLASSES < 1:  # -1 ("from the data") is for resolve_num_classes to replace
            raise ValueError(
                f"MODEL.DETR.NUM_CLASSES is {d.NUM_CLASSES}: set the class count, or resolve -1 "
                "(from the data) with detr_d2.engine.checks.resolve_num_classes"
            )
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        if cfg.MODEL.RESNETS.RES5_DILATION > 1 and d.DC5_TORCHVISION:
            undilate_first_res5_block(backbone)
        transformer = Transformer(
            d_model=d.HIDDEN_DIM, nhead=d.NHEADS, num_encoder_layers=d.ENC_LAYERS,
            num_decoder_layers=d.DEC_LAYERS, dim_feedforward=d.DIM_FEEDFORWARD, dropout=d.DROPOUT,
            normalize_before=d.PRE_NORM, use_ffn=d.USE_FFN, pos_at=d.POSITION_EMBEDDING_AT,
            query_pos_at=d.QUERY_POS_AT,
        )  # fmt: skip
        return {
            "backbone": backbone, "transformer": transformer,
            "position_embedding": build_position_encoding(d.POSITION_EMBEDDING, d.HIDDEN_DIM),
            "criterion": cls.build_criterion(cfg),
            "num_classes": d.NUM_CLASSES, "num_queries": d.NUM_OBJECT_QUERIES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
            "backbone_feature": d.BACKBONE_FEATURE or None, "fast_inference": d.FAST_INFERENCE,
            "size_divisibility": d.SIZE_DIVISIBILITY, "test_score_thresh": d.TEST_SCORE_THRESH,
            "test_topk": d.TEST_TOPK,
        }  # fmt: skip

    @classmethod
    def build_criterion(cls, cfg, criterion=SetCriterion, extra_weights=None, **kwargs):
        """The set loss ``criterion`` of MODEL.DETR (COST_*, *_WEIGHT plus ``extra_weights``);
        ``kwargs`` override its keyword arguments."""
        d = cfg.MODEL.DETR
        matcher = HungarianMatcher(d.COST_CLASS, d.COST_BBOX, d.COST_GIOU)
        weights = dict(loss_ce=d.CLASS_WEIGHT, loss_bbox=d.BBOX_WEIGHT, loss_giou=d.GIOU_WEIGHT)
        weights.update(extra_weights or {})
        kwargs = {"eos_coef": d.NO_OBJECT_WEIGHT, "deep_supervision": d.DEEP_SUPERVISION, **kwargs}
        return criterion(d.NUM_CLASSES, matcher, weights, **kwargs)

    def train(self, mode: bool = True):
        self._inference_backbone.clear()  # weights may change: rebuild the folded copy next eval
        return super().train(mode)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalize each image and zero-pad the batch (padding is 0 after normalization)."""
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    @staticmethod
    def padding_mask(images: ImageList) -> Tensor:
        """(B, H, W) bool, True where a pixel is padding."""
        mask = torch.ones_like(images.tensor[:, 0], dtype=torch.bool)
        for m, (ih, iw) in zip(mask, images.image_sizes):
            m[:ih, :iw] = False
        return mask

    def forward_raw(self, images: ImageList) -> Dict:
        """:meth:`forward_tensors` of a normalized, padded batch (B, 3, H, W), through the
        folded backbone copy in eval mode when ``fast_inference``."""
        x, backbone = images.tensor, None
        if self.fast_inference and not self.training:
            x = x.contiguous(memory_format=torch.channels_last)
            backbone = self._inference_backbone.get(self.backbone)
        return self.forward_tensors(x, self.padding_mask(images), backbone)

    def forward_tensors(self, x: Tensor, padding_mask: Tensor, backbone=None) -> Dict:
        """x: (B, 3, H, W) normalized images, zero-padded at the bottom/right; padding_mask:
        (B, H, W) bool, True at padding; backbone: run instead of ``self.backbone``. Returns
        "pred_logits" (B, N, K+1), "pred_boxes" (B, N, 4) normalized cxcywh of the unpadded image,
        "aux_outputs" (L-1 such dicts, earlier layers first), "memory" (B, d, h, w) with its mask
        "mask" (B, h, w), "hs" (L, B, N, d), "projected" (B, d, h, w) the transformer's input and
        "backbone_features" (the backbone's output dict)."""
        backbone_features = (self.backbone if backbone is None else backbone)(x)
        features = backbone_features[self.backbone_feature]
        # the feature size comes from the tensor, so exporters keep it symbolic
        mask = F.interpolate(padding_mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        pos = self.position_embedding(mask).to(features.dtype)
        projected = self.input_proj(features)
        hs, memory = self.transformer(projected, mask, self.query_embed.weight, pos)
        logits = self.class_embed(hs)  # (L, B, N, K+1)
        boxes = self.bbox_embed(hs).sigmoid()  # (L, B, N, 4)
        aux = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return {
            "pred_logits": logits[-1], "pred_boxes": boxes[-1], "aux_outputs": aux,
            "memory": memory, "mask": mask, "hs": hs, "projected": projected,
            "backbone_features": backbone_features,
        }  # fmt: skip

    def forward(self, batched_inputs: List[Dict]):
        """Training: the weighted loss dict; eval: :meth:`postprocess`. Subclasses change
        :meth:`prepare_targets`, :meth:`postprocess` and :meth:`forward_raw`, not this."""
        images = self.preprocess_image(batched_inputs)
        outputs = self.forward_raw(images)
        if self.training:
            return self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        return self.postprocess(outputs, batched_inputs, images)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Ground truth as "labels" (M,) and "boxes" (M, 4) cxcywh normalized by the image size
        (``images``, the padded batch, is for subclasses)."""
        targets = []
        for x in batched_inputs:
            inst = x["instances"]  # only its boxes and classes to the device (not gt_masks)
            h, w = inst.image_size
            scale = torch.as_tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = box_convert(inst.gt_boxes.tensor.to(self.device) / scale, "xyxy", "cxcywh")
            targets.append({"labels": inst.gt_classes.to(self.device), "boxes": boxes})
        return targets

    def postprocess(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList):
        """Per image {"instances"} in its "height" / "width" (default: the network input's)."""
        results = self.inference(outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes)
        return [
            {"instances": detector_postprocess(r, x.get("height", hw[0]), x.get("width", hw[1]))}
            for r, x, hw in zip(results, batched_inputs, images.image_sizes)
        ]

    def select_detections(self, scores: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """Indices of the queries ``keep`` (N,) bool marks (default: all) above
        ``test_score_thresh``, then the ``test_topk`` best (each if > 0)."""
        keep = torch.ones_like(scores, dtype=torch.bool) if keep is None else keep
        if self.test_score_thresh > 0:
            keep = keep & (scores > self.test_score_thresh)
        idx = keep.nonzero()[:, 0]
        if 0 < self.test_topk < len(idx):
            idx = idx[scores[idx].topk(self.test_topk).indices]
        return idx

    def inference(self, logits: Tensor, boxes: Tensor, image_sizes) -> List[Instances]:
        """Score each query by its best real class (no-object excluded: +2 AP, see the paper).
        logits: (B, N, K+1); boxes: (B, N, 4) normalized cxcywh; image_sizes: B (h, w) of the
        unpadded network input. Returns Instances in those input coordinates."""
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        results = []
        for s, c, b, hw in zip(scores, labels, boxes, image_sizes):
            idx = self.select_detections(s)
            xyxy = Boxes(absolute_xyxy(b[idx], hw))
            results.append(Instances(hw, pred_boxes=xyxy, scores=s[idx], pred_classes=c[idx]))
        return results
