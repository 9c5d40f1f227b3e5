#!/usr/bin/env python
"""Speed of a DETR or detectron2 model and of its data, matching and evaluation, one task or
several per run (``--task A B ...``):

  inference  images/s, the model in eval mode (batch ``--batch-size``)
  train      iterations/s and s/iteration: forward, backward, optimizer step
  variants   DETR's inference three ways, run in turn: every optimization off (FAST_INFERENCE off,
             attention through the explicit softmax as the original nn.MultiheadAttention ran
             it), FAST_INFERENCE off (SDPA attention), FAST_INFERENCE on (norms folded into convs,
             channels_last); the ratios, the largest output difference and each over the floor
  floor      the compute floor: the model's FLOPs (fvcore) over this machine's fp32 GEMM rate
  matcher    Hungarian matching, per-image cost blocks vs one batch matrix split afterwards
  data       image decoding (Detectron2's PIL read_image vs detr_d2's torchvision.io) and the
             training mapper (PIL decode + resize vs torchvision decode + tensor resize), 1 thread
  eval       COCO bbox evaluation of a generated set per TEST.COCO_EVAL_BACKEND, and how far each
             backend's 12 stats are from pycocotools'
  pq         PQ of a generated panoptic set: panopticapi vs hotcoco

    python tools/benchmark.py --config-file configs/detr_r50.yaml --task inference \\
        --device cuda --iters 100 --warmup 10 --output-dir output/detr_r50
    python tools/benchmark.py --config-file configs/detr_r50.yaml --threads 2 --iters 9 \\
        --task variants matcher data eval pq train --input-size 800 1216

Model inputs are the first images of the test dataset (inference, at test resolution) or of the
training dataset (train, with its augmentation), or random images of exactly ``--input-size H W``
(variants and floor: 800x1216 by default); they are loaded once and cycled, so data loading is not
timed. Figures are medians with their spread; compared variants run in turn within every round,
so a change of machine load weighs on all alike. ``--device cuda`` without CUDA is an error.
``--output`` writes the results as JSON; ``--output-dir DIR`` records inference and train in
DIR/analysis.json for tools/compare.py. Speed does not depend on the weights: without a local
MODEL.WEIGHTS file the model keeps its random init.
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli

TASKS = ("inference", "train", "variants", "floor", "matcher", "data", "eval", "pq")


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
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import contextlib
import io
import itertools
import json
import logging
import os
import platform
import tempfile
import time
from typing import Callable, Dict, List, Tuple
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from PIL import Image
from scipy.optimize import linear_sum_assignment

from detr_d2.config import is_detr_config
from detr_d2.data import DetrDatasetMapper, read_image
from detr_d2.data import detr_dataset_mapper as mapper_module
from detr_d2.engine.predictor import dataset_inputs, load_model
from detr_d2.evaluation import COCO_EVAL_BACKENDS, evaluate_predictions_on_coco, load_coco_gt
from detr_d2.evaluation.panoptic_backend import pq_compute
from detr_d2.modeling import HungarianMatcher
from detr_d2.solver import build_optimizer
from detr_d2.utils.flops import flop_count_analysis
from detr_d2.utils.records import update_analysis
from detr_d2.utils.testing import make_synthetic_coco, synthetic_inputs, write_synthetic_panoptic
from detr_d2.utils.timing import benchmark_inference, benchmark_train, summarize

logger = logging.getLogger("detr_d2.benchmark")


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def alternating_times(fns: Dict[str, Callable], iters: int, warmup: int) -> Dict[str, List]:
    """Seconds of each function of ``fns``, run in turn within every round."""
    times = {name: [] for name in fns}
    for r in range(warmup + iters):
        for name, fn in fns.items():
            _sync()
            t = time.perf_counter()
            fn()
            _sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
        if r >= warmup:
            logger.info(
                f"  {r - warmup + 1}/{iters}: "
                + ", ".join(f"{name} {ts[-1]:.4f} s" for name, ts in times.items())
            )
    return times


def _row(name: str, seconds: List[float], unit: str = "s") -> str:
    s, k = summarize(seconds), 1000.0 if unit == "ms" else 1.0
    spread = f"{s['min_s'] * k:.3f}-{s['max_s'] * k:.3f}"
    return f"| {name} | {s['median_s'] * k:.3f} {unit} | {spread} |"


def _ratio(a: List[float], b: List[float]) -> float:
    return float(np.median(a) / np.median(b))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def device_description(device: torch.device) -> Dict:
    """What the numbers were measured on."""
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    is_cuda = device.type == "cuda"
    info["device_name"] = torch.cuda.get_device_name(device) if is_cuda else cpu_name()
    return info


# ---- inference and train: throughput of the model ------------------------------------------------


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


# ---- variants and floor: DETR inference against its unoptimized self and the hardware ------------


def gemm_gflops(device, n: int = 2048, repeats: int = 5) -> float:
    """The best fp32 GEMM rate of ``repeats`` (n, n) x (n, n) products on ``device``, in GFLOP/s
    (2 n^3 operations each): a time below the floor needs fewer operations, not better
    kernels."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = float("inf")
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        torch.mm(a, b)
        _sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def compute_floor(model, image: torch.Tensor) -> Dict[str, float]:
    """Seconds of one eval forward of ``image`` at the GEMM rate: 2 flops per multiply-add as
    fvcore counts them with the attention handles (element-wise ops and norms not counted)."""
    analysis = flop_count_analysis(model.eval(), [{"image": image}])
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        gflop = 2 * analysis.total() / 1e9
    rate = gemm_gflops(model.device)
    return {"gflop": gflop, "gemm_gflops_per_s": rate, "floor_s": gflop / rate}


