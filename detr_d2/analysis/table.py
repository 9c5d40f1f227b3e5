"""The paper's Table 1 from training/evaluation output directories.

Convention: an output directory may hold

* ``metrics.json`` (detectron2's JSONWriter, one JSON object per line): the last line with
  "bbox/AP" gives AP, AP50, AP75, APs, APm, APl (COCO AP in percent).
* ``analysis.json`` (written by tools/analyze_model.py and tools/benchmark.py with
  ``--output-dir``; each run updates the keys it measured)::

      {"flop": {"gflops": 86.0, "input": "800x1201", "num_inputs": 1, ...},
       "parameter": {"total": 41521941, "trainable": ...},
       "benchmark": {"inference": {"median_per_s": 28.0, "device": "...", ...},
                     "train": {"median_per_s": ...}}}

Missing values are shown as "-".
"""

import csv
import io
import json
import os
from typing import Dict, List, Optional, Sequence

__all__ = [
    "ANALYSIS_FILE",
    "COLUMNS",
    "update_analysis",
    "read_analysis",
    "read_metrics",
    "last_eval",
    "table_row",
    "format_markdown",
    "format_csv",
]

ANALYSIS_FILE = "analysis.json"
COLUMNS = ["Model", "GFLOPs/FPS", "#params", "AP", "AP50", "AP75", "APs", "APm", "APl"]
_AP_KEYS = {
    "AP": "bbox/AP",
    "AP50": "bbox/AP50",
    "AP75": "bbox/AP75",
    "APs": "bbox/APs",
    "APm": "bbox/APm",
    "APl": "bbox/APl",
}
MISSING = "-"


def read_analysis(output_dir: str) -> Dict:
    """OUTPUT_DIR/analysis.json, or {} if there is none."""
    path = os.path.join(output_dir, ANALYSIS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_analysis(output_dir: str, section: str, values: Dict) -> str:
    """Update ``section`` of OUTPUT_DIR/analysis.json with ``values`` (keys not in ``values``, and
    the other sections, are kept); returns the file's path."""
    os.makedirs(output_dir, exist_ok=True)
    analysis = read_analysis(output_dir)
    analysis.setdefault(section, {}).update(values)
    path = os.path.join(output_dir, ANALYSIS_FILE)
    with open(path, "w") as f:
        json.dump(analysis, f, indent=2, sort_keys=True)
    return path


def read_metrics(path: str) -> List[Dict]:
    """detectron2's metrics.json: one JSON object per line (unparsable lines, e.g. a line cut by
    a crash, are skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def last_eval(output_dir: str) -> Dict[str, float]:
    """{"AP": ..., "AP50": ..., ...} of the last line of OUTPUT_DIR/metrics.json with "bbox/AP";
    {} if there is none."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    for record in reversed(read_metrics(path)):
        if "bbox/AP" in record:
            return {col: record[key] for col, key in _AP_KEYS.items() if key in record}
    return {}


def _number(value: Optional[float], digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def table_row(output_dir: str, name: Optional[str] = None) -> Dict[str, str]:
    """One formatted Table 1 row: "GFLOPs/FPS" as in the paper ("86/28"; "-" if neither is
    known), #params in millions ("41.5M"), AP values with one decimal."""
    analysis = read_analysis(output_dir)
    gflops = analysis.get("flop", {}).get("gflops")
    fps = analysis.get("benchmark", {}).get("inference", {}).get("median_per_s")
    params = analysis.get("parameter", {}).get("total")
    row = {
        "Model": name or os.path.basename(os.path.normpath(output_dir)),
        "GFLOPs/FPS": (
            MISSING if gflops is None and fps is None else f"{_number(gflops, 0)}/{_number(fps, 0)}"
        ),
        "#params": MISSING if params is None else f"{params / 1e6:.1f}M",
    }
    ap = last_eval(output_dir)
    row.update({col: _number(ap.get(col), 1) for col in _AP_KEYS})
    return row


def format_markdown(rows: Sequence[Dict[str, str]]) -> str:
    """A GitHub-markdown table with the COLUMNS, model names left-aligned, numbers right."""
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS]

    def line(cells):
        return "| " + " | ".join(cells) + " |"

    rule = [":" + "-" * (widths[0] - 1)] + ["-" * (w - 1) + ":" for w in widths[1:]]
    lines = [line(c.ljust(w) for c, w in zip(COLUMNS, widths)), line(rule)]
    for r in rows:
        model = r[COLUMNS[0]].ljust(widths[0])
        lines.append(line([model] + [r[c].rjust(w) for c, w in zip(COLUMNS[1:], widths[1:])]))
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[Dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
