"""Official DETR checkpoints (``detr-r50-e632da11.pth`` ...) -> the state dict of our ``Detr`` /
``DetrPanoptic``. Names: ``detr.<name>`` (panoptic files) -> ``<name>``; ``backbone.0.body.*`` ->
``backbone.<Detectron2 name>`` (torchvision_resnet); ``backbone.1.{row,col}_embed.weight`` ->
``position_embedding.*``; the transformer and the heads keep their names.

Class rows: the official heads index rows by category id, ours by Detectron2's contiguous id,
no-object last in both. Detection: 92 rows (COCO ids 1..90, 80 used; 91 no-object) -> 81, in
the order of ``_get_builtin_metadata("coco")``. Panoptic: 251 rows (ids 1..200; 250 no-object)
-> 134, in the order of ``coco_panoptic_standard`` (80 things, then 53 stuff). Unused rows are
dropped; every other key must map exactly once, else the error lists the offending keys."""

import argparse
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .safe_load import load_checkpoint_safely
from .torchvision_resnet import (
    UnknownKeyError,
    detectron2_resnet_keys,
    infer_resnet_depth,
    rename_keys,
    torchvision_to_detectron2_name,
)

_BACKBONE = "backbone.0.body."
_POSITION = "backbone.1."
_MASK_PARTS = ("bbox_attention.", "mask_head.")  # top level in panoptic files, beside "detr."
_SAME_NAME = ("transformer.", "input_proj.", "query_embed.", "class_embed.", "bbox_embed.")
_SAME_NAME += _MASK_PARTS  # the modules named the same in both models
CONFIG_OWNED_KEYS = ("pixel_mean", "pixel_std")  # our buffers: from the config, never a checkpoint

_ATTN = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
_WB = ("weight", "bias")


class CheckpointConversionError(ValueError):
    """The source checkpoint does not fill the target model exactly; the message lists the keys."""


def coco_detection_class_rows() -> List[int]:
    """For each of our 81 class rows, the row of the official 92-row head it comes from."""
    id_to_contiguous = _get_builtin_metadata("coco")["thing_dataset_id_to_contiguous_id"]
    return sorted(id_to_contiguous, key=id_to_contiguous.get) + [91]


def coco_panoptic_class_rows() -> List[int]:
    """For each of our 134 class rows, the row of the official 251-row panoptic head."""
    meta = _get_builtin_metadata("coco_panoptic_standard")
    id_to_contiguous = meta["thing_dataset_id_to_contiguous_id"]
    id_to_contiguous = {**id_to_contiguous, **meta["stuff_dataset_id_to_contiguous_id"]}
    return sorted(id_to_contiguous, key=id_to_contiguous.get) + [250]


def official_to_ours_name(name: str) -> Optional[str]:
    """Our name for the official key ``name`` (``detr.`` already stripped), or None for an entry
    dropped on purpose (``num_batches_tracked``). Raises ``UnknownKeyError`` for an unknown key."""
    if name.startswith(_BACKBONE):
        target = torchvision_to_detectron2_name(name[len(_BACKBONE) :])
        return None if target is None else "backbone." + target
    if name in (_POSITION + "row_embed.weight", _POSITION + "col_embed.weight"):
        return "position_embedding." + name[len(_POSITION) :]
    if name.startswith(_SAME_NAME):
        return name
    raise UnknownKeyError(f"{name!r} is not a key of an official DETR checkpoint")


@dataclass
class DetrSpec:
    """The architecture an official checkpoint encodes; ``keys()`` are the keys our model has."""

    depth: int  # ResNet depth, 50 or 101
    enc_layers: int
    dec_layers: int
    pre_norm: bool  # a final encoder LayerNorm exists only with pre-norm layers
    learned_position: bool  # learned row/col embeddings (the official models use sine)
    panoptic: bool  # bbox_attention + mask_head on top of the box model

    @classmethod
    def infer(cls, state_dict: Mapping[str, torch.Tensor], args, panoptic: bool) -> "DetrSpec":
        """From the checkpoint's ``args`` (an argparse.Namespace or None) where they say it (so a
        missing layer is noticed), else from its keys (``detr.`` prefix already stripped)."""
        args = vars(args) if args is not None else {}
        backbone = str(args.get("backbone", ""))  # "resnet50"
        names = [k[len(_BACKBONE) :] for k in state_dict if k.startswith(_BACKBONE)]
        depth = int(backbone[6:]) if backbone.startswith("resnet") else infer_resnet_depth(names)

        def layers(part):
            prefix = f"transformer.{part}.layers."
            found = [int(k.split(".")[3]) for k in state_dict if k.startswith(prefix)]
            return args.get(f"{part[:3]}_layers", max(found, default=-1) + 1)

        learned = args.get("position_embedding", _POSITION + "row_embed.weight" in state_dict)
        learned = learned in ("v3", "learned", True)
        pre_norm = args.get("pre_norm", "transformer.encoder.norm.weight" in state_dict)
        return cls(depth, layers("encoder"), layers("decoder"), bool(pre_norm), learned, panoptic)

    def keys(self) -> Set[str]:
        keys = {"backbone." + k for k in detectron2_resnet_keys(self.depth)}
        common = ["linear1", "linear2", "norm1", "norm2"]  # (part, layers, attentions, others)
        for part, num, attentions, modules in [
            ("encoder", self.enc_layers, ["self_attn"], common),
            ("decoder", self.dec_layers, ["self_attn", "multihead_attn"], common + ["norm3"]),
        ]:
            for i in range(num):
                p = f"transformer.{part}.layers.{i}."
                keys |= {p + f"{a}.{w}" for a in attentions for w in _ATTN}
                keys |= {p + f"{m}.{w}" for m in modules for w in _WB}
        heads = ["transformer.decoder.norm"] + ["transformer.encoder.norm"] * self.pre_norm
        heads += ["input_proj", "class_embed"] + [f"bbox_embed.layers.{i}" for i in range(3)]
        if self.panoptic:
            heads += ["bbox_attention.q_linear", "bbox_attention.k_linear", "mask_head.out_lay"]
            heads += [f"mask_head.{m}{i}" for m in ("lay", "gn") for i in range(1, 6)]
            heads += [f"mask_head.adapter{i}" for i in range(1, 4)]
        keys |= {f"{m}.{w}" for m in heads for w in _WB}
        keys.add("query_embed.weight")
        if self.learned_position:
            keys |= {"position_embedding.row_embed.weight", "position_embedding.col_embed.weight"}
        return keys


