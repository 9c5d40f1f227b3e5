"""train_net.py end to end on the tiny generated dataset: train, evaluate, --eval-only from the
saved checkpoint, and 2-process training through launch. Every yaml in configs/ loads."""

import glob
import json
import os

import pytest
from detectron2.config import get_cfg
from detectron2.engine import launch

from detr_d2 import add_detr_config, merge_config_file
from tiny import TINY_TRAIN_OPTS  # tests/tiny.py

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY = TINY_TRAIN_OPTS + [
    "DATASETS.TEST", "('shapes_tiny_val',)", "SOLVER.CHECKPOINT_PERIOD", "100",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("datasets_root")  # conftest.py


def _args(out_dir, *extra, eval_only=False):
    import train_net

    argv = ["--config-file", os.path.join(ROOT, "configs", "Base-DETR.yaml")]
    argv += TINY + ["OUTPUT_DIR", str(out_dir)]
    # the flag after the overrides, more overrides after it (issue 15, item 1)
    argv += ["--eval-only"] if eval_only else []
    return train_net.argument_parser().parse_args(argv + list(extra))


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
)
def test_every_config_loads(path):
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, path)
    assert cfg.MODEL.META_ARCHITECTURE


def test_train_then_eval_only_reproduces_ap(tmp_path):
    import train_net

    trained = train_net.main(_args(tmp_path))
    assert os.path.exists(tmp_path / "model_final.pth")
    # the training log line shows DETR's class_error beside the losses (issue 15, item 4)
    log = (tmp_path / "log.txt").read_text()
    assert "class_error: " in [line for line in log.splitlines() if "loss_ce: " in line][-1]
    final = trained if trained else None
    evaluated = train_net.main(
        _args(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"), eval_only=True)
    )
    ap = evaluated["bbox"]["AP"]
    assert ap == ap  # a number, not NaN
    # the evaluation after training (written to metrics.json by the EvalHook) gives the same AP
    if final is not None and "bbox" in final:
        assert final["bbox"]["AP"] == pytest.approx(ap, abs=1e-9)
    else:
        lines = [json.loads(x) for x in open(tmp_path / "metrics.json") if "bbox/AP" in x]
        assert lines and lines[-1]["bbox/AP"] == pytest.approx(ap, abs=1e-9)


def test_two_process_training_through_launch(tmp_path):
    import train_net

    launch(
        train_net.main,
        2,
        dist_url="auto",
        args=(_args(tmp_path, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()"),),
    )
    assert os.path.exists(tmp_path / "model_final.pth")
    metrics = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    assert metrics[-1]["iteration"] == 1 and "loss_ce" in metrics[-1]
