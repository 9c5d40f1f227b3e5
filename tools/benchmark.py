#!/usr/bin/env python
"""Inference images/s and training iterations/s of a DETR or detectron2 model.

    python tools/benchmark.py --config-file configs/detr_r50.yaml --task inference \\
        --device cuda --iters 100 --warmup 10 --output-dir output/detr_r50
    python tools/benchmark.py --config-file configs/detr_r50.yaml --task both --device cpu \\
        --input-size 800 1201 --iters 5 --warmup 1 --output bench.json

Batch 1 by default, like detectron2's model zoo. Inputs are the first images of the test dataset
(inference, at test resolution) or of the training dataset (training, with its augmentation),
or random images of exactly ``--input-size H W``; they are loaded once and cycled, so data loading
is not timed. Reports the median and the spread (min, quartiles, max) of per-iteration
throughput, the device and the CPU threads. ``--output`` writes the results as JSON;
``--output-dir DIR`` records them in DIR/analysis.json for tools/compare.py.
"""

import argparse
import json
import logging
import platform
from typing import Dict, List, Tuple

import torch
from detectron2.utils.logger import setup_logger

import detr_d2.data  # noqa: F401  registers the builtin datasets
from detr_d2.config import is_detr_config
from detr_d2.data.register import add_register_coco_argument, register_coco_from_args
from detr_d2.analysis.inputs import (
    batches,
    build_analysis_model,
    dataset_inputs,
    setup_cfg,
    synthetic_inputs,
)
from detr_d2.analysis.table import update_analysis
from detr_d2.analysis.timing import benchmark_inference, benchmark_train
from detr_d2.solver import build_optimizer

logger = logging.getLogger("detr_d2.benchmark")


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


def load_batches(cfg, args, is_train: bool) -> Tuple[List[List[Dict]], str]:
    """``--num-images`` inputs (at least one batch), grouped into batches of ``--batch-size``,
    and where they come from."""
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
    return batches(inputs, args.batch_size), source


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


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--task", choices=["inference", "train", "both"], default="inference")
    parser.add_argument("--device", help="cpu | cuda (default: MODEL.DEVICE; cpu without CUDA)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--iters", type=int, default=50, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument(
        "--num-images",
        type=int,
        default=8,
        help="distinct images loaded and cycled over (default 8)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="random images of exactly this network input size",
    )
    parser.add_argument(
        "--dataset",
        help="dataset for the inputs (default: DATASETS.TEST[0] for "
        "inference, DATASETS.TRAIN[0] for training)",
    )
    parser.add_argument("--log-period", type=int, default=10, help="log every N iterations")
    parser.add_argument("--output", metavar="JSON", help="write the results to this file")
    parser.add_argument(
        "--output-dir", metavar="DIR", help="record the results in DIR/analysis.json"
    )
    add_register_coco_argument(parser)  # --register-coco NAME JSON IMAGE_ROOT, repeatable
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs"
    )
    return parser


def main(args: argparse.Namespace) -> Dict:
    """Runs the benchmark(s); returns {"inference": {...}, "train": {...}}, each with the timing
    statistics (detr_d2.analysis.timing.summarize), the device and the input."""
    register_coco_from_args(args)
    cfg = setup_cfg(args.config_file, args.opts, device=args.device)
    model = build_analysis_model(cfg)
    info = dict(
        device_description(model.device),
        batch_size=args.batch_size,
        config_file=args.config_file,
    )
    logger.info(
        f"Benchmarking on {info['device_name']} ({info['device']}), "
        f"{info['threads']} CPU threads, batch {args.batch_size}"
    )
    results = {}
    tasks = ["inference", "train"] if args.task == "both" else [args.task]
    for task in tasks:
        data, source = load_batches(cfg, args, is_train=(task == "train"))
        if task == "inference":
            stats = benchmark_inference(model, data, args.iters, args.warmup, args.log_period)
        else:
            optimizer = build_optimizer(cfg, model)
            stats = benchmark_train(
                model, optimizer, data, args.iters, args.warmup, args.log_period
            )
        results[task] = dict(stats, input=source, **info)
    logger.info("Results:\n" + format_table(results))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
        logger.info(f"Wrote {args.output}")
    if args.output_dir:
        path = update_analysis(args.output_dir, "benchmark", results)
        logger.info(f"Results recorded in {path}")
    return results


if __name__ == "__main__":
    for name in ("detectron2", "detr_d2"):
        setup_logger(name=name)
    main(get_parser().parse_args())
