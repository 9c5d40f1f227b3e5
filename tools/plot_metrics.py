#!/usr/bin/env python
"""Training curves from Detectron2's metrics.json to an image: one subplot per key over
iterations (losses on a log scale), keys absent from the file skipped.

    python tools/plot_metrics.py output/detr_r50/metrics.json --output curves.png
    python tools/plot_metrics.py output/detr_r50/metrics.json --output lr.png --keys lr
"""

# ruff: noqa: E402  (the command line is parsed before anything heavy is imported)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__, config=False)
    parser.add_argument("metrics", metavar="METRICS_JSON", help="OUTDIR/metrics.json")
    cli.add_flags(parser, "output", output=dict(required=True, help="the image, e.g. curves.png"))
    keys = "total_loss loss_ce loss_bbox loss_giou class_error lr bbox/AP bbox/AP50".split()
    parser.add_argument("--keys", nargs="+", default=keys, help="default: %(default)s")
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
from typing import Dict, List, Tuple

# A bare Figure renders with Agg when saved, without pyplot's global backend state.
from matplotlib.figure import Figure

from detr_d2.utils.records import read_metrics

logger = logging.getLogger("detr_d2.plot_metrics")


def metric_series(records: List[Dict], key: str) -> Tuple[List[int], List[float]]:
    """(iterations, values) of ``key``, sorted by iteration. A resumed run appends iterations it
    had already logged; the later record of an iteration wins."""
    by_iter = {r["iteration"]: r[key] for r in records if key in r and "iteration" in r}
    iters = sorted(by_iter)
    return iters, [by_iter[i] for i in iters]


def main(args, columns: int = 2) -> List[str]:
    """One subplot per key of ``--keys`` found in the metrics file, saved to ``--output``. Returns
    the keys plotted; raises ValueError if none is in the file."""
    records = read_metrics(args.metrics)
    series = {k: s for k in args.keys if (s := metric_series(records, k))[0]}
    if not series:
        raise ValueError(f"none of {list(args.keys)} in {args.metrics}")
    if skipped := [k for k in args.keys if k not in series]:
        logger.warning(f"Not in {args.metrics}: {skipped}")
    rows = (len(series) + columns - 1) // columns
    fig = Figure(figsize=(5 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (key, (iters, values)) in zip(axes.flat, series.items()):
        ax.plot(iters, values, marker="o" if len(iters) < 20 else None, markersize=3)
        ax.set(title=key, xlabel="iteration")
        ax.grid(alpha=0.3)
        if key.startswith("loss") or key == "total_loss":
            ax.set_yscale("log" if min(values) > 0 else "linear")
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    logger.info(f"Plotted {list(series)} to {args.output}")
    return list(series)


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
