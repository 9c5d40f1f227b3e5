"""Reliability II, data: a COCO json with duplicate ids, malformed values or boxes that training
drops stops before training naming the file and entries (or trains and evaluates on the same
cleaned ground truth); more objects than queries is a warning; unreadable images at evaluation
with DATALOADER.SKIP_BAD_IMAGES are left out and counted."""

import copy
import json
import math
import os
from collections import Counter

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from log_capture import log_records  # tests/log_capture.py
from tiny import TINY_MODEL_OPTS  # tests/tiny.py

from detr_d2.data.json_check import CocoJsonError, check_coco_json

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BASE = os.path.join(ROOT, "configs", "Base-DETR.yaml")
TINY_COCO = os.path.join(ROOT, "tests", "data", "tiny_coco")
IMAGES = os.path.join(TINY_COCO, "images")


@pytest.fixture(scope="module")
def coco():
    """4 images of tiny_coco (2-8 boxes each), every box of one category "thing"."""
    with open(os.path.join(TINY_COCO, "instances.json")) as f:
        data = json.load(f)
    images = data["images"][:4]
    ids = {im["id"] for im in images}
    anns = [dict(a, category_id=1) for a in data["annotations"] if a["image_id"] in ids]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def _error(tmp_path, data):
    with pytest.raises(CocoJsonError) as e:
        check_coco_json(_write(tmp_path / "bad.json", data), IMAGES)
    message = str(e.value)
    assert str(tmp_path / "bad.json") in message
    return message


@pytest.fixture
def records():
    with log_records("detr_d2") as records:
        yield records


# ---- 3. duplicate ids ----------------------------------------------------------------------------


def test_duplicate_image_ids_are_an_error_and_a_file_under_two_ids_a_warning(tmp_path, coco):
    data = copy.deepcopy(coco)
    first = data["images"][0]
    data["images"][2]["id"] = first["id"]
    message = _error(tmp_path, data)
    assert (
        f"images[0] ({first['file_name']}) and images[2] ({coco['images'][2]['file_name']}) "
        f"share the id {first['id']}" in message
    )

    data = copy.deepcopy(coco)
    data["images"].append(dict(first, id=777))
    report = check_coco_json(_write(tmp_path / "twice.json", data), IMAGES)
    assert report.has_problems
    assert report.duplicate_files == [(first["file_name"], [first["id"], 777])]
    assert f"{first['file_name']} is image ids {first['id']}, 777" in report.format()


# ---- 5. malformed values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, key, value, expected",
    [
        ("annotations", "bbox", ["1", "2", "3", "4"], "\"bbox\" ['1', '2', '3', '4'] is not a list"),
        ("annotations", "bbox", "10, 10, 5, 5", "is not a list of numbers [x, y, w, h]"),
        ("annotations", "bbox", 12.5, '"bbox" 12.5 is not a list of numbers'),
        ("annotations", "bbox", "null", '"bbox" None is not a list of numbers'),
        ("annotations", "category_id", "1", '"category_id" \'1\' is not an integer'),
        ("annotations", "image_id", "5802", '"image_id" \'5802\' is not an integer'),
        ("annotations", "id", None, '"id" missing is not an integer'),
        ("images", "id", "5802", "\"id\" '5802' is not an integer"),
        ("images", "width", None, "has no width"),
        ("categories", "name", None, 'no "name"'),
        ("categories", "id", "1", "categories[0]: \"id\" '1' is not an integer"),
    ],
)  # fmt: skip
def test_malformed_values_are_one_error_naming_file_and_entry(
    tmp_path, coco, where, key, value, expected
):
    data = copy.deepcopy(coco)
    index = 0 if where != "annotations" else 3
    if value is None:
        del data[where][index][key]
    else:
        data[where][index][key] = None if value == "null" else value
    message = _error(tmp_path, data)
    assert f"{where}[{index}]" in message and expected in message, message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b'{"images": [], "annotations": [', "not valid JSON: Expecting value: line 1 column 32"),
        (b"\xef\xbb\xbf{}", "UTF-8 byte-order mark"),
        (b"[]", "is not a COCO instances json"),
    ],
)  # fmt: skip
def test_unreadable_json_is_one_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(CocoJsonError, match=expected) as e:
        check_coco_json(str(path), IMAGES)
    assert str(path) in str(e.value)


def test_register_stops_on_a_bad_json_before_training(tmp_path, coco):
    import train_net

    data = copy.deepcopy(coco)
    data["annotations"][0]["bbox"] = "1 2 3 4"
    bad = _write(tmp_path / "bad.json", data)
    args = train_net.argument_parser().parse_args(
        ["--register-coco", "strings_train", bad, IMAGES, "--config-file", BASE]
        + TINY_MODEL_OPTS + ["DATASETS.TRAIN", "('strings_train',)", "OUTPUT_DIR", str(tmp_path)]
    )  # fmt: skip
    with pytest.raises(CocoJsonError, match=r"bad.json: 1 entries .*annotations\[0\]"):
        train_net.main(args)
    assert not os.path.exists(tmp_path / "model_final.pth")


