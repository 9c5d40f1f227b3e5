"""Validation of training data where it enters: ``check_dataset_dicts`` drops bad boxes, clips
boxes partly outside, and stops (or, with DATALOADER.SKIP_BAD_IMAGES, skips) at unknown categories
or missing files; ``CheckedMapper`` does the same for images that cannot be decoded."""

import atexit
import json
import logging
import math
import os
import random
import tempfile
from collections import Counter
from numbers import Integral, Real
from typing import Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import (
    check_metadata_consistency,
    filter_images_with_only_crowd_annotations,
    print_instances_class_histogram,
)
from detectron2.data.datasets import load_coco_json
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode
from PIL import Image

from detr_d2.engine.checks import metadata_num_classes

logger = logging.getLogger(__name__)

SKIP_HINT = "set DATALOADER.SKIP_BAD_IMAGES True to skip such images"
FILES = ("file_name", "pan_seg_file_name", "sem_seg_file_name")  # dataset dict keys of files
SKIPPED = "_skipped_unreadable"  # marks what CheckedMapper returns for an image left out
# image ids WithoutSkipped left out in this process, until an evaluator takes them
_skipped_image_ids = set()
# What reading a bad image file raises: missing / unreadable / not an image / truncated (PIL raises
# OSError or SyntaxError), decompression bomb, size differing from the dataset's height / width.
BAD_IMAGE_ERRORS = (OSError, SyntaxError, SizeMismatchError, Image.DecompressionBombError)


class DatasetError(ValueError):
    """Bad input data; the message names the dataset, the files and the image ids."""


class BadImageError(DatasetError):
    """An image file could not be read as the dataset describes it."""


def _where(d: Dict) -> str:
    return f"image_id {d.get('image_id', '?')} ({d.get('file_name', '?')})"


def _listing(items: Sequence[str], n: int = 5) -> str:
    more = f"; ... ({len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def _raise_or_skip(message: str, fix: str, count: int, skip: bool, cause=None) -> None:
    if not skip:
        raise DatasetError(f"{message} Fix the {fix}, or {SKIP_HINT}.") from cause
    logger.warning(f"{message} Skipped these {count} images (DATALOADER.SKIP_BAD_IMAGES is True).")


def write_temporary_json(data, prefix: str) -> str:
    """Write ``data`` to a new temporary ``<prefix>*.json``, removed at exit; returns its path."""
    with tempfile.NamedTemporaryFile("w", prefix=prefix, suffix=".json", delete=False) as f:
        json.dump(data, f)
    atexit.register(os.remove, f.name)
    return f.name


