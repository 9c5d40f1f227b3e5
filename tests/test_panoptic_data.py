"""Panoptic data and evaluation on the real COCO panoptic sample (tests/data/panoptic_sample)."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.structures import Boxes, Instances
from PIL import Image

from detr_d2 import add_detr_config
from detr_d2.data import DetrPanopticDatasetMapper
from detr_d2.evaluation import build_panoptic_evaluators
from detr_d2.modeling.panoptic import combine_panoptic

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "panoptic_sample")
PANOPTIC_JSON = os.path.join(SAMPLE, "panoptic_examples.json")
PANOPTIC_ROOT = os.path.join(SAMPLE, "panoptic_examples")
META = _get_builtin_metadata("coco_panoptic_standard")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample as Detectron2 dataset dicts (blank images stand in for the JPEGs), the raw
    json, and a registered dataset name whose instances json holds the non-crowd things."""
    root = tmp_path_factory.mktemp("panoptic_sample")
    with open(PANOPTIC_JSON) as f:
        raw = json.load(f)
    for im in raw["images"]:
        Image.new("RGB", (im["width"], im["height"]), (90, 120, 150)).save(root / im["file_name"])
    dicts = load_coco_panoptic_json(PANOPTIC_JSON, str(root), PANOPTIC_ROOT, META)
    with open(os.path.join(SAMPLE, "panoptic_coco_detection_format.json")) as f:
        det = json.load(f)
    things = set(META["thing_dataset_id_to_contiguous_id"])
    det["categories"] = [c for c in det["categories"] if c["id"] in things]
    det["annotations"] = [a for a in det["annotations"] if a["category_id"] in things]
    for a in det["annotations"]:  # pycocotools reads annotation id 0 as "unmatched"
        a["id"] += 1
    instances_json = root / "instances_things.json"
    instances_json.write_text(json.dumps(det))
    name = "detr_d2_test_panoptic_sample"
    if name not in MetadataCatalog.list():
        MetadataCatalog.get(name).set(
            panoptic_root=PANOPTIC_ROOT,
            panoptic_json=PANOPTIC_JSON,
            json_file=str(instances_json),
            evaluator_type="coco_panoptic_seg",
            **META,
        )
    return dicts, raw, name


def _segments(raw, image_id, crowd):
    ann = next(a for a in raw["annotations"] if a["image_id"] == image_id)
    return [s for s in ann["segments_info"] if s["iscrowd"] == crowd]


def test_mapper_gives_every_non_crowd_segment_with_box_area_and_class(sample):
    dicts, raw, _ = sample
    mapper = DetrPanopticDatasetMapper(True, augmentations=[], image_format="RGB")
    for d in dicts:
        out = mapper(d)
        inst = out["instances"]
        segments = _segments(raw, d["image_id"], crowd=0)
        assert len(inst) == len(segments) and len(_segments(raw, d["image_id"], crowd=1)) > 0
        im = next(i for i in raw["images"] if i["id"] == d["image_id"])
        assert out["image"].shape[1:] == inst.image_size == (im["height"], im["width"])
        assert inst.gt_masks.tensor.dtype == torch.bool
        # no pixel in two segments
        assert inst.gt_masks.tensor.sum(0).max() <= 1
        for k, s in enumerate(segments):
            x, y, w, h = s["bbox"]
            assert inst.gt_boxes.tensor[k].tolist() == [x, y, x + w, y + h]
            assert inst.gt_masks.tensor[k].sum().item() == s["area"]
            cat = s["category_id"]
            contiguous = META["thing_dataset_id_to_contiguous_id"].get(
                cat, META["stuff_dataset_id_to_contiguous_id"].get(cat)
            )
            assert inst.gt_classes[k].item() == contiguous
    # things come first in the contiguous ids, stuff after
    assert inst.gt_classes.max().item() >= 80 and inst.gt_classes.min().item() == 0


def test_mapper_transforms_masks_with_the_image(sample):
    dicts, raw, _ = sample
    d = dicts[0]  # 640 x 427
    plain = DetrPanopticDatasetMapper(True, augmentations=[], image_format="RGB")(d)["instances"]
    flip_resize = [T.RandomFlip(prob=1.0), T.Resize((214, 320))]
    out = DetrPanopticDatasetMapper(True, augmentations=flip_resize, image_format="RGB")(d)
    inst = out["instances"]
    assert out["image"].shape == (3, 214, 320) and inst.image_size == (214, 320)
    # nearest resize of the id map: every mask is its flipped original, resized with nearest
    expected = torch.stack(
        [
            torch.from_numpy(
                np.array(
                    Image.fromarray(m.flip(-1).numpy().astype(np.uint8)).resize(
                        (320, 214), Image.NEAREST
                    )
                )
            ).bool()
            for m in plain.gt_masks.tensor
        ]
    )
    visible = expected.flatten(1).any(1)
    assert len(inst) == visible.sum().item()
    assert torch.equal(inst.gt_masks.tensor, expected[visible])
    assert torch.equal(inst.gt_classes, plain.gt_classes[visible])
    boxes = inst.gt_boxes.tensor
    assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 214).all()


