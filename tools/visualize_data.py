#!/usr/bin/env python
"""Draw a training set's boxes to PNG files, to check the data before training on it.

    python tools/visualize_data.py --config-file configs/finetune/detr_r50_finetune.yaml \\
        --register-coco my_train path/to/train.json path/to/images \\
        --source annotation --output-dir output/vis DATASETS.TRAIN "('my_train',)"

``--source annotation``: the ground truth of DATASETS.TRAIN as loaded (original images, every
annotation, crowd regions included). ``--source dataloader``: what the model is fed, i.e. the
images and boxes after the training augmentation of train_net (DetrDatasetMapper for DETR,
Detectron2's DatasetMapper otherwise), batch by batch from the training data loader. Labels are
the dataset's class names (``thing_classes``). One PNG per image in ``--output-dir``, drawn at
``--scale`` (default: small images upscaled to 512 px, so that the labels are readable).
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__)
    what = "the dataset's ground truth, or the augmented training inputs"
    parser.add_argument("--source", choices=["annotation", "dataloader"], required=True, help=what)
    cli.add_flags(parser, "output_dir", "num_images", "scale")
    parser.set_defaults(num_images=20, output_dir="output/vis")
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import itertools
import logging
import os
from functools import partial
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.utils.visualizer import Visualizer

from detr_d2 import is_detr_config
from detr_d2.data import DetrDatasetMapper

logger = logging.getLogger("detr_d2.visualize_data")


def annotations(cfg) -> Iterator[Tuple]:
    """(RGB image, metadata, PNG name, draw) of each image of DATASETS.TRAIN as loaded, ``draw``
    the Visualizer method that draws its dataset dict."""
    for name in cfg.DATASETS.TRAIN:
        metadata = MetadataCatalog.get(name)
        for record in DatasetCatalog.get(name):
            image = utils.read_image(record["file_name"], format="RGB")
            draw = partial(Visualizer.draw_dataset_dict, dic=record)
            yield image, metadata, f"{name}_{Path(record['file_name']).stem}.png", draw


def training_inputs(cfg) -> Iterator[Tuple]:
    """(RGB image, metadata, PNG name, draw) of each image the training data loader yields,
    ``draw`` the Visualizer method that draws its augmented boxes and labels."""
    mapper = DetrDatasetMapper(cfg, True) if is_detr_config(cfg) else DatasetMapper(cfg, True)
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    names = metadata.get("thing_classes", None)
    loader = build_detection_train_loader(cfg, mapper=mapper)
    for i, item in enumerate(item for batch in loader for item in batch):
        # (C, H, W) in INPUT.FORMAT -> (H, W, 3) RGB for the Visualizer
        image = item["image"].permute(1, 2, 0).numpy()
        image = utils.convert_image_to_rgb(image, cfg.INPUT.FORMAT).astype(np.uint8)
        instances = item["instances"]
        labels = [names[c] if names else str(c) for c in instances.gt_classes.tolist()]
        boxes = instances.gt_boxes.tensor.numpy()
        draw = partial(Visualizer.overlay_instances, boxes=boxes, labels=labels)
        yield image, metadata, f"{i:04d}_{Path(item['file_name']).stem}.png", draw


def main(args) -> List[str]:
    cfg = cli.setup_cfg(args)
    os.makedirs(args.output_dir, exist_ok=True)
    images = annotations(cfg) if args.source == "annotation" else training_inputs(cfg)
    paths = []
    for image, metadata, name, draw in itertools.islice(images, args.num_images):
        vis = draw(Visualizer(image, metadata, cli.draw_scale(args.scale, *image.shape[:2])))
        paths.append(os.path.join(args.output_dir, name))
        vis.save(paths[-1])
        logger.info(f"Wrote {paths[-1]}")
    return paths


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
