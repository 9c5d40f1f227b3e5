"""A one-time look at a COCO instances json before training on it (no image is decoded).

:class:`CocoJsonError` for what no later step can repair (not JSON, a BOM, values of the wrong
type, shared ids); a :class:`CocoJsonReport` counting what training would drop quietly or learn
wrong: bad boxes (classified by ``dataset_checks.classify_box``, as training does), boxes that look
like [x1, y1, x2, y2], empty categories, unknown image / category ids, missing or repeated files."""

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .dataset_checks import _listing, classify_box, write_temporary_json

logger = logging.getLogger(__name__)

# Examples kept per problem, for the log and the errors; the counts are always complete.
MAX_EXAMPLES = 5


class CocoJsonError(ValueError):
    """A COCO json that cannot be used as it is; the message names the file and the entries."""


@dataclass
class CocoJsonReport:
    """Counts over one COCO instances json. Box counts are over non-crowd annotations only; a
    box counts in at most one of ``malformed_boxes``, ``non_positive_boxes``,
    ``boxes_outside_image``."""

    json_file: str
    image_root: str
    num_images: int = 0
    num_annotations: int = 0  # all annotations, crowd ones included
    num_crowd: int = 0
    categories: List[str] = field(default_factory=list)  # names, sorted by category id
    category_ids: List[int] = field(default_factory=list)  # the ids, sorted
    malformed_boxes: int = 0  # "bbox" missing, null, not 4 numbers, or not finite
    # (annotation id, image id, bbox) of the first MAX_EXAMPLES malformed boxes
    malformed_examples: List[Tuple] = field(default_factory=list)
    non_positive_boxes: int = 0  # width <= 0 or height <= 0
    boxes_outside_image: int = 0  # some side beyond the image by more than the tolerance
    sized_boxes: int = 0  # non-crowd boxes of 4 finite numbers, width and height > 0
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
    # (file_name, [image ids]) of files listed under more than one image id
    duplicate_files: List[Tuple[str, List[int]]] = field(default_factory=list)

    @property
    def invalid_boxes(self) -> int:
        return self.malformed_boxes + self.non_positive_boxes + self.boxes_outside_image

    @property
    def looks_like_xyxy(self) -> bool:
        """Most boxes overflow as [x, y, w, h]; or many do and (nearly) all fit as corners.
        Corner boxes near the top-left still fit when misread as [x, y, w, h], so "most
        overflow" alone misses xyxy data whose objects sit left or high; the second rule catches
        it. Real [x, y, w, h] data overflows only by annotation error, a few percent at most."""
        sized = max(self.sized_boxes, 1)  # no boxes: no overflow, no fit
        overflow, fit = self.xywh_overflow / sized, self.fit_as_xyxy / sized
        return overflow > 0.5 or (overflow > 0.1 and fit > 0.95)

    @property
    def has_problems(self) -> bool:
        """Anything worth a warning; images without annotations are not (background images)."""
        counts = self.invalid_boxes + self.unknown_image_ids + self.unknown_categories
        counts += self.missing_images + len(self.empty_categories) + len(self.duplicate_files)
        return bool(counts or self.looks_like_xyxy)

    def format(self) -> str:
        """The report as one multi-line block, for a single log call."""
        sized = max(self.sized_boxes, 1)
        empty = _listing(self.empty_categories, MAX_EXAMPLES)
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
            f"  files listed under several image ids:   {len(self.duplicate_files)}",
        ]
        lines += [
            f"    annotation {ann_id} of image id {image_id}: bbox {bbox!r} is not 4 finite "
            "numbers (dropped in training and evaluation)"
            for ann_id, image_id, bbox in self.malformed_examples
        ]
        lines += [
            f"    annotation {ann_id} of image id {image_id} ({file_name}): "
            f'category_id {category_id} is not in "categories"'
            for ann_id, image_id, file_name, category_id in self.unknown_category_examples
        ]
        lines += [f"    missing: {path}" for path in self.missing_image_examples]
        lines += [
            f"    {name} is image ids {', '.join(map(str, ids))}: its boxes train once per id"
            for name, ids in self.duplicate_files[:MAX_EXAMPLES]
        ]
        if not self.looks_like_xyxy:
            return "\n".join(lines + ["  box format: [x, y, width, height], as COCO expects"])
        lines.append(
            f"  box format LOOKS LIKE [x1, y1, x2, y2]: {self.xywh_overflow / sized:.0%} of "
            f"the boxes end beyond the image when read as COCO's [x, y, width, height], "
            f"{self.fit_as_xyxy / sized:.0%} fit as corners. Convert them: width = x2 - x1, "
            "height = y2 - y1."
        )
        return "\n".join(lines)


