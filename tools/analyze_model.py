#!/usr/bin/env python
"""FLOPs, parameters, activations and structure of a DETR or detectron2 model.

    python tools/analyze_model.py --config-file configs/detr_r50.yaml --tasks flop parameter \\
        --input-size 800 1201
    python tools/analyze_model.py --config-file configs/detr_r50.yaml --tasks flop \\
        --num-images 100 --output-dir output/detr_r50

FLOPs as in the DETR paper: fvcore's multiply-adds, attention products included
(detr_d2/utils/flops.py), averaged over the first ``--num-images`` test images at test resolution
(batch 1), or of one random image of ``--input-size H W``; the per-module table is the first
input's. ``--output-dir DIR`` records the results in DIR/analysis.json for tools/compare.py.
Without a local MODEL.WEIGHTS the model keeps its random init (FLOPs do not depend on it).
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli

TASKS = ("flop", "activation", "parameter", "structure")


def get_parser():
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["flop", "parameter"])
    cli.add_flags(parser, "num_images", "input_size", "dataset", "output_dir", "device")
    parser.set_defaults(num_images=100)
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
import os
from collections import Counter
from typing import Dict, List

import numpy as np
import torch
from fvcore.nn import flop_count_table, parameter_count, parameter_count_table

from detr_d2.engine.predictor import dataset_inputs, load_model, with_progress
from detr_d2.utils.flops import activation_count_analysis, flop_count_analysis
from detr_d2.utils.records import ANALYSIS_FILE, update_analysis
from detr_d2.utils.testing import synthetic_inputs

logger = logging.getLogger("detr_d2.analyze_model")


def do_flop(model: torch.nn.Module, inputs: List[Dict], input_desc: str) -> Dict:
    """Average GFLOPs (multiply-adds) over ``inputs``, one image per forward."""
    totals, by_operator, unsupported = [], Counter(), Counter()
    for i, x in enumerate(with_progress(inputs, len(inputs), "inputs", 10, "FLOP count"), 1):
        analysis = flop_count_analysis(model.eval(), [x])
        totals.append(analysis.total())
        by_operator.update(analysis.by_operator())
        unsupported.update(analysis.unsupported_ops())
        if i == 1:
            table = flop_count_table(analysis, max_depth=4, show_param_shapes=False)
            hw = tuple(x["image"].shape[1:])
            logger.info(f"Per-module flops of the first input, {hw}:\n{table}")
    n = len(inputs)
    gflops = {op: v / n / 1e9 for op, v in by_operator.most_common()}
    lines = "\n".join(f"  {op:32s} {v:10.4g}" for op, v in gflops.items())
    logger.info(f"Average GFLOPs per operator:\n{lines}")
    if unsupported:
        lines = "\n".join(f"  {op:40s} {c}" for op, c in unsupported.most_common())
        logger.warning(f"Ops not counted (no fvcore handle), with occurrences:\n{lines}")
    mean, std = float(np.mean(totals)) / 1e9, float(np.std(totals)) / 1e9
    logger.info(f"Total GFLOPs: {mean:.2f} ± {std:.2f} over {n} input(s): {input_desc}")
    return {"gflops": mean, "gflops_std": std, "input": input_desc, "num_inputs": n,
            "gflops_by_operator": gflops, "unsupported_ops": dict(unsupported)}  # fmt: skip


def do_activation(model: torch.nn.Module, inputs: List[Dict], input_desc: str) -> Dict:
    """Average activations (output elements of conv/linear/matmul/attention), in millions."""
    totals = [activation_count_analysis(model.eval(), [x]).total() / 1e6 for x in inputs]
    mean, std = float(np.mean(totals)), float(np.std(totals))
    logger.info(f"Total activations (M): {mean:.1f} ± {std:.1f} over {len(inputs)} input(s)")
    return {"mega_activations": mean, "input": input_desc, "num_inputs": len(inputs)}


def do_parameter(model: torch.nn.Module) -> Dict:
    logger.info("Parameters per module:\n" + parameter_count_table(model, max_depth=5))
    total = parameter_count(model)[""]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(f"Total parameters: {total} ({total / 1e6:.1f}M), trainable: {trainable}")
    return {"total": total, "trainable": trainable}


def main(args) -> Dict[str, Dict]:
    """Runs the tasks; returns {task: results} (what ``--output-dir`` records)."""
    cfg = cli.setup_cfg(args)
    model = load_model(cfg, random_weights=not os.path.isfile(cfg.MODEL.WEIGHTS))
    results = {}
    needs_inputs = {"flop", "activation"} & set(args.tasks)
    if needs_inputs and args.input_size:
        h, w = args.input_size
        inputs, input_desc = synthetic_inputs(h, w, num=1), f"{h}x{w}"
    elif needs_inputs:
        dataset = args.dataset or cfg.DATASETS.TEST[0]
        inputs = dataset_inputs(cfg, dataset, args.num_images)
        size = f"{cfg.INPUT.MIN_SIZE_TEST}/{cfg.INPUT.MAX_SIZE_TEST}"
        input_desc = f"first {len(inputs)} images of {dataset} at test size {size}"
    for task, do in (("flop", do_flop), ("activation", do_activation)):
        if task in args.tasks:
            results[task] = do(model, inputs, input_desc)
    if "parameter" in args.tasks:
        results["parameter"] = do_parameter(model)
    if "structure" in args.tasks:
        logger.info("Model structure:\n" + str(model))
    if args.output_dir:
        for task, values in results.items():
            update_analysis(args.output_dir, task, dict(values, config_file=args.config_file))
        logger.info(f"Results recorded in {args.output_dir}/{ANALYSIS_FILE}")
    return results


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
