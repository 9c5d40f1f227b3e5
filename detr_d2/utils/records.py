"""What a run leaves in its output folder for the tools: ``metrics.json`` (Detectron2's JSONWriter,
one JSON object per line: losses, lr, class_error, "bbox/AP", ...) and ``analysis.json``, which
tools/analyze_model.py and tools/benchmark.py update with ``--output-dir``, section by section::

    {"flop": {"gflops": 86.0, "input": "800x1201", ...}, "parameter": {"total": 41521941},
     "benchmark": {"inference": {"median_per_s": 28.0, "device_name": "...", ...}}}
"""

import json
import os
from typing import Dict, List

ANALYSIS_FILE = "analysis.json"


def read_analysis(output_dir: str) -> Dict:
    """OUTPUT_DIR/analysis.json, or {} if there is none."""
    path = os.path.join(output_dir, ANALYSIS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_analysis(output_dir: str, section: str, values: Dict) -> str:
    """Update ``section`` of OUTPUT_DIR/analysis.json with ``values``, keeping the other keys and
    sections; returns the file's path."""
    os.makedirs(output_dir, exist_ok=True)
    analysis = read_analysis(output_dir)
    analysis.setdefault(section, {}).update(values)
    path = os.path.join(output_dir, ANALYSIS_FILE)
    with open(path, "w") as f:
        json.dump(analysis, f, indent=2, sort_keys=True)
    return path


def read_metrics(path: str) -> List[Dict]:
    """The records of a metrics.json; unparsable lines (e.g. one cut by a crash) are skipped."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records
