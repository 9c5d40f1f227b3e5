"""The panoptic configs: two-stage pairs that fit together, the official layout, the quickstart."""

import glob
import os

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

import detr_d2.data  # noqa: F401  registers the shapes datasets
from detr_d2.modeling.panoptic import add_panoptic_config  # registers DetrPanoptic
from detr_d2 import add_detr_config, merge_config_file
from detr_d2.checkpoint import DetrSpec

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
MASK_STAGES = ["detr_r50_panoptic", "detr_r50_dc5_panoptic", "detr_r101_panoptic"]


def _cfg(path):
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_older_scripts_add_panoptic_config_gets_the_panoptic_keys():
    cfg = add_panoptic_config(get_cfg())
    assert cfg.MODEL.DETR.FROZEN_WEIGHTS == "" and cfg.MODEL.DETR.DICE_WEIGHT == 1.0


def test_every_panoptic_config_loads():
    paths = sorted(glob.glob(os.path.join(CONFIGS, "panoptic", "*.yaml")))
    assert len(paths) == 6
    quickstart = [
        os.path.join(CONFIGS, "quickstart", f"detr_shapes_panoptic{s}.yaml") for s in ("_box", "")
    ]
    for path in paths + quickstart:
        cfg = _cfg(path)
        for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
            assert name in DatasetCatalog.list(), (path, name)


@pytest.mark.parametrize("name", MASK_STAGES)
def test_mask_stage_freezes_the_output_of_its_box_stage(name):
    box = _cfg(os.path.join(CONFIGS, "panoptic", name + "_box.yaml"))
    mask = _cfg(os.path.join(CONFIGS, "panoptic", name + ".yaml"))
    _assert_stages_fit(box, mask)
    assert box.MODEL.DETR.NUM_CLASSES == 133
    assert box.DATASETS.TRAIN == ("coco_2017_train_panoptic",)
    assert box.DATASETS.TEST == mask.DATASETS.TEST == ("coco_2017_val_panoptic",)
    # 300 box epochs (lr drop at 200), then 25 mask epochs (lr drop at 15), 1848 iterations each
    assert (box.SOLVER.MAX_ITER, box.SOLVER.STEPS) == (300 * 1848, (200 * 1848,))
    assert (mask.SOLVER.MAX_ITER, mask.SOLVER.STEPS) == (25 * 1848, (15 * 1848,))


def _assert_stages_fit(box, mask):
    """The mask stage freezes the box stage's final checkpoint; both build the same box model."""
    assert box.MODEL.META_ARCHITECTURE == "Detr" and not box.MODEL.MASK_ON
    assert mask.MODEL.META_ARCHITECTURE == "DetrPanoptic" and mask.MODEL.MASK_ON
    assert mask.MODEL.DETR.FROZEN_WEIGHTS == os.path.join(box.OUTPUT_DIR, "model_final.pth")
    assert box.DATASETS.TEST == mask.DATASETS.TEST
    for key in ("RESNETS", "DETR"):
        a, b = dict(box.MODEL[key]), dict(mask.MODEL[key])
        a.pop("FROZEN_WEIGHTS", None), b.pop("FROZEN_WEIGHTS", None)
        assert a == b, key


def test_quickstart_mask_stage_freezes_its_box_stage():
    box = _cfg(os.path.join(CONFIGS, "quickstart", "detr_shapes_panoptic_box.yaml"))
    mask = _cfg(os.path.join(CONFIGS, "quickstart", "detr_shapes_panoptic.yaml"))
    _assert_stages_fit(box, mask)
    assert box.DATASETS.TRAIN == mask.DATASETS.TRAIN == ("shapes_panoptic_train",)
    meta = MetadataCatalog.get("shapes_panoptic_train")
    things, stuff = meta.thing_dataset_id_to_contiguous_id, meta.stuff_dataset_id_to_contiguous_id
    assert box.MODEL.DETR.NUM_CLASSES == len(things) + len(stuff) == 9


def test_r50_stages_share_the_box_model_and_have_the_official_layout():
    box_cfg = _cfg(os.path.join(CONFIGS, "panoptic", "detr_r50_panoptic_box.yaml"))
    mask_cfg = _cfg(os.path.join(CONFIGS, "panoptic", "detr_r50_panoptic.yaml"))
    mask_cfg.MODEL.DETR.FROZEN_WEIGHTS = ""  # no checkpoint here: the layout only
    box = {k: v.shape for k, v in build_model(box_cfg).state_dict().items()}
    model = build_model(mask_cfg)
    panoptic = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v for k, v in panoptic.items() if model.in_box_model(k)} == box
    spec = DetrSpec(
        depth=50, enc_layers=6, dec_layers=6, pre_norm=False, learned_position=False, panoptic=True
    )
    assert set(panoptic) == spec.keys()
    assert panoptic["mask_head.lay1.weight"] == (264, 264, 3, 3)  # d + M = 256 + 8
    assert panoptic["mask_head.adapter1.weight"] == (128, 1024, 1, 1)  # res4
    assert model.is_thing.sum().item() == 80 and not model.is_thing[80:].any()
