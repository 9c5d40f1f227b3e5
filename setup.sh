#!/usr/bin/env bash
# One-command setup: creates .venv, installs torch, a Python-only detectron2 (dev/build_detectron2.py),
# panopticapi and this project in editable mode. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}
quiet() { grep -v "^WARNING: Location" || true; }  # pip's noise about absent local mirrors

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY=.venv/bin/python
# torch first: the detectron2 sdist's setup.py imports it while pip reads its metadata.
$PY -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | quiet
$PY -m pip install -q -r requirements.txt 2>&1 | quiet
$PY dev/build_detectron2.py 2>&1 | quiet
# panopticapi-lite's metadata wrongly pins numpy<2 and scikit-image: its code needs neither.
$PY -m pip install -q --no-deps panopticapi-lite==0.2.0 2>&1 | quiet
$PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | quiet
$PY -c "import detectron2, detr_d2, panopticapi; from detectron2.utils.analysis import FlopCountAnalysis"
echo "setup ok: $($PY -c 'import torch, detectron2; print("torch", torch.__version__, "detectron2", detectron2.__version__)')"
