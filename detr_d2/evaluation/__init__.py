"""COCO evaluation with a choice of COCOeval backend (TEST.COCO_EVAL_BACKEND) and of PQ
implementation (TEST.PANOPTIC_EVAL_BACKEND)."""

# ruff: noqa: F401  (the package's API, re-exported)
from .coco_evaluation import COCO_EVAL_BACKENDS, COCOEvaluatorWithBackend, build_coco_evaluator
from .coco_evaluation import build_evaluator, build_panoptic_evaluators, load_coco_gt
from .coco_evaluation import evaluate_predictions_on_coco, has_compiled_cocoeval
from .panoptic_backend import PANOPTIC_EVAL_BACKENDS, COCOPanopticEvaluatorWithBackend
