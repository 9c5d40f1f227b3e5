#!/usr/bin/env python
"""The paper's Table 1 (Model | GFLOPs/FPS | FPS on | #params | AP | AP50 | AP75 | APs | APm |
APl) from output folders, e.g. of DETR and Faster R-CNN runs.

    python tools/compare.py output/faster_rcnn_R_50_FPN_3x output/detr_r50 \\
        --names "Faster RCNN-FPN" "DETR" --output table1.md

AP from the last evaluation in OUTDIR/metrics.json; GFLOPs, FPS, its device and #params from
OUTDIR/analysis.json (tools/analyze_model.py, tools/benchmark.py ``--output-dir``). A value not
measured shows as "-"; a missing folder is an error. ``--output`` saves it as .md or .csv.
"""

# ruff: noqa: E402  (the command line is parsed before anything heavy is imported)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__, config=False)
    parser.add_argument("output_dirs", nargs="+", metavar="OUTDIR")
    parser.add_argument("--names", nargs="+", help="row names (default: the folder names)")
    cli.add_flags(parser, "output", output=dict(help="save the table as .md or .csv"))
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import csv
import os
import sys
from typing import Dict, Optional

from tabulate import tabulate

from detr_d2.utils.records import read_analysis, read_metrics

COLUMNS = ["Model", "GFLOPs/FPS", "FPS on", "#params", "AP", "AP50", "AP75", "APs", "APm", "APl"]
MISSING = "-"


def _number(value: Optional[float], digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def table_row(output_dir: str, name: Optional[str] = None) -> Dict[str, str]:
    """One formatted row: "GFLOPs/FPS" as in the paper but with two decimals of GFLOPs
    ("86.21/28"; "-" if neither is known), the device of the FPS, #params in millions ("41.5M"),
    the AP values of the last evaluation in metrics.json with one decimal."""
    analysis = read_analysis(output_dir)
    gflops = analysis.get("flop", {}).get("gflops")
    inference = analysis.get("benchmark", {}).get("inference", {})
    fps, params = inference.get("median_per_s"), analysis.get("parameter", {}).get("total")
    speed = f"{_number(gflops, 2)}/{_number(fps, 0)}"
    metrics = os.path.join(output_dir, "metrics.json")
    records = read_metrics(metrics) if os.path.isfile(metrics) else []
    ap = next((r for r in reversed(records) if "bbox/AP" in r), {})
    return {
        "Model": name or os.path.basename(os.path.normpath(output_dir)),
        "GFLOPs/FPS": MISSING if gflops is None and fps is None else speed,
        "FPS on": inference.get("device_name", MISSING) if fps is not None else MISSING,
        "#params": MISSING if params is None else f"{params / 1e6:.1f}M",
        **{c: _number(ap.get(f"bbox/{c}"), 1) for c in COLUMNS[4:]},
    }


def main(args) -> str:
    """Prints the markdown table (names left-aligned, numbers right) and returns it."""
    names = args.names or [None] * len(args.output_dirs)
    if len(names) != len(args.output_dirs):
        raise SystemExit(f"--names has {len(names)} names for {len(args.output_dirs)} OUTDIRs")
    if missing := [d for d in args.output_dirs if not os.path.isdir(d)]:
        raise SystemExit(f"No such output folder: {', '.join(missing)}")
    rows = [table_row(d, n) for d, n in zip(args.output_dirs, names)]
    align = ["left"] * 3 + ["right"] * (len(COLUMNS) - 3)
    table = tabulate(rows, "keys", "pipe", colalign=align, disable_numparse=True) + "\n"
    sys.stdout.write(table)  # the table is the tool's output, not a log message
    if args.output:
        with open(args.output, "w") as f:
            if os.path.splitext(args.output)[1].lower() != ".csv":
                f.write(table)
            else:
                writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
    return table


if __name__ == "__main__":
    main(ARGS)
