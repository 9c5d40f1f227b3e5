"""DC5 as torchvision builds it, for the official DETR-DC5 weights: torchvision keeps the first res5
block's 3x3 conv at dilation 1, Detectron2's ``RES5_DILATION: 2`` dilates every res5 block (same
weights, outputs differ: logits by 0.1-0.2 on converted DETR-DC5 R50 weights)."""

from torch import nn


def undilate_first_res5_block(backbone: nn.Module) -> None:
    """Set the 3x3 conv of ``backbone.res5[0]`` (a Detectron2 ResNet) to dilation 1, in place."""
    res5 = getattr(backbone, "res5", None)
    conv = getattr(res5[0], "conv2", None) if isinstance(res5, nn.Sequential) else None
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (3, 3):
        raise ValueError(
            f"MODEL.DETR.DC5_TORCHVISION needs a Detectron2 ResNet with bottleneck blocks (res5[0]."
            f"conv2 a 3x3 conv); {type(backbone).__name__} has none: set it to False"
        )
    conv.dilation = (1, 1)
    conv.padding = (1, 1)
