#!/usr/bin/env python
"""Train and evaluate DETR and Detectron2 model-zoo baselines with one entry point.

    python train_net.py --config-file configs/detr_r50.yaml --num-gpus 8
    python train_net.py --config-file configs/detr_r50.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/faster_rcnn_R_50_FPN_3x.yaml --num-gpus 8
"""
import logging
import os

import detectron2.utils.comm as comm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.utils.logger import setup_logger
from detectron2.evaluation import verify_results

from detr_d2 import add_detr_config
from detr_d2.config import merge_config_file
from detr_d2.data import DetrDatasetMapper
from detr_d2.evaluation.build import build_evaluator
from detr_d2.solver import build_optimizer

logger = logging.getLogger("detr_d2")


class Trainer(DefaultTrainer):
    """DefaultTrainer with DETR's data augmentation and optimizer; Detectron2's otherwise."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        if cfg.MODEL.META_ARCHITECTURE.startswith("Detr"):
            return build_detection_train_loader(cfg, mapper=DetrDatasetMapper(cfg, True))
        return super().build_train_loader(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)


def setup(args):
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detr_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