def classify_box(bbox, mode=BoxMode.XYWH_ABS, height=None, width=None, tolerance=0.0):
    """The one classification of a box, for the json report and the training data alike:
    ("ok" | "clipped" | "malformed" | "degenerate" | "outside", the box to keep, in ``mode``).
    malformed: not 4 finite numbers; degenerate: width or height <= 0; outside: nothing of it
    inside the (height, width) image; clipped: partly outside by more than ``tolerance`` pixels,
    returned clipped. Without an image size only the first two are told; modes other than
    XYXY_ABS / XYWH_ABS are not checked."""
    if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
        return "ok", bbox
    if isinstance(bbox, (str, bytes)) or not hasattr(bbox, "__len__") or len(bbox) != 4:
        return "malformed", bbox
    # int / float first (json's fast path), numpy scalars too; a bool is no number
    real = (type(v) in (int, float) or isinstance(v, Real) and type(v) is not bool for v in bbox)
    if not all(real) or not all(math.isfinite(float(v)) for v in bbox):
        return "malformed", bbox
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if mode == BoxMode.XYWH_ABS:  # by hand: BoxMode.convert costs ~30 us a box (torch)
        x1, y1 = x0 + x1, y0 + y1
    if x1 <= x0 or y1 <= y0:
        return "degenerate", bbox
    if height is None or width is None:
        return "ok", bbox
    clipped = [min(max(v, 0.0), size) for v, size in zip((x0, y0, x1, y1), (width, height) * 2)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return "outside", bbox
    if max(abs(a - b) for a, b in zip(clipped, (x0, y0, x1, y1))) <= tolerance:
        return "ok", bbox
    if mode == BoxMode.XYWH_ABS:
        clipped[2:] = [clipped[2] - clipped[0], clipped[3] - clipped[1]]
    return "clipped", clipped


def check_dataset_dicts(dicts: List[Dict], metadata, dataset_name: str, skip_bad_images=False):
    """The images of ``dicts`` (Detectron2 dataset dicts, contiguous category ids bounded by
    ``metadata``'s classes) that are kept, a new dict where boxes changed (the input is not
    modified); the others raise :class:`DatasetError` unless ``skip_bad_images`` (then counted)."""
    num_classes = metadata_num_classes(metadata)
    boxes = Counter()  # box status -> count
    kept, bad_images, box_examples, empty, crowd_only = [], [], [], 0, 0
    for d in dicts:
        problems = [f"missing file {d[k]}" for k in FILES if k in d and not os.path.exists(d[k])]
        annotations = d.get("annotations")
        ids = [obj.get("category_id") for obj in annotations or []]
        ids += [seg.get("category_id") for seg in d.get("segments_info", [])]
        n = num_classes
        bad = n is not None and {c for c in ids if not isinstance(c, Integral) or not 0 <= c < n}
        if bad:
            bad = ", ".join(map(str, sorted(bad, key=str)))
            problems.append(f"category_id {bad} not among the {n} classes")
        if problems:
            bad_images.append(f"{_where(d)}: {', '.join(problems)}")
            continue
        if annotations is not None:
            clean, changed = [], False
            for obj in annotations:
                mode = obj.get("bbox_mode", BoxMode.XYWH_ABS)
                status, box = classify_box(obj.get("bbox"), mode, d.get("height"), d.get("width"))
                boxes[status] += 1
                changed |= status != "ok"
                if status in ("ok", "clipped"):
                    clean.append(obj if status == "ok" else dict(obj, bbox=box))
                elif len(box_examples) < 3:
                    box_examples.append(f"{status} {obj.get('bbox')} in {_where(d)}")
            if changed:
                d = dict(d, annotations=clean)
            if not clean:
                empty += 1
            elif all(obj.get("iscrowd", 0) for obj in clean):
                crowd_only += 1
        kept.append(d)

    if bad_images:
        message = (
            f"Dataset {dataset_name!r}: {len(bad_images)} of {len(dicts)} images have a "
            f"category_id outside its metadata's {num_classes} classes or a missing file: "
            f"{_listing(bad_images)}."
        )
        _raise_or_skip(message, "dataset", len(bad_images), skip_bad_images)
    dropped = boxes["malformed"] + boxes["degenerate"] + boxes["outside"]
    if dropped:
        logger.warning(
            f"Dataset {dataset_name!r}: dropped {dropped} invalid boxes of "
            f"{sum(boxes.values())}: {boxes['degenerate']} with zero or negative width or height, "
            f"{boxes['outside']} entirely outside their image, {boxes['malformed']} malformed or "
            f"non-finite; e.g. {_listing(box_examples)}."
        )
    if boxes["clipped"]:
        logger.warning(
            f"Dataset {dataset_name!r}: clipped {boxes['clipped']} boxes to their image's borders."
        )
    if empty or crowd_only:
        logger.info(
            f"Dataset {dataset_name!r}: {empty} images without boxes and {crowd_only} with "
            "crowd boxes only; they train as images without objects."
        )
    return kept


def load_dataset_dicts(dataset_name: str, skip_bad_images: bool = False) -> List[Dict]:
    """``DatasetCatalog.get(dataset_name)``; when a COCO json has annotations whose category is
    not in its "categories" (load_coco_json's KeyError names only the id), a :class:`DatasetError`
    naming the json, images and ids -- or, with ``skip_bad_images``, the set without them."""
    try:
        return DatasetCatalog.get(dataset_name)
    except KeyError as e:
        meta = MetadataCatalog.get(dataset_name)
        json_file = meta.get("json_file")
        if json_file is None or "category_id" not in str(e) or not os.path.isfile(json_file):
            raise
        with open(json_file) as f:
            data = json.load(f)
        known = {c["id"] for c in data.get("categories", [])}
        bad = [a for a in data.get("annotations", []) if a.get("category_id") not in known]
        if not bad:
            raise
        files = {im["id"]: im.get("file_name") for im in data.get("images", [])}
        bad_anns = [
            f"image_id {a.get('image_id')} ({files.get(a.get('image_id'), '?')}): category_id "
            f"{a.get('category_id')}"
            for a in bad
        ]
        message = (
            f"Dataset {dataset_name!r} ({json_file}): {len(bad)} annotations have a "
            f"category_id missing from the json's 'categories': {_listing(bad_anns)}."
        )
        bad_ids = {a.get("image_id") for a in bad}
        skip = skip_bad_images and meta.get("image_root") is not None
        _raise_or_skip(message, "json", len(bad_ids), skip, cause=e)
    data["images"] = [im for im in data["images"] if im["id"] not in bad_ids]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in bad_ids]
    filtered = write_temporary_json(data, os.path.basename(json_file) + "_")
    return load_coco_json(filtered, meta.image_root, dataset_name)


