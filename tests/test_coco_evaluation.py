"""COCO evaluation backends: the reference AP of cocoapi's fake results on the 100-image val2014
set, through the evaluator train_net.py uses, and agreement of every backend with pycocotools."""

import copy
import json
import os
import uuid
from collections import defaultdict

import detectron2.evaluation.coco_evaluation as d2_coco_evaluation
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, BoxMode, Instances

from detr_d2 import add_detr_config
from detr_d2.evaluation import (
    COCO_EVAL_BACKENDS,
    COCOEvaluatorWithBackend,
    build_coco_evaluator,
    evaluate_predictions_on_coco,
    has_compiled_cocoeval,
    load_coco_gt,
)
from detr_d2.utils.testing import make_synthetic_coco

DATA = os.path.join(os.path.dirname(__file__), "data", "coco_val2014_100_eval")
GT_JSON = os.path.join(DATA, "instances_val2014_100.json")
RESULTS_JSON = {
    "bbox": os.path.join(DATA, "instances_val2014_fakebbox100_results.json"),
    "segm": os.path.join(DATA, "instances_val2014_fakesegm100_results.json"),
}
D2_EVALUATE = d2_coco_evaluation._evaluate_predictions_on_coco

# SOURCE.txt: pycocotools on the float64 results
EXPECTED_STATS = {
    "bbox": [
        0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
        0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
        0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982,
    ],
    "segm": [
        0.3195452758576433, 0.5622883972521636, 0.29892653412086784, 0.3873740315997837,
        0.31018272403369485, 0.3269339071005138, 0.2682297225711534, 0.41544868114906375,
        0.4168394992198818, 0.4694498622754236, 0.37675922666197265, 0.3814715099715099,
    ],
}  # fmt: skip
# SOURCE.txt: through detectron2's COCOEvaluator, whose float32 boxes move 2 IoUs below a threshold
EXPECTED_D2 = {
    "bbox": {
        "AP": 50.40738623270372, "AP50": 69.69727247299578, "AP75": 57.29816669904824,
        "APs": 58.46794018193362, "APm": 51.93996948036719, "APl": 50.13978986347466,
    },
    "segm": {
        "AP": 31.954527585764332, "AP50": 56.22883972521636, "AP75": 29.892653412086784,
        "APs": 38.73740315997837, "APm": 31.018272403369483, "APl": 32.69339071005138,
    },
}  # fmt: skip


def _cfg(backend):
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.TEST.COCO_EVAL_BACKEND = backend
    return cfg


@pytest.fixture(scope="module")
def val2014_100():
    """The fixture as a registered detectron2 dataset (metadata with the contiguous id map)."""
    name = f"test_coco_val2014_100_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, GT_JSON, image_root=DATA)
    DatasetCatalog.get(name)  # fills thing_classes and thing_dataset_id_to_contiguous_id
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _model_outputs(results, dataset_name, with_masks):
    """cocoapi's results as the (inputs, outputs) a detectron2 model gives its evaluator."""
    meta = MetadataCatalog.get(dataset_name)
    to_contiguous = meta.thing_dataset_id_to_contiguous_id
    images = {img["id"]: img for img in json.load(open(GT_JSON))["images"]}
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)

    inputs, outputs = [], []
    for image_id, rs in sorted(by_image.items()):
        h, w = images[image_id]["height"], images[image_id]["width"]
        if with_masks:
            rles = [r["segmentation"] for r in rs]
            xywh = mask_util.toBbox(rles)
        else:
            xywh = np.array([r["bbox"] for r in rs], dtype=np.float64)
        instances = Instances((h, w))
        xyxy = BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        instances.pred_boxes = Boxes(torch.as_tensor(xyxy))
        instances.scores = torch.tensor([r["score"] for r in rs])
        instances.pred_classes = torch.tensor([to_contiguous[r["category_id"]] for r in rs])
        if with_masks:
            masks = mask_util.decode(rles)  # (h, w, n)
            instances.pred_masks = torch.as_tensor(masks).permute(2, 0, 1).bool()
        inputs.append({"image_id": image_id, "height": h, "width": w})
        outputs.append({"instances": instances})
    return inputs, outputs


