"""The "shapes" dataset: synthetic images of coloured shapes (each class its own shape and colour,
an easy cue, so a tiny DETR learns on a CPU in minutes) over a greyish textured background; the
panoptic variant adds stuff (sky, ground, water). Generated on first use, a pure function of
``(seed, index)``, in COCO's layout::

    {root}/shapes/{split}/{image_id:06d}.png               images (RGB)
    {root}/shapes/annotations/instances_{split}.json       COCO instances (bbox xywh, RLE masks)
    {root}/shapes_panoptic/{split}/{image_id:06d}.png      images with stuff backgrounds
    {root}/shapes_panoptic/panoptic_{split}/{image_id:06d}.png    COCO panoptic PNG (id2rgb ids)
    {root}/shapes_panoptic/annotations/panoptic_{split}.json      COCO panoptic segments_info
    {root}/shapes_panoptic/annotations/instances_{split}.json     the things, as COCO instances

Boxes and masks are those of the *visible* pixels (later objects occlude earlier ones)."""

import functools
import json
import logging
import os
import shutil
import tempfile

import cv2
import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import id2rgb

logger = logging.getLogger(__name__)

IMAGE_SIZE = 128  # side of every (square) image, pixels
MIN_OBJECTS, MAX_OBJECTS = 1, 5  # things per image, inclusive (fewer if placement fails)
MIN_OBJECT_SIZE, MAX_OBJECT_SIZE = 16, 56  # unrotated extent of a thing, pixels
MAX_ROTATION = 15.0  # things (except circles) are rotated by up to +-this, degrees
MAX_BOX_IOU = 0.3  # max IoU between the boxes of two things
MIN_VISIBLE_FRACTION = 0.7  # every thing keeps at least this fraction of its pixels visible
COLOR_JITTER = 20  # per-channel uniform jitter of a thing's colour, +-RGB levels
PIXEL_NOISE = 3.0  # std of the per-pixel grey noise on the whole image, RGB levels
MIN_STUFF_AREA = 64  # a stuff region with fewer visible pixels is left unlabelled (void), pixels
# A string, as COCO's info.version; bump when the drawing changes, so stale copies are detected.
GENERATOR_VERSION = "2"

# Things. Ids start at 1 (COCO style); colours are RGB.
THING_CATEGORIES = [
    {"id": 1, "name": "circle", "color": [220, 40, 40], "isthing": 1},  # red
    {"id": 2, "name": "square", "color": [40, 180, 60], "isthing": 1},  # green
    {"id": 3, "name": "triangle", "color": [40, 70, 220], "isthing": 1},  # blue
    {"id": 4, "name": "diamond", "color": [225, 205, 40], "isthing": 1},  # yellow
    {"id": 5, "name": "cross", "color": [200, 50, 200], "isthing": 1},  # magenta
    {"id": 6, "name": "star", "color": [40, 195, 205], "isthing": 1},  # cyan
]
# Stuff of the panoptic variant, each with its own texture.
STUFF_CATEGORIES = [
    {"id": 7, "name": "sky", "color": [150, 190, 235], "isthing": 0},  # smooth, pale blue
    {"id": 8, "name": "ground", "color": [130, 100, 60], "isthing": 0},  # grainy brown
    {"id": 9, "name": "water", "color": [30, 90, 140], "isthing": 0},  # dark blue, wavy stripes
]


def _ring(angles, radius=1.0):
    """Points at ``angles`` (radians) and ``radius`` about the origin: float (K, 2) of (x, y)."""
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


# Outlines of extent 2 centred at the origin: float (K, 2) of (x, y), y down.
# fmt: off
UNIT_POLYGONS = {
    "circle": _ring(np.linspace(0, 2 * np.pi, 48, endpoint=False)),
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64),
    "triangle": _ring(np.deg2rad([-90, 30, 150])),  # equilateral, pointing up, centroid at 0
    "diamond": np.array([[0, -1], [0.65, 0], [0, 1], [-0.65, 0]], dtype=np.float64),  # tall
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3],
                       [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
    "star": _ring(np.deg2rad(-90 + 36 * np.arange(10)), np.where(np.arange(10) % 2, 0.45, 1.0)),
}
# fmt: on


def _polygon(name, size, angle):
    """Outline (K, 2) of shape ``name`` of extent ``size`` px rotated ``angle`` degrees (clockwise
    on screen) about the origin."""
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return UNIT_POLYGONS[name] * (size / 2.0) @ rot.T


def _shape_mask(name, size, angle, center, hw):
    """Bool mask (H, W) of :func:`_polygon` centred at ``center`` = (x, y) in pixels."""
    pts = _polygon(name, size, angle) + np.asarray(center)
    canvas = np.zeros(hw, dtype=np.uint8)
    # shift=4: vertices with 1/16 pixel precision
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


@functools.lru_cache(maxsize=None)
def _upsampling_matrix(n):
    """(n, 4) float32 bicubic upsampling from 4 samples to n (the resized identity)."""
    return cv2.resize(np.eye(4, dtype=np.float32), (4, n), interpolation=cv2.INTER_CUBIC)