def test_mapper_drops_segments_cropped_away(sample):
    dicts, raw, _ = sample
    crop = [T.CropTransform(0, 0, 64, 48)]

    class FixedCrop(T.Augmentation):
        def get_transform(self, image):
            return crop[0]

    out = DetrPanopticDatasetMapper(True, augmentations=[FixedCrop()], image_format="RGB")(dicts[0])
    inst = out["instances"]
    assert inst.image_size == (48, 64) and 0 < len(inst) < len(_segments(raw, 142238, 0))
    assert (inst.gt_masks.tensor.flatten(1).sum(1) > 0).all()


def test_mapper_at_test_time_returns_the_image_only(sample):
    dicts, _, _ = sample
    out = DetrPanopticDatasetMapper(False, augmentations=[], image_format="RGB")(dicts[1])
    assert "instances" not in out and out["image"].shape == (3, 360, 640)


def _ground_truth_as_predictions(d, raw, device="cpu"):
    """Our model's output for a perfect prediction: one query per segment (crowd ones included,
    as the evaluator ignores them), mask logits +10 inside and -10 outside, through the same
    combination step as the model (combine_panoptic), on ``device``."""
    ids = np.asarray(Image.open(d["pan_seg_file_name"]), dtype=np.int64)
    ids = torch.from_numpy(ids[..., 0] + 256 * ids[..., 1] + 256**2 * ids[..., 2]).to(device)
    segments = d["segments_info"]
    logits = torch.stack([torch.where(ids == s["id"], 10.0, -10.0) for s in segments])
    classes = torch.tensor([s["category_id"] for s in segments], device=device)
    scores = torch.linspace(1.0, 0.9, len(segments), device=device)
    is_thing = [c in META["thing_dataset_id_to_contiguous_id"].values() for c in range(133)]
    panoptic_seg = combine_panoptic(scores, classes, logits, is_thing, min_area=4)

    things = [k for k, s in enumerate(segments) if s["isthing"] and not s["iscrowd"]]
    inst = Instances(ids.shape)
    inst.pred_masks = logits[things] > 0
    inst.pred_boxes = Boxes(
        torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in (segments[k]["bbox"] for k in things)],
            dtype=torch.float32,
            device=device,
        )
    )
    inst.scores = scores[things]
    inst.pred_classes = classes[things]
    # stuff "instances" as a box model trained on panoptic boxes predicts them: filtered out
    stuff = inst[:1]
    stuff.pred_classes = torch.tensor([100], device=device)
    return {"panoptic_seg": panoptic_seg, "instances": Instances.cat([inst, stuff])}


def test_ground_truth_through_our_output_format_scores_pq_100(sample, tmp_path, device):
    dicts, raw, name = sample
    evaluator = COCOPanopticEvaluator(name, str(tmp_path))
    evaluator.reset()
    for d in dicts:
        evaluator.process([d], [_ground_truth_as_predictions(d, raw, device)])
    res = evaluator.evaluate()["panoptic_seg"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert res[key] == pytest.approx(100.0), key


def test_panoptic_evaluators_report_pq_and_mask_ap_in_one_pass(sample, tmp_path, device):
    dicts, raw, name = sample
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.MODEL.MASK_ON = True
    evaluator = build_panoptic_evaluators(cfg, name, str(tmp_path))
    evaluator.reset()
    for d in dicts:
        evaluator.process([d], [_ground_truth_as_predictions(d, raw, device)])
    res = evaluator.evaluate()
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] == pytest.approx(100.0)


def test_box_stage_gets_box_ap_only(sample, tmp_path):
    _, _, name = sample
    cfg = get_cfg()
    add_detr_config(cfg)
    evaluator = build_panoptic_evaluators(cfg, name, str(tmp_path))
    assert evaluator._tasks == ("bbox",)


def _perturbed_panoptic_seg(d):
    """A flawed prediction of image ``d`` through combine_panoptic: the first non-crowd thing
    shifted 6 px right (lower IoU), the second relabelled to another thing class (a false
    positive and a false negative), the last segment missed, the rest exact."""
    ids = np.asarray(Image.open(d["pan_seg_file_name"]), dtype=np.int64)
    ids = torch.from_numpy(ids[..., 0] + 256 * ids[..., 1] + 256**2 * ids[..., 2])
    segments = d["segments_info"][:-1]
    logits = torch.stack([torch.where(ids == s["id"], 10.0, -10.0) for s in segments])
    classes = torch.tensor([s["category_id"] for s in segments])
    things = [k for k, s in enumerate(segments) if s["isthing"] and not s["iscrowd"]]
    logits[things[0]] = torch.roll(logits[things[0]], 6, dims=1) + 1  # wins over its neighbours
    classes[things[1]] = (classes[things[1]] + 1) % 80
    is_thing = [c in META["thing_dataset_id_to_contiguous_id"].values() for c in range(133)]
    return combine_panoptic(torch.full((len(segments),), 0.95), classes, logits, is_thing, 4)


