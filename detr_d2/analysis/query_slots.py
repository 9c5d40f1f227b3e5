"""Where each object query ("slot") predicts boxes over a dataset (paper Sec. 4.2, Fig. 7).

Every prediction of every image counts, whatever its class or score: each is a point at its box
centre in the unit square (the image, normalized by its size), colored by the box's size and
shape as in the paper: green small, red large and horizontal, blue large and vertical. The
paper finds each slot specializing in a few areas and box sizes, and almost all of them also
predicting large image-wide boxes.
"""

from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from matplotlib.figure import Figure
from torch import Tensor

from .predictor import dataset_loader, with_progress

__all__ = ["SMALL_SIZE", "COLORS", "collect_slot_boxes", "box_colors", "plot_query_slots"]

# a box is "small" when sqrt(w * h) is below this fraction of the image (w, h normalized)
SMALL_SIZE = 0.25
COLORS = {"small": (0.1, 0.7, 0.1), "horizontal": (0.85, 0.1, 0.1), "vertical": (0.1, 0.2, 0.9)}


@torch.no_grad()
def collect_slot_boxes(
    model: torch.nn.Module,
    cfg: CfgNode,
    dataset_name: str,
    num_images: int = 0,
    log_every: int = 50,
) -> Tensor:
    """The final decoder layer's boxes of every slot on (the first ``num_images`` of) a dataset:
    (I, N, 4) normalized cxcywh (relative to each unpadded image), on the CPU."""
    if not hasattr(model, "forward_raw"):
        raise TypeError(f"{type(model).__name__} is not a DETR model (no forward_raw)")
    model.eval()
    loader, dicts = dataset_loader(cfg, dataset_name, num_images)
    boxes = []
    for inputs in with_progress(loader, len(dicts), every=log_every, name="query slots"):
        boxes.append(model.forward_raw(model.preprocess_image(inputs))["pred_boxes"].cpu())
    return torch.cat(boxes)


def box_colors(boxes: Tensor, small_size: float = SMALL_SIZE) -> np.ndarray:
    """(M, 3) RGB colors of (M, 4) normalized cxcywh boxes, after the paper: green when
    sqrt(w * h) < ``small_size``, else red when w >= h, blue when w < h."""
    w, h = boxes[:, 2].numpy(), boxes[:, 3].numpy()
    small = np.sqrt(w * h) < small_size
    colors = np.where((w >= h)[:, None], COLORS["horizontal"], COLORS["vertical"])
    colors[small] = COLORS["small"]
    return colors


def plot_query_slots(
    boxes: Tensor,
    slots: Sequence[int],
    output_path: Optional[str] = None,
    columns: int = 5,
    small_size: float = SMALL_SIZE,
) -> Figure:
    """One scatter of box centres per slot in ``slots`` (a grid, ``columns`` wide; slots index
    the N queries of ``boxes`` (I, N, 4) normalized cxcywh), saved to ``output_path`` if given.
    Returns the figure; its first ``len(slots)`` axes are the slots', in order."""
    num_queries = boxes.shape[1]
    bad = [s for s in slots if not 0 <= s < num_queries]
    if bad:
        raise ValueError(f"slots {bad} out of range: the model has {num_queries} queries")
    columns = max(1, min(columns, len(slots)))
    rows = (len(slots) + columns - 1) // columns
    fig = Figure(figsize=(2.2 * columns, 2.2 * rows + 0.4))
    axes: List = list(fig.subplots(rows, columns, squeeze=False).flat)
    size = float(np.clip(3000 / max(len(boxes), 1), 1, 12))  # fewer images, bigger points
    for ax, slot in zip(axes, slots):
        b = boxes[:, slot]
        ax.scatter(b[:, 0], b[:, 1], s=size, c=box_colors(b, small_size), alpha=0.5, linewidths=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)  # image coordinates: y down
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"slot {slot}", fontsize=9)
    for ax in axes[len(slots) :]:
        fig.delaxes(ax)
    fig.suptitle(
        f"Box centres per slot over {len(boxes)} images: green small, red large horizontal, "
        "blue large vertical",
        fontsize=9,
    )
    fig.tight_layout()
    if output_path:
        fig.savefig(output_path, dpi=100)
    return fig