def _smooth_noise(rng, hw, std):
    """Low-frequency noise (H, W, 3) float32: a 4x4 grid upsampled, brightness (std ``std``) and
    a little colour (``std / 4``)."""
    grid = rng.normal(0.0, std, size=(1, 4, 4)) + rng.normal(0.0, std / 4, size=(3, 4, 4))
    up = _upsampling_matrix(hw[0]) @ grid.astype(np.float32) @ _upsampling_matrix(hw[1]).T
    return up.transpose(1, 2, 0)


def _mask_box(mask):
    """Tight box [x, y, w, h] (ints, pixel edges) around the True pixels of a bool mask (H, W)."""
    xs, ys = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def _place_things(rng, hw):
    """Things within the overlap limits: (category dict, full mask (H, W)), in drawing order."""
    things = []
    for _ in range(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)):
        for _attempt in range(20):
            cat = THING_CATEGORIES[rng.integers(len(THING_CATEGORIES))]
            size = rng.uniform(MIN_OBJECT_SIZE, MAX_OBJECT_SIZE)
            angle = 0.0 if cat["name"] == "circle" else rng.uniform(-MAX_ROTATION, MAX_ROTATION)
            pts = _polygon(cat["name"], size, angle)  # the whole shape stays inside the image
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            cx = rng.uniform(-lo[0], hw[1] - 1 - hi[0])
            cy = rng.uniform(-lo[1], hw[0] - 1 - hi[1])
            mask = _shape_mask(cat["name"], size, angle, (cx, cy), hw)
            if _fits(mask, things):
                things.append((cat, mask))
                break
    return things


def _fits(mask, things):
    """Whether a new thing ``mask`` drawn on top of ``things`` keeps the overlap limits."""
    box = _mask_box(mask)
    for i, (_, other) in enumerate(things):
        if mask_util.iou([box], [_mask_box(other)], [0])[0, 0] > MAX_BOX_IOU:  # xywh boxes
            return False
        visible = other.copy()
        for _, above in things[i + 1 :]:
            visible &= ~above
        if (visible & ~mask).sum() < MIN_VISIBLE_FRACTION * other.sum():
            return False
    return True


def _stuff_regions(rng, hw):
    """Sample the stuff layout: list of (category dict, region mask (H, W)), back to front."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]

    def wavy(level):  # a horizontal boundary (H, W) with a gentle random wave
        amp, period, phase = rng.uniform(0, 6), rng.uniform(40, 120), rng.uniform(0, 2 * np.pi)
        return level * h + amp * np.sin(2 * np.pi * xx / period + phase)

    sky, ground, water = STUFF_CATEGORIES
    regions = []
    if rng.random() < 0.8:
        regions.append((sky, yy < wavy(rng.uniform(0.2, 0.4))))
    if rng.random() < 0.8:
        regions.append((ground, yy >= wavy(rng.uniform(0.6, 0.8))))
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.55, 0.9) * h
        ax, ay = rng.uniform(0.15, 0.35) * w, rng.uniform(0.08, 0.18) * h
        regions.append((water, ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0))
    return regions


def _stuff_texture(rng, cat, hw):
    """Texture (H, W, 3) float32 of a stuff class: its jittered colour and its own pattern."""
    color = np.asarray(cat["color"], np.float32) + rng.uniform(-10, 10, size=3).astype(np.float32)
    tex = color + _smooth_noise(rng, hw, 8.0)
    if cat["name"] == "ground":
        tex += rng.normal(0.0, 10.0, size=(*hw, 1)).astype(np.float32)
    elif cat["name"] == "water":
        yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
        tex += (12.0 * np.sin(2 * np.pi * yy / 6.0 + 0.8 * np.sin(xx / 8.0)))[..., None]
    return tex


def render_shapes_image(seed, index, panoptic=False):
    """Image ``index`` of the split seeded with ``seed``: RGB uint8 (H, W, 3), things and stuff
    (empty unless ``panoptic``; regions under MIN_STUFF_AREA left out) as lists of (category dict,
    visible mask bool (H, W)) in drawing order."""
    rng = np.random.default_rng([seed, index])
    hw = (IMAGE_SIZE, IMAGE_SIZE)
    grey = rng.uniform(90, 170) + rng.uniform(-12, 12, size=3)
    image = grey.astype(np.float32) + _smooth_noise(rng, hw, 12.0)

    stuff = []
    if panoptic:
        for cat, region in _stuff_regions(rng, hw):
            image[region] = _stuff_texture(rng, cat, hw)[region]
            stuff = [(c, m & ~region) for c, m in stuff] + [(cat, region)]

    things = []
    for cat, mask in _place_things(rng, hw):
        color = np.asarray(cat["color"]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        image[mask] = color
        things = [(c, m & ~mask) for c, m in things] + [(cat, mask)]
        stuff = [(c, m & ~mask) for c, m in stuff]

    image += rng.normal(0.0, PIXEL_NOISE, size=(*hw, 1)).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    stuff = [(c, m) for c, m in stuff if m.sum() >= MIN_STUFF_AREA]
    return image, things, stuff


def shapes_paths(root, split, panoptic=False):
    """image_root and instances_json of one split (and panoptic_root, panoptic_json)."""
    base = os.path.join(root, "shapes_panoptic" if panoptic else "shapes")
    paths = {
        "image_root": os.path.join(base, split),
        "instances_json": os.path.join(base, "annotations", f"instances_{split}.json"),
    }
    if panoptic:
        paths["panoptic_root"] = os.path.join(base, f"panoptic_{split}")
        paths["panoptic_json"] = os.path.join(base, "annotations", f"panoptic_{split}.json")
    return paths


def _is_complete(paths, info):
    """True when the split's json files exist (they are written last) and match ``info``."""
    jsons = [paths[k] for k in ("instances_json", "panoptic_json") if k in paths]
    if not all(os.path.isfile(p) for p in jsons):
        return False
    for p in jsons:
        with open(p) as f:
            found = json.load(f).get("info")
        if found != info:
            raise RuntimeError(
                f"{p} was generated with {found}, but {info} is requested. Delete "
                f"{os.path.dirname(os.path.dirname(p))} to regenerate it."
            )
    return True


