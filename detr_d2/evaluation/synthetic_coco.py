"""A synthetic COCO-format detection set, ground truth plus detections, for checking that COCO
evaluation backends agree and for timing them. Deterministic for a seed; there are no images."""

import numpy as np

# The 80 official COCO category ids: non-contiguous, so a contiguous-id bug cannot hide.
COCO_CATEGORY_IDS = [c for c in range(1, 91) if c not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def _rectangle(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def make_synthetic_coco(num_images=5000, dets_per_image=100, seed=0, mean_gt_per_image=7.0):
    """
    Build ground truth and detections that exercise what COCOeval distinguishes: all three area
    ranges, crowd regions, wrong classes, near-miss boxes around every IoU threshold, score ties
    (scores have 3 decimals) and images without ground truth.

    Returns:
        (dict, list[dict]): a COCO instances dataset (images with height/width, annotations with
        XYWH ``bbox``, ``area``, ``iscrowd`` and a rectangle polygon ``segmentation``, the 80 COCO
        categories) and a COCO results list (``image_id``, ``category_id``, XYWH ``bbox``,
        ``score``), ``dets_per_image`` entries per image.
    """
    rng = np.random.default_rng(seed)
    cat_ids = np.array(COCO_CATEGORY_IDS)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = int(rng.integers(320, 641)), int(rng.integers(240, 641))
        images.append(
            {"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.jpg"}
        )

        num_gt = 0 if rng.random() < 0.05 else min(int(rng.poisson(mean_gt_per_image)), 40)
        # log-uniform sides from 4 px to the image size: small, medium and large objects
        wh = np.exp(rng.uniform(np.log(4), np.log([width, height]), size=(num_gt, 2)))
        xy = rng.uniform(0, 1, size=(num_gt, 2)) * ([width, height] - wh)
        gt_boxes = np.concatenate([xy, wh], axis=1)
        gt_cats = rng.choice(cat_ids, size=num_gt)
        crowd = rng.random(num_gt) < 0.03
        for box, cat, is_crowd in zip(gt_boxes.tolist(), gt_cats.tolist(), crowd.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(is_crowd),
                    "segmentation": _rectangle(box),
                }
            )

        # about half the detections are jittered ground truth, mostly of the right class
        num_near = int(rng.binomial(dets_per_image, 0.5)) if num_gt else 0
        src = rng.integers(0, max(num_gt, 1), size=num_near)
        near = gt_boxes[src] if num_gt else np.zeros((0, 4))
        near = near + rng.normal(0, 0.08, size=(num_near, 4)) * near[:, [2, 3, 2, 3]]
        near_cats = np.where(
            rng.random(num_near) < 0.8, gt_cats[src] if num_gt else 0, rng.choice(cat_ids, num_near)
        )
        num_far = dets_per_image - num_near
        wh = np.exp(rng.uniform(np.log(4), np.log([width, height]), size=(num_far, 2)))
        far = np.concatenate([rng.uniform(0, 1, size=(num_far, 2)) * ([width, height] - wh), wh], 1)
        boxes = np.concatenate([near, far])
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
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    return dataset, results
