"""DetrDatasetMapper: reads an image and its boxes and applies DETR's training augmentation."""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..config import is_detr_config
from .image_io import read_image
from .resize import ResizeShortestEdge, test_resize

__all__ = ["DetrDatasetMapper", "ResizeShortestEdge", "build_test_mapper", "read_image"]

logger = logging.getLogger(__name__)


class DetrDatasetMapper:
    """Maps one Detectron2 dataset dict to the input of a DETR model.

    Training augmentation as in the DETR paper: a horizontal flip, then with probability
    ``crop_prob`` the ``crop_augmentations`` (resize to a random short side, random crop, resize
    again) instead of the plain multi-scale resize of ``augmentations``.

    Output dict: the input dict's fields (``height``/``width`` stay the *original* image size, for
    post-processing) plus

    * ``image``: uint8 tensor (C, H, W) of the augmented image, channels in ``image_format``.
    * ``instances`` (training only): :class:`Instances` of image size (H, W) with ``gt_boxes``
      (:class:`Boxes`, absolute XYXY pixels in the augmented image; the model normalizes them to
      cxcywh in [0, 1]) and ``gt_classes`` (int64 tensor (K,), contiguous class ids).

    Crowd annotations are removed; so are boxes with zero width or height after cropping /
    clipping (the dataset's own were dropped, with a warning, by ``dataset_checks``, which
    classifies every box once before training). An image without boxes gives K = 0.
    At test time annotations are removed.
    """

    @configurable
    def __init__(
        self, is_train, *, augmentations, crop_augmentations=None, crop_prob=0.5, image_format
    ):
        """
        Args:
            is_train (bool): training (keep and transform boxes) or inference.
            augmentations (list[Augmentation]): applied to every image, unless the crop branch
                is taken.
            crop_augmentations (list[Augmentation] or None): the alternative list, applied instead
                of ``augmentations`` with probability ``crop_prob``. None: never.
            crop_prob (float): probability of the crop branch.
            image_format (str): format for ``read_image``, e.g. "RGB" or "BGR".
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.crop_augmentations = (
            None if crop_augmentations is None else T.AugmentationList(crop_augmentations)
        )
        self.crop_prob = crop_prob
        self.image_format = image_format
        mode = "training" if is_train else "inference"
        logger.info(f"[DetrDatasetMapper] Augmentations in {mode}: {self.augmentations}")
        if self.crop_augmentations is not None:
            logger.info(
                f"[DetrDatasetMapper] With probability {crop_prob}, instead: "
                f"{self.crop_augmentations}"
            )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        if not is_train:
            return {
                "is_train": False,
                "augmentations": [test_resize(cfg)],
                "image_format": cfg.INPUT.FORMAT,
            }
        flip = {
            "horizontal": [T.RandomFlip(horizontal=True, vertical=False)],
            "vertical": [T.RandomFlip(horizontal=False, vertical=True)],
            "none": [],
        }[cfg.INPUT.RANDOM_FLIP]
        how = {"tensor_resize": cfg.INPUT.DETR_TENSOR_RESIZE, "rule": cfg.INPUT.DETR_RESIZE_RULE}
        resize = ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN,
            cfg.INPUT.MAX_SIZE_TRAIN,
            cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            **how,
        )
        crop = None
        if cfg.INPUT.CROP.ENABLED:
            crop = flip + [
                ResizeShortestEdge(cfg.INPUT.DETR_CROP_PRE_RESIZE, sample_style="choice", **how),
                T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
                resize,
            ]
        return {
            "is_train": True,
            "augmentations": flip + [resize],
            "crop_augmentations": crop,
            "image_format": cfg.INPUT.FORMAT,
        }

    def read_and_augment(self, dataset_dict):
        """Read ``dataset_dict["file_name"]``, augment it (the crop branch with probability
        ``crop_prob``) and store it as ``dataset_dict["image"]`` (C, H, W) uint8. Returns the
        augmented image (H, W, C) and the transforms, to apply to the annotations."""
        image = read_image(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        augmentations = self.augmentations
        if self.crop_augmentations is not None and np.random.rand() < self.crop_prob:
            augmentations = self.crop_augmentations
        aug_input = T.AugInput(image)
        transforms = augmentations(aug_input)
        image = aug_input.image
        chw = np.array(image.transpose(2, 0, 1), order="C")  # one copy: contiguous, writable
        dataset_dict["image"] = torch.from_numpy(chw)
        return image, transforms

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in Detectron2 dataset format (``file_name``, optional
                ``annotations`` with ``bbox``, ``bbox_mode``, ``category_id``, ``iscrowd``).

        Returns:
            dict: see the class docstring.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image, transforms = self.read_and_augment(dataset_dict)

        annotations = dataset_dict.pop("annotations", [])
        if not self.is_train:
            return dataset_dict

        image_shape = image.shape[:2]  # (H, W)
        annotations = [obj for obj in annotations if obj.get("iscrowd", 0) == 0]
        annotations = [
            utils.transform_instance_annotations(
                {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")},
                transforms,
                image_shape,
            )
            for obj in annotations
        ]
        instances = utils.annotations_to_instances(annotations, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict


def build_test_mapper(cfg):
    """The test-time mapper of ``cfg``'s model: DetrDatasetMapper for DETR, Detectron2's
    DatasetMapper for the others (the Faster R-CNN baselines), as train_net evaluates them."""
    return DetrDatasetMapper(cfg, False) if is_detr_config(cfg) else DatasetMapper(cfg, False)