@contextlib.contextmanager
def explicit_attention():
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


def bench_variants(model, image: torch.Tensor, iters: int, warmup: int):
    """Seconds per image of "reference" (every optimization off), "off" (FAST_INFERENCE off) and
    "on", and the largest output difference from the reference."""
    model.eval()
    images = model.preprocess_image([{"image": image}])
    outputs = {}

    def run(name):
        model.fast_inference = name == "on"
        explicit = explicit_attention() if name == "reference" else contextlib.nullcontext()
        with torch.no_grad(), explicit:
            outputs[name] = model.forward_raw(images)

    fns = {n: (lambda n=n: run(n)) for n in ("reference", "off", "on")}
    times = alternating_times(fns, iters, warmup)
    diff = max(
        (outputs[n][k] - outputs["reference"][k]).abs().max().item()
        for n in ("off", "on")
        for k in ("pred_logits", "pred_boxes")
    )
    return times, diff


# ---- matcher -------------------------------------------------------------------------------------


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


def bench_matcher(batch: int, iters: int) -> Dict[str, List[float]]:
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
    fns = {
        "per_image": lambda: matcher(outputs, targets),
        "batched": lambda: _batched_matching(matcher, outputs, targets),
    }
    return alternating_times(fns, iters, 1)


# ---- data: decoding and the training mapper, on a generated 640x480 JPEG, 1 thread ---------------


