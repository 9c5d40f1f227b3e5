#!/usr/bin/env python
"""The speed issue's figures in one run, each as a ratio to its unoptimized counterpart.

1. Inference, DETR at a fixed size (default R50, 800x1216, batch 1), three variants: every
   optimization off (MODEL.DETR.FAST_INFERENCE off and attention through the explicit softmax, as
   the original DETR's nn.MultiheadAttention ran it), FAST_INFERENCE off (SDPA attention only), and
   FAST_INFERENCE on (norms folded into convs, channels_last); median and spread of the per-image
   time, the ratios, the largest output difference, and each time over the compute floor (the
   model's FLOPs, counted by fvcore, over this machine's best fp32 GEMM rate).
2. Matching: per-image (N, M_i) cost blocks (HungarianMatcher) vs one (B*N, sum M) matrix split
   afterwards, at batch 64.
3. Data loading (a generated 640x480 JPEG, 1 thread): image decoding alone, Detectron2's PIL
   ``read_image`` vs ``detr_d2.data.read_image`` (torchvision.io), and whether the pixels are
   equal; then a whole training DetrDatasetMapper call (DETR's augmentation of the config) with
   PIL decode and resize vs torchvision decode and INPUT.DETR_TENSOR_RESIZE, and the largest pixel
   difference.
4. COCO bbox evaluation of a generated set (default 5,000 images x 100 detections): pycocotools
   (one run, ~50-100 s here) vs TEST.COCO_EVAL_BACKEND's default, hotcoco, and the largest
   difference of their 12 stats; --coco-eval-images 0 skips it. tools/benchmark_coco_eval.py
   times every backend.
5. PQ of a generated COCO panoptic set (default 500 images): panopticapi vs
   TEST.PANOPTIC_EVAL_BACKEND's default, hotcoco, and the largest difference of PQ / SQ / RQ (all,
   things, stuff); --pq-images 0 skips it.
6. Training (with --train): seconds per iteration (forward, backward, AdamW step) of the model at
   batch 2 of --train-size, with FAST_INFERENCE irrelevant (training never uses it).

    python tools/benchmark_speed.py --config-file configs/detr_r50.yaml --threads 2 --train
"""

import argparse
import contextlib
import io
import json
import logging
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from scipy.optimize import linear_sum_assignment

from detr_d2.analysis.coco_eval_timing import time_coco_eval
from detr_d2.analysis.compute_floor import gemm_gflops, model_gflop
from detr_d2.analysis.inputs import build_analysis_model, setup_cfg, synthetic_inputs
from detr_d2.analysis.loading_timing import time_decode, time_mapper
from detr_d2.analysis.timing import summarize, time_iterations
from detr_d2.evaluation.panoptic_backend import pq_compute
from detr_d2.evaluation.synthetic_coco import make_synthetic_coco
from detr_d2.evaluation.synthetic_panoptic import write_synthetic_panoptic
from detr_d2.modeling import HungarianMatcher
from detr_d2.solver import build_optimizer

logger = logging.getLogger("detr_d2.benchmark_speed")


def _alternating_times(fns, iters, warmup):
    """Seconds of each function in ``fns`` (a dict), run in turn within every round, so that a
    change of machine load during the benchmark weighs on all of them alike."""
    times = {name: [] for name in fns}
    for r in range(warmup + iters):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
        if r >= warmup:
            logger.info(
                f"  {r - warmup + 1}/{iters}: "
                + ", ".join(f"{name} {ts[-1]:.4f} s" for name, ts in times.items())
            )
    return times


def _row(name, seconds, unit="s"):
    s = summarize(seconds)
    k = 1000.0 if unit == "ms" else 1.0
    return (
        f"| {name} | {s['median_s'] * k:.3f} {unit} | {s['min_s'] * k:.3f}-{s['max_s'] * k:.3f} |"
    )


