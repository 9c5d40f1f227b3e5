#!/usr/bin/env python
"""The speed issue's figures in one run, each as a ratio to its unoptimized counterpart.

1. Inference, DETR at a fixed size (default R50, 800x1216, batch 1): MODEL.DETR.FAST_INFERENCE
   off (eager backbone) vs on (norms folded into convs, channels_last); median and spread of the
   per-image time, the ratio, and the largest output difference.
2. Matching: per-image (N, M_i) cost blocks (HungarianMatcher) vs one (B*N, sum M) matrix split
   afterwards, at batch 64.
3. Training: CPU seconds per iteration at batch 2 (optional, --train).
COCO evaluation has its own benchmark: tools/benchmark_coco_eval.py.

    python tools/benchmark_speed.py --config-file configs/detr_r50.yaml --threads 2
"""

import argparse
import logging
import time

import numpy as np
import torch
from detectron2.utils.logger import setup_logger
from scipy.optimize import linear_sum_assignment

from detr_d2.analysis.inputs import build_analysis_model, setup_cfg
from detr_d2.analysis.timing import summarize
from detr_d2.modeling import HungarianMatcher

logger = logging.getLogger("detr_d2.benchmark_speed")


def _times(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    out = []
    for i in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        logger.info(f"  {i + 1}/{iters}: {out[-1]:.3f} s")
    return out


def _row(name, seconds):
    s = summarize(seconds)
    return f"| {name} | {s['median_s']:.3f} | {s['min_s']:.3f}-{s['max_s']:.3f} |"


def bench_inference(cfg, height, width, iters, warmup):
    model = build_analysis_model(cfg).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    images = model.preprocess_image([{"image": image}])
    results, outputs = {}, {}
    for fast in (False, True):
        model.fast_inference = fast
        with torch.no_grad():
            outputs[fast] = model.forward_raw(images)
            results[fast] = _times(lambda: model.forward_raw(images), iters, warmup)
    diff = max(
        (outputs[True][k] - outputs[False][k]).abs().max().item()
        for k in ("pred_logits", "pred_boxes")
    )
    return results, diff


def _batched_matching(matcher, outputs, targets):
    """The unoptimized reference: one cost matrix over the whole batch, split per image."""
    b, n = outputs["pred_logits"].shape[:2]
    labels = torch.cat([t["labels"] for t in targets])
    boxes = torch.cat([t["boxes"] for t in targets])
    cost = matcher.cost_matrix(
        outputs["pred_logits"].flatten(0, 1), outputs["pred_boxes"].flatten(0, 1), labels, boxes
    )
    cost = cost.view(b, n, -1)
    sizes = [len(t["labels"]) for t in targets]
    return [linear_sum_assignment(c[i].numpy()) for i, c in enumerate(cost.split(sizes, -1))]


def bench_matcher(batch, iters):
    gen = torch.Generator().manual_seed(0)
    outputs = {
        "pred_logits": torch.randn(batch, 100, 92, generator=gen),
        "pred_boxes": torch.rand(batch, 100, 4, generator=gen) * 0.5 + 0.25,
    }
    targets = [
        {
            "labels": torch.randint(0, 91, (m,), generator=gen),
            "boxes": torch.rand(m, 4, generator=gen) * 0.5 + 0.25,
        }
        for m in torch.randint(1, 20, (batch,), generator=gen).tolist()
    ]
    matcher = HungarianMatcher()
    per_image = _times(lambda: matcher(outputs, targets), iters, 1)
    batched = _times(lambda: _batched_matching(matcher, outputs, targets), iters, 1)
    return per_image, batched


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/detr_r50.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--matcher-batch", type=int, default=64)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    setup_logger(name="detr_d2")
    torch.set_num_threads(args.threads)
    cfg = setup_cfg(args.config_file, args.opts, device="cpu")

    inference, diff = bench_inference(cfg, *args.size, args.iters, args.warmup)
    per_image, batched = bench_matcher(args.matcher_batch, args.iters)
    ratio_inf = np.median(inference[True]) / np.median(inference[False])
    ratio_match = np.median(per_image) / np.median(batched)
    print(
        f"\n{args.config_file} at {args.size[0]}x{args.size[1]}, batch 1, "
        f"{args.threads} threads, {args.iters} timed runs (median, min-max seconds)\n"
    )
    print("| what | median (s) | spread (s) |\n|---|---|---|")
    print(_row("inference, FAST_INFERENCE off", inference[False]))
    print(_row("inference, FAST_INFERENCE on", inference[True]))
    print(_row(f"matching, one batch matrix (B={args.matcher_batch})", batched))
    print(_row(f"matching, per-image blocks (B={args.matcher_batch})", per_image))
    print(f"\ninference ratio (on / off): {ratio_inf:.2f}  (largest output difference {diff:.1e})")
    print(f"matching ratio (per-image / batch matrix): {ratio_match:.2f}")


if __name__ == "__main__":
    main()