# Parsed JSON holds int, float, str, bool, None, list and dict only: exact types (bool is not an
# int here) are what to check, and 5x faster than the numbers ABCs on 860k annotations.
NUMBER = (int, float)


def _get(entry, key) -> str:
    return repr(entry[key]) if isinstance(entry, dict) and key in entry else "missing"


def _entry_problems(data: dict) -> List[str]:
    """What makes the entries of a COCO json unusable, one description each; [] when none."""
    problems = []
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or type(c.get("id")) is not int:
            problems.append(f'categories[{i}]: "id" {_get(c, "id")} is not an integer')
        elif not isinstance(c.get("name"), str) or not c["name"]:
            problems.append(f'categories[{i}] (id {c["id"]}): no "name" (a string)')
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            problems.append(f"images[{i}]: not an object")
            continue
        absent = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if absent:
            problems.append(
                f"images[{i}]: image {im.get('id', im.get('file_name', '?'))} has no "
                f"{', '.join(absent)}; every image needs id, file_name, width, height"
            )
        elif type(im["id"]) is not int:
            problems.append(f'images[{i}] ({im["file_name"]}): "id" {im["id"]!r} is not an integer')
        elif not all(type(im[k]) in NUMBER and im[k] > 0 for k in ("width", "height")):
            problems.append(
                f"images[{i}] (id {im['id']}): width {im['width']!r} and height "
                f"{im['height']!r} must be positive numbers"
            )
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            problems.append(f"annotations[{i}]: not an object")
            continue
        where = f"annotations[{i}]" + (f" (id {a['id']})" if "id" in a else "")
        for key in ("id", "image_id", "category_id"):
            if type(a.get(key)) is not int:
                problems.append(f'{where}: "{key}" {_get(a, key)} is not an integer')
        bbox = a.get("bbox", [0])  # no "bbox" at all: dropped like a malformed one
        numbers = isinstance(bbox, list) and all(type(v) in NUMBER or v is None for v in bbox)
        if not bbox or not numbers:  # None: a malformed box, not a malformed entry
            problems.append(f'{where}: "bbox" {bbox!r} is not a list of numbers [x, y, w, h]')
    for kind, name in (("categories", ""), ("images", "file_name"), ("annotations", "")):
        where = defaultdict(list)  # id -> the entries of kind under it
        for i, e in enumerate(data[kind]):
            if isinstance(e, dict) and type(e.get("id")) is int:
                where[e["id"]].append(f"{kind}[{i}]" + (f" ({e.get(name)})" if name else ""))
        problems += [
            f"{' and '.join(at)} share the id {i}: ids must be unique"
            for i, at in where.items()
            if len(at) > 1
        ]
    return problems