@contextlib.contextmanager
def _explicit_attention():
    """Attention as the original DETR ran it: ``nn.MultiheadAttention`` with its default
    ``need_weights=True``, which computes the softmax matrix explicitly (and averages it over
    heads) instead of calling ``scaled_dot_product_attention``. Same outputs."""
    sdpa_path = F.multi_head_attention_forward

    def explicit(*args, **kwargs):
        kwargs["need_weights"] = True
        return sdpa_path(*args, **kwargs)

    F.multi_head_attention_forward = explicit  # what nn.MultiheadAttention.forward calls
    try:
        yield
    finally:
        F.multi_head_attention_forward = sdpa_path


def bench_inference(cfg, height, width, iters, warmup):
    """Seconds per image of three variants: "reference" (FAST_INFERENCE off and explicit
    attention: every optimization off), "off" (FAST_INFERENCE off: eager backbone, SDPA), "on";
    and the largest output difference from the reference."""
    model = build_analysis_model(cfg).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    images = model.preprocess_image([{"image": image}])
    outputs = {}

    def run(name):
        model.fast_inference = name == "on"
        explicit = _explicit_attention() if name == "reference" else contextlib.nullcontext()
        with torch.no_grad(), explicit:
            outputs[name] = model.forward_raw(images)

    names = ("reference", "off", "on")
    results = _alternating_times({n: (lambda n=n: run(n)) for n in names}, iters, warmup)
    diff = max(
        (outputs[n][k] - outputs["reference"][k]).abs().max().item()
        for n in ("off", "on")
        for k in ("pred_logits", "pred_boxes")
    )
    floor = model_gflop(model, [{"image": image}]) / gemm_gflops()
    return results, diff, floor


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
    times = _alternating_times(
        {
            "per_image": lambda: matcher(outputs, targets),
            "batched": lambda: _batched_matching(matcher, outputs, targets),
        },
        iters,
        1,
    )
    return times["per_image"], times["batched"]


