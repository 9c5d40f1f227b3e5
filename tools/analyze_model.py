#!/usr/bin/env python
"""FLOPs, parameters, activations and structure of a DETR or detectron2 model.

    python tools/analyze_model.py --config-file configs/detr_r50.yaml --tasks flop parameter \\
        --input-size 800 1201
    python tools/analyze_model.py --config-file configs/detr_r50.yaml --tasks flop \\
        --num-images 100 --output-dir output/detr_r50

FLOPs follow the DETR paper: fvcore's count of multiply-adds (one MAC = one flop) at test
resolution, averaged over the first ``--num-images`` images of the test dataset (batch 1), or of a
random image of exactly ``--input-size H W``. Attention products (q k^T, attn v), which fvcore's
defaults skip, are counted (detr_d2/utils/flops.py). The per-module table is that of the first
input. ``--output-dir DIR`` records the results in DIR/analysis.json for tools/compare.py. FLOPs
do not depend on the weights: without a local MODEL.WEIGHTS file the model keeps its random init.
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

from detr_d2.engine.predictor import dataset_inputs, load_model
from detr_d2.utils.flops import activation_count_analysis, flop_count_analysis
from detr_d2.utils.records import ANALYSIS_FILE, update_analysis
from detr_d2.utils.testing import synthetic_inputs

logger = logging.getLogger("detr_d2.analyze_model")


def _quiet(analysis):
    """Unsupported ops are logged once for all inputs, not per trace."""
    return (
        analysis.unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
        .tracer_warnings("none")
    )


def do_flop(model: torch.nn.Module, inputs: List[Dict], input_desc: str) -> Dict:
    """Average GFLOPs (multiply-adds) over ``inputs``, one image per forward."""
    model.eval()
    totals, by_operator, unsupported = [], Counter(), Counter()
    for i, x in enumerate(inputs):
        analysis = _quiet(flop_count_analysis(model, [x]))
        totals.append(analysis.total())
        by_operator.update(analysis.by_operator())
        unsupported.update(analysis.unsupported_ops())
        if i == 0:
            logger.info(
                f"Per-module flops of the first input, {tuple(x['image'].shape[1:])}:\n"
                + flop_count_table(analysis, max_depth=4, show_param_shapes=False)
            )
        if (i + 1) % 10 == 0 or i + 1 == len(inputs):
            logger.info(f"Counted {i + 1}/{len(inputs)} inputs")
    n = len(inputs)
    gflops = {op: v / n / 1e9 for op, v in by_operator.most_common()}
    logger.info(
        "Average GFLOPs per operator:\n"
        + "\n".join(f"  {op:32s} {v:10.4g}" for op, v in gflops.items())
    )
    if unsupported:
        logger.warning(
            "Ops not counted (no fvcore handle), with occurrences:\n"
            + "\n".join(f"  {op:40s} {c}" for op, c in unsupported.most_common())
        )
    mean, std = float(np.mean(totals)) / 1e9, float(np.std(totals)) / 1e9
    logger.info(f"Total GFLOPs: {mean:.2f} ± {std:.2f} over {n} input(s): {input_desc}")
    return {
        "gflops": mean,
        "gflops_std": std,
        "input": input_desc,
        "num_inputs": n,
        "gflops_by_operator": gflops,
        "unsupported_ops": dict(unsupported),
    }


def do_activation(model: torch.nn.Module, inputs: List[Dict], input_desc: str) -> Dict:
    """Average activations (output elements of conv/linear/matmul/attention), in millions."""
    model.eval()
    totals = [_quiet(activation_count_analysis(model, [x])).total() / 1e6 for x in inputs]
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
        input_desc = (
            f"first {len(inputs)} images of {dataset} at test size "
            f"{cfg.INPUT.MIN_SIZE_TEST}/{cfg.INPUT.MAX_SIZE_TEST}"
        )
    if "flop" in args.tasks:
        results["flop"] = do_flop(model, inputs, input_desc)
    if "activation" in args.tasks:
        results["activation"] = do_activation(model, inputs, input_desc)
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
