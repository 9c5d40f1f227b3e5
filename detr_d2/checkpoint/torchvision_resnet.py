"""Names of a torchvision ResNet (as in ``resnet50-0676ba61.pth`` or DETR's ``backbone.0.body``)
mapped to Detectron2's ``ResNet`` from ``build_resnet_backbone``.

======================================  ==========================================
torchvision                             Detectron2
======================================  ==========================================
``conv1.weight``                        ``stem.conv1.weight``
``bn1.{weight,bias,running_*}``         ``stem.conv1.norm.*``
``layer{s}.{i}.conv{k}.weight``         ``res{s+1}.{i}.conv{k}.weight``
``layer{s}.{i}.bn{k}.*``                ``res{s+1}.{i}.conv{k}.norm.*``
``layer{s}.{i}.downsample.0.weight``    ``res{s+1}.{i}.shortcut.weight``
``layer{s}.{i}.downsample.1.*``         ``res{s+1}.{i}.shortcut.norm.*``
``fc.*``, ``*.num_batches_tracked``     dropped (classifier; FrozenBN has no counter)
======================================  ==========================================

torchvision puts the stride of a bottleneck in its 3x3 conv, so the Detectron2 model must use
``MODEL.RESNETS.STRIDE_IN_1X1 = False``; both use BatchNorm eps 1e-5. torchvision weights expect RGB
input normalized with the ImageNet mean/std (``INPUT.FORMAT "RGB"``, ``MODEL.PIXEL_MEAN
[123.675, 116.28, 103.53]``, ``MODEL.PIXEL_STD [58.395, 57.12, 57.375]``).
"""

import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch

# Bottleneck blocks per stage (res2..res5) of the ResNet depths both libraries build.
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")

_STEM = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)$")


class UnknownKeyError(KeyError):
    """A state-dict key that no mapping rule covers."""


def torchvision_to_detectron2_name(name: str) -> Optional[str]:
    """Detectron2 name of the torchvision ResNet parameter/buffer ``name`` (no prefixes), or None
    when the entry has no counterpart (``fc.*``, ``num_batches_tracked``).
    Raises :class:`UnknownKeyError` for a name that is not part of a torchvision ResNet."""
    if name.startswith("fc.") or name.endswith(".num_batches_tracked"):
        return None
    m = _STEM.match(name)
    if m:
        layer, param = m.groups()
        return f"stem.conv1.{param}" if layer == "conv1" else f"stem.conv1.norm.{param}"
    m = _BLOCK.match(name)
    if m:
        stage, block, layer, param = m.groups()
        prefix = f"res{int(stage) + 1}.{block}"
        if layer.startswith("conv"):
            return f"{prefix}.{layer}.{param}"
        if layer.startswith("bn"):
            return f"{prefix}.conv{layer[2:]}.norm.{param}"
        if layer == "downsample.0":
            return f"{prefix}.shortcut.{param}"
        return f"{prefix}.shortcut.norm.{param}"
    raise UnknownKeyError(f"{name!r} is not a torchvision ResNet key")


def detectron2_resnet_keys(depth: int) -> List[str]:
    """All state-dict keys of Detectron2's bottleneck ResNet-``depth`` (FrozenBN, no prefix)."""
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
    keys = ["stem.conv1.weight"] + [f"stem.conv1.norm.{p}" for p in _BN_PARAMS]
    for stage, num_blocks in enumerate(BLOCKS_PER_STAGE[depth], start=2):
        for block in range(num_blocks):
            convs = (
                ["shortcut", "conv1", "conv2", "conv3"]
                if block == 0
                else ["conv1", "conv2", "conv3"]
            )
            for conv in convs:
                keys.append(f"res{stage}.{block}.{conv}.weight")
                keys += [f"res{stage}.{block}.{conv}.norm.{p}" for p in _BN_PARAMS]
    return keys


def infer_resnet_depth(torchvision_names: Iterable[str]) -> int:
    """Depth (50/101/152) of a torchvision ResNet from its block counts per stage."""
    blocks = {s: set() for s in range(1, 5)}
    for name in torchvision_names:
        m = _BLOCK.match(name)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    counts = tuple(len(blocks[s]) for s in range(1, 5))
    for depth, expected in BLOCKS_PER_STAGE.items():
        if counts == expected:
            return depth
    raise ValueError(f"blocks per stage {counts} match no bottleneck ResNet {BLOCKS_PER_STAGE}")


def convert_torchvision_resnet(
    state_dict: Dict[str, torch.Tensor], out_prefix: str = "backbone."
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """torchvision ResNet state dict -> (Detectron2 state dict with keys ``out_prefix + name``,
    sorted list of source keys dropped on purpose: ``fc.*`` and ``num_batches_tracked``).

    Fails with :class:`UnknownKeyError` listing every unknown source key, and with a ``KeyError``
    listing the Detectron2 keys of the inferred depth that no source key filled (or filled twice).
    """
    converted, dropped, unknown = {}, [], []
    for name, value in state_dict.items():
        try:
            target = torchvision_to_detectron2_name(name)
        except UnknownKeyError:
            unknown.append(name)
            continue
        if target is None:
            dropped.append(name)
        elif out_prefix + target in converted:
            unknown.append(f"{name} (second source of {target})")
        else:
            converted[out_prefix + target] = value
    if unknown:
        raise UnknownKeyError(f"not torchvision ResNet keys: {unknown}")
    expected = {out_prefix + k for k in detectron2_resnet_keys(infer_resnet_depth(state_dict))}
    missing = sorted(expected - converted.keys())
    if missing:
        raise KeyError(f"torchvision ResNet state dict lacks the source of {missing}")
    return converted, sorted(dropped)
