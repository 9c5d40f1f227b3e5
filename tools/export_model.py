#!/usr/bin/env python
"""Export DETR (``Detr``; ``DetrPanoptic`` without its panoptic merge) as TorchScript, ONNX or a
torch.export program.

    python tools/export_model.py --config-file configs/detr_r50.yaml --format onnx \\
        --output-dir export/ --sample-image input.jpg MODEL.WEIGHTS detr_r50.pth

writes ``export/model.onnx`` (``model.ts`` for torchscript, ``model.pt2`` for torch_export),
reloads it with its own runtime and compares it with the eager wrapper at the example size and
at a smaller size and batch; the exit status is 1 when they differ by more than ``--tolerance``.
Inputs and outputs: docs/export.md. The example input is ``--sample-image`` after the test-time
resize (or at ``--input-size H W``), else random pixels (512 x 672), batched with a cropped copy.
MODEL.WEIGHTS is required (or ``--random-weights``).
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--format", required=True, choices=["onnx", "torch_export", "torchscript"])
    cli.add_flags(parser, "output_dir", "input_size", "random_weights")
    parser.set_defaults(output_dir="export")
    parser.add_argument("--sample-image", help="example input (default: random pixels)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    tolerance = "largest accepted difference to eager: of scores, of boxes as a fraction of the "
    tolerance += "longer image side, of mask logits relative to their largest magnitude"
    parser.add_argument("--tolerance", type=float, default=1e-4, help=tolerance)
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
import os
import sys

import torch
import torch.nn.functional as F
from detectron2.data.detection_utils import read_image

from detr_d2.data.resize import test_resize
from detr_d2.engine.predictor import load_model
from detr_d2.export import EXPORTERS, FILE_NAMES, batch_images, exportable, load_exported

logger = logging.getLogger("detr_d2.export_model")


def example_image(cfg, sample_image, size) -> torch.Tensor:
    """(3, H, W) float32 pixels in ``INPUT.FORMAT``: ``sample_image`` (a path; None: random) at
    ``size`` (H, W; None: the test-time resize)."""
    if sample_image is None:
        size = tuple(size or (512, 672))
        return torch.rand((3,) + size, generator=torch.Generator().manual_seed(0)) * 255
    image = read_image(sample_image, format=cfg.INPUT.FORMAT)
    if size is None:
        image = test_resize(cfg).get_transform(image).apply_image(image)
    image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1).copy())
    return F.interpolate(image[None], size=tuple(size), mode="bilinear")[0] if size else image


def check(module, exported, images, padding_mask, tolerance: float) -> bool:
    """Compare ``exported`` with the eager ``module`` on one input; log and return success."""
    with torch.no_grad():
        expected = module(images, padding_mask)
    actual = exported(images, padding_mask)
    names = ("boxes", "scores", "classes", "mask_logits")
    diff = {name: (e - a).abs().max().item() for name, e, a in zip(names, expected, actual)}
    classes = 100 * (expected[2] != actual[2]).float().mean().item()  # where two scores nearly tie
    # boxes relative to the image side, mask logits to their largest magnitude
    relative = {"boxes": diff["boxes"] / max(images.shape[-2:]), "scores": diff["scores"]}
    if "mask_logits" in diff:
        relative["mask_logits"] = diff["mask_logits"] / max(1.0, expected[3].abs().max().item())
    ok = all(value <= tolerance for value in relative.values())
    shown = ", ".join(f"{name} {diff[name]:.2e}" for name in relative)
    shown += f"; classes differ for {classes:.1f}% of queries: {'OK' if ok else 'MISMATCH'}"
    logger.info(f"input {tuple(images.shape)}: max |diff| {shown}")
    return ok


def main(args) -> int:
    # traced graphs keep the device of the tensors they create (CPU); ONNX is device-neutral
    cfg = cli.setup_cfg(args, device="cpu")
    module = exportable(load_model(cfg, args.random_weights).eval()).eval()
    image = example_image(cfg, args.sample_image, args.input_size)
    h, w = image.shape[-2:]
    divisibility = cfg.MODEL.DETR.SIZE_DIVISIBILITY
    inputs = batch_images([image, image[:, : h * 3 // 4, : w * 3 // 4]], divisibility)

    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, FILE_NAMES[args.format])
    options = dict(opset=args.opset) if args.format == "onnx" else {}
    EXPORTERS[args.format](module, inputs, path, **options)
    logger.info("exported %s to %s (example input %s)", args.format, path, tuple(inputs[0].shape))

    exported = load_exported(path, args.format)
    other = F.interpolate(image[None], scale_factor=0.8, mode="bilinear")[0]
    ok = check(module, exported, *inputs, args.tolerance)
    ok &= check(module, exported, *batch_images([other], divisibility), args.tolerance)
    return 0 if ok else 1


if __name__ == "__main__":
    cli.setup_logging()
    sys.exit(main(ARGS))
