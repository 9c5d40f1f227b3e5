import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_detr_cfg():
    """A DETR config small enough for CPU unit tests: R18 at stride 16, d=32, 1+1 layers."""
    from detectron2.config import get_cfg

    from detr_d2 import add_detr_config

    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", "Base-DETR.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    cfg.MODEL.DETR.NUM_CLASSES = 5
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 7
    cfg.MODEL.DETR.HIDDEN_DIM = 32
    cfg.MODEL.DETR.NHEADS = 4
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 64
    cfg.MODEL.DETR.ENC_LAYERS = 1
    cfg.MODEL.DETR.DEC_LAYERS = 2
    cfg.MODEL.DETR.DROPOUT = 0.0
    return cfg
