"""Names of a torchvision ResNet (``resnet50-0676ba61.pth``, DETR's ``backbone.0.body``) -> those of
Detectron2's ``build_resnet_backbone``: ``conv1`` / ``bn1`` -> ``stem.conv1[.norm]``,
``layer{s}.{i}.conv{k}`` / ``bn{k}`` -> ``res{s+1}.{i}.conv{k}[.norm]``, ``downsample.0`` / ``.1``
-> ``shortcut[.norm]``; ``fc.*`` and ``num_batches_tracked`` are dropped. torchvision strides in
the 3x3 conv (``MODEL.RESNETS.STRIDE_IN_1X1 False``) and expects RGB with the ImageNet mean/std."""

import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch

# Bottleneck blocks per stage (res2..res5) of the ResNet depths both libraries build.
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_LAYERS = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm"}
_LAYERS.update({f"conv{k}": f"conv{k}" for k in "123"} | {f"bn{k}": f"conv{k}.norm" for k in "123"})

_STEM = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)$")


class UnknownKeyError(KeyError):
    """A state-dict key that no mapping rule covers."""


def rename_keys(entries, rename) -> Tuple[dict, List[str], List[str], List[Tuple[str, str]]]:
    """(name, source key, value) entries -> (``rename(name)``: value, sources ``rename`` drops
    (None), sources it does not know (UnknownKeyError), (source, target) of a target filled twice).
    """
    converted, dropped, unknown, twice = {}, [], [], []
    for name, source, value in entries:
        try:
            target = rename(name)
        except UnknownKeyError:
            unknown.append(source)
            continue
        if target is None:
            dropped.append(source)
        elif target in converted:
            twice.append((source, target))
        else:
            converted[target] = value
    return converted, dropped, unknown, twice


def torchvision_to_detectron2_name(name: str) -> Optional[str]:
    """Detectron2 name of the torchvision ResNet parameter/buffer ``name`` (no prefixes), or None
    when the entry has no counterpart (``fc.*``, ``num_batches_tracked``).
    Raises :class:`UnknownKeyError` for a name that is not part of a torchvision ResNet."""
    if name.startswith("fc.") or name.endswith(".num_batches_tracked"):
        return None
    m = _STEM.match(name)
    if m:
        return f"stem.{_LAYERS[m.group(1)]}.{m.group(2)}"
    m = _BLOCK.match(name)
    if m:
        stage, block, layer, param = m.groups()
        return f"res{int(stage) + 1}.{block}.{_LAYERS[layer]}.{param}"
    raise UnknownKeyError(f"{name!r} is not a torchvision ResNet key")


def detectron2_resnet_keys(depth: int) -> List[str]:
    """All state-dict keys of Detectron2's bottleneck ResNet-``depth`` (FrozenBN, no prefix)."""
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
    keys = ["stem.conv1.weight"] + [f"stem.conv1.norm.{p}" for p in _BN_PARAMS]
    for stage, num_blocks in enumerate(BLOCKS_PER_STAGE[depth], start=2):
        for block in range(num_blocks):
            for conv in ["shortcut"] * (block == 0) + ["conv1", "conv2", "conv3"]:
                keys.append(f"res{stage}.{block}.{conv}.weight")
                keys += [f"res{stage}.{block}.{conv}.norm.{p}" for p in _BN_PARAMS]
    return keys


def infer_resnet_depth(torchvision_names: Iterable[str]) -> int:
    """Depth (50/101/152) of a torchvision ResNet from its block counts per stage."""
    blocks = {s: set() for s in "1234"}
    for m in filter(None, map(_BLOCK.match, torchvision_names)):
        blocks[m.group(1)].add(m.group(2))
    counts = tuple(map(len, blocks.values()))
    depth = next((d for d, expected in BLOCKS_PER_STAGE.items() if counts == expected), None)
    if depth is None:
        raise ValueError(f"blocks per stage {counts} match no bottleneck ResNet {BLOCKS_PER_STAGE}")
    return depth


def convert_torchvision_resnet(
    state_dict: Dict[str, torch.Tensor], out_prefix: str = "backbone."
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """torchvision ResNet state dict -> (Detectron2 state dict with keys ``out_prefix + name``,
    sorted source keys dropped on purpose: ``fc.*``, ``num_batches_tracked``). Raises
    :class:`UnknownKeyError` listing every unknown source key, ``KeyError`` listing the Detectron2
    keys of the inferred depth that no source key filled (or filled twice)."""
    entries = ((name, name, value) for name, value in state_dict.items())
    converted, dropped, unknown, twice = rename_keys(entries, torchvision_to_detectron2_name)
    unknown += [f"{name} (second source of {target})" for name, target in twice]
    if unknown:
        raise UnknownKeyError(f"not torchvision ResNet keys: {unknown}")
    converted = {out_prefix + k: v for k, v in converted.items()}
    expected = {out_prefix + k for k in detectron2_resnet_keys(infer_resnet_depth(state_dict))}
    missing = sorted(expected - converted.keys())
    if missing:
        raise KeyError(f"torchvision ResNet state dict lacks the source of {missing}")
    return converted, sorted(dropped)