def get_checked_dataset_dicts(names: Sequence[str], skip_bad_images=False, filter_empty=False):
    """Like detectron2's ``get_detection_dataset_dicts`` (no proposals, no keypoint filter), with
    every dataset loaded by ``load_dataset_dicts`` and checked by ``check_dataset_dicts``."""
    dicts = []
    for name in names:
        loaded = load_dataset_dicts(name, skip_bad_images)
        if not len(loaded):
            raise DatasetError(f"Dataset {name!r} is empty.")
        dicts += check_dataset_dicts(loaded, MetadataCatalog.get(name), name, skip_bad_images)
    has_instances = "annotations" in dicts[0] if dicts else False
    if filter_empty and has_instances:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if has_instances and MetadataCatalog.get(names[0]).get("thing_classes") is not None:
        check_metadata_consistency("thing_classes", names)
        print_instances_class_histogram(dicts, MetadataCatalog.get(names[0]).thing_classes)
    if not dicts:
        raise DatasetError(f"No valid images in {', '.join(names)}.")
    return dicts


def warn_more_objects_than_queries(dicts: Sequence[Dict], num_queries: int) -> None:
    """Warn once when images have more objects (non-crowd boxes or panoptic segments) than the
    model has object queries: the extra ones can never be matched."""
    counts = [
        sum(not obj.get("iscrowd", 0) for obj in d.get("segments_info", d.get("annotations")) or [])
        for d in dicts
    ]
    over = [n for n in counts if n > num_queries]
    if over:
        logger.warning(
            f"{len(over)} of {len(dicts)} training images have more objects than "
            f"MODEL.DETR.NUM_OBJECT_QUERIES ({num_queries}), up to {max(over)}: each query "
            f"predicts one object, so {sum(over) - num_queries * len(over)} objects can never be "
            "matched. Raise NUM_OBJECT_QUERIES above the largest count to learn them all."
        )


class CheckedMapper:
    """Wraps a dataset mapper so that an image that cannot be read raises :class:`BadImageError`
    naming its file and image id, or -- with ``skip_bad_images`` -- is replaced by one of
    ``spares`` or of the first ``POOL_SIZE`` images read, never one that failed (Detectron2's
    MapDataset retry fails on Python >= 3.11: ``random.sample`` of a set). ``bad_files``: the
    files that failed in this process, each logged once."""

    POOL_SIZE = 64
    MAX_ATTEMPTS = 16

    def __init__(self, mapper, skip_bad_images=False, spares: Sequence[Dict] = (), replace=True):
        # replace=False for evaluation: a skipped image becomes a marker WithoutSkipped drops
        self.mapper, self.skip_bad_images, self.replace = mapper, skip_bad_images, replace
        self.bad_files, self._pool, self._rng = set(), list(spares), random.Random(0)

    def __call__(self, dataset_dict: Dict):
        for _ in range(self.MAX_ATTEMPTS):
            if dataset_dict.get("file_name") not in self.bad_files or not self.replace:
                try:
                    mapped = self.mapper(dataset_dict)
                except BAD_IMAGE_ERRORS as e:
                    self._bad(dataset_dict, e)
                    if not self.replace:
                        return {SKIPPED: True, "image_id": dataset_dict.get("image_id")}
                except Exception as e:
                    if hasattr(e, "add_note"):  # Python >= 3.11
                        e.add_note(f"(while mapping {_where(dataset_dict)})")
                    raise
                else:
                    if self.replace and self.skip_bad_images and len(self._pool) < self.POOL_SIZE:
                        self._pool.append(dataset_dict)
                    return mapped
            pool = [d for d in self._pool if d.get("file_name") not in self.bad_files]
            if not pool:
                break
            dataset_dict = self._rng.choice(pool)
        raise BadImageError(
            f"No readable image to replace {_where(dataset_dict)} with "
            f"(unreadable so far: {len(self.bad_files)} images)."
        )

    def _bad(self, dataset_dict: Dict, e: Exception) -> None:
        where = _where(dataset_dict)
        if not self.skip_bad_images:
            raise BadImageError(
                f"Cannot read {where}: {type(e).__name__}: {e}. Fix or remove "
                f"this image, or {SKIP_HINT}."
            ) from e
        self.bad_files.add(dataset_dict.get("file_name"))
        logger.warning(
            f"Skipped unreadable {where} ({type(e).__name__}: {e}); "
            f"{len(self.bad_files)} unreadable images so far in this process."
        )


def pop_skipped_image_ids() -> list:
    """The image ids :class:`WithoutSkipped` left out since the last call (for an evaluator,
    which leaves their ground truth out too: not read is not missed)."""
    ids = sorted(_skipped_image_ids, key=str)
    _skipped_image_ids.clear()
    return ids


class WithoutSkipped:
    """A test loader's batches without the images a ``CheckedMapper(replace=False)`` skipped,
    and one warning with their count at the end (see :func:`pop_skipped_image_ids`)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        skipped = []
        for batch in self.loader:
            skipped += [d["image_id"] for d in batch if SKIPPED in d]
            kept = [d for d in batch if SKIPPED not in d]
            if kept:
                yield kept
        _skipped_image_ids.update(skipped)
        if skipped:
            logger.warning(
                f"Evaluation left out {len(skipped)} unreadable images (DATALOADER."
                f"SKIP_BAD_IMAGES is True), image ids {_listing([str(i) for i in skipped])}; "
                "the metrics are over the other images."
            )
