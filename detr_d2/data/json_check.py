"""A one-time look at a COCO instances json before training on it: what would silently hurt.

``check_coco_json`` reads the json once (no image is decoded; files are only tested for existence)
and counts what the training code would otherwise drop quietly or learn wrong:

* boxes that are not 4 numbers, have a width or height <= 0, or lie partly outside the image
  (by more than ``tolerance`` pixels: COCO's own boxes overshoot by rounding);
* boxes that look like ``[x1, y1, x2, y2]`` instead of COCO's ``[x, y, width, height]`` (the
  single most common conversion mistake): read as ``[x, y, w, h]`` most of them end beyond the
  image, while read as corners they fit;
* categories without annotations (a class the model is asked to learn from no example), images
  without annotations (DETR trains on them as pure background), crowd regions (ignored);
* annotations of an image id or a category id the json does not list, and image files missing
  under ``image_root``.

The result is a :class:`CocoJsonReport` whose :meth:`~CocoJsonReport.format` is one log block.
Only a file that is not a COCO instances json raises; what stops training (an unknown category,
a missing image) is decided when the set is loaded, by the training data checks.
"""

import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

__all__ = ["CocoJsonReport", "check_coco_json"]

# Examples kept per problem, for the log; the counts are always complete.
MAX_EXAMPLES = 5


@dataclass
class CocoJsonReport:
    """Counts over one COCO instances json. Box counts are over non-crowd annotations only
    (crowd regions are never trained on); a box is counted in at most one of ``malformed_boxes``,
    ``non_positive_boxes`` and ``boxes_outside_image``."""

    json_file: str
    image_root: str
    num_images: int = 0
    num_annotations: int = 0  # all annotations, crowd ones included
    num_crowd: int = 0
    categories: List[str] = field(default_factory=list)  # names, sorted by category id
    category_ids: List[int] = field(default_factory=list)  # the ids, sorted
    malformed_boxes: int = 0  # "bbox" missing, not 4 numbers, or not finite
    non_positive_boxes: int = 0  # width <= 0 or height <= 0
    boxes_outside_image: int = 0  # some side beyond the image by more than the tolerance
    # boxes of positive size that end beyond the image read as [x, y, w, h] / fit as [x1,y1,x2,y2]
    xywh_overflow: int = 0
    fit_as_xyxy: int = 0
    empty_categories: List[str] = field(default_factory=list)
    images_without_annotations: int = 0
    unknown_image_ids: int = 0  # annotations whose image_id is not in "images" (never loaded)
    # (annotation id, image id, file name, category id), first MAX_EXAMPLES, and the full count
    unknown_category_examples: List[Tuple] = field(default_factory=list)
    unknown_categories: int = 0
    missing_image_examples: List[str] = field(default_factory=list)  # paths, first MAX_EXAMPLES
    missing_images: int = 0

    @property
    def num_boxes(self) -> int:
        """Non-crowd annotations: the boxes the box counts refer to."""
        return self.num_annotations - self.num_crowd

    @property
    def invalid_boxes(self) -> int:
        return self.malformed_boxes + self.non_positive_boxes + self.boxes_outside_image

    @property
    def looks_like_xyxy(self) -> bool:
        """Most boxes overflow as [x, y, w, h]; or many do and (nearly) all fit as corners.

        Corner boxes near the top-left of an image still fit when misread as [x, y, w, h] (a box
        [10, 10, 50, 50] is inside either way), so "most overflow" alone misses xyxy data whose
        objects sit left or high; the second rule catches it. Real [x, y, w, h] data overflows
        only by annotation error, a few percent at most.
        """
        sized = self.num_boxes - self.malformed_boxes - self.non_positive_boxes
        if sized <= 0:
            return False
        overflow, fit = self.xywh_overflow / sized, self.fit_as_xyxy / sized
        return overflow > 0.5 or (overflow > 0.1 and fit > 0.95)

    @property
    def has_problems(self) -> bool:
        """Anything worth a warning; images without annotations are not (background images)."""
        return bool(
            self.invalid_boxes
            or self.empty_categories
            or self.unknown_image_ids
            or self.unknown_categories
            or self.missing_images
            or self.looks_like_xyxy
        )

    def format(self) -> str:
        """The report as one multi-line block, for a single log call."""
        sized = max(self.num_boxes - self.malformed_boxes - self.non_positive_boxes, 1)
        empty = ", ".join(self.empty_categories[:MAX_EXAMPLES])
        if len(self.empty_categories) > MAX_EXAMPLES:
            empty += ", ..."
        lines = [
            f"COCO json check of {self.json_file} (images under {self.image_root}):",
            f"  {self.num_images} images, {self.num_annotations} annotations "
            f"({self.num_crowd} crowd, ignored in training), {len(self.categories)} categories",
            f"  boxes not 4 finite numbers:             {self.malformed_boxes}",
            f"  boxes with width or height <= 0:        {self.non_positive_boxes}",
            f"  boxes partly outside the image:         {self.boxes_outside_image}",
            f"  categories without annotations:         {len(self.empty_categories)}"
            + (f" ({empty})" if empty else ""),
            f"  images without annotations:             {self.images_without_annotations}",
            f"  annotations of an unlisted image id:    {self.unknown_image_ids}",
            f"  annotations of an unlisted category id: {self.unknown_categories}",
            f"  image files missing:                    {self.missing_images}",
        ]
        for ann_id, image_id, file_name, category_id in self.unknown_category_examples:
            lines.append(
                f"    annotation {ann_id} of image id {image_id} ({file_name}): "
                f'category_id {category_id} is not in "categories"'
            )
        lines += [f"    missing: {path}" for path in self.missing_image_examples]
        if self.looks_like_xyxy:
            lines.append(
                f"  box format LOOKS LIKE [x1, y1, x2, y2]: {self.xywh_overflow / sized:.0%} of "
                f"the boxes end beyond the image when read as COCO's [x, y, width, height], "
                f"{self.fit_as_xyxy / sized:.0%} fit as corners. Convert them: width = x2 - x1, "
                "height = y2 - y1."
            )
        else:
            lines.append("  box format: [x, y, width, height], as COCO expects")
        return "\n".join(lines)