def write_test_jpeg(path: str, height: int = 480, width: int = 640) -> None:
    """A photo-like JPEG (COCO's typical size): colour ramps plus noise, quality 90."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = (ramp + rng.normal(0, 20, ramp.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _per_call(fns: Dict[str, Callable], iters: int, calls: int = 20) -> Dict[str, List[float]]:
    """Seconds per call of each function, with 1 torch thread as in a data-loader worker, each
    timed run making ``calls`` calls."""
    runs = {n: (lambda f=f: [f() for _ in range(calls)]) for n, f in fns.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {n: [t / calls for t in ts] for n, ts in alternating_times(runs, iters, 1).items()}
    finally:
        torch.set_num_threads(threads)


def bench_data(cfg, iters: int, calls: int = 20) -> Dict:
    """Per-image seconds of decoding ("pil", "torchvision") and of the training mapper of
    ``cfg`` ("detectron2": PIL decode and resize; "ours": torchvision decode, tensor resize), with
    whether the decoded pixels are equal and the largest pixel difference of the mappers' outputs
    over ``calls`` identically seeded images (NumPy re-seeded: same augmentations)."""
    mappers = {}
    for name, fast in (("detectron2", False), ("ours", True)):
        c = cfg.clone()
        c.defrost()
        c.INPUT.DETR_TENSOR_RESIZE = fast
        mappers[name] = DetrDatasetMapper(c, is_train=True)
    readers = {"detectron2": lambda f, fmt: utils.read_image(f, format=fmt), "ours": read_image}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jpg")
        write_test_jpeg(path)
        decoders = {
            "pil": lambda: utils.read_image(path, format="BGR"),
            "torchvision": lambda: read_image(path, "BGR"),
        }
        same_pixels = np.array_equal(decoders["pil"](), decoders["torchvision"]())
        decode = _per_call(decoders, iters, calls)
        boxes = [[40 + 60 * i, 30 + 40 * i, 120, 90] for i in range(7)]
        record = {
            "file_name": path, "image_id": 1, "height": 480, "width": 640,
            "annotations": [
                {"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}
                for b in boxes
            ],
        }  # fmt: skip

        def call(name, seed):
            np.random.seed(seed)
            with mock.patch.object(mapper_module, "read_image", readers[name]):
                return mappers[name](record)["image"]

        diff = max(
            int((call("detectron2", s).int() - call("ours", s).int()).abs().max())
            for s in range(calls)
        )
        seeds = {n: itertools.count() for n in mappers}  # both see the same seeds in turn
        fns = {n: (lambda n=n: call(n, next(seeds[n]))) for n in mappers}
        mapper = _per_call(fns, iters, calls)
    return {"decode": decode, "same_pixels": same_pixels, "mapper": mapper, "pixel_diff": diff}


# ---- eval and pq: COCO evaluation and PQ backends on generated sets ------------------------------


def time_coco_eval(backend: str, gt_json: str, results: List[Dict], repeats: int):
    """Seconds to load the ground truth into ``backend`` (once per evaluator), the seconds of
    each of ``repeats`` evaluations (loadRes, evaluate, accumulate, summarize), the 12 stats."""
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


def bench_eval(num_images: int, dets_per_image: int, repeats: int) -> Dict[str, Tuple]:
    """{backend: (load s, eval seconds, 12 stats)}, pycocotools first (run once: it is slow)."""
    dataset, results = make_synthetic_coco(num_images, dets_per_image, seed=0)
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_json = os.path.join(tmp, "gt.json")
        with open(gt_json, "w") as f:
            json.dump(dataset, f)
        for backend in ["pycocotools"] + [b for b in COCO_EVAL_BACKENDS if b != "pycocotools"]:
            logger.info(f"Timing {backend} ...")
            runs = 1 if backend == "pycocotools" else repeats
            measured[backend] = time_coco_eval(backend, gt_json, results, runs)
    return measured


def bench_pq(num_images: int, repeats: int):
    """Per-evaluation seconds of panopticapi and hotcoco (run in turn), and the largest difference
    of their PQ / SQ / RQ (all, things, stuff; as fractions)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_panoptic(tmp, num_images)

        def run(backend):
            with contextlib.redirect_stdout(io.StringIO()):
                results[backend] = pq_compute(*paths, backend=backend)

        fns = {b: (lambda b=b: run(b)) for b in ("panopticapi", "hotcoco")}
        times = alternating_times(fns, repeats, 0)
    diff = max(
        abs(results["panopticapi"][g][m] - results["hotcoco"][g][m])
        for g in ("All", "Things", "Stuff")
        for m in ("pq", "sq", "rq")
    )
    return times, float(diff)


# ---- the command ---------------------------------------------------------------------------------


