"""The generated shapes datasets: determinism, on-disk format, annotations, registration."""

import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from panopticapi.utils import rgb2id

from detr_d2.data import builtin, shapes

NUM_IMAGES = 6  # images per generated test split: enough to see every kind of annotation


def _read_rgb(path):
    return cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]


def _files(directory):
    """{relative path: bytes} of every file under ``directory``."""
    out = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


@pytest.fixture
def registered(tmp_path):
    """Registers instance and panoptic test splits under tmp_path; removes them afterwards."""
    names = {"instances": "test_shapes_instances", "panoptic": "test_shapes_panoptic"}
    builtin.register_shapes(names["instances"], str(tmp_path), "t", NUM_IMAGES, 5)
    builtin.register_shapes(names["panoptic"], str(tmp_path), "t", NUM_IMAGES, 6, panoptic=True)
    yield names
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_categories_have_distinct_shapes_and_colours():
    cats = shapes.THING_CATEGORIES + shapes.STUFF_CATEGORIES
    assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
    assert len({c["name"] for c in cats}) == len(cats)
    assert len({tuple(c["color"]) for c in cats}) == len(cats)


@pytest.mark.parametrize(
    "name, fill, aspect",  # fill = area / box area, aspect = box width / height, unrotated
    [("circle", 0.785, 1.0), ("square", 1.0, 1.0), ("triangle", 0.5, 1.155),
     ("diamond", 0.5, 0.65), ("cross", 0.51, 1.0), ("star", 0.384, 1.05)],
)  # fmt: skip
def test_shape_masks(name, fill, aspect):
    mask = shapes._shape_mask(name, 48, 0.0, (60.0, 60.0), (128, 128))
    x, y, w, h = shapes._mask_box(mask)
    assert mask.sum() / (w * h) == pytest.approx(fill, abs=0.06)
    assert w / h == pytest.approx(aspect, abs=0.08)


def test_render_is_deterministic():
    for panoptic in (False, True):
        a = shapes.render_shapes_image(3, 7, panoptic)
        b = shapes.render_shapes_image(3, 7, panoptic)
        c = shapes.render_shapes_image(4, 7, panoptic)
        assert np.array_equal(a[0], b[0])
        assert len(a[1]) == len(b[1])
        assert all(np.array_equal(m, n) for (_, m), (_, n) in zip(a[1], b[1]))
        assert not np.array_equal(a[0], c[0])


def test_generation_deterministic_and_idempotent(tmp_path):
    for d, seed in (("a", 0), ("b", 0), ("c", 1)):
        shapes.generate_shapes(str(tmp_path / d), "t", NUM_IMAGES, seed, panoptic=True)
    a, b, c = (_files(tmp_path / d) for d in "abc")
    assert len(a) == 2 * NUM_IMAGES + 2  # images, panoptic PNGs, 2 json
    assert a == b
    assert a != c

    json_file = tmp_path / "a" / "shapes_panoptic" / "annotations" / "instances_t.json"
    mtime = os.path.getmtime(json_file)
    shapes.generate_shapes(str(tmp_path / "a"), "t", NUM_IMAGES, 0, panoptic=True)
    assert os.path.getmtime(json_file) == mtime  # already complete: not rewritten
    # as if another process died after moving the image dirs in: finishes with the same content
    os.remove(json_file)
    shapes.generate_shapes(str(tmp_path / "a"), "t", NUM_IMAGES, 0, panoptic=True)
    assert _files(tmp_path / "a") == b
    assert not [n for n in os.listdir(tmp_path / "a" / "shapes_panoptic") if n.startswith(".tmp")]
    with pytest.raises(RuntimeError, match="Delete"):  # a stale copy is not silently reused
        shapes.generate_shapes(str(tmp_path / "a"), "t", NUM_IMAGES + 1, 0, panoptic=True)


