"""Panoptic DETR's post-processing, as the original's PostProcessPanoptic: (1) every pixel goes to
the query of highest mask logit; (2) queries of one stuff class fold into the first of them; (3)
the query map is resized to the output with PIL's nearest filter; (4) queries of at most
``min_area`` pixels are removed and steps 1 and 3 redone until none is that small.

Differences: mask logits are upsampled to the padded batch and cropped to each image (the original
stretches the padded masks over the image, shifting them in batches of mixed sizes); segment ids
start at 1 (Detectron2's ``panoptic_seg``, 0 = void), the original's at 0.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def resize_mask_logits(
    masks: Tensor, padded_hw: Tuple[int, int], image_hw: Tuple[int, int], output_hw: Tuple[int, int]
) -> Tensor:
    """Mask logits (Q, h, w) over a padded batch -> (Q, *output_hw): upsampled (bilinear) to
    ``padded_hw``, cropped to the image's ``image_hw``, resized (bilinear) to ``output_hw``."""
    if len(masks) == 0:
        return masks.new_zeros((0, *output_hw))
    x = F.interpolate(masks[None].float(), size=padded_hw, mode="bilinear", align_corners=False)
    x = x[:, :, : image_hw[0], : image_hw[1]]
    if tuple(image_hw) != tuple(output_hw):
        x = F.interpolate(x, size=output_hw, mode="bilinear", align_corners=False)
    return x[0]


def _resize_nearest(index_map: Tensor, output_hw: Tuple[int, int]) -> Tensor:
    """(h, w) int64 -> (H, W) int64 on the CPU, by PIL's nearest filter (the original's)."""
    if tuple(index_map.shape) == tuple(output_hw):
        return index_map.cpu()
    image = Image.fromarray(index_map.cpu().numpy().astype(np.int32), mode="I")
    resized = image.resize((output_hw[1], output_hw[0]), resample=Image.NEAREST)
    return torch.from_numpy(np.asarray(resized).astype(np.int64))


def combine_panoptic(
    scores: Tensor,
    classes: Tensor,
    mask_logits: Tensor,
    is_thing: Sequence[bool],
    min_area: int,
    output_hw: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, List[Dict]]:
    """Non-overlapping segments of the kept queries (the module docstring's steps).

    Args:
        scores, classes: (Q,) confidence and contiguous class id of each kept query.
        mask_logits: (Q, h, w) their mask logits over the image at network-input resolution.
        is_thing: for each contiguous class id, whether it is a thing.
        min_area: queries covering at most this many output pixels are removed.
        output_hw: (H, W) of the output; default (h, w).
    Returns:
        Detectron2's ``panoptic_seg``: int32 (H, W) segment ids on ``mask_logits``' device
        (0 = void, where no query is kept) and per segment (in query order) {"id" (1..S),
        "category_id" (contiguous), "isthing", "score", "area" (pixels)}.
    """
    num = len(scores)
    output_hw = tuple(output_hw or mask_logits.shape[-2:])
    device = mask_logits.device
    # step 2: the first query of each stuff class stands for all of them
    first_of_class: Dict[int, int] = {}
    fold = torch.arange(num, device=device)
    for q, c in enumerate(classes.tolist()):
        if not is_thing[c]:
            fold[q] = first_of_class.setdefault(c, q)
    alive = torch.ones(num, dtype=torch.bool, device=device)
    index, area, first_pass = None, None, True
    while alive.any():
        queries = alive.nonzero()[:, 0]
        winner = queries[mask_logits[queries].argmax(0)]  # (h, w) query index
        if first_pass:
            winner = fold[winner]
        index = _resize_nearest(winner, output_hw)
        area = torch.bincount(index.flatten(), minlength=num).to(device)
        small = alive & (area <= min_area)
        if not small.any():
            break
        alive &= ~small
        first_pass = False
    panoptic = torch.zeros(output_hw, dtype=torch.int32, device=device)
    segments_info: List[Dict] = []
    if not alive.any():
        return panoptic, segments_info
    new_id = torch.zeros(num, dtype=torch.int32)
    for q in alive.nonzero()[:, 0].tolist():
        new_id[q] = len(segments_info) + 1
        c = int(classes[q])
        info = {"id": len(segments_info) + 1, "category_id": c, "isthing": bool(is_thing[c])}
        segments_info.append(dict(info, score=float(scores[q]), area=int(area[q])))
    return new_id[index].to(device), segments_info