def _write_png(path, rgb):
    """Write an RGB uint8 (H, W, 3) array, fast-compressed."""
    cv2.imwrite(path, rgb[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])


def _write_split(tmp, info, panoptic):
    """Render the split of ``info`` into ``tmp``: images/, instances.json (panoptic/, ...)."""
    os.makedirs(os.path.join(tmp, "images"))
    if panoptic:
        os.makedirs(os.path.join(tmp, "panoptic"))
    images, annotations, pan_annotations = [], [], []
    for index in range(info["num_images"]):
        image_id = index + 1  # COCO tools treat id 0 as "none": start at 1
        file_name = f"{image_id:06d}.png"
        image, things, stuff = render_shapes_image(info["seed"], index, panoptic)
        _write_png(os.path.join(tmp, "images", file_name), image)
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0],
                       "width": image.shape[1]})  # fmt: skip
        for cat, mask in things:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat["id"],
                 "bbox": _mask_box(mask), "area": int(mask.sum()), "iscrowd": 0,
                 "segmentation": rle}
            )  # fmt: skip
        if panoptic:
            segment_ids = np.zeros(image.shape[:2], dtype=np.int64)  # 0 = void
            segments = []
            for seg_id, (cat, mask) in enumerate(things + stuff, start=1):
                segment_ids[mask] = seg_id
                segments.append({"id": seg_id, "category_id": cat["id"], "area": int(mask.sum()),
                                 "bbox": _mask_box(mask), "iscrowd": 0})  # fmt: skip
            _write_png(os.path.join(tmp, "panoptic", file_name), id2rgb(segment_ids))
            pan_annotations.append(
                {"image_id": image_id, "file_name": file_name, "segments_info": segments}
            )
    with open(os.path.join(tmp, "instances.json"), "w") as f:
        json.dump({"info": info, "images": images, "annotations": annotations,
                   "categories": THING_CATEGORIES}, f)  # fmt: skip
    if panoptic:
        with open(os.path.join(tmp, "panoptic.json"), "w") as f:
            json.dump({"info": info, "images": images, "annotations": pan_annotations,
                       "categories": THING_CATEGORIES + STUFF_CATEGORIES}, f)  # fmt: skip


def _move_dir(src, dst):
    """Rename ``src`` to ``dst`` unless another process did (theirs equals ours: same seed)."""
    try:
        os.replace(src, dst)
    except OSError:
        if not os.path.isdir(dst):
            raise


def generate_shapes(root, split, num_images, seed, panoptic=False):
    """Generate split ``split`` (also its image folder's name) of ``num_images`` under ``root``
    (``$DETECTRON2_DATASETS``) unless it is there; returns :func:`shapes_paths`. Safe from several
    processes at once: written to a temporary folder and renamed, the json files last."""
    paths = shapes_paths(root, split, panoptic)
    kind = " panoptic" if panoptic else ""
    info = dict(description=f"detr_d2 synthetic shapes{kind}, split {split}",
                num_images=num_images, seed=seed, version=GENERATOR_VERSION)  # fmt: skip
    if _is_complete(paths, info):
        return paths
    base = os.path.dirname(paths["image_root"])
    os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
    logger.info(f"Generating {num_images} shapes images ({info['description']}) in {base} ...")
    tmp = tempfile.mkdtemp(prefix=f".tmp_{split}_", dir=base)
    try:
        _write_split(tmp, info, panoptic)
        _move_dir(os.path.join(tmp, "images"), paths["image_root"])
        if panoptic:
            _move_dir(os.path.join(tmp, "panoptic"), paths["panoptic_root"])
            os.replace(os.path.join(tmp, "panoptic.json"), paths["panoptic_json"])
        os.replace(os.path.join(tmp, "instances.json"), paths["instances_json"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