def _write_prediction_files(dicts, predictions, folder):
    """COCO panoptic prediction files written here, independently of Detectron2's evaluator:
    one RGB-encoded PNG per image and a json with dataset category ids."""
    to_dataset_id = {
        c: i
        for m in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")
        for i, c in META[m].items()
    }
    folder.mkdir()
    annotations = []
    for d, (seg, infos) in zip(dicts, predictions):
        seg = seg.numpy().astype(np.uint32)
        rgb = np.stack([seg % 256, seg // 256 % 256, seg // 256**2], axis=-1).astype(np.uint8)
        file_name = os.path.basename(d["pan_seg_file_name"])
        Image.fromarray(rgb).save(folder / file_name)
        segments = [{"id": s["id"], "category_id": to_dataset_id[s["category_id"]]} for s in infos]
        annotations.append(
            {"image_id": d["image_id"], "file_name": file_name, "segments_info": segments}
        )
    pred_json = folder.parent / (folder.name + ".json")
    pred_json.write_text(json.dumps({"annotations": annotations}))
    return str(pred_json)


def test_perturbed_prediction_scores_the_pq_of_an_independent_implementation(sample, tmp_path):
    from hotcoco.panoptic import pq_compute  # a Rust implementation, not panopticapi

    dicts, _, name = sample
    predictions = [_perturbed_panoptic_seg(d) for d in dicts]
    pred_json = _write_prediction_files(dicts, predictions, tmp_path / "independent")
    evaluator = COCOPanopticEvaluator(name, str(tmp_path / "detectron2"))
    evaluator.reset()
    for d, p in zip(dicts, predictions):
        evaluator.process([d], [{"panoptic_seg": p}])
    ours = evaluator.evaluate()["panoptic_seg"]

    reference = pq_compute(PANOPTIC_JSON, pred_json, PANOPTIC_ROOT, str(tmp_path / "independent"))
    assert 20 < ours["PQ"] < 95  # really perturbed, still mostly right
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for metric in ("pq", "sq", "rq"):
            expected = 100 * reference[group][metric]
            assert ours[metric.upper() + suffix] == pytest.approx(expected, abs=1e-6), (
                group,
                metric,
            )


@pytest.mark.parametrize("backend", ["panopticapi", "hotcoco"])
def test_panoptic_eval_backends_give_the_same_results(sample, tmp_path, backend, monkeypatch):
    import panopticapi.evaluation

    from detr_d2.evaluation import COCOPanopticEvaluatorWithBackend

    dicts, _, name = sample
    predictions = [_perturbed_panoptic_seg(d) for d in dicts]

    def evaluate(evaluator):
        evaluator.reset()
        for d, (seg, infos) in zip(dicts, predictions):
            infos = [dict(s) for s in infos]  # the evaluator rewrites category ids in place
            evaluator.process([d], [{"panoptic_seg": (seg, infos)}])
        return evaluator.evaluate()["panoptic_seg"]

    reference = evaluate(COCOPanopticEvaluator(name, str(tmp_path / "detectron2")))
    if backend == "hotcoco":  # panopticapi must not be what computes it

        def not_panopticapi(*args, **kwargs):
            raise AssertionError("panopticapi computed the PQ")

        monkeypatch.setattr(panopticapi.evaluation, "pq_compute", not_panopticapi)
    ours = evaluate(COCOPanopticEvaluatorWithBackend(name, str(tmp_path / backend), backend))
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_unknown_panoptic_eval_backend_names_the_key(sample):
    from detr_d2.evaluation import COCOPanopticEvaluatorWithBackend

    with pytest.raises(ValueError, match="TEST.PANOPTIC_EVAL_BACKEND 'fast'"):
        COCOPanopticEvaluatorWithBackend(sample[2], None, "fast")


def test_pq_implementations_agree_on_a_generated_set(tmp_path):
    from detr_d2.evaluation.panoptic_backend import pq_compute
    from detr_d2.utils.testing import write_synthetic_panoptic

    paths = write_synthetic_panoptic(str(tmp_path), num_images=25, seed=3)
    reference = pq_compute(*paths, backend="panopticapi")
    fast = pq_compute(*paths, backend="hotcoco")
    assert 0.05 < reference["All"]["pq"] < 0.95  # neither trivial nor perfect
    for group in ("All", "Things", "Stuff"):
        for metric in ("pq", "sq", "rq", "n"):
            assert fast[group][metric] == pytest.approx(reference[group][metric], abs=1e-9)
