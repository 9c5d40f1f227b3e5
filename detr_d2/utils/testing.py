"""Generated data for the tests and the benchmarks, deterministic for a seed: random model inputs,
a COCO-like detection set with detections (to check and time the COCO evaluation backends) and a
COCO panoptic set with a flawed prediction (the same for PQ)."""

import json
import os
from typing import Dict, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from panopticapi.utils import id2rgb
from PIL import Image

# The 80 official COCO category ids: non-contiguous, so a contiguous-id bug cannot hide.
COCO_CATEGORY_IDS = [c for c in range(1, 91) if c not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
STUFF_CATEGORY_IDS = list(range(92, 101))  # 9 stuff classes, ids after COCO's things


def synthetic_inputs(height, width, num, num_classes=1, with_instances=False, boxes_per_image=None):
    """``num`` input dicts, the same each call, of random uint8 images of exactly (height, width),
    the network's input size (no resize). With ``with_instances``, each gets ``boxes_per_image``
    (default: 1 to 4) random absolute XYXY boxes of classes below ``num_classes``."""
    g = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(num):
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
        inputs.append({"image": image, "height": height, "width": width})
        if with_instances:
            k = boxes_per_image or int(torch.randint(1, 5, (1,), generator=g))
            corners = torch.rand(k, 2, 2, generator=g) * torch.tensor([width, height])
            xyxy = torch.cat([corners.min(1).values, corners.max(1).values + 1], dim=1)
            inst = inputs[-1]["instances"] = Instances((height, width))
            inst.gt_boxes = Boxes(xyxy.clamp(max=torch.tensor([width, height] * 2)))
            inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
    return inputs


def _random_boxes(rng, num: int, width: int, height: int) -> np.ndarray:
    """(num, 4) XYWH boxes in the image, log-uniform sides from 4 px to the image size: small,
    medium and large objects."""
    wh = np.exp(rng.uniform(np.log(4), np.log([width, height]), size=(num, 2)))
    return np.concatenate([rng.uniform(0, 1, size=(num, 2)) * ([width, height] - wh), wh], 1)


def make_synthetic_coco(num_images=5000, dets_per_image=100, seed=0, mean_gt_per_image=7.0):
    """(a COCO instances dataset, a COCO results list of ``dets_per_image`` XYWH boxes per image)
    that exercise what COCOeval distinguishes: all three area ranges, crowd regions, wrong classes,
    near-miss boxes around every IoU threshold, score ties (scores have 3 decimals) and images
    without ground truth. Annotations have XYWH ``bbox``, ``area``, ``iscrowd`` and a rectangle
    polygon ``segmentation``; the categories are COCO's 80."""
    rng = np.random.default_rng(seed)
    cat_ids = np.array(COCO_CATEGORY_IDS)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = int(rng.integers(320, 641)), int(rng.integers(240, 641))
        images.append(dict(id=image_id, width=width, height=height, file_name=f"{image_id}.jpg"))

        num_gt = 0 if rng.random() < 0.05 else min(int(rng.poisson(mean_gt_per_image)), 40)
        gt_boxes = _random_boxes(rng, num_gt, width, height)
        gt_cats = rng.choice(cat_ids, size=num_gt)
        crowd = rng.random(num_gt) < 0.03
        for box, cat, is_crowd in zip(gt_boxes.tolist(), gt_cats.tolist(), crowd.tolist()):
            x, y, w, h = box
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                 "bbox": box, "area": w * h, "iscrowd": int(is_crowd),
                 "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
            )  # fmt: skip

        # about half the detections are jittered ground truth, mostly of the right class
        num_near = int(rng.binomial(dets_per_image, 0.5)) if num_gt else 0
        src = rng.integers(0, max(num_gt, 1), size=num_near)
        near = gt_boxes[src] if num_gt else np.zeros((0, 4))
        near = near + rng.normal(0, 0.08, size=(num_near, 4)) * near[:, [2, 3, 2, 3]]
        near_cats = np.where(
            rng.random(num_near) < 0.8, gt_cats[src] if num_gt else 0, rng.choice(cat_ids, num_near)
        )
        num_far = dets_per_image - num_near
        boxes = np.concatenate([near, _random_boxes(rng, num_far, width, height)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        # crowd the classes present, so that the 1/10/100 detection limits per class all bind
        far_pool = gt_cats if num_gt and rng.random() < 0.7 else cat_ids
        cats = np.concatenate([near_cats, rng.choice(far_pool, num_far)])
        scores = np.round(rng.random(dets_per_image), 3)
        for box, cat, score in zip(boxes.tolist(), cats.tolist(), scores.tolist()):
            results.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": score})

    categories = [
        {"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in COCO_CATEGORY_IDS
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _segments(ids: np.ndarray, categories: Dict[int, int], crowd: set) -> list:
    """segments_info of the id map ``ids`` (0 = void) with each id's category."""
    segments = []
    present = np.unique(ids)
    for i in present[present != 0].tolist():
        ys, xs = np.nonzero(ids == i)
        x0, y0 = int(xs.min()), int(ys.min())
        box = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        segments.append(
            {"id": i, "category_id": categories[i], "area": len(xs), "bbox": box,
             "iscrowd": int(i in crowd)}
        )  # fmt: skip
    return segments


def write_synthetic_panoptic(root: str, num_images: int = 100, seed: int = 0) -> Tuple[str, ...]:
    """Write under ``root`` a ground truth (``gt.json`` + ``gt/``) and a prediction (``pred.json``
    + ``pred/``) of ``num_images`` images of 320-640 px: 1-3 stuff regions (horizontal bands,
    possibly with a void gap) and 0-12 thing rectangles each, some crowd. The prediction misses,
    shifts, shrinks and relabels segments and adds false ones. Returns (gt_json, pred_json,
    gt_folder, pred_folder), the arguments of ``pq_compute``."""
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = os.path.join(root, "gt"), os.path.join(root, "pred")
    for folder in (gt_dir, pred_dir):
        os.makedirs(folder, exist_ok=True)
    images, gt_anns, pred_anns = [], [], []

    def relabel(category, ids):  # 10 % of the predicted segments get a random class
        return category if rng.random() > 0.1 else int(rng.choice(ids))

    for image_id in range(1, num_images + 1):
        h, w = (int(v) for v in rng.integers(320, 641, size=2))
        gt, pred = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
        gt_cat, pred_cat, crowd = {}, {}, set()
        cuts = np.sort(rng.integers(0, h, size=int(rng.integers(0, 3))))
        for top, bottom in zip(np.r_[0, cuts], np.r_[cuts, h]):
            i = len(gt_cat) + 1
            gt_cat[i] = category = int(rng.choice(STUFF_CATEGORY_IDS))
            gap = int(rng.integers(0, 8))  # void rows between bands
            gt[top + gap : bottom] = i
            if rng.random() > 0.1:  # missed 10 % of the time
                shift = int(rng.integers(-10, 11))
                pred[max(top + shift, 0) : max(bottom + shift, 0)] = i
                pred_cat[i] = relabel(category, STUFF_CATEGORY_IDS)
        for _ in range(int(rng.integers(0, 13))):
            bw, bh = (int(v) for v in np.exp(rng.uniform(np.log(6), np.log(min(h, w) / 2), size=2)))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            i = len(gt_cat) + 1
            gt_cat[i] = category = int(rng.choice(COCO_CATEGORY_IDS))
            gt[y : y + bh, x : x + bw] = i
            if rng.random() < 0.05:
                crowd.add(i)
            if rng.random() > 0.15:
                dx, dy = (int(v) for v in rng.integers(-bw // 3 - 1, bw // 3 + 2, size=2))
                shrink = int(rng.integers(0, max(bw // 4, 1)))
                y0, x0 = max(y + dy, 0), max(x + dx + shrink, 0)
                pred[y0 : max(y + dy + bh, 0), x0 : max(x + dx + bw, 0)] = i
                pred_cat[i] = relabel(category, COCO_CATEGORY_IDS)
        for i in range(len(gt_cat) + 1, len(gt_cat) + 1 + int(rng.integers(0, 3))):  # false ones
            x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            pred[y : y + 20, x : x + 20] = i
            pred_cat[i] = int(rng.choice(COCO_CATEGORY_IDS))
        file_name = f"{image_id:06d}.png"
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id:06d}.jpg"})
        Image.fromarray(id2rgb(gt)).save(os.path.join(gt_dir, file_name))
        Image.fromarray(id2rgb(pred)).save(os.path.join(pred_dir, file_name))
        segments = _segments(gt, gt_cat, crowd)
        gt_anns.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
        segments = [{"id": i, "category_id": pred_cat[i]} for i in np.unique(pred).tolist() if i]
        pred_anns.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    categories = [{"id": c, "name": f"thing{c}", "isthing": 1} for c in COCO_CATEGORY_IDS]
    categories += [{"id": c, "name": f"stuff{c}", "isthing": 0} for c in STUFF_CATEGORY_IDS]
    gt_json, pred_json = os.path.join(root, "gt.json"), os.path.join(root, "pred.json")
    with open(gt_json, "w") as f:
        json.dump({"images": images, "annotations": gt_anns, "categories": categories}, f)
    with open(pred_json, "w") as f:
        json.dump({"annotations": pred_anns}, f)
    return gt_json, pred_json, gt_dir, pred_dir
