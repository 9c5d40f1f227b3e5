#!/usr/bin/env python
"""DETR's attention over an image (paper Fig. 3: encoder self-attention; Fig. 6: decoder
cross-attention per predicted object).

    python tools/visualize_attention.py --config-file configs/detr_r50.yaml --input image.jpg \\
        MODEL.WEIGHTS output/detr_r50/model_final.pth --output-dir attention/
    python tools/visualize_attention.py --config-file configs/detr_r50.yaml --input image.jpg \\
        --points 120,200 400,310 --threshold 0.9 MODEL.WEIGHTS model.pth

Writes to ``--output-dir`` (default OUTPUT_DIR/attention):
  encoder_attention.png: the last encoder layer's self-attention (heads averaged) of the
    feature-map position under each reference point, over the image. ``--points x,y ...`` in
    pixels of the input image; default: the centres of the best detections.
  decoder_attention.png: the last decoder layer's cross-attention (heads averaged) of each
    detection's query (at most ``--topk`` above ``--threshold``), with its box.
Config overrides ("KEY VALUE") may come anywhere on the command line.
"""

import argparse
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torchvision.ops import box_convert

import detr_d2  # noqa: F401  registers Detr and the builtin datasets
from detr_d2.analysis.attention import (
    attention_to_image,
    detr_attention,
    image_points_to_feature_indices,
)
from detr_d2.analysis.inputs import build_analysis_model, setup_cfg
from detr_d2.analysis.predictor import Predictor, add_config_arguments, parse_tool_args
from detr_d2.data.register import register_coco_from_args

logger = logging.getLogger("detr_d2.visualize_attention")


def _point(text: str) -> Tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is x,y in pixels, got {text!r}") from None
    return x, y


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, metavar="IMAGE")
    parser.add_argument(
        "--points", type=_point, nargs="+", metavar="X,Y", help="encoder reference points (pixels)"
    )
    parser.add_argument(
        "--num-points", type=int, default=4, help="default points: this many detection centres"
    )
    parser.add_argument("--threshold", type=float, default=0.7, help="detection score threshold")
    parser.add_argument("--topk", type=int, default=6, help="at most this many detections")
    parser.add_argument("--output-dir", metavar="DIR", help="default: OUTPUT_DIR/attention")
    return add_config_arguments(parser)  # --register-coco, config overrides


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse_tool_args(get_parser(), argv, list_options=("--points",))


def select_detections(scores: torch.Tensor, threshold: float, topk: int) -> torch.Tensor:
    """Query indices of the best detections: at most ``topk`` scoring above ``threshold``, best
    first; the single best one (with a warning) when none does."""
    order = scores.argsort(descending=True)
    keep = order[scores[order] > threshold][:topk]
    if len(keep) == 0:
        logger.warning(f"No detection scores above {threshold}: showing the best one")
        keep = order[:1]
    return keep


