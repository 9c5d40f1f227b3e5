"""DETR's resize rule (the original implementation's output sizes) against Detectron2's, in the
mappers, the Predictor and the test loader of train_net."""

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from detr_d2.engine.predictor import Predictor, dataset_inputs
from detr_d2.config import add_detr_config
from detr_d2.data import DetrDatasetMapper, build_test_mapper
from detr_d2.data.resize import ResizeShortestEdge, detr_output_shape


@pytest.mark.parametrize(
    "hw, size, max_size, detr, detectron2",
    [
        ((480, 640), 800, 1333, (800, 1066), (800, 1067)),  # long side truncated, not rounded
        ((640, 480), 800, 1333, (1066, 800), (1067, 800)),
        # the long side would pass max_size: DETR rounds the short side first (533.2 -> 533),
        # then truncates the long one (1332.5 -> 1332); Detectron2 scales both (533, 1333)
        ((400, 1000), 800, 1333, (533, 1332), (533, 1333)),
        ((800, 1200), 800, 1333, (800, 1200), (800, 1200)),  # already at size: unchanged
        ((427, 640), 600, 10**9, (600, 899), (600, 899)),  # no max_size (the crop pre-resize)
    ],
)
def test_output_size_by_rule(hw, size, max_size, detr, detectron2):
    assert detr_output_shape(*hw, size, max_size) == detr
    assert T.ResizeShortestEdge.get_output_shape(*hw, size, max_size) == detectron2
    image = np.zeros((*hw, 3), dtype=np.uint8)
    for rule, expected in (("detr", detr), ("detectron2", detectron2)):
        t = ResizeShortestEdge(size, max_size, "choice", rule=rule).get_transform(image)
        assert (t.new_h, t.new_w) == expected


def test_same_random_draws_as_detectron2():
    """rule="detectron2" reproduces Detectron2's augmentation draw for draw (same sizes)."""
    sizes = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    ours = ResizeShortestEdge(sizes, 1333, "choice", rule="detectron2")
    ref = T.ResizeShortestEdge(sizes, 1333, "choice")
    rng = np.random.default_rng(0)
    for _ in range(30):
        image = np.zeros((int(rng.integers(50, 900)), int(rng.integers(50, 900)), 3), np.uint8)
        state = np.random.get_state()
        expected = ref.get_transform(image)
        np.random.set_state(state)
        got = ours.get_transform(image)
        assert (got.new_h, got.new_w) == (expected.new_h, expected.new_w)


def test_unknown_rule_names_the_key():
    with pytest.raises(ValueError, match="INPUT.DETR_RESIZE_RULE"):
        ResizeShortestEdge(800, 1333, rule="round")


def _cfg(arch, rule="detr"):
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.INPUT.DETR_RESIZE_RULE = rule
    cfg.INPUT.FORMAT = "BGR"
    return cfg


def test_test_time_sizes_everywhere(tmp_path):
    """A 480x640 image reaches a DETR model at 800x1066 (the original DETR's size) through the
    test mapper, train_net's test mapper, the Predictor and the analysis tools' inputs; a
    Faster R-CNN at 800x1067."""
    import cv2

    image = np.full((480, 640, 3), 90, dtype=np.uint8)
    path = str(tmp_path / "image.png")
    cv2.imwrite(path, image)
    record = {"file_name": path, "image_id": 1, "height": 480, "width": 640}
    name = "resize_rule_one_image"
    DatasetCatalog.register(name, lambda: [dict(record)])
    for arch, rule, expected in (
        ("Detr", "detr", (800, 1066)),
        ("Detr", "detectron2", (800, 1067)),
        ("GeneralizedRCNN", "detr", (800, 1067)),
    ):
        cfg = _cfg(arch, rule)
        mapper = build_test_mapper(cfg)
        assert isinstance(mapper, DetrDatasetMapper) == (arch == "Detr")
        assert tuple(mapper(dict(record))["image"].shape[1:]) == expected
        predictor = Predictor(cfg, model=_NoModel())  # the input path only
        assert tuple(predictor.inputs(image)["image"].shape[1:]) == expected
        # the analysis tools' test-resolution inputs (analyze_model, benchmark)
        assert tuple(dataset_inputs(cfg, name, 1)[0]["image"].shape[1:]) == expected
    DatasetCatalog.remove(name)


class _NoModel:
    """Stands in for a model where only the Predictor's input path runs."""

    def eval(self):
        return self


def test_training_sizes_follow_the_rule():
    cfg = _cfg("Detr")
    cfg.INPUT.MIN_SIZE_TRAIN = (800,)
    cfg.INPUT.RANDOM_FLIP = "none"
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    for rule, width in (("detr", 1066), ("detectron2", 1067)):
        cfg.INPUT.DETR_RESIZE_RULE = rule
        mapper = DetrDatasetMapper(cfg, is_train=True)
        out = mapper.augmentations(T.AugInput(image))
        resized = out.apply_image(image)
        assert resized.shape[:2] == (800, width)
