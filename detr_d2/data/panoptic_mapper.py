"""DetrPanopticDatasetMapper: every panoptic segment (thing or stuff) as a box and a mask, with
DETR's augmentation."""

import copy

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id

from .detr_dataset_mapper import DetrDatasetMapper


class DetrPanopticDatasetMapper(DetrDatasetMapper):
    """Maps a ``coco_2017_*_panoptic``-format dict to a DETR input with :class:`DetrDatasetMapper`'s
    augmentation, the panoptic PNG following the image (nearest). In training "instances" holds,
    per non-crowd segment still visible (things and stuff alike), ``gt_masks`` (BitMasks (M, H, W)),
    ``gt_boxes`` (absolute XYXY of the mask's pixel extents, x1 = last column + 1) and
    ``gt_classes`` (int64 (M,), contiguous). At test time: the image only."""

    def __call__(self, dataset_dict):
        if not self.is_train:
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
        image, transforms = self.read_and_augment(dataset_dict)
        # the RGB encoding is uint8, so resizing uses PIL's nearest: no id is ever blended
        segment_ids = rgb2id(transforms.apply_segmentation(pan_seg))

        segments = [s for s in dataset_dict.pop("segments_info") if not s.get("iscrowd", 0)]
        masks = [segment_ids == s["id"] for s in segments]
        visible = [i for i, m in enumerate(masks) if m.any()]
        instances = Instances(image.shape[:2])
        instances.gt_masks = BitMasks(
            torch.from_numpy(np.stack([masks[i] for i in visible]))
            if visible
            else torch.zeros((0, *image.shape[:2]), dtype=torch.bool)
        )
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances.gt_classes = torch.tensor(
            [segments[i]["category_id"] for i in visible], dtype=torch.int64
        )
        dataset_dict["instances"] = instances
        return dataset_dict
