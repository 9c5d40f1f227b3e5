#!/usr/bin/env python
"""The paper's Table 1 (Model | GFLOPs/FPS | #params | AP | AP50 | AP75 | APs | APm | APl) from
several output directories, e.g. DETR and Faster R-CNN runs.

    python tools/compare.py output/faster_rcnn_R_50_FPN_3x output/detr_r50 \\
        --names "Faster RCNN-FPN" "DETR" --output table1.md

AP values come from the last evaluation in OUTDIR/metrics.json, GFLOPs, FPS and #params from
OUTDIR/analysis.json (written by tools/analyze_model.py and tools/benchmark.py with
``--output-dir``); anything missing is shown as "-". The table is printed as markdown and, with
``--output``, saved as markdown (.md) or CSV (.csv).
"""

import argparse
import os
import sys

from detr_d2.analysis.table import format_csv, format_markdown, table_row


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dirs", nargs="+", metavar="OUTDIR")
    parser.add_argument("--names", nargs="+", help="row names (default: the directory names)")
    parser.add_argument("--output", metavar="FILE", help="save as .md or .csv")
    return parser


def main(args: argparse.Namespace) -> str:
    """Prints the markdown table and returns it."""
    names = args.names or [None] * len(args.output_dirs)
    if len(names) != len(args.output_dirs):
        raise SystemExit(f"--names has {len(names)} names for {len(args.output_dirs)} OUTDIRs")
    rows = [table_row(d, n) for d, n in zip(args.output_dirs, names)]
    table = format_markdown(rows)
    sys.stdout.write(table)  # the table is the tool's output, not a log message
    if args.output:
        is_csv = os.path.splitext(args.output)[1].lower() == ".csv"
        with open(args.output, "w") as f:
            f.write(format_csv(rows) if is_csv else table)
    return table


if __name__ == "__main__":
    main(get_parser().parse_args())
