"""A synthetic COCO panoptic set, ground truth plus a flawed prediction, written as PNGs and jsons,
for checking that PQ implementations agree and for timing them. Deterministic for a seed."""

import json
import os
from typing import Dict, Tuple

import numpy as np
from PIL import Image

from .synthetic_coco import COCO_CATEGORY_IDS

__all__ = ["write_synthetic_panoptic"]

STUFF_CATEGORY_IDS = list(range(92, 101))  # 9 stuff classes, ids after COCO's things


def _to_png(ids: np.ndarray, path: str):
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _segments(ids: np.ndarray, categories: Dict[int, int], crowd: set) -> list:
    """segments_info of the id map ``ids`` (0 = void) with each id's category."""
    segments = []
    for i in np.unique(ids):
        if i == 0:
            continue
        ys, xs = np.nonzero(ids == i)
        box = [
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        ]
        segments.append(
            {"id": int(i), "category_id": categories[int(i)], "area": int(len(xs)), "bbox": box,
             "iscrowd": int(i in crowd)}
        )  # fmt: skip
    return segments


def write_synthetic_panoptic(root: str, num_images: int = 100, seed: int = 0) -> Tuple[str, ...]:
    """Write under ``root`` a ground truth (``gt.json`` + ``gt/``) and a prediction (``pred.json``
    + ``pred/``) of ``num_images`` images of 320-640 px: 1-3 stuff regions (horizontal bands,
    possibly with a void gap) and 0-12 thing rectangles each, some crowd. The prediction misses,
    shifts, shrinks and relabels segments and adds false ones.

    Returns:
        (gt_json, pred_json, gt_folder, pred_folder), the arguments of ``pq_compute``.
    """
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = os.path.join(root, "gt"), os.path.join(root, "pred")
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    images, gt_anns, pred_anns = [], [], []
    for image_id in range(1, num_images + 1):
        h, w = (int(v) for v in rng.integers(320, 641, size=2))
        gt, pred = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
        gt_cat, pred_cat, crowd = {}, {}, set()
        next_id = 1
        cuts = np.sort(rng.integers(0, h, size=int(rng.integers(0, 3))))
        for top, bottom in zip(np.r_[0, cuts], np.r_[cuts, h]):
            category = int(rng.choice(STUFF_CATEGORY_IDS))
            gap = int(rng.integers(0, 8))  # void rows between bands
            gt[top + gap : bottom] = next_id
            gt_cat[next_id] = category
            if rng.random() > 0.1:  # missed 10 % of the time
                shift = int(rng.integers(-10, 11))
                pred[max(top + shift, 0) : max(bottom + shift, 0)] = next_id
                pred_cat[next_id] = (
                    category if rng.random() > 0.1 else int(rng.choice(STUFF_CATEGORY_IDS))
                )
            next_id += 1
        for _ in range(int(rng.integers(0, 13))):
            bw, bh = (int(v) for v in np.exp(rng.uniform(np.log(6), np.log(min(h, w) / 2), size=2)))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            category = int(rng.choice(COCO_CATEGORY_IDS))
            gt[y : y + bh, x : x + bw] = next_id
            gt_cat[next_id] = category
            if rng.random() < 0.05:
                crowd.add(next_id)
            if rng.random() > 0.15:
                dx, dy = (int(v) for v in rng.integers(-bw // 3 - 1, bw // 3 + 2, size=2))
                shrink = int(rng.integers(0, max(bw // 4, 1)))
                pred[
                    max(y + dy, 0) : max(y + dy + bh, 0),
                    max(x + dx + shrink, 0) : max(x + dx + bw, 0),
                ] = next_id
                pred_cat[next_id] = (
                    category if rng.random() > 0.1 else int(rng.choice(COCO_CATEGORY_IDS))
                )
            next_id += 1
        for _ in range(int(rng.integers(0, 3))):  # false positives
            x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            pred[y : y + 20, x : x + 20] = next_id
            pred_cat[next_id] = int(rng.choice(COCO_CATEGORY_IDS))
            next_id += 1
        file_name = f"{image_id:06d}.png"
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id:06d}.jpg"})
        _to_png(gt, os.path.join(gt_dir, file_name))
        _to_png(pred, os.path.join(pred_dir, file_name))
        gt_anns.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "segments_info": _segments(gt, gt_cat, crowd),
            }
        )
        pred_segments = [
            {"id": s["id"], "category_id": s["category_id"]}
            for s in _segments(pred, pred_cat, set())
        ]
        pred_anns.append(
            {"image_id": image_id, "file_name": file_name, "segments_info": pred_segments}
        )
    categories = [{"id": c, "name": f"thing{c}", "isthing": 1} for c in COCO_CATEGORY_IDS] + [
        {"id": c, "name": f"stuff{c}", "isthing": 0} for c in STUFF_CATEGORY_IDS
    ]
    gt_json, pred_json = os.path.join(root, "gt.json"), os.path.join(root, "pred.json")
    with open(gt_json, "w") as f:
        json.dump({"images": images, "annotations": gt_anns, "categories": categories}, f)
    with open(pred_json, "w") as f:
        json.dump({"annotations": pred_anns}, f)
    return gt_json, pred_json, gt_dir, pred_dir
