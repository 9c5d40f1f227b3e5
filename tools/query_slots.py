#!/usr/bin/env python
"""Box centres predicted by each object query ("slot") over a dataset (DETR paper, Fig. 7).

    python tools/query_slots.py --config-file configs/detr_r50.yaml \\
        MODEL.WEIGHTS output/detr_r50/model_final.pth --output slots.png
    python tools/query_slots.py --config-file configs/quickstart/detr_shapes.yaml \\
        --dataset shapes_val --slots 0 1 2 3 --num-images 100 MODEL.WEIGHTS model.pth

Every prediction of the last decoder layer counts, whatever its class or score. One scatter per
slot in ``--slots`` (default: the first 20), each point a box centre in the image normalized to
the unit square: green for small boxes, red for large horizontal ones, blue for large vertical
ones. Your own COCO-format set: ``--register-coco NAME JSON IMAGE_ROOT --dataset NAME``.
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli

SMALL_SIZE = 0.25  # of the image side, w and h normalized: see --small-size


def get_parser():
    parser = cli.argument_parser(__doc__)
    cli.add_flags(parser, "dataset", "num_images", "log_period", "random_weights")
    cli.add_flags(parser, "output", output=dict(help="PNG, default OUTPUT_DIR/query_slots.png"))
    parser.set_defaults(num_images=0)  # all
    parser.add_argument("--slots", type=int, nargs="+", help="query indices (default: first 20)")
    parser.add_argument("--columns", type=int, default=5, help="subplots per row")
    small = "a box is small when sqrt(w*h) is below this fraction of the image"
    parser.add_argument("--small-size", type=float, default=SMALL_SIZE, help=small)
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
import os
from typing import Dict

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from detr_d2.engine.predictor import dataset_loader, load_model, with_progress

logger = logging.getLogger("detr_d2.query_slots")

COLORS = {"small": (0.1, 0.7, 0.1), "horizontal": (0.85, 0.1, 0.1), "vertical": (0.1, 0.2, 0.9)}


@torch.no_grad()
def collect_slot_boxes(model: torch.nn.Module, cfg, dataset_name: str, num_images=0, log_period=50):
    """The final decoder layer's boxes of every slot on (the first ``num_images`` of) a dataset:
    (I, N, 4) normalized cxcywh (relative to each unpadded image), on the CPU."""
    if not hasattr(model, "forward_raw"):
        raise TypeError(f"{type(model).__name__} is not a DETR model (no forward_raw)")
    model.eval()
    loader, dicts = dataset_loader(cfg, dataset_name, num_images)
    progress = with_progress(loader, len(dicts), every=log_period, name="query slots")
    boxes = [model.forward_raw(model.preprocess_image(x))["pred_boxes"].cpu() for x in progress]
    return torch.cat(boxes)


def box_colors(boxes: Tensor, small_size: float = SMALL_SIZE) -> np.ndarray:
    """(M, 3) RGB colors of (M, 4) normalized cxcywh boxes: green when sqrt(w * h) <
    ``small_size``, else red when w >= h, blue when w < h."""
    w, h = boxes[:, 2].numpy(), boxes[:, 3].numpy()
    colors = np.where((w >= h)[:, None], COLORS["horizontal"], COLORS["vertical"])
    colors[np.sqrt(w * h) < small_size] = COLORS["small"]
    return colors


def plot_query_slots(boxes: Tensor, slots, output_path, columns: int, small_size: float):
    """One scatter of box centres per slot (an index into the N queries of ``boxes`` (I, N, 4)
    normalized cxcywh), ``columns`` per row, saved to ``output_path``."""
    num_queries = boxes.shape[1]
    if bad := [s for s in slots if not 0 <= s < num_queries]:
        raise ValueError(f"slots {bad} out of range: the model has {num_queries} queries")
    columns = max(1, min(columns, len(slots)))
    rows = (len(slots) + columns - 1) // columns
    fig = Figure(figsize=(2.2 * columns, 2.2 * rows + 0.4))
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    size = float(np.clip(3000 / max(len(boxes), 1), 1, 12))  # fewer images, bigger points
    for ax, slot in zip(axes, slots):
        b = boxes[:, slot]
        ax.scatter(b[:, 0], b[:, 1], s=size, c=box_colors(b, small_size), alpha=0.5, linewidths=0)
        ax.set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xticks=[], yticks=[])  # y down
        ax.set_title(f"slot {slot}", fontsize=9)
    for ax in axes[len(slots) :]:
        fig.delaxes(ax)
    legend = "green small, red large horizontal, blue large vertical"
    fig.suptitle(f"Box centres per slot over {len(boxes)} images: {legend}", fontsize=9)
    fig.tight_layout()
    fig.savefig(output_path, dpi=100)
    return fig


def main(args) -> Dict:
    """Returns {"output": the PNG, "slots", "num_images", "figure"}."""
    cfg = cli.setup_cfg(args)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "query_slots.png")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model = load_model(cfg, args.random_weights)
    slots = args.slots or list(range(min(20, cfg.MODEL.DETR.NUM_OBJECT_QUERIES)))
    boxes = collect_slot_boxes(model, cfg, dataset, args.num_images, args.log_period)
    figure = plot_query_slots(boxes, slots, output, args.columns, args.small_size)
    logger.info(f"Plotted slots {slots} over {len(boxes)} images of {dataset} to {output}")
    return {"output": output, "slots": slots, "num_images": len(boxes), "figure": figure}


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
