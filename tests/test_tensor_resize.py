"""TensorResizeTransform: torchvision's uint8 resize within 1 gray level of Detectron2's PIL resize,
everything else (boxes, segmentation, other images) exactly Detectron2's; the training mapper uses
it only when INPUT.DETR_TENSOR_RESIZE is on."""

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from PIL import Image

from detr_d2.config import add_detr_config
from detr_d2.data import DetrDatasetMapper
from detr_d2.data.resize import TensorResizeTransform


def _photo_like(h, w, seed=0):
    """(h, w, 3) uint8: smooth ramps (as in photos) plus noise (edges)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255.0 / w, y * 255.0 / h, (x + y) * 127.0 / (h + w)], -1)
    return (base + rng.normal(0, 25, base.shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "size, new_size",
    [((48, 64), (120, 160)), ((120, 160), (37, 49)), ((97, 131), (64, 86)), ((50, 70), (50, 70))],
)
def test_within_one_gray_level_of_pil(size, new_size):
    img = _photo_like(*size)
    ours = TensorResizeTransform(*size, *new_size).apply_image(img)
    pil = T.ResizeTransform(*size, *new_size).apply_image(img)
    assert ours.shape == pil.shape == (*new_size, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - pil.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01


def test_strided_views_are_resized_as_their_values():
    """A BGR view ([..., ::-1]) and a flipped view ([:, ::-1]) have negative strides."""
    img = _photo_like(40, 60)
    t = TensorResizeTransform(40, 60, 80, 120)
    for view in (img[:, :, ::-1], img[:, ::-1], img[::2, ::2].repeat(2, 0).repeat(2, 1)):
        assert np.array_equal(t.apply_image(view), t.apply_image(np.ascontiguousarray(view)))
    # and a channel permutation commutes with the resize
    assert np.array_equal(t.apply_image(img[:, :, ::-1]), t.apply_image(img)[:, :, ::-1])


def test_other_inputs_are_detectron2s():
    rng = np.random.default_rng(1)
    t = TensorResizeTransform(30, 40, 45, 60)
    ref = T.ResizeTransform(30, 40, 45, 60)
    seg = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)  # a panoptic PNG: nearest, no blend
    gray = rng.integers(0, 255, (30, 40, 1), dtype=np.uint8)
    plane = rng.integers(0, 255, (30, 40), dtype=np.uint8)
    floats = rng.random((30, 40, 3), dtype=np.float32)
    assert np.array_equal(t.apply_segmentation(seg), ref.apply_segmentation(seg))
    for img in (gray, plane, floats):
        assert np.array_equal(t.apply_image(img), ref.apply_image(img))
    nearest = TensorResizeTransform(30, 40, 45, 60, Image.NEAREST)
    img = _photo_like(30, 40)
    assert np.array_equal(
        nearest.apply_image(img), T.ResizeTransform(30, 40, 45, 60, Image.NEAREST).apply_image(img)
    )
    boxes = np.array([[1.0, 2.0, 30.0, 20.0]])
    assert np.array_equal(t.apply_box(boxes.copy()), ref.apply_box(boxes.copy()))
    assert isinstance(t.inverse(), TensorResizeTransform)
    assert (t.inverse().h, t.inverse().new_h) == (45, 30)


def test_without_torchvisions_v2_resize_it_is_pils(monkeypatch):
    """An older torchvision (no v2 ``resize_image``): Detectron2's PIL resize, same pixels."""
    import detr_d2.data.resize as module

    img = _photo_like(97, 131)
    pil = T.ResizeTransform(97, 131, 64, 86).apply_image(img)
    assert not np.array_equal(TensorResizeTransform(97, 131, 64, 86).apply_image(img), pil)
    monkeypatch.setattr(module, "resize_image", None)
    assert np.array_equal(TensorResizeTransform(97, 131, 64, 86).apply_image(img), pil)


def _cfg(tensor_resize):
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = (90,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = [20, 30]
    cfg.INPUT.DETR_CROP_PRE_RESIZE = (50,)
    cfg.INPUT.DETR_TENSOR_RESIZE = tensor_resize
    return cfg


@pytest.mark.parametrize("crop", [False, True])
def test_mapper_resizes_with_the_configured_backend(tmp_path, crop):
    img = _photo_like(40, 60, seed=2)
    path = str(tmp_path / "image.png")
    Image.fromarray(img).save(path)
    box = {"bbox": [10, 5, 20, 10], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}
    out, resizes = {}, {}
    for fast in (False, True):
        mapper = DetrDatasetMapper(_cfg(fast), is_train=True)
        mapper.crop_prob = 1.0 if crop else 0.0
        d = {"file_name": path, "image_id": 1, "height": 40, "width": 60, "annotations": [box]}
        np.random.seed(0)  # both backends draw the same sizes and crop
        _, transforms = mapper.read_and_augment(dict(d))
        resizes[fast] = [type(t) for t in transforms if isinstance(t, T.ResizeTransform)]
        np.random.seed(0)
        out[fast] = mapper(d)
    assert resizes[False] == [T.ResizeTransform] * (2 if crop else 1)
    assert resizes[True] == [TensorResizeTransform] * (2 if crop else 1)
    pil, fast = out[False]["image"].numpy(), out[True]["image"].numpy()
    assert pil.shape == fast.shape == ((3, 90, 135) if not crop else pil.shape)
    # within one gray level per resize: the crop branch resizes twice
    assert np.abs(pil.astype(int) - fast.astype(int)).max() <= (2 if crop else 1)
    assert out[False]["instances"].gt_boxes.tensor.tolist() == (
        out[True]["instances"].gt_boxes.tensor.tolist()
    )
    # the test mapper keeps Detectron2's PIL resize: the original DETR's preprocessing
    test_mapper = DetrDatasetMapper(_cfg(True), is_train=False)
    assert test_mapper.augmentations.augs[0].tensor_resize is False
