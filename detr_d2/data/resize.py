"""The shortest-edge resize of DETR's data pipeline. The original DETR truncates the long side
(640x480 to short side 800: 1066 wide; Detectron2: 1067) and, past ``max_size``, rounds the short
side first; with ``rule="detr"`` the images, and so the outputs, are the original's.

``tensor_resize``: uint8 images resized with torchvision's antialiased bilinear filter instead of
PIL's: 640x480 to 1066x800 (1 thread) in 1.0 ms instead of 7.5 ms, at most 1 gray level from PIL
on 0.07% of the values (2 after DETR's crop branch, which resizes twice)."""

import logging
import sys
import warnings
from typing import Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.utils.logger import log_first_n
from PIL import Image

try:  # torchvision >= 0.16 (setup.sh installs 0.29)
    from torchvision.transforms.v2.functional import resize_image
except ImportError:  # older torchvision: its v1 tensor resize is slower than PIL, so use PIL
    resize_image = None


class TensorResizeTransform(T.ResizeTransform):
    """Detectron2's ``ResizeTransform`` whose bilinear resize of a uint8 (H, W, 3) image runs in
    torchvision; everything else (boxes, segmentation through PIL's nearest) is inherited."""

    def apply_image(self, img: np.ndarray, interp=None) -> np.ndarray:
        """img: (H, W, 3) uint8, any strides. Returns (new_h, new_w, 3) uint8."""
        interp = self.interp if interp is None else interp
        if interp != Image.BILINEAR or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            return super().apply_image(img, interp)
        if resize_image is None:
            log_first_n(
                logging.WARNING,
                "INPUT.DETR_TENSOR_RESIZE needs torchvision >= 0.16: resizing with PIL instead",
            )
            return super().apply_image(img, interp)
        assert img.shape[:2] == (self.h, self.w), (img.shape, (self.h, self.w))
        if any(s < 0 for s in img.strides):  # torch cannot view negative strides
            img = np.ascontiguousarray(img)
        with warnings.catch_warnings():  # a read-only array (np.asarray of a PIL image): the
            warnings.simplefilter("ignore", UserWarning)  # resize only reads it
            chw = torch.from_numpy(img).permute(2, 0, 1)  # a view: channels last in memory
        out = resize_image(chw, [self.new_h, self.new_w], antialias=True)
        return out.permute(1, 2, 0).numpy()

    def inverse(self) -> T.Transform:
        return TensorResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


def detr_output_shape(h: int, w: int, short_edge_length: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w) by the original DETR's rule: the short side becomes ``short_edge_length``
    (``round(max_size * short / long)`` when the long side would exceed ``max_size``), the long
    side is truncated; a short side already at that length keeps the image size."""
    size = short_edge_length
    short, long = float(min(h, w)), float(max(h, w))
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


class ResizeShortestEdge(T.ResizeShortestEdge):
    """Detectron2's ``ResizeShortestEdge`` (same random draws) with ``rule`` "detr" (default,
    :func:`detr_output_shape`) or "detectron2", ``tensor_resize`` and no side resized to 0 px."""

    def __init__(
        self,
        short_edge_length,
        max_size=sys.maxsize,
        sample_style="range",
        interp=Image.BILINEAR,
        tensor_resize=False,
        rule="detr",
    ):  # spelt out: Augmentation's __repr__ (logged by the mapper) prints them
        super().__init__(short_edge_length, max_size, sample_style, interp)
        if rule not in ("detr", "detectron2"):
            raise ValueError(f"INPUT.DETR_RESIZE_RULE must be 'detr' or 'detectron2', not {rule!r}")
        self.tensor_resize, self.rule = tensor_resize, rule

    def get_transform(self, image):
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return T.NoOpTransform()
        shape = detr_output_shape if self.rule == "detr" else T.ResizeShortestEdge.get_output_shape
        new_h, new_w = shape(h, w, int(size), self.max_size)
        resize = TensorResizeTransform if self.tensor_resize else T.ResizeTransform
        return resize(h, w, max(new_h, 1), max(new_w, 1), self.interp)


def test_resize(cfg) -> ResizeShortestEdge:
    """The test-time resize of a DETR config: INPUT.MIN_SIZE_TEST (0: none) / MAX_SIZE_TEST, by
    INPUT.DETR_RESIZE_RULE, through PIL (the original DETR's pixels)."""
    return ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice", rule=cfg.INPUT.DETR_RESIZE_RULE
    )
