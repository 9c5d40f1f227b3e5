"""Attention maps of DETR's transformer (paper Fig. 3: encoder self-attention at reference points;
Fig. 6: decoder cross-attention of each predicted object).

The transformer calls its ``nn.MultiheadAttention`` modules with ``need_weights=False`` (the fast
path). :func:`record_attention` switches chosen modules to returning their weights for the
duration of a ``with`` block, with hooks, leaving the modeling code as it is.
"""

import contextlib
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import ImageList
from torch import Tensor, nn

__all__ = [
    "record_attention",
    "detr_attention",
    "image_points_to_feature_indices",
    "attention_to_image",
]

# nn.MultiheadAttention.forward's arguments after (query, key, value), in order
_MHA_ARGS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


@contextlib.contextmanager
def record_attention(
    modules: Dict[str, nn.MultiheadAttention], average_heads: bool = True
) -> Iterator[Dict[str, Tensor]]:
    """Within the block, each module of ``modules`` also computes its attention weights; the
    yielded dict maps its name to the weights of its latest call: (B, L, S) with heads averaged,
    else (B, heads, L, S), for L queries and S keys (each row sums to 1 over the unmasked keys).
    What the module returns to its caller is unchanged."""
    records: Dict[str, Tensor] = {}

    def ask_for_weights(module, args, kwargs):
        kwargs = dict(kwargs, **dict(zip(_MHA_ARGS, args[3:])))
        kwargs.update(need_weights=True, average_attn_weights=average_heads)
        return args[:3], kwargs

    def keep(name):
        def hook(module, args, output):
            records[name] = output[1].detach()

        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
            handles.append(module.register_forward_hook(keep(name)))
        yield records
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def detr_attention(model: nn.Module, images: ImageList) -> Dict:
    """Run ``model.forward_raw(images)`` (a Detr in eval mode) recording the last encoder layer's
    self-attention and the last decoder layer's cross-attention, heads averaged.

    Returns forward_raw's dict plus:
        "encoder_attention": (B, h*w, h, w): for each query position (row-major over the (h, w)
            feature map of "memory"), its attention over all positions; sums to 1 over the
            positions where "mask" is False.
        "decoder_attention": (B, N, h, w): each object query's attention over the feature map,
            likewise summing to 1 over the valid positions.
    """
    transformer = model.transformer
    modules = {
        "encoder": transformer.encoder.layers[-1].self_attn,
        "decoder": transformer.decoder.layers[-1].multihead_attn,
    }
    with record_attention(modules) as records:
        outputs = model.forward_raw(images)
    b, _, h, w = outputs["memory"].shape
    outputs["encoder_attention"] = records["encoder"].reshape(b, h * w, h, w)
    outputs["decoder_attention"] = records["decoder"].reshape(b, -1, h, w)
    return outputs


def image_points_to_feature_indices(
    points: Sequence[Tuple[float, float]],
    image_size: Tuple[int, int],
    input_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    feature_size: Tuple[int, int],
) -> Tensor:
    """Flattened feature-map indices (row-major over (h, w)) of points given as (x, y) pixels of
    the original image.

    Args:
        image_size: (H, W) of the original image; input_size: (h, w) it was resized to for the
            network; padded_size: (h, w) of the padded batch tensor; feature_size: (h, w) of the
            feature map, which spans the padded tensor.
    Returns:
        (P,) int64, each point clamped to the feature map.
    """
    pts = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    (ih, iw), (nh, nw), (ph, pw), (fh, fw) = image_size, input_size, padded_size, feature_size
    cols = (pts[:, 0] * nw / iw * fw / pw).floor().long().clamp(0, fw - 1)
    rows = (pts[:, 1] * nh / ih * fh / ph).floor().long().clamp(0, fh - 1)
    return rows * fw + cols


def attention_to_image(
    attention: Tensor,
    input_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
) -> np.ndarray:
    """An (h, w) attention map over the feature map of a padded batch as an (H, W) float32 map
    over the original image: upsampled to the padded tensor, cut to the network input and
    resized to ``image_size`` (bilinear). Sizes are as in
    :func:`image_points_to_feature_indices`."""
    nh, nw = input_size
    x = F.interpolate(attention[None, None].float(), size=tuple(padded_size), mode="bilinear")
    x = F.interpolate(x[..., :nh, :nw], size=tuple(image_size), mode="bilinear")
    return x[0, 0].cpu().numpy()
