#!/usr/bin/env python
"""COCO AP after each decoder layer, with and without NMS (DETR paper, Fig. 4).

    python tools/decoder_layer_study.py --config-file configs/detr_r50.yaml \\
        MODEL.WEIGHTS output/detr_r50/model_final.pth --output-dir output/detr_r50/layers
    python tools/decoder_layer_study.py --config-file configs/quickstart/detr_shapes.yaml \\
        --dataset shapes_val --num-images 100 MODEL.WEIGHTS model.pth

Each decoder layer's auxiliary predictions (and the last layer's, the model's output) are
evaluated as a detector of their own on the test dataset (``--dataset``, default
DATASETS.TEST[0]), once as predicted and once after per-class NMS at IoU 0.7. Writes
DIR/decoder_layers.json (AP, AP50, AP75, APs, APm, APl per layer and setting) and
DIR/decoder_layers.png (AP and AP50 per layer, with and without NMS). Config overrides
("KEY VALUE") may come anywhere on the command line.
"""

import argparse
import json
import logging
import math
import os
from typing import Dict, Optional, Sequence

from detectron2.utils.logger import setup_logger

import detr_d2  # noqa: F401  registers Detr and the builtin datasets
from detr_d2.analysis.decoder_layers import (
    NMS_IOU,
    evaluate_decoder_layers,
    plot_decoder_layers,
)
from detr_d2.analysis.inputs import build_analysis_model, setup_cfg
from detr_d2.analysis.predictor import add_config_arguments, parse_tool_args
from detr_d2.data.register import register_coco_from_args

logger = logging.getLogger("detr_d2.decoder_layer_study")


def _nan_to_none(value):
    """COCO reports a metric without ground truth (e.g. APl with no large object) as NaN, which
    strict JSON has no literal for: written as null."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: DATASETS.TEST[0])")
    parser.add_argument(
        "--num-images", type=int, default=0, help="evaluate the first N images only (0: all)"
    )
    parser.add_argument("--nms-iou", type=float, default=NMS_IOU, help="IoU of the per-class NMS")
    parser.add_argument(
        "--output-dir", metavar="DIR", help="default: OUTPUT_DIR/decoder_layer_study"
    )
    parser.add_argument("--log-every", type=int, default=50, metavar="N", help="progress period")
    return add_config_arguments(parser)  # --register-coco, config overrides


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse_tool_args(get_parser(), argv)


def main(args: argparse.Namespace) -> Dict:
    """Runs the study; returns what the JSON holds."""
    register_coco_from_args(args)
    cfg = setup_cfg(args.config_file, args.opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "decoder_layer_study")
    os.makedirs(output_dir, exist_ok=True)
    model = build_analysis_model(cfg)
    results = evaluate_decoder_layers(
        model, cfg, dataset, args.num_images, args.nms_iou, args.log_every
    )
    results["config_file"] = args.config_file
    results["weights"] = cfg.MODEL.WEIGHTS
    json_path = os.path.join(output_dir, "decoder_layers.json")
    with open(json_path, "w") as f:
        json.dump(_nan_to_none(results), f, indent=2)
    plot_path = os.path.join(output_dir, "decoder_layers.png")
    plot_decoder_layers(results, plot_path)
    rows = [f"{'layer':>5} {'AP':>6} {'AP NMS':>7} {'AP50':>6} {'AP50 NMS':>9}"]
    for i, layer in enumerate(results["layers"]):
        a, n = results["without_nms"], results["with_nms"]
        rows.append(
            f"{layer:>5} {a['AP'][i]:6.1f} {n['AP'][i]:7.1f} {a['AP50'][i]:6.1f} "
            f"{n['AP50'][i]:9.1f}"
        )
    logger.info("AP per decoder layer:\n" + "\n".join(rows))
    logger.info(f"Wrote {json_path} and {plot_path}")
    return results


if __name__ == "__main__":
    for name in ("detectron2", "detr_d2"):
        setup_logger(name=name)
    main(parse_args())
