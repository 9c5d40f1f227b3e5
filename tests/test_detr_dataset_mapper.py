"""DetrDatasetMapper: image tensor, box transforms, filtering of crowd/degenerate/cropped boxes."""


import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from detr_d2.config import add_detr_config
from detr_d2.data import DetrDatasetMapper

H, W = 40, 60  # size of the test image


def _box(xywh, category_id=1, iscrowd=0):
    return {"bbox": xywh, "bbox_mode": BoxMode.XYWH_ABS, "category_id": category_id,
            "iscrowd": iscrowd}  # fmt: skip


@pytest.fixture
def image_file(tmp_path):
    """A (H, W) RGB PNG whose pixel (y, x) is (x, y, 7); returns (path, RGB array)."""
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[:, :, 0] = np.arange(W)[None, :]
    rgb[:, :, 1] = np.arange(H)[:, None]
    rgb[:, :, 2] = 7
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, rgb[:, :, ::-1])
    return path, rgb


def _dict(path, annotations):
    return {"file_name": path, "image_id": 1, "height": H, "width": W, "annotations": annotations}


def _cfg(**input_keys):
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    for key, value in input_keys.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def test_flip_moves_image_and_boxes(image_file):
    path, rgb = image_file
    mapper = DetrDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB")
    out = mapper(_dict(path, [_box([10, 5, 20, 10], category_id=3)]))
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    assert np.array_equal(out["image"].numpy().transpose(1, 2, 0), rgb[:, ::-1])
    inst = out["instances"]
    assert inst.image_size == (H, W)
    # x0' = W - x1 = 60 - 30, x1' = W - x0 = 60 - 10, y unchanged; absolute XYXY
    assert inst.gt_boxes.tensor.tolist() == [[30.0, 5.0, 50.0, 15.0]]
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [3]
    assert (out["height"], out["width"]) == (H, W)


def test_train_from_config_resizes_and_scales_boxes(image_file):
    path, _ = image_file
    cfg = _cfg(MIN_SIZE_TRAIN=(80,), MAX_SIZE_TRAIN=1000, RANDOM_FLIP="none")
    mapper = DetrDatasetMapper(cfg, is_train=True)
    assert mapper.crop_augmentations is None  # INPUT.CROP.ENABLED is False by default
    out = mapper(_dict(path, [_box([10, 5, 20, 10])]))
    assert out["image"].shape == (3, 80, 120)
    assert out["instances"].gt_boxes.tensor.tolist() == [[20.0, 10.0, 60.0, 30.0]]


def test_crop_branch_from_config(image_file):
    path, _ = image_file
    cfg = _cfg(MIN_SIZE_TRAIN=(32,), MAX_SIZE_TRAIN=1000, DETR_CROP_PRE_RESIZE=(40,))
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = [16, 30]
    mapper = DetrDatasetMapper(cfg, is_train=True)
    kinds = [type(a).__name__ for a in mapper.crop_augmentations.augs]
    assert kinds == ["RandomFlip", "ResizeShortestEdge", "RandomCrop", "ResizeShortestEdge"]
    shapes = set()
    for seed in range(12):
        np.random.seed(seed)
        out = mapper(_dict(path, [_box([0, 0, W, H])]))
        h, w = out["image"].shape[1:]
        assert min(h, w) == 32
        shapes.add((h, w))
        # a box covering the whole image covers the whole augmented image
        assert out["instances"].gt_boxes.tensor.tolist() == [[0.0, 0.0, float(w), float(h)]]
    assert (32, 48) in shapes and len(shapes) > 1  # both the plain and the crop branch ran


def test_test_mode_resizes_to_800_and_drops_annotations(image_file):
    path, _ = image_file
    mapper = DetrDatasetMapper(_cfg(), is_train=False)
    out = mapper(_dict(path, [_box([10, 5, 20, 10])]))
    assert out["image"].shape == (3, 800, 1200)
    assert "annotations" not in out and "instances" not in out
    assert (out["height"], out["width"]) == (H, W)


def test_empty_image_kept(image_file):
    path, _ = image_file
    mapper = DetrDatasetMapper(True, augmentations=[], image_format="RGB")
    inst = mapper(_dict(path, []))["instances"]
    assert len(inst) == 0 and inst.gt_boxes.tensor.shape == (0, 4)
    assert inst.gt_classes.dtype == torch.int64


def test_crowd_removed(image_file):
    path, _ = image_file
    mapper = DetrDatasetMapper(True, augmentations=[], image_format="RGB")
    out = mapper(_dict(path, [_box([1, 1, 5, 5], 1, iscrowd=1), _box([2, 2, 5, 5], 2)]))
    assert out["instances"].gt_classes.tolist() == [2]


def test_degenerate_box_dropped(image_file):
    """(dataset_checks drops and counts them before training; a dict that did not go through it
    loses them here too)"""
    path, _ = image_file
    mapper = DetrDatasetMapper(True, augmentations=[], image_format="RGB")
    annotations = [_box([1, 1, 0, 5], 1), _box([1, 1, 5, 5], 2), _box([3, 3, 4, -1], 3)]
    out = mapper(_dict(path, annotations))
    assert out["instances"].gt_classes.tolist() == [2]


def test_crop_removing_every_box_gives_no_instances(image_file):
    path, _ = image_file
    crop = T.CropTransform(0, 0, 20, 20)  # x0, y0, w, h: the top-left corner only
    mapper = DetrDatasetMapper(True, augmentations=[crop], image_format="RGB")
    out = mapper(_dict(path, [_box([40, 25, 10, 5]), _box([30, 30, 20, 8])]))
    assert out["image"].shape == (3, 20, 20)
    assert len(out["instances"]) == 0 and out["instances"].gt_boxes.tensor.shape == (0, 4)


def test_deterministic_with_fixed_seed(image_file):
    path, _ = image_file
    cfg = _cfg(MIN_SIZE_TRAIN=(24, 32, 40), MAX_SIZE_TRAIN=1000, DETR_CROP_PRE_RESIZE=(40, 48))
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = [16, 30]
    mapper = DetrDatasetMapper(cfg, is_train=True)
    outs = []
    for _ in range(2):
        np.random.seed(123)
        outs.append([mapper(_dict(path, [_box([10, 5, 20, 10])])) for _ in range(4)])
    for a, b in zip(*outs):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