def main(args) -> Dict:
    """Runs the tasks; prints a table of every figure and returns them: "inference" / "train" with
    the timing statistics (detr_d2.utils.timing.summarize), the device and the input; the other
    tasks' seconds, ratios and differences."""
    tasks = list(dict.fromkeys(args.task))
    if args.threads:
        torch.set_num_threads(args.threads)
    results, rows, notes = {}, [], []
    model_tasks = {"inference", "train", "variants", "floor", "data"} & set(tasks)
    if model_tasks:
        cfg = cli.setup_cfg(args)
        model = load_model(cfg, random_weights=not os.path.isfile(cfg.MODEL.WEIGHTS))
        info = dict(device_description(model.device), config_file=args.config_file)
        where = f"{info['device_name']} ({info['device']}), {info['threads']} CPU threads"
        logger.info(f"Benchmarking on {where}")
    h, w = args.input_size or (800, 1216)
    for task in ("inference", "train"):
        if task not in tasks:
            continue
        data, source = load_batches(cfg, args, is_train=(task == "train"))
        if task == "inference":
            stats = benchmark_inference(model, data, args.iters, args.warmup, args.log_period)
        else:
            optimizer = build_optimizer(cfg, model)
            stats = benchmark_train(
                model, optimizer, data, args.iters, args.warmup, args.log_period
            )
            at = f"{h}x{w}" if args.input_size else source
            notes.append(
                f"training iteration, batch {args.batch_size} at {at}: "
                f"{stats['median_s']:.3f} s ({stats['min_s']:.3f}-{stats['max_s']:.3f})"
            )
        results[task] = dict(stats, input=source, batch_size=args.batch_size, **info)
    if "variants" in tasks or "floor" in tasks:
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        floor = compute_floor(model, image)
        results["floor"] = floor
        notes.append(
            f"compute floor at {h}x{w}: {floor['gflop']:.2f} GFLOP / "
            f"{floor['gemm_gflops_per_s']:.1f} GFLOP/s GEMM = {floor['floor_s']:.3f} s"
        )
    if "variants" in tasks:
        times, diff = bench_variants(model, image, args.iters, args.warmup)
        for key, what in (
            ("reference", "every optimization off (explicit attention)"),
            ("off", "FAST_INFERENCE off (SDPA attention)"),
            ("on", "FAST_INFERENCE on"),
        ):
            rows.append(_row(f"inference {h}x{w}, {what}", times[key]))
        med, f = {k: float(np.median(v)) for k, v in times.items()}, floor["floor_s"]
        notes.append(
            f"inference ratio (on / every optimization off): {med['on'] / med['reference']:.2f}; "
            f"(on / FAST_INFERENCE off): {med['on'] / med['off']:.2f}  "
            f"(largest output difference {diff:.1e})"
        )
        notes.append(
            f"inference over the compute floor ({f:.3f} s): on {med['on'] / f:.2f}x, "
            f"off {med['off'] / f:.2f}x, every optimization off {med['reference'] / f:.2f}x"
        )
        results["variants"] = dict(times, output_difference=diff)
    if "matcher" in tasks:
        times, b = bench_matcher(args.matcher_batch, args.iters), args.matcher_batch
        rows.append(_row(f"matching, one batch matrix (B={b})", times["batched"]))
        rows.append(_row(f"matching, per-image blocks (B={b})", times["per_image"]))
        ratio = _ratio(times["per_image"], times["batched"])
        notes.append(f"matching ratio (per-image / batch matrix): {ratio:.2f}")
        results["matcher"] = times
    if "data" in tasks:
        d = bench_data(cfg, args.iters)
        decode, mapper = d["decode"], d["mapper"]
        for name, seconds in (
            ("image read 640x480 JPEG, PIL (Detectron2), 1 thread", decode["pil"]),
            ("image read, torchvision.io (ours), 1 thread", decode["torchvision"]),
            ("training mapper, PIL read + resize (Detectron2), 1 thread", mapper["detectron2"]),
            ("training mapper, torchvision read + tensor resize (ours)", mapper["ours"]),
        ):
            rows.append(_row(name, seconds, "ms"))
        ratio = _ratio(d["decode"]["torchvision"], d["decode"]["pil"])
        same = d["same_pixels"]
        notes.append(f"image read ratio (ours / PIL): {ratio:.2f}  (identical pixels: {same})")
        ratio = _ratio(d["mapper"]["ours"], d["mapper"]["detectron2"])
        notes.append(
            f"training mapper ratio (ours / Detectron2): {ratio:.2f}  "
            f"(largest pixel difference {d['pixel_diff']})"
        )
        results["data"] = d
    if "eval" in tasks:
        measured = bench_eval(args.eval_images, args.dets_per_image, args.eval_repeats)
        n = f"{args.eval_images} images x {args.dets_per_image}"
        _, reference, ref_stats = measured["pycocotools"]
        for backend, (load_s, times, stats) in measured.items():
            default = " (default backend)" if backend == "hotcoco" else ""
            rows.append(_row(f"COCO bbox evaluation, {n}: {backend}{default}", times))
            if backend != "pycocotools":
                notes.append(
                    f"COCO evaluation {backend}: load gt {load_s:.2f} s, ratio to pycocotools "
                    f"{_ratio(times, reference):.3f}  (largest difference of the 12 stats "
                    f"{np.abs(stats - ref_stats).max():.1e})"
                )
        stats = np.array2string(ref_stats, precision=6, separator=", ")
        notes.append(f"pycocotools stats: {stats}")
        keys = ("load_s", "eval_s", "stats")
        results["eval"] = {b: dict(zip(keys, m)) for b, m in measured.items()}
    if "pq" in tasks:
        times, diff = bench_pq(args.pq_images, args.eval_repeats)
        for backend, default in (("panopticapi", ""), ("hotcoco", " (default)")):
            what = f"PQ, {args.pq_images} generated panoptic images: {backend}{default}"
            rows.append(_row(what, times[backend]))
        notes.append(
            f"PQ ratio (hotcoco / panopticapi): "
            f"{_ratio(times['hotcoco'], times['panopticapi']):.3f}  "
            f"(largest difference of PQ / SQ / RQ {diff:.1e})"
        )
        results["pq"] = dict(times, difference=diff)

    if "inference" in results or "train" in results:
        throughput = {t: results[t] for t in ("inference", "train") if t in results}
        print(f"\nThroughput on {where}, batch {args.batch_size}:\n" + format_table(throughput))
        if args.output_dir:
            path = update_analysis(args.output_dir, "benchmark", throughput)
            logger.info(f"Results recorded in {path}")
    if rows:
        config = f"{args.config_file}, " if model_tasks else ""
        print(
            f"\n{config}{torch.get_num_threads()} threads, {args.iters} timed runs, compared ones "
            "run in turn\n"
        )
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
