#!/usr/bin/env python
"""Speed of a DETR or detectron2 model and of its data, matching and evaluation, one task or
several per run (``--task A B ...``):

  inference  images/s, the model in eval mode (batch ``--batch-size``)
  train      iterations/s and s/iteration: forward, backward, optimizer step
  variants   DETR's inference with every optimization off (the original's explicit attention),
             FAST_INFERENCE off (SDPA) and on: ratios, output difference, each over the floor
  floor      the compute floor: the model's FLOPs (fvcore) over this machine's fp32 GEMM rate
  matcher    Hungarian matching, per-image cost blocks vs one batch matrix split afterwards
  data       image decoding (Detectron2's PIL vs detr_d2's torchvision.io) and the training
             mapper (PIL decode + resize vs torchvision decode + tensor resize), 1 thread
  eval       COCO bbox evaluation of a generated set per TEST.COCO_EVAL_BACKEND, vs pycocotools
  pq         PQ of a generated panoptic set: panopticapi vs hotcoco
  amp        train_net.py per ``--dtypes`` (SOLVER.AMP) in ``--output-dir``/<dtype>: box AP, s/iter
             (metrics.json's mean, no evaluation), wall s (the whole run), AMP skipped steps

    python tools/benchmark.py --config-file configs/detr_r50.yaml --task inference \\
        --device cuda --iters 100 --warmup 10 --output-dir output/detr_r50
    python tools/benchmark.py --config-file configs/detr_r50.yaml --threads 2 --iters 9 \\
        --task variants matcher data eval pq train --input-size 800 1216
    python tools/benchmark.py --config-file configs/quickstart/detr_shapes.yaml --task amp \\
        --dtypes float32 bfloat16 SOLVER.MAX_ITER 150 SOLVER.STEPS "(120,)"

Inputs are the first images of the test (inference) or training (train, augmented) dataset, or
random images of ``--input-size H W`` (variants, floor: 800x1216 by default), in memory and
cycled. Figures are medians with their spread; compared ones run in turn in every round.
``--output`` writes JSON; ``--output-dir DIR`` records inference and train in DIR/analysis.json
for tools/compare.py. Without a local MODEL.WEIGHTS the model keeps its random init.
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli

TASKS = ("inference", "train", "variants", "floor", "matcher", "data", "eval", "pq", "amp")


def get_parser():
    parser = cli.argument_parser(__doc__, default_config="configs/detr_r50.yaml")
    parser.add_argument("--task", nargs="+", choices=TASKS, default=["inference"])
    cli.add_flags(parser, "device", "input_size", "num_images", "dataset", "log_period")
    cli.add_flags(parser, "output", "output_dir")
    parser.set_defaults(num_images=8, log_period=10)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--iters", type=int, default=50, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--matcher-batch", type=int, default=64, help="matcher: images")
    parser.add_argument("--eval-images", type=int, default=5000, help="eval: generated images")
    parser.add_argument("--dets-per-image", type=int, default=100, help="eval: detections")
    parser.add_argument("--eval-repeats", type=int, default=3, help="eval, pq: timed runs")
    parser.add_argument("--pq-images", type=int, default=500, help="pq: generated images")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="amp")
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import contextlib
import io
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from typing import Callable, Dict, List, Tuple
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from PIL import Image
from scipy.optimize import linear_sum_assignment

from detr_d2.config import is_detr_config
from detr_d2.data import DetrDatasetMapper, read_image
from detr_d2.engine import DetrTrainLoop, train_loop_args
from detr_d2.engine.predictor import dataset_inputs, load_model
from detr_d2.evaluation import COCO_EVAL_BACKENDS, evaluate_predictions_on_coco, load_coco_gt
from detr_d2.evaluation.panoptic_backend import pq_compute
from detr_d2.modeling import HungarianMatcher
from detr_d2.solver import build_optimizer
from detr_d2.utils.flops import flop_count_analysis
from detr_d2.utils.records import read_metrics, update_analysis
from detr_d2.utils.testing import make_synthetic_coco, synthetic_inputs, write_synthetic_panoptic
from detr_d2.utils.timing import alternating_times, benchmark_inference, summarize

logger = logging.getLogger("detr_d2.benchmark")
CPU = torch.device("cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(name: str, seconds: List[float], unit: str = "s") -> str:
    s, k = summarize(seconds), 1000.0 if unit == "ms" else 1.0
    spread = f"{s['min_s'] * k:.3f}-{s['max_s'] * k:.3f}"
    return f"| {name} | {s['median_s'] * k:.3f} {unit} | {spread} |"


def _ratio(a: List[float], b: List[float]) -> float:
    return float(np.median(a) / np.median(b))


def device_description(device: torch.device) -> Dict:
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpus = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        name = cpus[0] if cpus else name
    return {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device_name": name}  # fmt: skip


def load_batches(cfg, args, is_train: bool) -> Tuple[List[List[Dict]], str]:
    """``--num-images`` inputs (at least one batch) in batches of ``--batch-size`` (a last, smaller
    batch dropped unless it is the only one), and where they come from."""
    num = max(args.num_images, args.batch_size)
    if args.input_size:
        h, w = args.input_size
        detr = is_detr_config(cfg)
        num_classes = cfg.MODEL.DETR.NUM_CLASSES if detr else cfg.MODEL.ROI_HEADS.NUM_CLASSES
        inputs = synthetic_inputs(h, w, num, num_classes, with_instances=is_train)
        source = f"random {h}x{w}"
    else:
        dataset = args.dataset or (cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)[0]
        inputs = dataset_inputs(cfg, dataset, num, is_train=is_train)
        source = f"{dataset} ({'train' if is_train else 'test'} mapping)"
    out = [inputs[i : i + args.batch_size] for i in range(0, len(inputs), args.batch_size)]
    return [b for b in out if len(b) == args.batch_size] or out[:1], source


def benchmark_train(cfg, model, batches, iters: int, warmup: int, log_period=10) -> Dict:
    """Training iterations/s of train_net's step (DetrTrainLoop: SOLVER.AMP, ACCUM_ITERS,
    full-model clipping, the AdamW of build_optimizer) on ``batches``, cycled."""
    optimizer = build_optimizer(cfg, model)
    loop = DetrTrainLoop(model, itertools.cycle(batches), optimizer, **train_loop_args(cfg))
    with EventStorage(0) as storage:

        def train():
            loop.iter = storage.iter
            loop.run_step()
            storage.step()

        times = alternating_times({"train": train}, iters, warmup, model.device, log_period)
    return summarize(times["train"])


def format_table(results: Dict[str, Dict]) -> str:
    unit = {"inference": "images/s", "train": "iterations/s"}
    lines = [
        "| task      | unit         | median | q25-q75         | min-max         | iters |",
        "|:----------|:-------------|-------:|:----------------|:----------------|------:|",
    ]
    for task, r in results.items():
        lines.append(
            f"| {task:9s} | {unit[task]:12s} | {r['median_per_s']:6.2f} "
            f"| {r['q25_per_s']:6.2f}-{r['q75_per_s']:<8.2f} "
            f"| {r['min_per_s']:6.2f}-{r['max_per_s']:<8.2f} | {r['iterations']:5d} |"
        )
    return "\n".join(lines)


def compute_floor(model, image: torch.Tensor, n: int = 2048) -> Dict[str, float]:
    """Seconds of one eval forward of ``image`` at the best fp32 GEMM rate of five (n, n) x (n, n)
    products (2 n^3 operations each), with 2 flops per multiply-add as fvcore counts them with the
    attention handles (element-wise ops and norms not counted): a time below the floor needs
    fewer operations, not better kernels."""
    analysis = flop_count_analysis(model.eval(), [{"image": image}])
    with torch.no_grad():
        gflop = 2 * analysis.total() / 1e9
    a, b = (torch.randn(n, n, device=model.device) for _ in range(2))
    seconds = alternating_times({"gemm": lambda: torch.mm(a, b)}, 5, 1, model.device, 0)["gemm"]
    rate = 2 * n**3 / min(seconds) / 1e9
    return {"gflop": gflop, "gemm_gflops_per_s": rate, "floor_s": gflop / rate}


def bench_variants(model, image, args, floor_s: float, rows: List, notes: List) -> Dict:
    """Seconds per image of "reference" (every optimization off; attention as the original DETR's
    ``nn.MultiheadAttention`` with ``need_weights=True``: the softmax matrix computed explicitly),
    "off" (FAST_INFERENCE off) and "on", and the largest output difference from the reference."""
    model.eval()
    images = model.preprocess_image([{"image": image}])
    outputs, mha = {}, F.multi_head_attention_forward  # what nn.MultiheadAttention.forward calls

    def explicit(*args, **kwargs):
        return mha(*args, **dict(kwargs, need_weights=True))

    def run(name):
        model.fast_inference = name == "on"
        patch = mock.patch.object(F, "multi_head_attention_forward", explicit)
        with torch.no_grad(), patch if name == "reference" else contextlib.nullcontext():
            outputs[name] = model.forward_raw(images)

    variants = {
        "reference": "every optimization off (explicit attention)",
        "off": "FAST_INFERENCE off (SDPA attention)",
        "on": "FAST_INFERENCE on",
    }
    fns = {n: partial(run, n) for n in variants}
    times = alternating_times(fns, args.iters, args.warmup, model.device)
    ref, keys = outputs["reference"], ("pred_logits", "pred_boxes")
    diff = max((outputs[n][k] - ref[k]).abs().max().item() for n in ("off", "on") for k in keys)
    h, w = image.shape[1:]
    rows += [_row(f"inference {h}x{w}, {what}", times[n]) for n, what in variants.items()]
    med, f = {k: float(np.median(v)) for k, v in times.items()}, floor_s
    notes.append(
        f"inference ratio (on / every optimization off): {med['on'] / med['reference']:.2f}; "
        f"(on / FAST_INFERENCE off): {med['on'] / med['off']:.2f}  "
        f"(largest output difference {diff:.1e})"
    )
    notes.append(
        f"inference over the compute floor ({f:.3f} s): on {med['on'] / f:.2f}x, "
        f"off {med['off'] / f:.2f}x, every optimization off {med['reference'] / f:.2f}x"
    )
    return dict(times, output_difference=diff)


def _batched_matching(matcher, outputs, targets):
    """The unoptimized reference: one cost matrix over the whole batch, split per image."""
    b, n = outputs["pred_logits"].shape[:2]
    labels, boxes = (torch.cat([t[k] for t in targets]) for k in ("labels", "boxes"))
    logits, pred_boxes = (outputs[k].flatten(0, 1) for k in ("pred_logits", "pred_boxes"))
    cost = matcher.cost_matrix(logits, pred_boxes, labels, boxes).view(b, n, -1)
    sizes = [len(t["labels"]) for t in targets]
    return [linear_sum_assignment(c[i].numpy()) for i, c in enumerate(cost.split(sizes, -1))]


def bench_matcher(args, rows: List, notes: List) -> Dict[str, List[float]]:
    """Seconds of matching ``--matcher-batch`` images of 100 random predictions and 1-19 targets,
    per image (HungarianMatcher) and with one batch matrix."""
    b, gen = args.matcher_batch, torch.Generator().manual_seed(0)

    def boxes(*shape):
        return torch.rand(*shape, 4, generator=gen) * 0.5 + 0.25

    outputs = {"pred_logits": torch.randn(b, 100, 92, generator=gen), "pred_boxes": boxes(b, 100)}
    targets = [
        {"labels": torch.randint(0, 91, (m,), generator=gen), "boxes": boxes(m)}
        for m in torch.randint(1, 20, (b,), generator=gen).tolist()
    ]
    matcher = HungarianMatcher()
    fns = {
        "per_image": lambda: matcher(outputs, targets),
        "batched": lambda: _batched_matching(matcher, outputs, targets),
    }
    times = alternating_times(fns, args.iters, 1, CPU)
    rows.append(_row(f"matching, one batch matrix (B={b})", times["batched"]))
    rows.append(_row(f"matching, per-image blocks (B={b})", times["per_image"]))
    ratio = _ratio(times["per_image"], times["batched"])
    notes.append(f"matching ratio (per-image / batch matrix): {ratio:.2f}")
    return times


def _per_call(fns: Dict[str, Callable], iters: int, calls: int) -> Dict[str, List[float]]:
    """Seconds per call of each function, with 1 torch thread as in a data-loader worker, each
    timed run making ``calls`` calls."""
    runs = {n: (lambda f=f: [f() for _ in range(calls)]) for n, f in fns.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = alternating_times(runs, iters, 1, CPU)
    finally:
        torch.set_num_threads(threads)
    return {n: [t / calls for t in ts] for n, ts in times.items()}


def bench_data(cfg, args, rows: List, notes: List, calls: int = 20) -> Dict:
    """Per-image seconds of decoding a 640x480 JPEG ("pil", "torchvision") and of the training
    mapper ("detectron2": PIL decode and resize; "ours": torchvision decode, tensor resize), if the
    decoded pixels are equal, and the mappers' largest pixel difference over ``calls`` images."""
    mappers = {}
    for name, fast in (("detectron2", False), ("ours", True)):
        c = cfg.clone()
        c.defrost()
        c.INPUT.DETR_TENSOR_RESIZE = fast
        mappers[name] = DetrDatasetMapper(c, is_train=True)
    readers = {"detectron2": utils.read_image, "ours": read_image}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jpg")  # photo-like: colour ramps plus noise, quality 90
        ramp = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
        noise = np.random.default_rng(0).normal(0, 20, ramp.shape)
        Image.fromarray((ramp + noise).clip(0, 255).astype(np.uint8)).save(path, quality=90)
        decoders = {"pil": partial(utils.read_image, path, "BGR")}
        decoders["torchvision"] = partial(read_image, path, "BGR")
        same = np.array_equal(decoders["pil"](), decoders["torchvision"]())
        decode = _per_call(decoders, args.iters, calls)
        record = {"file_name": path, "image_id": 1, "height": 480, "width": 640, "annotations": [
            {"bbox": [40 + 60 * i, 30 + 40 * i, 120, 90], "bbox_mode": BoxMode.XYWH_ABS,
             "category_id": 0, "iscrowd": 0} for i in range(7)]}  # fmt: skip

        def call(name, seed):
            np.random.seed(seed)
            with mock.patch("detr_d2.data.detr_dataset_mapper.read_image", readers[name]):
                return mappers[name](record)["image"]

        diff = max(
            int((call("detectron2", s).int() - call("ours", s).int()).abs().max())
            for s in range(calls)
        )
        seeds = {n: itertools.count() for n in mappers}  # both see the same seeds in turn
        fns = {n: (lambda n=n: call(n, next(seeds[n]))) for n in mappers}
        mapper = _per_call(fns, args.iters, calls)
    ms = partial(_row, unit="ms")
    rows += [
        ms("image read 640x480 JPEG, PIL (Detectron2), 1 thread", decode["pil"]),
        ms("image read, torchvision.io (ours), 1 thread", decode["torchvision"]),
        ms("training mapper, PIL read + resize (Detectron2), 1 thread", mapper["detectron2"]),
        ms("training mapper, torchvision read + tensor resize (ours)", mapper["ours"]),
    ]
    ratio = _ratio(decode["torchvision"], decode["pil"])
    notes.append(f"image read ratio (ours / PIL): {ratio:.2f}  (identical pixels: {same})")
    notes.append(
        f"training mapper ratio (ours / Detectron2): "
        f"{_ratio(mapper['ours'], mapper['detectron2']):.2f}  (largest pixel difference {diff})"
    )
    return {"decode": decode, "same_pixels": same, "mapper": mapper, "pixel_diff": diff}


