#!/usr/bin/env python
"""Train one config with train_net.py in float32 and under mixed precision; print each run's box
AP and training time.

    python tools/benchmark_amp.py --config-file configs/quickstart/detr_shapes.yaml \\
        --dtypes float32 bfloat16 --output amp.json SOLVER.MAX_ITER 150 SOLVER.STEPS "(120,)"

Each run is ``train_net.py --config-file ... OPTS`` with OUTPUT_DIR ``<--output-dir>/<dtype>``.
s/iter: the mean of metrics.json's iteration times (no evaluation in it); wall s: the whole run.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def train_one(args, dtype: str) -> dict:
    """One train_net.py run with SOLVER.AMP for ``dtype`` ("float32": AMP off)."""
    out = os.path.join(args.output_dir, dtype)
    amp = ["SOLVER.AMP.ENABLED", str(dtype != "float32")]
    amp += ["SOLVER.AMP.DTYPE", dtype] if dtype != "float32" else []
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", args.config_file]
    start = time.perf_counter()
    subprocess.run(cmd + args.opts + amp + ["OUTPUT_DIR", out], check=True)
    wall = time.perf_counter() - start
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.json"))]
    times = [x["time"] for x in lines if "time" in x]
    ap = ([x for x in lines if "bbox/AP" in x] or [{}])[-1]
    return {
        "dtype": dtype,
        "iters": max(x["iteration"] for x in lines if "time" in x) + 1,
        "AP": ap.get("bbox/AP", float("nan")),
        "AP50": ap.get("bbox/AP50", float("nan")),
        "s_per_iter": sum(times) / len(times),
        "wall_s": wall,
        "skipped_steps": max((x.get("amp_skipped_steps", 0) for x in lines), default=0),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/quickstart/detr_shapes.yaml")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--output-dir", default="output/benchmark_amp")
    parser.add_argument("--output", default="", help="write the results as JSON")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config options")
    args = parser.parse_args()
    results = [train_one(args, dtype) for dtype in args.dtypes]
    print(f"{'dtype':<10} {'iters':>6} {'AP':>6} {'AP50':>6} {'s/iter':>7} {'wall s':>7} skipped")
    for r in results:
        print(
            f"{r['dtype']:<10} {r['iters']:>6} {r['AP']:>6.1f} {r['AP50']:>6.1f} "
            f"{r['s_per_iter']:>7.3f} {r['wall_s']:>7.0f} {r['skipped_steps']:>7}"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
