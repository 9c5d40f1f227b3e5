"""DetrDatasetMapper: reads an image and its boxes and applies DETR's training augmentation;
DetrPanopticDatasetMapper: every panoptic segment (thing or stuff) as a box and a mask."""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id

from ..config import is_detr_config
from .image_io import read_image
from .resize import ResizeShortestEdge, test_resize

logger = logging.getLogger(__name__)


class DetrDatasetMapper:
    """Maps one Detectron2 dataset dict to the input of a DETR model. Training augmentation as
    in the DETR paper: with probability ``crop_prob`` the ``crop_augmentations`` (flip, resize to
    a random short side, random crop, resize again) instead of ``augmentations`` (flip,
    multi-scale resize). None: never.

    Output: the input dict (``height`` / ``width`` stay the original size, for post-processing)
    plus ``image``, uint8 (C, H, W) in ``image_format``, and in training ``instances`` of image
    size (H, W): ``gt_boxes`` (absolute XYXY pixels of the augmented image) and ``gt_classes``
    (int64 (K,), contiguous ids). Crowd boxes and boxes empty after cropping are removed (the
    dataset's bad boxes were dropped by ``dataset_checks``); K may be 0."""

    @configurable
    def __init__(
        self, is_train, *, augmentations, crop_augmentations=None, crop_prob=0.5, image_format
    ):
        self.is_train, self.crop_prob, self.image_format = is_train, crop_prob, image_format
        self.augmentations = T.AugmentationList(augmentations)
        self.crop_augmentations = (
            None if crop_augmentations is None else T.AugmentationList(crop_augmentations)
        )
        mode = "training" if is_train else "inference"
        logger.info(f"[DetrDatasetMapper] Augmentations in {mode}: {self.augmentations}")
        if self.crop_augmentations is not None:
            logger.info(
                f"[DetrDatasetMapper] With probability {crop_prob}, instead: "
                f"{self.crop_augmentations}"
            )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        args = {"is_train": is_train, "image_format": cfg.INPUT.FORMAT}
        if not is_train:
            return dict(args, augmentations=[test_resize(cfg)])
        flip = {
            "horizontal": [T.RandomFlip(horizontal=True, vertical=False)],
            "vertical": [T.RandomFlip(horizontal=False, vertical=True)],
            "none": [],
        }[cfg.INPUT.RANDOM_FLIP]
        how = {"tensor_resize": cfg.INPUT.DETR_TENSOR_RESIZE, "rule": cfg.INPUT.DETR_RESIZE_RULE}
        sizes = (cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN)
        resize = ResizeShortestEdge(*sizes, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, **how)
        crop = None
        if cfg.INPUT.CROP.ENABLED:
            crop = flip + [
                ResizeShortestEdge(cfg.INPUT.DETR_CROP_PRE_RESIZE, sample_style="choice", **how),
                T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
                resize,
            ]
        return dict(args, augmentations=flip + [resize], crop_augmentations=crop)

    def read_and_augment(self, dataset_dict):
        """Read and augment ``dataset_dict["file_name"]``, stored as ``dataset_dict["image"]``
        (C, H, W) uint8; returns the augmented image (H, W, C) and the transforms."""
        image = read_image(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        augmentations = self.augmentations
        if self.crop_augmentations is not None and np.random.rand() < self.crop_prob:
            augmentations = self.crop_augmentations
        aug_input = T.AugInput(image)
        transforms = augmentations(aug_input)
        chw = np.array(aug_input.image.transpose(2, 0, 1), order="C")  # one copy: contiguous
        dataset_dict["image"] = torch.from_numpy(chw)
        return aug_input.image, transforms

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image, transforms = self.read_and_augment(dataset_dict)
        annotations = dataset_dict.pop("annotations", [])
        if not self.is_train:
            return dataset_dict
        image_shape = image.shape[:2]  # (H, W)
        boxes_only = [
            {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")}
            for obj in annotations
            if obj.get("iscrowd", 0) == 0
        ]
        annotations = [
            utils.transform_instance_annotations(obj, transforms, image_shape) for obj in boxes_only
        ]
        instances = utils.annotations_to_instances(annotations, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict


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
        pan_seg = read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
        image, transforms = self.read_and_augment(dataset_dict)
        # the RGB encoding is uint8, so resizing uses PIL's nearest: no id is ever blended
        segment_ids = rgb2id(transforms.apply_segmentation(pan_seg))

        segments = [s for s in dataset_dict.pop("segments_info") if not s.get("iscrowd", 0)]
        masks = np.array([segment_ids == s["id"] for s in segments], dtype=bool)
        masks = masks.reshape(-1, *segment_ids.shape)  # (M, H, W), also for M = 0
        visible = masks.any(axis=(1, 2))
        instances = Instances(image.shape[:2])
        instances.gt_masks = BitMasks(torch.from_numpy(masks[visible]))
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        classes = [s["category_id"] for s, v in zip(segments, visible) if v]
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        dataset_dict["instances"] = instances
        return dataset_dict


def build_train_mapper(cfg, dataset_name=None):
    """The training mapper of ``cfg``'s model for ``dataset_name`` (default DATASETS.TRAIN[0]):
    for panoptic data (both panoptic stages) every segment's box and mask from the PNG;
    Detectron2's DatasetMapper for Faster R-CNN."""
    if not is_detr_config(cfg):
        return DatasetMapper(cfg, True)
    meta = MetadataCatalog.get(dataset_name or cfg.DATASETS.TRAIN[0])
    panoptic = meta.get("evaluator_type") == "coco_panoptic_seg"
    return (DetrPanopticDatasetMapper if panoptic else DetrDatasetMapper)(cfg, True)


def build_test_mapper(cfg):
    """The test-time mapper of ``cfg``'s model (Detectron2's DatasetMapper for Faster R-CNN)."""
    return DetrDatasetMapper(cfg, False) if is_detr_config(cfg) else DatasetMapper(cfg, False)