def _overlay(ax, image_rgb: np.ndarray, heatmap: np.ndarray, title: str) -> None:
    ax.imshow(image_rgb)
    ax.imshow(heatmap, cmap="inferno", alpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _grid(num_panels: int, image_hw: Tuple[int, int], columns: int = 4):
    columns = min(columns, num_panels)
    rows = (num_panels + columns - 1) // columns
    h, w = image_hw
    panel = 3.0
    fig = Figure(figsize=(panel * columns, panel * h / w * rows + 0.3 * rows))
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[num_panels:]:
        fig.delaxes(ax)
    return fig, axes[:num_panels]


def draw_encoder_attention(
    image_rgb: np.ndarray, points: List[Tuple[float, float]], maps: List[np.ndarray], path: str
) -> None:
    """The image with the numbered reference points, then one attention map per point."""
    fig, axes = _grid(len(points) + 1, image_rgb.shape[:2])
    axes[0].imshow(image_rgb)
    axes[0].set_title("reference points", fontsize=9)
    axes[0].axis("off")
    for i, ((x, y), heatmap, ax) in enumerate(zip(points, maps, axes[1:]), 1):
        axes[0].plot(x, y, "o", color="red", markersize=5)
        axes[0].annotate(str(i), (x, y), color="red", xytext=(4, 4), textcoords="offset points")
        _overlay(ax, image_rgb, heatmap, f"point {i} ({x:.0f}, {y:.0f})")
        ax.plot(x, y, "o", color="cyan", markersize=4)
    fig.suptitle("Encoder self-attention, last layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def draw_decoder_attention(
    image_rgb: np.ndarray, boxes: np.ndarray, titles: List[str], maps: List[np.ndarray], path: str
) -> None:
    """One attention map per detection, with its box (XYXY pixels)."""
    fig, axes = _grid(len(maps), image_rgb.shape[:2])
    for (x0, y0, x1, y1), title, heatmap, ax in zip(boxes, titles, maps, axes):
        _overlay(ax, image_rgb, heatmap, title)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan", lw=1.5))
    fig.suptitle("Decoder cross-attention, last layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(args: argparse.Namespace) -> Dict:
    """Returns the maps drawn ("encoder": (P, H, W), "decoder": (K, H, W) over the image),
    "points", "queries" (the detections' query indices), "boxes" and the two PNG paths."""
    register_coco_from_args(args)
    cfg = setup_cfg(args.config_file, args.opts)
    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "attention")
    os.makedirs(output_dir, exist_ok=True)
    model = build_analysis_model(cfg)
    predictor = Predictor(cfg, model)
    image = read_image(args.input, format="BGR")
    image_rgb = np.ascontiguousarray(image[:, :, ::-1])
    image_hw = image.shape[:2]
    images = model.preprocess_image([predictor.inputs(image)])
    out = detr_attention(model, images)
    input_hw, padded_hw = images.image_sizes[0], tuple(images.tensor.shape[-2:])
    feature_hw = tuple(out["memory"].shape[-2:])

    scores, labels = out["pred_logits"][0].cpu().softmax(-1)[:, :-1].max(-1)
    h, w = image_hw
    boxes = box_convert(out["pred_boxes"][0].cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
    queries = select_detections(scores, args.threshold, args.topk)
    names = predictor.metadata.get("thing_classes", None)

    def to_image(attention):
        return attention_to_image(attention, input_hw, padded_hw, image_hw)

    if args.points:
        points = list(args.points)
    else:
        centres = (boxes[queries, :2] + boxes[queries, 2:]) / 2
        points = [tuple(map(float, c)) for c in centres[: args.num_points]]
    indices = image_points_to_feature_indices(points, image_hw, input_hw, padded_hw, feature_hw)
    encoder_maps = [to_image(m) for m in out["encoder_attention"][0].cpu()[indices]]
    encoder_path = os.path.join(output_dir, "encoder_attention.png")
    draw_encoder_attention(image_rgb, points, encoder_maps, encoder_path)

    decoder_maps = [to_image(m) for m in out["decoder_attention"][0].cpu()[queries]]
    titles = [
        f"query {q}: {names[labels[q]] if names else int(labels[q])} {scores[q]:.2f}"
        for q in queries.tolist()
    ]
    decoder_path = os.path.join(output_dir, "decoder_attention.png")
    draw_decoder_attention(image_rgb, boxes[queries].numpy(), titles, decoder_maps, decoder_path)
    logger.info(f"Wrote {encoder_path} ({len(points)} points) and {decoder_path} ({titles})")
    return {
        "encoder": np.stack(encoder_maps),
        "decoder": np.stack(decoder_maps),
        "points": points,
        "queries": queries.tolist(),
        "boxes": boxes[queries].numpy(),
        "encoder_png": encoder_path,
        "decoder_png": decoder_path,
    }


if __name__ == "__main__":
    for name in ("detectron2", "detr_d2"):
        setup_logger(name=name)
    main(parse_args())