@dataclass
class ConvertedDetr:
    model: Dict[str, torch.Tensor]  # our state dict
    spec: DetrSpec
    class_rows: List[int]  # official class row of each of our rows (no-object last)
    dropped: List[str]  # source keys left out on purpose


def _key_reports(*reports: Tuple[str, Sequence[str]], limit: int = 40) -> str:
    """ "what (n): key, key, ..." for each (what, keys) with keys, joined by "; "."""
    parts = []
    for what, keys in reports:
        if keys:
            keys = sorted(keys)
            more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
            parts.append(f"{what} ({len(keys)}): {', '.join(keys[:limit])}{more}")
    return "; ".join(parts)


def convert_official_detr(state_dict: Mapping[str, torch.Tensor], args=None) -> ConvertedDetr:
    """Official DETR ``checkpoint["model"]`` (and its ``checkpoint["args"]``) -> our state dict;
    :class:`CheckpointConversionError` naming every source key that maps nowhere or twice, every
    key our model needs that stays empty, and a class head of unknown size."""
    panoptic = any(k.startswith(_MASK_PARTS) for k in state_dict)  # box model under "detr."
    box_model = {k for k in state_dict if panoptic and not k.startswith(_MASK_PARTS)}
    not_prefixed = [k for k in box_model if not k.startswith("detr.")]
    if not_prefixed:
        raise CheckpointConversionError(
            _key_reports(("panoptic checkpoint: box-model keys without 'detr.'", not_prefixed))
        )
    # (name without "detr.", name in the file, tensor)
    entries = [(k[len("detr.") :] if k in box_model else k, k, v) for k, v in state_dict.items()]
    converted, dropped, unknown, twice = rename_keys(entries, official_to_ours_name)
    if unknown or twice:
        raise CheckpointConversionError(
            _key_reports(
                ("source keys that map to nothing", unknown),
                ("source keys filling an already filled target", [f"{s} -> {t}" for s, t in twice]),
            )
        )

    spec = DetrSpec.infer({name: value for name, _, value in entries}, args, panoptic)
    expected = spec.keys()
    missing, unused = expected - converted.keys(), converted.keys() - expected
    if missing or unused:
        reports = _key_reports(
            ("target keys no source key fills", missing),
            ("source keys (renamed) our model has no place for", unused),
        )
        raise CheckpointConversionError(f"checkpoint does not match {spec}: {reports}")

    num_rows = converted["class_embed.weight"].shape[0]
    if num_rows != (251 if panoptic else 92):
        raise CheckpointConversionError(
            f"class_embed has {num_rows} rows; expected 92 (COCO detection) or 251 (COCO panoptic, "
            f"with a mask head); this is a {'panoptic' if panoptic else 'detection'} checkpoint"
        )
    class_rows = coco_panoptic_class_rows() if panoptic else coco_detection_class_rows()
    for name in ("class_embed.weight", "class_embed.bias"):
        converted[name] = converted[name][class_rows].clone()
    return ConvertedDetr(converted, spec, class_rows, sorted(dropped))


def check_against_model(converted: Mapping[str, torch.Tensor], target: Mapping) -> None:
    """Require the same keys (bar :data:`CONFIG_OWNED_KEYS`) and shapes as ``target``, a model's
    ``state_dict()``. Raises :class:`CheckpointConversionError` listing every difference."""
    wanted = {k for k in target if k not in CONFIG_OWNED_KEYS}
    missing, unexpected = wanted - converted.keys(), converted.keys() - wanted
    shapes = [
        f"{k} {tuple(converted[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sorted(wanted & converted.keys())
        if converted[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointConversionError(
            _key_reports(
                ("model keys missing from the converted checkpoint", missing),
                ("converted keys the model does not have", unexpected),
                ("shape mismatches", shapes),
            )
        )


def load_official_checkpoint(
    path: str,
) -> Tuple[Dict[str, torch.Tensor], Optional[argparse.Namespace], List[str]]:
    """Safely read an official DETR file -> (``"model"`` state dict, ``"args"`` or None, names of
    the other top-level entries, which the conversion ignores)."""
    checkpoint = load_checkpoint_safely(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointConversionError(f"{path}: not a dict with a 'model' entry: {found}")
    args = checkpoint.get("args")
    args = args if isinstance(args, argparse.Namespace) else None
    others = sorted(k for k in checkpoint if k not in ("model", "args"))
    return dict(checkpoint["model"]), args, others
