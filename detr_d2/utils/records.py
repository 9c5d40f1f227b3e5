"""What a run leaves in its output folder and the tools read back:

* ``metrics.json``, Detectron2's JSONWriter: one JSON object per line (losses, lr, class_error,
  evaluations such as "bbox/AP"), read by tools/plot_metrics.py and tools/compare.py;
* ``analysis.json``, written by tools/analyze_model.py and tools/benchmark.py with
  ``--output-dir`` (each run updates the sections it measured), read by tools/compare.py::

      {"flop": {"gflops": 86.0, "input": "800x1201", ...}, "parameter": {"total": 41521941},
       "benchmark": {"inference": {"median_per_s": 28.0, "device_name": "...", ...}}}
"""

import json
import os
from typing import Dict, List

__all__ = ["ANALYSIS_FILE", "read_analysis", "update_analysis", "read_metrics"]

ANALYSIS_FILE = "analysis.json"


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
    """Detectron2's metrics.json: one JSON object per line (unparsable lines, e.g. a line cut by
    a crash, are skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