def bench_eval(args, rows: List, notes: List) -> Dict[str, Dict]:
    """Per backend, on a generated set: seconds to load the ground truth (once per evaluator), of
    each evaluation (loadRes, evaluate, accumulate, summarize; pycocotools first and once: it is
    slow), and the 12 stats."""
    dataset, dets = make_synthetic_coco(args.eval_images, args.dets_per_image, seed=0)
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_json = os.path.join(tmp, "gt.json")
        with open(gt_json, "w") as f:
            json.dump(dataset, f)
        for backend in ["pycocotools"] + [b for b in COCO_EVAL_BACKENDS if b != "pycocotools"]:
            logger.info(f"Timing {backend} ...")
            start = time.perf_counter()
            gt = load_coco_gt(gt_json, backend)
            load_s, evals = time.perf_counter() - start, []

            def run():
                with contextlib.redirect_stdout(io.StringIO()):
                    evals.append(evaluate_predictions_on_coco(gt, dets, "bbox", backend=backend))

            runs = 1 if backend == "pycocotools" else args.eval_repeats
            times = alternating_times({backend: run}, runs, 0, CPU, 0)[backend]
            stats = np.asarray(evals[-1].stats, dtype=np.float64)
            measured[backend] = {"load_s": load_s, "eval_s": times, "stats": stats}
    n, ref = f"{args.eval_images} images x {args.dets_per_image}", measured["pycocotools"]
    for backend, m in measured.items():
        default = " (default backend)" if backend == "hotcoco" else ""
        rows.append(_row(f"COCO bbox evaluation, {n}: {backend}{default}", m["eval_s"]))
        if backend != "pycocotools":
            notes.append(
                f"COCO evaluation {backend}: load gt {m['load_s']:.2f} s, ratio to pycocotools "
                f"{_ratio(m['eval_s'], ref['eval_s']):.3f}  (largest difference of the 12 stats "
                f"{np.abs(m['stats'] - ref['stats']).max():.1e})"
            )
    notes.append(f"pycocotools stats: {np.array2string(ref['stats'], precision=6, separator=', ')}")
    return measured