def _as_box(bbox):
    """4 finite floats, or None."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        box = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


def check_coco_json(json_file: str, image_root: str, tolerance: float = 1.0) -> CocoJsonReport:
    """Count the problems of a COCO instances json (see the module docstring).

    Args:
        json_file: the annotation file ("images", "annotations", "categories").
        image_root: the folder the images' ``file_name`` are relative to.
        tolerance: pixels a box may extend beyond the image before it counts as outside.

    Raises:
        ValueError: the file is not a COCO instances json (not an object with "images",
            "annotations" and "categories" lists, or an image without id, file_name, width or
            height).
    """
    with open(json_file) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise ValueError(
            f"{json_file} is not a COCO instances json: it needs the lists "
            '"images", "annotations" and "categories"'
        )
    report = CocoJsonReport(json_file=json_file, image_root=image_root)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    report.categories = [c["name"] for c in categories]
    report.category_ids = [c["id"] for c in categories]
    for im in data["images"]:
        absent = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if absent:
            raise ValueError(
                f"{json_file}: image {im.get('id', im.get('file_name', im))} has no "
                f"{', '.join(absent)}; every image needs id, file_name, width, height"
            )
    images: Dict[int, dict] = {im["id"]: im for im in data["images"]}
    report.num_images = len(images)
    report.num_annotations = len(data["annotations"])

    per_category = {c["id"]: 0 for c in categories}
    annotated_images = set()
    for ann in data["annotations"]:
        image = images.get(ann.get("image_id"))
        if image is None:
            report.unknown_image_ids += 1
            continue
        annotated_images.add(image["id"])
        if ann.get("category_id") not in per_category:
            report.unknown_categories += 1
            if len(report.unknown_category_examples) < MAX_EXAMPLES:
                report.unknown_category_examples.append(
                    (ann.get("id"), image["id"], image["file_name"], ann.get("category_id"))
                )
        else:
            per_category[ann["category_id"]] += 1
        if ann.get("iscrowd", 0):
            report.num_crowd += 1
            continue
        _count_box(report, _as_box(ann.get("bbox")), image["width"], image["height"], tolerance)

    report.empty_categories = [c["name"] for c in categories if per_category[c["id"]] == 0]
    report.images_without_annotations = len(images) - len(annotated_images)
    for image in images.values():
        path = os.path.join(image_root, image["file_name"])
        if not os.path.isfile(path):
            report.missing_images += 1
            if len(report.missing_image_examples) < MAX_EXAMPLES:
                report.missing_image_examples.append(path)
    return report


def _count_box(report: CocoJsonReport, box, width: float, height: float, tol: float) -> None:
    if box is None:
        report.malformed_boxes += 1
        return
    x, y, w, h = box
    if w <= 0 or h <= 0:
        report.non_positive_boxes += 1
        return
    overflow = x + w > width + tol or y + h > height + tol
    report.xywh_overflow += overflow
    if overflow or x < -tol or y < -tol:
        report.boxes_outside_image += 1
    # read as corners (x1, y1, x2, y2) = (x, y, w, h): a proper box inside the image?
    report.fit_as_xyxy += -tol <= x < w <= width + tol and -tol <= y < h <= height + tol
