"""PQ by panopticapi's ``pq_compute`` (Detectron2's) or hotcoco's, a Rust implementation giving the
same PQ / SQ / RQ (within 1e-9 in the tests) faster: TEST.PANOPTIC_EVAL_BACKEND. Both fail on an
image without a prediction, so images left out as unreadable leave the ground truth too."""

import json
import logging
from typing import Dict

from detectron2.evaluation import COCOPanopticEvaluator

from ..data.dataset_checks import write_temporary_json

PANOPTIC_EVAL_BACKENDS = ("panopticapi", "hotcoco")

logger = logging.getLogger(__name__)


def _implementation(backend: str):
    """The ``pq_compute`` of ``backend``, over the ground truth of the predicted images only."""
    if backend not in PANOPTIC_EVAL_BACKENDS:
        raise ValueError(f"TEST.PANOPTIC_EVAL_BACKEND {backend!r} not in {PANOPTIC_EVAL_BACKENDS}")
    if backend == "panopticapi":
        from panopticapi.evaluation import pq_compute as compute
    else:
        from hotcoco.panoptic import pq_compute as compute

    def over_predicted_images(gt_json, pred_json, gt_folder=None, pred_folder=None):
        gt_json = _ground_truth_of_predicted_images(gt_json, pred_json)
        return compute(gt_json, pred_json, gt_folder=gt_folder, pred_folder=pred_folder)

    return over_predicted_images


def pq_compute(gt_json, pred_json, gt_folder, pred_folder, backend: str) -> Dict:
    """panopticapi's ``pq_compute`` result ("All", "Things", "Stuff": {"pq", "sq", "rq", "n"},
    fractions; "per_class") from the chosen ``backend``."""
    return _implementation(backend)(gt_json, pred_json, gt_folder, pred_folder)


def _ground_truth_of_predicted_images(gt_json: str, pred_json: str) -> str:
    """``gt_json``, or when the predictions cover only some of its images, a temporary copy
    restricted to those, logged."""
    with open(pred_json) as f:
        predicted = {a["image_id"] for a in json.load(f)["annotations"]}
    with open(gt_json) as f:
        gt = json.load(f)
    if {im["id"] for im in gt["images"]} <= predicted:
        return gt_json
    logger.warning(f"PQ over the {len(predicted)} images read, of {len(gt['images'])} in {gt_json}")
    gt["images"] = [im for im in gt["images"] if im["id"] in predicted]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in predicted]
    return write_temporary_json(gt, "panoptic_ground_truth_")


class COCOPanopticEvaluatorWithBackend(COCOPanopticEvaluator):
    """Detectron2's ``COCOPanopticEvaluator`` (same prediction files, same results) whose PQ is
    computed by ``backend`` ("panopticapi": Detectron2's own, over the predicted images)."""

    def __init__(self, dataset_name: str, output_dir=None, backend: str = "hotcoco"):
        self._pq_compute = _implementation(backend)  # an unknown backend fails before any work
        super().__init__(dataset_name, output_dir)

    def evaluate(self):
        import panopticapi.evaluation

        # Detectron2's evaluator imports panopticapi's pq_compute when it evaluates
        original = panopticapi.evaluation.pq_compute
        panopticapi.evaluation.pq_compute = self._pq_compute
        try:
            return super().evaluate()
        finally:
            panopticapi.evaluation.pq_compute = original
