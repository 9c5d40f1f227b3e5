"""Timing COCO evaluation per TEST.COCO_EVAL_BACKEND (tools/benchmark_coco_eval.py and
tools/benchmark_speed.py)."""

import contextlib
import io
import time
from typing import Dict, List, Tuple

import numpy as np

from ..evaluation import evaluate_predictions_on_coco, load_coco_gt

__all__ = ["time_coco_eval"]


def time_coco_eval(
    backend: str, gt_json: str, results: List[Dict], repeats: int
) -> Tuple[float, List[float], np.ndarray]:
    """Evaluate bbox ``results`` against ``gt_json`` ``repeats`` times with ``backend``.

    Returns:
        seconds to load the ground truth (once per evaluator), the seconds of each evaluation
        (loadRes, evaluate, accumulate, summarize), and the 12 stats.
    """
    start = time.perf_counter()
    coco_gt = load_coco_gt(gt_json, backend)
    load_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = evaluate_predictions_on_coco(coco_gt, results, "bbox", backend=backend)
        times.append(time.perf_counter() - start)
    return load_s, times, np.asarray(coco_eval.stats, dtype=np.float64)
