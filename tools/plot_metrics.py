#!/usr/bin/env python
"""Training curves from detectron2's metrics.json (one JSON object per line) to an image.

    python tools/plot_metrics.py output/detr_r50/metrics.json --output curves.png
    python tools/plot_metrics.py output/detr_r50/metrics.json --output lr.png --keys lr

One subplot per key over iterations (losses on a log scale); keys absent from the file are
skipped. Default keys: total_loss, loss_ce, loss_bbox, loss_giou, lr, bbox/AP, bbox/AP50.
"""

import argparse
import logging

from detectron2.utils.logger import setup_logger

from detr_d2.analysis.curves import DEFAULT_KEYS, plot_curves

logger = logging.getLogger("detr_d2.plot_metrics")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", metavar="METRICS_JSON", help="OUTDIR/metrics.json")
    parser.add_argument("--output", required=True, metavar="IMAGE", help="e.g. curves.png")
    parser.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS))
    return parser


def main(args: argparse.Namespace) -> None:
    plotted = plot_curves(args.metrics, args.output, args.keys)
    skipped = [k for k in args.keys if k not in plotted]
    if skipped:
        logger.warning(f"Not in {args.metrics}: {skipped}")
    logger.info(f"Plotted {plotted} to {args.output}")


if __name__ == "__main__":
    setup_logger(name="detr_d2")
    main(get_parser().parse_args())
