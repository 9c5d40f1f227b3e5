#!/usr/bin/env python
"""Time COCO bbox evaluation per TEST.COCO_EVAL_BACKEND on a generated COCO-like set, and check
that every backend's 12 stats equal pycocotools'.

    python tools/benchmark_coco_eval.py                    # 5000 images x 100 detections
    python tools/benchmark_coco_eval.py --num-images 500 --repeats 5

"eval" is what the evaluator does per evaluation (loadRes, evaluate, accumulate, summarize);
"load gt" is reading the ground truth json into the backend, once per evaluator.
"""

import argparse
import json
import logging
import os
import statistics
import tempfile

import numpy as np
from tabulate import tabulate

from detr_d2.analysis.coco_eval_timing import time_coco_eval
from detr_d2.evaluation import COCO_EVAL_BACKENDS
from detr_d2.evaluation.synthetic_coco import make_synthetic_coco

logger = logging.getLogger("benchmark_coco_eval")


def main(args):
    logger.info(f"Generating {args.num_images} images x {args.dets_per_image} detections ...")
    dataset, results = make_synthetic_coco(args.num_images, args.dets_per_image, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt_json = os.path.join(tmp, "gt.json")
        with open(gt_json, "w") as f:
            json.dump(dataset, f)

        measured = {}
        for backend in ["pycocotools"] + [b for b in COCO_EVAL_BACKENDS if b != "pycocotools"]:
            repeats = args.pycocotools_repeats if backend == "pycocotools" else args.repeats
            logger.info(f"Timing {backend} ({repeats} runs) ...")
            load_s, times, stats = time_coco_eval(backend, gt_json, results, repeats)
            measured[backend] = load_s, statistics.median(times), stats

    _, ref_s, ref_stats = measured["pycocotools"]
    rows = [
        [
            backend,
            f"{load_s:.2f}",
            f"{eval_s:.2f}",
            f"{ref_s / eval_s:.1f}x",
            f"{np.abs(stats - ref_stats).max():.1e}",
        ]
        for backend, (load_s, eval_s, stats) in measured.items()
    ]
    print(
        f"COCO bbox evaluation, {args.num_images} images, {len(dataset['annotations'])} gt, "
        f"{len(results)} detections (seed {args.seed}); eval: median of {args.repeats} runs "
        f"({args.pycocotools_repeats} for pycocotools)\n"
        + tabulate(
            rows,
            headers=["backend", "load gt (s)", "eval (s)", "speedup", "max |stats - pycocotools|"],
            tablefmt="pipe",
        )
        + f"\npycocotools stats: {np.array2string(ref_stats, precision=6, separator=', ')}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per fast backend")
    parser.add_argument("--pycocotools-repeats", type=int, default=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(parser.parse_args())
