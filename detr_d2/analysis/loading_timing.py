"""Timing the training data path (tools/benchmark_speed.py): image decoding alone, and one
DetrDatasetMapper call (decode, flip, DETR's multi-scale resize or crop branch, boxes) with
Detectron2's PIL reader and resize against ours (torchvision.io decode, INPUT.DETR_TENSOR_RESIZE).

Both run on the same generated 640x480 JPEG (COCO's typical size) with 1 torch thread, as in a
data-loader worker; each mapper run re-seeds NumPy so that both draw the same augmentations.
"""

import contextlib
import itertools
import os
import tempfile
from typing import Callable, Dict, List, Tuple
from unittest import mock

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from PIL import Image

from ..data import DetrDatasetMapper, read_image
from ..data import detr_dataset_mapper as mapper_module

__all__ = ["time_decode", "time_mapper", "write_test_jpeg"]


def write_test_jpeg(path: str, height: int = 480, width: int = 640) -> None:
    """A photo-like JPEG: colour ramps plus noise, quality 90."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = (ramp + rng.normal(0, 20, ramp.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a data-loader worker
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _per_call(fns: Dict[str, Callable], iters: int, calls: int, run) -> Dict[str, List[float]]:
    """Seconds per call of each function, each timed run making ``calls`` calls; ``run`` is the
    benchmark's alternating timer (fns, iters, warmup) -> {name: [seconds]}."""
    runs = {n: (lambda f=f: [f() for _ in range(calls)]) for n, f in fns.items()}
    return {n: [t / calls for t in ts] for n, ts in run(runs, iters, 1).items()}


def time_decode(iters: int, run, calls: int = 20) -> Tuple[Dict[str, List[float]], bool]:
    """Per-image seconds of Detectron2's PIL ``read_image`` ("pil") and ours ("torchvision"), and
    whether their pixels are equal."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jpg")
        write_test_jpeg(path)
        readers = {
            "pil": lambda: utils.read_image(path, format="BGR"),
            "torchvision": lambda: read_image(path, "BGR"),
        }
        equal = np.array_equal(readers["pil"](), readers["torchvision"]())
        with _one_thread():
            return _per_call(readers, iters, calls, run), equal


def time_mapper(cfg: CfgNode, iters: int, run, calls: int = 20) -> Tuple[Dict, int]:
    """Per-image seconds of the training mapper of ``cfg``: "detectron2" (PIL decode and resize)
    and "ours" (torchvision decode, tensor resize), and the largest pixel difference of their
    outputs over ``calls`` identically seeded images."""
    mappers = {}
    for name, fast in (("detectron2", False), ("ours", True)):
        c = cfg.clone()
        c.defrost()
        c.INPUT.DETR_TENSOR_RESIZE = fast
        mappers[name] = DetrDatasetMapper(c, is_train=True)
    readers = {"detectron2": lambda f, fmt: utils.read_image(f, format=fmt), "ours": read_image}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jpg")
        write_test_jpeg(path)
        boxes = [[40 + 60 * i, 30 + 40 * i, 120, 90] for i in range(7)]
        record = {
            "file_name": path, "image_id": 1, "height": 480, "width": 640,
            "annotations": [
                {"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}
                for b in boxes
            ],
        }  # fmt: skip

        def call(name, seed):
            np.random.seed(seed)
            with mock.patch.object(mapper_module, "read_image", readers[name]):
                return mappers[name](record)["image"]

        diff = max(
            int((call("detectron2", s).int() - call("ours", s).int()).abs().max())
            for s in range(calls)
        )
        seeds = {n: itertools.count() for n in mappers}  # both see the same seeds in turn
        fns = {n: (lambda n=n: call(n, next(seeds[n]))) for n in mappers}
        with _one_thread():
            return _per_call(fns, iters, calls, run), diff
