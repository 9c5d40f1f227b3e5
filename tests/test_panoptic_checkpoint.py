"""A finished panoptic model is self-contained: train_net's stage 2 writes a model_final.pth that
--eval-only evaluates alone; MODEL.DETR.FROZEN_WEIGHTS only starts stage 2 from a box model.

The run: a box model file (a tiny random Detr), 2 iterations of stage 2 from it through
train_net.main on the generated panoptic shapes, then --eval-only of that model_final.pth with the
box model file deleted, and with a different box model at FROZEN_WEIGHTS: the predictions of both
evaluations are the same, file for file."""

import json
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from detr_d2 import add_detr_config, merge_config_file
from tiny import TINY_TRAIN_OPTS  # tests/tiny.py

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart")
STAGE2 = os.path.join(CONFIG, "detr_shapes_panoptic.yaml")
OPTS = TINY_TRAIN_OPTS + [  # the quickstart's 9 panoptic classes, 2 iterations
    "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4']", "MODEL.DETR.MASK_HEAD_GROUPS", "2",
    "MODEL.DETR.NUM_CLASSES", "9", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()",
    "DATASETS.TRAIN", "('shapes_panoptic_tiny_train',)",
    "DATASETS.TEST", "('shapes_panoptic_tiny_val',)",
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("datasets_root")  # conftest.py


def _box_model_file(path, seed):
    """A box-stage checkpoint as train_net writes it: {"model": a Detr's state dict}."""
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, STAGE2)
    cfg.merge_from_list(OPTS + ["MODEL.META_ARCHITECTURE", "Detr", "MODEL.MASK_ON", "False"])
    torch.manual_seed(seed)
    torch.save({"model": build_model(cfg).state_dict(), "iteration": 99}, path)


def _run(out_dir, frozen, *extra, eval_only=False):
    import train_net

    argv = ["--config-file", STAGE2] + (["--eval-only"] if eval_only else [])
    argv += OPTS + ["MODEL.DETR.FROZEN_WEIGHTS", str(frozen), "OUTPUT_DIR", str(out_dir), *extra]
    return train_net.main(default_argument_parser().parse_args(argv))


def _predictions(out_dir):
    with open(os.path.join(out_dir, "inference", "coco_instances_results.json")) as f:
        return json.load(f)


def test_stage2_checkpoint_evaluates_without_its_frozen_weights_file(tmp_path):
    box, other = tmp_path / "box.pth", tmp_path / "other_box.pth"
    _box_model_file(box, seed=0)
    _run(tmp_path / "stage2", box, "DATASETS.TEST", "()")  # stage 2 starts from box.pth
    final = tmp_path / "stage2" / "model_final.pth"
    saved = torch.load(final, map_location="cpu", weights_only=True)["model"]
    started = torch.load(box, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(saved["class_embed.weight"], started["class_embed.weight"])  # frozen

    os.remove(box)  # the stage-1 file is gone: model_final.pth alone is evaluated
    alone = _run(tmp_path / "eval_alone", box, "MODEL.WEIGHTS", str(final), eval_only=True)
    _box_model_file(other, seed=1)  # another box model at FROZEN_WEIGHTS changes nothing
    with_other = _run(tmp_path / "eval_other", other, "MODEL.WEIGHTS", str(final), eval_only=True)
    assert {"panoptic_seg", "bbox", "segm"} <= set(alone)
    assert json.dumps(with_other, sort_keys=True) == json.dumps(alone, sort_keys=True)  # NaN too
    predictions = _predictions(tmp_path / "eval_alone")
    assert predictions and predictions == _predictions(tmp_path / "eval_other")