def bench_coco_eval(num_images, dets_per_image, repeats):
    """Per-evaluation seconds of pycocotools (1 run) and hotcoco (``repeats`` runs), and the
    largest difference of their 12 stats."""
    dataset, results = make_synthetic_coco(num_images, dets_per_image, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        gt_json = os.path.join(tmp, "gt.json")
        with open(gt_json, "w") as f:
            json.dump(dataset, f)
        _, reference, reference_stats = time_coco_eval("pycocotools", gt_json, results, 1)
        _, fast, stats = time_coco_eval("hotcoco", gt_json, results, repeats)
    return reference, fast, float(np.abs(stats - reference_stats).max())


def bench_pq(num_images, repeats):
    """Per-evaluation seconds of panopticapi and hotcoco (run in turn), and the largest difference
    of their PQ / SQ / RQ (all, things, stuff; as fractions)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_panoptic(tmp, num_images)

        def run(backend):
            with contextlib.redirect_stdout(io.StringIO()):
                results[backend] = pq_compute(*paths, backend=backend)

        times = _alternating_times(
            {b: (lambda b=b: run(b)) for b in ("panopticapi", "hotcoco")}, repeats, 0
        )
    diff = max(
        abs(results["panopticapi"][g][m] - results["hotcoco"][g][m])
        for g in ("All", "Things", "Stuff")
        for m in ("pq", "sq", "rq")
    )
    return times["panopticapi"], times["hotcoco"], float(diff)


def bench_train(cfg, height, width, iters, warmup):
    """Seconds per training iteration at batch 2 of (height, width) images with random boxes."""
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    batch = synthetic_inputs(
        height, width, 2, num_classes=cfg.MODEL.DETR.NUM_CLASSES, with_instances=True
    )

    def step(inputs):
        losses = sum(model(inputs).values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()

    return time_iterations(step, [batch], iters, warmup, model.device, 1, "train")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/detr_r50.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--matcher-batch", type=int, default=64)
    parser.add_argument("--train", action="store_true", help="also time training at batch 2")
    parser.add_argument("--coco-eval-images", type=int, default=5000, help="0: skip")
    parser.add_argument("--coco-eval-dets", type=int, default=100, help="detections per image")
    parser.add_argument("--pq-images", type=int, default=500, help="0: skip")
    parser.add_argument("--train-size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    setup_logger(name="detr_d2")
    torch.set_num_threads(args.threads)
    cfg = setup_cfg(args.config_file, args.opts, device="cpu")

    inference, diff, floor = bench_inference(cfg, *args.size, args.iters, args.warmup)
    per_image, batched = bench_matcher(args.matcher_batch, args.iters)
    decode, same_pixels = time_decode(args.iters, _alternating_times)
    mapper, mapper_diff = time_mapper(cfg, args.iters, _alternating_times)
    coco = (
        bench_coco_eval(args.coco_eval_images, args.coco_eval_dets, 3)
        if args.coco_eval_images > 0
        else None
    )
    pq = bench_pq(args.pq_images, 3) if args.pq_images > 0 else None
    train = bench_train(cfg, *args.train_size, args.iters, args.warmup) if args.train else None
    med = {k: float(np.median(v)) for k, v in inference.items()}
    print(
        f"\n{args.config_file} at {args.size[0]}x{args.size[1]}, batch 1, "
        f"{args.threads} threads, {args.iters} timed runs, compared pairs run in turn\n"
    )
    print("| what | median | spread (min-max) |\n|---|---|---|")
    print(_row("inference, every optimization off (explicit attention)", inference["reference"]))
    print(_row("inference, FAST_INFERENCE off (SDPA attention)", inference["off"]))
    print(_row("inference, FAST_INFERENCE on", inference["on"]))
    print(_row(f"matching, one batch matrix (B={args.matcher_batch})", batched))
    print(_row(f"matching, per-image blocks (B={args.matcher_batch})", per_image))
    print(_row("image read 640x480 JPEG, PIL (Detectron2), 1 thread", decode["pil"], "ms"))
    print(_row("image read, torchvision.io (ours), 1 thread", decode["torchvision"], "ms"))
    name = "training mapper, PIL read + resize (Detectron2), 1 thread"
    print(_row(name, mapper["detectron2"], "ms"))
    print(_row("training mapper, torchvision read + tensor resize (ours)", mapper["ours"], "ms"))
    if coco is not None:
        n = f"{args.coco_eval_images} images x {args.coco_eval_dets}"
        print(_row(f"COCO bbox evaluation, {n}: pycocotools", coco[0]))
        print(_row(f"COCO bbox evaluation, {n}: hotcoco (default backend)", coco[1]))
    if pq is not None:
        print(_row(f"PQ, {args.pq_images} generated panoptic images: panopticapi", pq[0]))
        print(_row(f"PQ, {args.pq_images} generated panoptic images: hotcoco (default)", pq[1]))
    if train is not None:
        h, w = args.train_size
        print(_row(f"training iteration, batch 2 at {h}x{w}", train))
    print(
        f"\ninference ratio (on / every optimization off): {med['on'] / med['reference']:.2f}; "
        f"(on / FAST_INFERENCE off): {med['on'] / med['off']:.2f}  "
        f"(largest output difference {diff:.1e})"
    )
    print(
        f"inference over the compute floor ({floor:.3f} s): on {med['on'] / floor:.2f}x, "
        f"off {med['off'] / floor:.2f}x, every optimization off {med['reference'] / floor:.2f}x"
    )
    ratio = np.median(per_image) / np.median(batched)
    print(f"matching ratio (per-image / batch matrix): {ratio:.2f}")
    ratio = np.median(decode["torchvision"]) / np.median(decode["pil"])
    print(f"image read ratio (ours / PIL): {ratio:.2f}  (identical pixels: {same_pixels})")
    ratio = np.median(mapper["ours"]) / np.median(mapper["detectron2"])
    print(
        f"training mapper ratio (ours / Detectron2): {ratio:.2f}  "
        f"(largest pixel difference {mapper_diff})"
    )
    if pq is not None:
        ratio_pq = np.median(pq[1]) / np.median(pq[0])
        print(
            f"PQ ratio (hotcoco / panopticapi): {ratio_pq:.3f}  "
            f"(largest difference of PQ / SQ / RQ {pq[2]:.1e})"
        )
    if coco is not None:
        ratio_coco = np.median(coco[1]) / np.median(coco[0])
        print(
            f"COCO evaluation ratio (hotcoco / pycocotools): {ratio_coco:.3f}  "
            f"(largest difference of the 12 stats {coco[2]:.1e})"
        )


if __name__ == "__main__":
    main()