def test_instance_annotations(tmp_path):
    paths = shapes.generate_shapes(str(tmp_path), "t", NUM_IMAGES, 0)
    with open(paths["instances_json"]) as f:
        data = json.load(f)
    colours = {c["id"]: np.array(c["color"]) for c in data["categories"]}
    assert len(data["images"]) == NUM_IMAGES
    assert {a["image_id"] for a in data["annotations"]} <= {im["id"] for im in data["images"]}
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    assert min(a["id"] for a in data["annotations"]) >= 1
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        im = images[ann["image_id"]]
        image = _read_rgb(os.path.join(paths["image_root"], im["file_name"]))
        assert image.shape == (im["height"], im["width"], 3) == (128, 128, 3)
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 128 and y + h <= 128
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        assert mask.sum() == ann["area"]
        assert shapes._mask_box(mask) == ann["bbox"]  # tight box around the object's pixels
        mean = image[mask].mean(axis=0)
        assert np.abs(mean - colours[ann["category_id"]]).max() < shapes.COLOR_JITTER + 5


def test_panoptic_annotations(tmp_path):
    paths = shapes.generate_shapes(str(tmp_path), "t", NUM_IMAGES, 0, panoptic=True)
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    with open(paths["instances_json"]) as f:
        instances = json.load(f)
    isthing = {c["id"]: c["isthing"] for c in data["categories"]}
    colours = {c["id"]: np.array(c["color"]) for c in data["categories"]}
    assert sum(isthing.values()) == 6 and len(isthing) == 9
    for ann in data["annotations"]:
        seg = rgb2id(_read_rgb(os.path.join(paths["panoptic_root"], ann["file_name"])))
        image = _read_rgb(os.path.join(paths["image_root"], ann["file_name"]))
        segments = ann["segments_info"]
        assert set(np.unique(seg)) - {0} == {s["id"] for s in segments}
        stuff_cats = [s["category_id"] for s in segments if not isthing[s["category_id"]]]
        assert len(stuff_cats) == len(set(stuff_cats))  # one segment per stuff class
        for s in segments:
            mask = seg == s["id"]
            assert mask.sum() == s["area"] and s["iscrowd"] == 0
            assert shapes._mask_box(mask) == s["bbox"]
            if isthing[s["category_id"]]:
                mean = image[mask].mean(axis=0)
                assert np.abs(mean - colours[s["category_id"]]).max() < shapes.COLOR_JITTER + 5
        things = [s for s in segments if isthing[s["category_id"]]]
        boxes = [a for a in instances["annotations"] if a["image_id"] == ann["image_id"]]
        assert [(s["bbox"], s["area"]) for s in things] == [(a["bbox"], a["area"]) for a in boxes]
    kinds = {isthing[s["category_id"]] for a in data["annotations"] for s in a["segments_info"]}
    assert kinds == {0, 1}


def test_registered_instances(registered):
    name = registered["instances"]
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert len(dicts) == NUM_IMAGES
    assert os.path.isfile(dicts[0]["file_name"]) and os.path.isfile(meta.json_file)
    assert meta.evaluator_type == "coco"
    assert meta.thing_classes == ["circle", "square", "triangle", "diamond", "cross", "star"]
    classes = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert classes <= set(range(6))


def test_registered_panoptic_evaluates_to_pq_100(registered, tmp_path):
    """Feeding the ground truth back as predictions through detectron2's evaluator gives PQ 100."""
    name = registered["panoptic"]
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.label_divisor == 1000
    assert len(meta.stuff_classes) == 9 and set(meta.stuff_dataset_id_to_contiguous_id) == {7, 8, 9}
    evaluator = COCOPanopticEvaluator(name, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for d in dicts:
        assert d["segments_info"] and all(0 <= s["category_id"] < 9 for s in d["segments_info"])
        seg = torch.as_tensor(rgb2id(_read_rgb(d["pan_seg_file_name"])).astype(np.int64))
        pred = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
                for s in d["segments_info"]]  # fmt: skip
        evaluator.process([d], [{"panoptic_seg": (seg, pred)}])
    result = evaluator.evaluate()
    assert result["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_builtin_names_registered():
    for name in list(builtin.SHAPES_SPLITS) + list(builtin.SHAPES_PANOPTIC_SPLITS):
        assert name in DatasetCatalog.list()
    assert "coco_2017_train" in DatasetCatalog.list()  # detectron2's own are untouched
    assert "coco_2017_val_panoptic" in DatasetCatalog.list()
