#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet-50/101/152 (e.g. ``resnet50-0676ba61.pth``) into Detectron2
backbone weights for ``MODEL.WEIGHTS``.

    python tools/convert_torchvision_backbone.py --input resnet50-0676ba61.pth --output R-50-tv.pth

The output holds ``backbone.<Detectron2 name>`` keys (``matching_heuristics: False``: loaded by
exact name into any meta-architecture's ``backbone``), for a model with ``MODEL.RESNETS.
STRIDE_IN_1X1 False`` and RGB ImageNet normalization. ``fc.*`` and ``num_batches_tracked`` are
dropped and reported; keys and shapes are checked against Detectron2's ResNet before writing.
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__, config=False)
    parser.add_argument("--input", required=True, help="torchvision ResNet state dict (.pth)")
    cli.add_flags(parser, "output", output=dict(required=True, help="Detectron2 checkpoint (.pth)"))
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
import sys

import torch
from detectron2.modeling.backbone.resnet import BasicStem, ResNet

from detr_d2.checkpoint.detr_official import check_against_model
from detr_d2.checkpoint.safe_load import UnsafeCheckpointError, load_checkpoint_safely
from detr_d2.checkpoint.torchvision_resnet import UnknownKeyError, convert_torchvision_resnet
from detr_d2.checkpoint.torchvision_resnet import infer_resnet_depth

logger = logging.getLogger("convert_torchvision_backbone")


def build_detectron2_resnet(depth: int, device: str = "cpu") -> torch.nn.Module:
    """Detectron2's ResNet as DETR configures it: FrozenBN, stride in the 3x3, output res5."""
    with torch.device(device):
        stages = ResNet.make_default_stages(depth, stride_in_1x1=False, norm="FrozenBN")
        return ResNet(BasicStem(norm="FrozenBN"), stages, out_features=["res5"])


def check_backbone_keys(converted: dict, depth: int) -> None:
    """Keys and shapes must equal those of Detectron2's ResNet-``depth`` (built on the meta
    device: no memory, no init time); a ``CheckpointConversionError`` lists every difference."""
    resnet = build_detectron2_resnet(depth, "meta")
    check_against_model(converted, {"backbone." + k: v for k, v in resnet.state_dict().items()})


def convert(input_path: str, output_path: str) -> None:
    state_dict = load_checkpoint_safely(input_path)
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict, dict) and wrapper in state_dict:
            state_dict = state_dict[wrapper]
    converted, dropped = convert_torchvision_resnet(state_dict)
    depth = infer_resnet_depth(state_dict)
    check_backbone_keys(converted, depth)
    dropped = ", ".join(dropped) or "none"
    logger.info("ResNet-%d: %d tensors converted; dropped: %s", depth, len(converted), dropped)
    checkpoint = {"model": converted, "__author__": "torchvision", "matching_heuristics": False}
    torch.save(checkpoint, output_path)
    logger.info("wrote %s", output_path)


def main(argv=None) -> int:
    args = ARGS if argv is None else get_parser().parse_args(argv)
    try:
        convert(args.input, args.output)
    except (UnsafeCheckpointError, UnknownKeyError, KeyError, ValueError) as e:
        logger.error("conversion failed: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    cli.setup_logging(names=[logger.name])
    sys.exit(main())
