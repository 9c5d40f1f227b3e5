#!/usr/bin/env python
"""Box centres predicted by each object query ("slot") over a dataset (DETR paper, Fig. 7).

    python tools/query_slots.py --config-file configs/detr_r50.yaml \\
        MODEL.WEIGHTS output/detr_r50/model_final.pth --output slots.png
    python tools/query_slots.py --config-file configs/quickstart/detr_shapes.yaml \\
        --dataset shapes_val --slots 0 1 2 3 --num-images 100 MODEL.WEIGHTS model.pth

All predictions of the last decoder layer count, whatever their score. One scatter per slot in
``--slots`` (default: the first 20), each point a box centre in the image normalized to the unit
square: green for small boxes, red for large horizontal ones, blue for large vertical ones.
Your own COCO-format set: ``--register-coco NAME JSON IMAGE_ROOT --dataset NAME``. Config
overrides ("KEY VALUE") may come anywhere on the command line.
"""

import argparse
import logging
import os
from typing import Dict, Optional, Sequence

from detectron2.utils.logger import setup_logger

import detr_d2  # noqa: F401  registers Detr and the builtin datasets
from detr_d2.analysis.inputs import build_analysis_model, setup_cfg
from detr_d2.analysis.predictor import add_config_arguments, parse_tool_args
from detr_d2.analysis.query_slots import SMALL_SIZE, collect_slot_boxes, plot_query_slots
from detr_d2.data.register import register_coco_from_args

logger = logging.getLogger("detr_d2.query_slots")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", help="dataset to run on (default: DATASETS.TEST[0])")
    parser.add_argument("--num-images", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument(
        "--slots", type=int, nargs="+", help="query indices to plot (default: the first 20)"
    )
    parser.add_argument("--columns", type=int, default=5, help="subplots per row")
    parser.add_argument(
        "--small-size",
        type=float,
        default=SMALL_SIZE,
        help="a box is small when sqrt(w*h) is below this fraction of the image",
    )
    parser.add_argument("--output", metavar="PNG", help="default: OUTPUT_DIR/query_slots.png")
    parser.add_argument("--log-every", type=int, default=50, metavar="N", help="progress period")
    return add_config_arguments(parser)  # --register-coco, config overrides


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return parse_tool_args(get_parser(), argv, list_options=("--slots",))


def main(args: argparse.Namespace) -> Dict:
    """Returns {"output": the PNG, "slots", "num_images", "figure"}."""
    register_coco_from_args(args)
    cfg = setup_cfg(args.config_file, args.opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "query_slots.png")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model = build_analysis_model(cfg)
    slots = args.slots if args.slots else list(range(min(20, cfg.MODEL.DETR.NUM_OBJECT_QUERIES)))
    boxes = collect_slot_boxes(model, cfg, dataset, args.num_images, args.log_every)
    figure = plot_query_slots(boxes, slots, output, args.columns, args.small_size)
    logger.info(f"Plotted slots {slots} over {len(boxes)} images of {dataset} to {output}")
    return {"output": output, "slots": slots, "num_images": len(boxes), "figure": figure}


if __name__ == "__main__":
    for name in ("detectron2", "detr_d2"):
        setup_logger(name=name)
    main(parse_args())