# ---- 4. boxes that training drops: same ground truth for evaluation; 7. more objects than queries
# ---- 9. SKIP_BAD_IMAGES at evaluation ------------------------------------------------------------


def test_dropped_boxes_train_and_evaluate_on_the_same_cleaned_ground_truth(tmp_path, coco, records):
    import train_net

    data = copy.deepcopy(coco)
    dropped = ([1, 2, 3], [1, None, 3, 4], [math.nan, 1, 2, 3])
    for ann, bbox in zip(data["annotations"], dropped):
        ann["bbox"] = bbox
    gt = _write(tmp_path / "dropped.json", data)
    # an unreadable image (for the evaluation with SKIP_BAD_IMAGES)
    images = tmp_path / "images"
    images.mkdir()
    for im in data["images"]:
        os.symlink(os.path.join(IMAGES, im["file_name"]), images / im["file_name"])
    broken = data["images"][3]
    os.remove(images / broken["file_name"])
    (images / broken["file_name"]).write_bytes(b"not a jpeg")
    name = "dropped_boxes"

    def args(*extra, eval_only=False):
        return train_net.argument_parser().parse_args(
            ["--register-coco", name, gt, str(images), "--config-file", BASE]
            + ["--eval-only"] * eval_only + TINY_MODEL_OPTS + [
                "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
                "MODEL.DETR.NUM_OBJECT_QUERIES", "5", "MODEL.DETR.NUM_CLASSES", "-1", "DATALOADER.NUM_WORKERS", "0",
                "DATALOADER.SKIP_BAD_IMAGES", "True", "INPUT.MIN_SIZE_TRAIN", "(64,)",
                "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "64",
                "INPUT.MAX_SIZE_TEST", "128", "INPUT.CROP.ENABLED", "False",
                "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)",
                "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(tmp_path / "out"), *extra,
            ]
        )  # fmt: skip

    try:
        train_net.main(args())
        with open(tmp_path / "out" / "metrics.json") as f:
            trained_ap = [json.loads(x)["bbox/AP"] for x in f if "bbox/AP" in x][-1]
        messages = [r.getMessage() for r in records]
        report = next(m for m in messages if "COCO json check of" in m)
        ids = [a["id"] for a in data["annotations"][:3]]
        assert "boxes not 4 finite numbers:             3" in report
        first = data["annotations"][0]
        assert f"annotation {first['id']} of image id {first['image_id']}: bbox [1, 2, 3]" in report
        assert any("dropped 3 invalid boxes" in m for m in messages)
        # the 4 images hold 4, 5, 7 (...) boxes: more than the 5 queries
        boxes = Counter(a["image_id"] for a in data["annotations"][len(dropped) :])
        over = sum(n > 5 for n in boxes.values())
        assert any(f"{over} of " in m and "more objects than MODEL.DETR.NUM_OBJECT_QUERIES (5)" in m
                   for m in messages), boxes  # fmt: skip
        assert any("without its 3 malformed boxes" in m and f"annotation {ids[0]}" in m
                   for m in messages)  # fmt: skip
        assert any("Evaluation left out 1 unreadable images" in m and str(broken["id"]) in m
                   for m in messages)  # fmt: skip
        assert math.isfinite(trained_ap)
        records.clear()
        for backend in ("pycocotools", "hotcoco"):
            evaluated = train_net.main(
                args("MODEL.WEIGHTS", str(tmp_path / "out" / "model_final.pth"),
                     "TEST.COCO_EVAL_BACKEND", backend, eval_only=True)
            )  # fmt: skip
            assert evaluated["bbox"]["AP"] == pytest.approx(trained_ap, abs=1e-9)
        messages = [r.getMessage() for r in records]
        assert any("Evaluating the 3 images that were read, of 4" in m for m in messages)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize("backend", ["panopticapi", "hotcoco"])
def test_pq_over_the_images_read_when_some_were_skipped(tmp_path, backend):
    from detr_d2.evaluation.panoptic_backend import pq_compute
    from detr_d2.utils.testing import write_synthetic_panoptic

    gt_json, pred_json, gt_folder, pred_folder = write_synthetic_panoptic(
        str(tmp_path), num_images=4, seed=3
    )
    with open(pred_json) as f:
        pred = json.load(f)
    skipped = pred["annotations"].pop(1)["image_id"]  # as if unreadable: no prediction
    fewer = _write(tmp_path / "pred_fewer.json", pred)
    with open(gt_json) as f:
        gt = json.load(f)
    gt["images"] = [im for im in gt["images"] if im["id"] != skipped]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != skipped]
    gt3 = _write(tmp_path / "gt3.json", gt)
    reference = pq_compute(gt3, fewer, gt_folder, pred_folder, backend)
    result = pq_compute(gt_json, fewer, gt_folder, pred_folder, backend)  # no "no prediction"
    assert result["All"] == reference["All"] and 0 < result["All"]["pq"] < 1