@pytest.fixture(scope="module")
def fake_model_outputs(val2014_100):
    return {
        iou_type: _model_outputs(json.load(open(path)), val2014_100, iou_type == "segm")
        for iou_type, path in RESULTS_JSON.items()
    }


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("backend", COCO_EVAL_BACKENDS)
def test_reference_ap_through_evaluator(
    val2014_100, fake_model_outputs, backend, iou_type, tmp_path, device
):
    inputs, outputs = fake_model_outputs[iou_type]
    outputs = [{"instances": o["instances"].to(device)} for o in outputs]  # as the model gives

    evaluator = build_coco_evaluator(_cfg(backend), val2014_100, str(tmp_path))
    evaluator.reset()
    evaluator.process(inputs, outputs)
    all_metrics = evaluator.evaluate()
    # tasks come from the predictions: with masks, box AP (on the masks' boxes) is computed first
    assert sorted(all_metrics) == (["bbox", "segm"] if iou_type == "segm" else ["bbox"])
    metrics = all_metrics[iou_type]

    for name, expected in EXPECTED_D2[iou_type].items():
        assert metrics[name] == pytest.approx(expected, rel=0, abs=1e-9), name
    per_category = [k for k in metrics if k.startswith("AP-")]
    assert len(per_category) == 80 and "AP-person" in per_category
    assert (tmp_path / "coco_instances_results.json").is_file()
    assert d2_coco_evaluation._evaluate_predictions_on_coco is D2_EVALUATE  # swapped back


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("backend", COCO_EVAL_BACKENDS)
def test_reference_stats_float64(backend, iou_type):
    """cocoapi's own numbers, the results going to the backend as float64, as pycocotools reads
    them from the json."""
    results = json.load(open(RESULTS_JSON[iou_type]))
    coco_eval = evaluate_predictions_on_coco(
        load_coco_gt(GT_JSON, backend), results, iou_type, backend=backend
    )
    np.testing.assert_allclose(coco_eval.stats, EXPECTED_STATS[iou_type], rtol=0, atol=1e-12)


def _with_octagon_masks(results, images, seed=0):
    """Results with an RLE mask too: the box with its corners cut off by a random fraction (the
    ground truth masks are the full rectangles)."""
    cuts = np.random.default_rng(seed).uniform(0, 0.3, size=len(results)).tolist()
    out = []
    for r, c in zip(results, cuts):
        x, y, w, h = r["bbox"]
        img = images[r["image_id"]]
        dx, dy = c * w, c * h
        poly = [[x + dx, y, x + w - dx, y, x + w, y + dy, x + w, y + h - dy,
                 x + w - dx, y + h, x + dx, y + h, x, y + h - dy, x, y + dy]]  # fmt: skip
        rle = mask_util.merge(mask_util.frPyObjects(poly, img["height"], img["width"]))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append(dict(r, segmentation=rle))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(gt json, results) of 300 images with 20 boxes each, and of 40 images with 30 boxes and
    masks each."""
    out = {}
    for kind, (num_images, dets) in {"boxes": (300, 20), "masks": (40, 30)}.items():
        dataset, results = make_synthetic_coco(num_images, dets, seed=7)
        if kind == "masks":
            results = _with_octagon_masks(results, {img["id"]: img for img in dataset["images"]})
        path = tmp_path_factory.mktemp("generated") / f"{kind}.json"
        path.write_text(json.dumps(dataset))
        out[kind] = (str(path), results)
    return out


SETTINGS = {
    "default": {},
    "8_dets_half_images": {"max_dets_per_image": [1, 5, 8], "img_ids": list(range(1, 300, 2))},
}


@pytest.mark.parametrize(
    "kind,iou_type,setting",
    [
        ("boxes", "bbox", "default"),
        ("boxes", "bbox", "8_dets_half_images"),
        ("masks", "segm", "default"),
        ("masks", "bbox", "default"),  # a mask model's box AP: results carry both
    ],
)
def test_generated_stats_match_pycocotools(generated, kind, iou_type, setting):
    gt_json, results = generated[kind]
    before = copy.deepcopy(results)
    evals = {
        backend: evaluate_predictions_on_coco(
            load_coco_gt(gt_json, backend), results, iou_type, backend=backend, **SETTINGS[setting]
        )
        for backend in COCO_EVAL_BACKENDS
    }
    assert results == before
    ref = evals.pop("pycocotools")
    # the generated set is not degenerate: the settings and the detection limits matter
    assert 0.05 < ref.stats[0] < 0.9 and ref.stats[6] < ref.stats[7] <= ref.stats[8]
    for backend, coco_eval in evals.items():
        assert len(coco_eval.stats) == 12, backend
        np.testing.assert_allclose(coco_eval.stats, ref.stats, rtol=0, atol=1e-12, err_msg=backend)
        # detectron2's per-category AP reads the precision array
        np.testing.assert_allclose(
            coco_eval.eval["precision"], ref.eval["precision"], rtol=0, atol=1e-12, err_msg=backend
        )


def test_unknown_backend_names_the_config_key(val2014_100):
    with pytest.raises(ValueError, match=r"TEST\.COCO_EVAL_BACKEND"):
        build_coco_evaluator(_cfg("pycocotool"), val2014_100)
    with pytest.raises(ValueError, match="pycocotool"):
        COCOEvaluatorWithBackend(val2014_100, backend="pycocotool")


def test_builds_from_config(val2014_100):
    cfg = get_cfg()
    add_detr_config(cfg)
    evaluator = build_coco_evaluator(cfg, val2014_100)
    assert evaluator._backend == cfg.TEST.COCO_EVAL_BACKEND
    # the compiled COCOeval_opt only where it exists: not with the Python-only detectron2
    assert evaluator._use_fast_impl == has_compiled_cocoeval()
    assert build_coco_evaluator(_cfg("hotcoco"), val2014_100)._backend == "hotcoco"