def check_coco_json(json_file: str, image_root: str, tolerance: float = 1.0) -> CocoJsonReport:
    """The report on the COCO instances ``json_file`` (images' ``file_name`` relative to
    ``image_root``); ``tolerance``: pixels a box may extend beyond its image before it counts as
    outside (COCO's own boxes overshoot by rounding). :class:`CocoJsonError` (as the module says,
    and when empty or without the three lists) names the file and the first entries."""
    with open(json_file, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise CocoJsonError(f"{json_file} is empty: expected a COCO instances json.")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise CocoJsonError(
            f"{json_file} starts with a UTF-8 byte-order mark (BOM), which JSON forbids and the "
            "COCO loaders reject: save it as UTF-8 without BOM."
        )
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoJsonError(f"{json_file} is not valid JSON: {e}.") from None
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in lists):
        raise CocoJsonError(
            f"{json_file} is not a COCO instances json: it needs the lists "
            '"images", "annotations" and "categories"'
        )
    problems = _entry_problems(data)
    if problems:
        listing = _listing(problems, MAX_EXAMPLES)
        raise CocoJsonError(f"{json_file}: {len(problems)} entries cannot be used: {listing}")
    report = CocoJsonReport(json_file=json_file, image_root=image_root)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    report.categories = [c["name"] for c in categories]
    report.category_ids = [c["id"] for c in categories]
    images = {im["id"]: im for im in data["images"]}
    report.num_images, report.num_annotations = len(images), len(data["annotations"])
    ids_of_file = defaultdict(list)
    for im in data["images"]:
        ids_of_file[os.path.normpath(im["file_name"])].append(im["id"])
    report.duplicate_files = [(f, ids) for f, ids in ids_of_file.items() if len(ids) > 1]

    per_category = {c["id"]: 0 for c in categories}
    unknown, malformed, tol = [], [], tolerance
    for ann in data["annotations"]:
        image = images.get(ann["image_id"])
        if image is None:
            report.unknown_image_ids += 1
            continue
        if ann["category_id"] in per_category:
            per_category[ann["category_id"]] += 1
        else:
            unknown.append((ann["id"], image["id"], image["file_name"], ann["category_id"]))
        if ann.get("iscrowd", 0):
            report.num_crowd += 1
            continue
        width, height = image["width"], image["height"]
        status, _ = classify_box(ann.get("bbox"), height=height, width=width, tolerance=tol)
        if status == "malformed":
            malformed.append((ann["id"], ann["image_id"], ann.get("bbox")))
        elif status == "degenerate":
            report.non_positive_boxes += 1
        else:
            report.sized_boxes += 1
            report.boxes_outside_image += status in ("clipped", "outside")
            x, y, w, h = ann["bbox"]
            report.xywh_overflow += x + w > width + tol or y + h > height + tol
            # read as corners (x1, y1, x2, y2) = (x, y, w, h): a proper box inside the image?
            report.fit_as_xyxy += -tol <= x < w <= width + tol and -tol <= y < h <= height + tol
    report.unknown_categories = len(unknown)
    report.unknown_category_examples = unknown[:MAX_EXAMPLES]
    report.malformed_boxes, report.malformed_examples = len(malformed), malformed[:MAX_EXAMPLES]

    report.empty_categories = [c["name"] for c in categories if per_category[c["id"]] == 0]
    annotated = images.keys() & {a["image_id"] for a in data["annotations"]}
    report.images_without_annotations = len(images) - len(annotated)
    paths = [os.path.join(image_root, image["file_name"]) for image in images.values()]
    missing = [path for path in paths if not os.path.isfile(path)]
    report.missing_images, report.missing_image_examples = len(missing), missing[:MAX_EXAMPLES]
    return report


def ground_truth_without_malformed_boxes(json_file: str, data: Dict) -> str:
    """The json evaluation should read: ``json_file``, or, when some of its boxes are malformed
    (training drops them; the COCO evaluators fail on them naming no file), a temporary copy
    without those annotations, logged. ``data``: the file's content (not modified)."""
    bad = [a for a in data["annotations"] if classify_box(a.get("bbox"))[0] == "malformed"]
    if not bad:
        return json_file
    dropped = {id(a) for a in bad}
    data = dict(data, annotations=[a for a in data["annotations"] if id(a) not in dropped])
    examples = _listing([f"annotation {a.get('id')} bbox {a.get('bbox')!r}" for a in bad])
    logger.warning(
        f"Evaluating against {json_file} without its {len(bad)} malformed boxes, which training "
        f"drops too (e.g. {examples})"
    )
    return write_temporary_json(data, "ground_truth_")
