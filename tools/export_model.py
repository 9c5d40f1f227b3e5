#!/usr/bin/env python
"""Export DETR (``Detr``; ``DetrPanoptic`` without its panoptic merge) as TorchScript, ONNX or a
torch.export program.

    python tools/export_model.py --config-file configs/detr_r50.yaml --format onnx \\
        --output export/ --sample-image input.jpg MODEL.WEIGHTS detr_r50.pth

writes ``export/model.onnx`` (``model.ts`` for torchscript, ``model.pt2`` for torch_export), then
reloads it with its own runtime (onnxruntime, ``torch.jit.load``, ``torch.export.load``) and
compares it with the eager wrapper at the example size and at a second, smaller size with another
batch size; the exit status is 1 when they differ by more than ``--tolerance``.

The exported model (see ``detr_d2/export/wrapper.py``) takes ``images`` (B, 3, H, W) float32,
unnormalized pixels in ``INPUT.FORMAT`` channel order, already resized as for the eager model,
and ``padding_mask`` (B, H, W) bool, True at padding (bottom / right); batch, H and W are dynamic.
It returns ``boxes`` (B, N, 4) XYXY in input pixels, ``scores`` (B, N) and ``classes`` (B, N);
a panoptic model also ``mask_logits`` (B, N, H/4, W/4), see ``detr_d2/export/panoptic.py``.

The example input is ``--sample-image`` after the test-time resize (``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST``), or resized to ``--height`` x ``--width`` if given; without a sample image it
is random pixels of that size (default 512 x 672). Its content only matters for the check. It is
batched with a cropped copy of itself: torch.export needs a batch of 2 or more to keep the batch
dynamic.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import torch
import torch.nn.functional as F

from detr_d2.export import EXPORTERS, FILE_NAMES, batch_images, exportable, load_exported
from detr_d2.export import output_differences

logger = logging.getLogger("export_model")


def setup_cfg(config_file: str, opts: List[str]):
    from detectron2.config import get_cfg

    from detr_d2 import add_detr_config, merge_config_file

    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, config_file)
    cfg.merge_from_list(opts)
    # traced graphs keep the device of the tensors they create (CPU); ONNX is device-neutral
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def build_exportable(cfg) -> torch.nn.Module:
    from detr_d2.engine.checkpoint import DetrCheckpointer
    from detectron2.modeling import build_model

    import detr_d2  # noqa: F401  registers Detr and DetrPanoptic

    model = build_model(cfg)
    DetrCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
    return exportable(model.eval()).eval()


def example_image(
    cfg, sample_image: Optional[str], height: Optional[int], width: Optional[int]
) -> torch.Tensor:
    """(3, H, W) float32 pixels in ``INPUT.FORMAT``."""
    if sample_image is None:
        size = (height or 512, width or 672)
        return torch.rand((3,) + size, generator=torch.Generator().manual_seed(0)) * 255
    from detectron2.data.detection_utils import read_image

    from detr_d2.data.resize import test_resize

    image = read_image(sample_image, format=cfg.INPUT.FORMAT)
    if height is None or width is None:
        image = test_resize(cfg).get_transform(image).apply_image(image)
    image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1).copy())
    if height is not None and width is not None:
        image = F.interpolate(image[None], size=(height, width), mode="bilinear")[0]
    return image


def check(module, exported, images, padding_mask, tolerance: float) -> bool:
    """Compare ``exported`` with the eager ``module`` on one input; log and return success."""
    with torch.no_grad():
        expected = module(images, padding_mask)
    diff = output_differences(expected, exported(images, padding_mask))
    # boxes relative to the image side, mask logits to their largest magnitude
    relative = {"boxes": diff["boxes"] / max(images.shape[-2:]), "scores": diff["scores"]}
    if "mask_logits" in diff:
        relative["mask_logits"] = diff["mask_logits"] / max(1.0, expected[3].abs().max().item())
    ok = all(value <= tolerance for value in relative.values())
    logger.info(
        "input %s: max |diff| %s; classes differ for %.1f%% of queries: %s",
        tuple(images.shape),
        ", ".join(f"{name} {diff[name]:.2e}" for name in relative),
        100 * diff["classes"],
        "OK" if ok else "MISMATCH",
    )
    return ok


def main(args) -> int:
    cfg = setup_cfg(args.config_file, args.opts)
    module = build_exportable(cfg)
    image = example_image(cfg, args.sample_image, args.height, args.width)
    h, w = image.shape[-2:]
    size_divisibility = cfg.MODEL.DETR.SIZE_DIVISIBILITY
    inputs = batch_images([image, image[:, : h * 3 // 4, : w * 3 // 4]], size_divisibility)

    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, FILE_NAMES[args.format])
    exporter = EXPORTERS[args.format]
    if args.format == "onnx":
        exporter(module, inputs, path, opset=args.opset)
    else:
        exporter(module, inputs, path)
    logger.info("exported %s to %s (example input %s)", args.format, path, tuple(inputs[0].shape))

    exported = load_exported(path, args.format)
    other = F.interpolate(image[None], scale_factor=0.8, mode="bilinear")[0]
    ok = check(module, exported, *inputs, args.tolerance)
    ok &= check(module, exported, *batch_images([other], size_divisibility), args.tolerance)
    return 0 if ok else 1


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", required=True, choices=sorted(EXPORTERS))
    parser.add_argument("--output", required=True, help="directory to write the model file to")
    parser.add_argument("--sample-image", help="example input (default: random pixels)")
    parser.add_argument("--height", type=int, help="example input height (pixels)")
    parser.add_argument("--width", type=int, help="example input width (pixels)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest accepted difference to eager: of scores, of boxes as a fraction of the "
        "longer image side, of mask logits relative to their largest magnitude",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth",
    )
    return parser


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="export_model")
    setup_logger(name="detr_d2")
    parser = get_parser()
    args = parser.parse_args()
    if (args.height is None) != (args.width is None):
        parser.error("give both --height and --width, or neither")
    sys.exit(main(args))
