#!/usr/bin/env python
"""DETR's attention over an image (paper Fig. 3: encoder self-attention; Fig. 6: decoder
cross-attention per predicted object).

    python tools/visualize_attention.py --config-file configs/detr_r50.yaml --input image.jpg \\
        --points 120,200 400,310 --threshold 0.9 MODEL.WEIGHTS model.pth --output-dir attention/

Writes to ``--output-dir`` (default OUTPUT_DIR/attention):
  encoder_attention.png: the last encoder layer's self-attention (heads averaged) of the
    feature-map position under each reference point (``--points x,y ...`` in pixels of the
    input image; default: the centres of the best detections).
  decoder_attention.png: the last decoder layer's cross-attention (heads averaged) of each
    detection's query (at most ``--topk`` above ``--threshold``), with its box.
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import argparse

import detr_d2_cli as cli


def _point(text: str):
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is x,y in pixels, got {text!r}") from None
    return x, y


def get_parser():
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--input", required=True, metavar="IMAGE")
    points = "encoder reference points (pixels)"
    parser.add_argument("--points", type=_point, nargs="+", metavar="X,Y", help=points)
    num_points = "default points: this many detection centres"
    parser.add_argument("--num-points", type=int, default=4, help=num_points)
    parser.add_argument("--threshold", type=float, default=0.7, help="detection score threshold")
    parser.add_argument("--topk", type=int, default=6, help="at most this many detections")
    cli.add_flags(parser, "output_dir", "random_weights")
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
import os
from typing import Dict

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.structures import ImageList
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn
from torchvision.ops import box_convert

from detr_d2.engine.predictor import Predictor, load_model
from detr_d2.modeling.panoptic import resize_mask_logits

logger = logging.getLogger("detr_d2.visualize_attention")

FIGURE_TITLES = {"encoder": "Encoder self-attention", "decoder": "Decoder cross-attention"}


def _ask_for_weights(module, args, kwargs):
    # DETR calls its attention modules with need_weights=False (by keyword)
    return args, dict(kwargs, need_weights=True, average_attn_weights=True)


@torch.no_grad()
def detr_attention(model: nn.Module, images: ImageList) -> Dict:
    """``model.forward_raw(images)`` (a Detr in eval mode) plus, heads averaged, of the last layers:
    "encoder_attention" (B, h*w, h, w): each feature position's (row-major) self-attention;
    "decoder_attention" (B, N, h, w): each query's cross-attention. Both sum to 1 over the
    positions where "mask" is False. The hooks that ask for the weights are removed after."""
    last = model.transformer.encoder.layers[-1], model.transformer.decoder.layers[-1]
    modules = {"encoder": last[0].self_attn, "decoder": last[1].multihead_attn}
    records, handles = {}, []
    try:
        for name, module in modules.items():

            def keep(module, args, output, name=name):
                records[name] = output[1]

            handles.append(module.register_forward_pre_hook(_ask_for_weights, with_kwargs=True))
            handles.append(module.register_forward_hook(keep))
        outputs = model.forward_raw(images)
    finally:
        for handle in handles:
            handle.remove()
    b, _, h, w = outputs["memory"].shape
    outputs["encoder_attention"] = records["encoder"].reshape(b, h * w, h, w)
    outputs["decoder_attention"] = records["decoder"].reshape(b, -1, h, w)
    return outputs


def image_points_to_feature_indices(points, image_size, input_size, padded_size, feature_size):
    """(P,) int64 flattened (row-major) feature-map indices of P (x, y) pixels of the original
    image, clamped to the map. Sizes are (h, w) of the original image, the network input, the
    padded batch and the feature map (which spans the padded batch)."""
    pts = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    (ih, iw), (nh, nw), (ph, pw), (fh, fw) = image_size, input_size, padded_size, feature_size
    cols = (pts[:, 0] * nw / iw * fw / pw).floor().long().clamp(0, fw - 1)
    rows = (pts[:, 1] * nh / ih * fh / ph).floor().long().clamp(0, fh - 1)
    return rows * fw + cols


def draw_maps(image_rgb, maps, titles, path, suptitle, points=(), boxes=()) -> None:
    """One panel per attention map over the image, 4 per row; with ``points``, a first panel
    of the numbered points and each map's point; with ``boxes`` (XYXY pixels), each map's box."""
    first = 1 if len(points) else 0
    num_panels = len(maps) + first
    columns = min(4, num_panels)
    rows = (num_panels + columns - 1) // columns
    h, w = image_rgb.shape[:2]
    fig = Figure(figsize=(3.0 * columns, 3.0 * h / w * rows + 0.3 * rows))
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[num_panels:]:
        fig.delaxes(ax)
    for ax, title in zip(axes, ["reference points"] * first + list(titles)):
        ax.imshow(image_rgb)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    for ax, heatmap in zip(axes[first:], maps):
        ax.imshow(heatmap, cmap="inferno", alpha=0.6)
    for i, (x, y) in enumerate(points, 1):
        axes[0].plot(x, y, "o", color="red", markersize=5)
        axes[0].annotate(str(i), (x, y), color="red", xytext=(4, 4), textcoords="offset points")
        axes[i].plot(x, y, "o", color="cyan", markersize=4)
    for ax, (x0, y0, x1, y1) in zip(axes, boxes):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan", lw=1.5))
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(args) -> Dict:
    """Returns the maps drawn ("encoder": (P, H, W), "decoder": (K, H, W) over the image),
    "points", "queries" (the detections' query indices), "boxes" and the two PNG paths."""
    cfg = cli.setup_cfg(args)
    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "attention")
    os.makedirs(output_dir, exist_ok=True)
    image = read_image(args.input, format="BGR")
    h, w = image.shape[:2]
    outside = [(x, y) for x, y in args.points or () if not (0 <= x < w and 0 <= y < h)]
    if outside:  # before the model is loaded
        raise ValueError(
            f"--points {' '.join(f'{x:g},{y:g}' for x, y in outside)} outside the image "
            f"{args.input} of {w}x{h} pixels (x in [0, {w}), y in [0, {h}))"
        )
    model = load_model(cfg, args.random_weights)
    predictor = Predictor(cfg, model)
    images = model.preprocess_image([predictor.inputs(image)])
    out = detr_attention(model, images)
    input_size, padded_size = tuple(images.image_sizes[0]), tuple(images.tensor.shape[-2:])

    scores, labels = out["pred_logits"][0].cpu().softmax(-1)[:, :-1].max(-1)
    boxes = box_convert(out["pred_boxes"][0].cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
    # at most --topk detections above --threshold, best first; else the best one
    order = scores.argsort(descending=True)
    queries = order[scores[order] > args.threshold][: args.topk]
    if len(queries) == 0:
        logger.warning(f"No detection scores above {args.threshold}: showing the best one")
        queries = order[:1]
    centres = (boxes[queries, :2] + boxes[queries, 2:]) / 2  # the default points
    points = list(args.points or [tuple(map(float, c)) for c in centres[: args.num_points]])
    indices = image_points_to_feature_indices(
        points, (h, w), input_size, padded_size, out["memory"].shape[-2:]
    )
    names = predictor.metadata.get("thing_classes", None)
    decoder_titles = [
        f"query {q}: {names[labels[q]] if names else int(labels[q])} {scores[q]:.2f}"
        for q in queries.tolist()
    ]
    point_titles = [f"point {i} ({x:.0f}, {y:.0f})" for i, (x, y) in enumerate(points, 1)]
    result = {"points": points, "queries": queries.tolist(), "boxes": boxes[queries].numpy()}
    panels = (  # kind, rows of its attention, titles, marks
        ("encoder", indices, point_titles, dict(points=points)),
        ("decoder", queries, decoder_titles, dict(boxes=result["boxes"])),
    )
    image_rgb = np.ascontiguousarray(image[:, :, ::-1])
    for kind, rows, titles, marks in panels:
        attention = out[f"{kind}_attention"][0].cpu()[rows]
        maps = resize_mask_logits(attention, padded_size, input_size, (h, w)).numpy()
        path = os.path.join(output_dir, f"{kind}_attention.png")
        draw_maps(image_rgb, maps, titles, path, f"{FIGURE_TITLES[kind]}, last layer", **marks)
        result.update({kind: maps, f"{kind}_png": path})
    logger.info(
        f"Wrote {result['encoder_png']} ({len(points)} points) and {result['decoder_png']} "
        f"({decoder_titles})"
    )
    return result


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