def bench_pq(args, rows: List, notes: List) -> Dict:
    """Per-evaluation seconds of panopticapi and hotcoco (run in turn), and the largest difference
    of their PQ / SQ / RQ (all, things, stuff; as fractions)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_panoptic(tmp, args.pq_images)

        def run(backend):
            with contextlib.redirect_stdout(io.StringIO()):
                results[backend] = pq_compute(*paths, backend=backend)

        fns = {b: partial(run, b) for b in ("panopticapi", "hotcoco")}
        times = alternating_times(fns, args.eval_repeats, 0, CPU)
    pq, hc = results["panopticapi"], results["hotcoco"]
    diff = max(
        abs(pq[g][m] - hc[g][m]) for g in ("All", "Things", "Stuff") for m in ("pq", "sq", "rq")
    )
    for backend, default in (("panopticapi", ""), ("hotcoco", " (default)")):
        what = f"PQ, {args.pq_images} generated panoptic images: {backend}{default}"
        rows.append(_row(what, times[backend]))
    notes.append(
        f"PQ ratio (hotcoco / panopticapi): {_ratio(times['hotcoco'], times['panopticapi']):.3f}"
        f"  (largest difference of PQ / SQ / RQ {diff:.1e})"
    )
    return dict(times, difference=float(diff))


def bench_amp(args, rows: List, notes: List) -> List[Dict]:
    """Per dtype of ``--dtypes`` ("float32": AMP off), a train_net.py run and its figures."""
    results, base = [], args.output_dir or "output/benchmark_amp"
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", args.config_file]
    for dtype in args.dtypes:
        out = os.path.join(base, dtype)
        amp = ["SOLVER.AMP.ENABLED", str(dtype != "float32"), "SOLVER.AMP.DTYPE", dtype]
        start = time.perf_counter()
        subprocess.run(cmd + args.opts + amp + ["OUTPUT_DIR", out], check=True)
        wall, lines = time.perf_counter() - start, read_metrics(os.path.join(out, "metrics.json"))
        timed = [x for x in lines if "time" in x]
        ap = ([x for x in lines if "bbox/AP" in x] or [{}])[-1]
        results.append({
            "dtype": dtype, "iters": max(x["iteration"] for x in timed) + 1,
            "AP": ap.get("bbox/AP", float("nan")), "AP50": ap.get("bbox/AP50", float("nan")),
            "s_per_iter": float(np.mean([x["time"] for x in timed])), "wall_s": wall,
            "skipped_steps": max((x.get("amp_skipped_steps", 0) for x in lines), default=0),
        })  # fmt: skip
    notes += ["dtype       iters     AP   AP50  s/iter  wall s skipped"] + [
        f"{r['dtype']:<10} {r['iters']:>6} {r['AP']:>6.1f} {r['AP50']:>6.1f} "
        f"{r['s_per_iter']:>7.3f} {r['wall_s']:>7.0f} {r['skipped_steps']:>7}"
        for r in results
    ]
    return results


def main(args) -> Dict:
    """Runs the tasks; prints every figure and returns them ("inference" / "train": the statistics
    of detr_d2.utils.timing.summarize, the device and the input)."""
    tasks = set(args.task)
    if args.threads:
        torch.set_num_threads(args.threads)
    results, rows, notes = {}, [], []
    model_tasks = {"inference", "train", "variants", "floor", "data"} & tasks
    if model_tasks:
        cfg = cli.setup_cfg(args)
        model = load_model(cfg, random_weights=not os.path.isfile(cfg.MODEL.WEIGHTS))
        info = dict(device_description(model.device), config_file=args.config_file)
        where = f"{info['device_name']} ({info['device']}), {info['threads']} CPU threads"
        logger.info(f"Benchmarking on {where}")
    h, w = args.input_size or (800, 1216)
    timing = (args.iters, args.warmup, args.log_period)
    if "inference" in tasks:
        data, source = load_batches(cfg, args, is_train=False)
        stats = benchmark_inference(model, data, *timing)
        results["inference"] = dict(stats, input=source, batch_size=args.batch_size, **info)
    if "train" in tasks:
        data, source = load_batches(cfg, args, is_train=True)
        stats = benchmark_train(cfg, model, data, *timing)
        results["train"] = dict(stats, input=source, batch_size=args.batch_size, **info)
        notes.append(
            f"training iteration, batch {args.batch_size} at "
            f"{f'{h}x{w}' if args.input_size else source}: "
            f"{stats['median_s']:.3f} s ({stats['min_s']:.3f}-{stats['max_s']:.3f})"
        )
    if "variants" in tasks or "floor" in tasks:
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        floor = results["floor"] = compute_floor(model, image)
        notes.append(
            f"compute floor at {h}x{w}: {floor['gflop']:.2f} GFLOP / "
            f"{floor['gemm_gflops_per_s']:.1f} GFLOP/s GEMM = {floor['floor_s']:.3f} s"
        )
    if "variants" in tasks:
        results["variants"] = bench_variants(model, image, args, floor["floor_s"], rows, notes)
    benches = {"matcher": bench_matcher, "data": lambda *a: bench_data(cfg, *a)}
    benches.update(eval=bench_eval, pq=bench_pq, amp=bench_amp)
    for task in [t for t in benches if t in tasks]:
        results[task] = benches[task](args, rows, notes)

    throughput = {t: results[t] for t in ("inference", "train") if t in results}
    if throughput:
        print(f"\nThroughput on {where}, batch {args.batch_size}:\n" + format_table(throughput))
        if args.output_dir:
            path = update_analysis(args.output_dir, "benchmark", throughput)
            logger.info(f"Results recorded in {path}")
    if rows:
        config = f"{args.config_file}, " if model_tasks else ""
        threads = torch.get_num_threads()
        print(f"\n{config}{threads} threads, {args.iters} timed runs, compared ones run in turn\n")
        print("| what | median | spread (min-max) |\n|---|---|---|\n" + "\n".join(rows))
    print("\n" + "\n".join(notes))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2, default=lambda x: np.asarray(x).tolist())
        logger.info(f"Wrote {args.output}")
    return results


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
