#!/usr/bin/env python
"""Train and evaluate DETR and Detectron2 model-zoo baselines with one entry point.

    python train_net.py --config-file configs/detr_r50.yaml --num-gpus 8
    python train_net.py --config-file configs/detr_r50.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/faster_rcnn_R_50_FPN_3x.yaml --num-gpus 8
    python train_net.py --config-file configs/detr_r50.yaml --num-gpus 8 --resume  # after a crash

Bad data, a wrong class count or weights that do not fit the model stop the run before it starts,
with an error naming them; checkpoints are written atomically and --resume takes the last complete
one (see README, "Reliability").
"""

import logging
import os
import random
import weakref

import detectron2.utils.comm as comm
import torch
from detectron2.config import get_cfg
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

from detr_d2 import add_detr_config
from detr_d2.checkpoint.finetune import DetrCheckpointer
from detr_d2.config import is_detr_config, merge_config_file
from detr_d2.data import (
    DetrDatasetMapper,
    DetrPanopticDatasetMapper,
    build_test_mapper,
    register,
)
from detr_d2.data.dataset_checks import CheckedMapper, get_checked_dataset_dicts
from detr_d2.engine import (
    AtomicCheckpointer,
    DetrTrainLoop,
    NoSaveAfterFailure,
    NonFiniteLossGuard,
    amp_dtype,
    check_num_classes,
    explain_non_finite,
    load_weights_for_eval,
    shut_down_process_group,
    train_loop_args,
)
from detr_d2.evaluation.build import build_evaluator
from detr_d2.solver import build_optimizer

logger = logging.getLogger("detr_d2")


class Checkpointer(AtomicCheckpointer, DetrCheckpointer):
    """Crash-safe saving and resumption from the last complete checkpoint (AtomicCheckpointer);
    MODEL.WEIGHTS of another class count loads all but the class head (DetrCheckpointer)."""


class Trainer(DefaultTrainer):
    """DefaultTrainer with DETR's data augmentation, optimizer and training step (AMP, gradient
    accumulation, full-model clipping: DetrTrainLoop), checked data, crash-safe checkpoints and a
    non-finite-loss guard; Detectron2's otherwise."""

    def __init__(self, cfg):
        loop_args = train_loop_args(cfg)  # a wrong SOLVER.AMP / ACCUM_ITERS fails before any work
        super().__init__(cfg)
        plain = self._trainer  # SimpleTrainer / AMPTrainer: its model, optimizer and data
        self._trainer = DetrTrainLoop(
            plain.model, plain.data_loader, plain.optimizer,
            data_loader_iter=plain._data_loader_iter, **loop_args,
        )  # fmt: skip

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        if not is_detr_config(cfg):
            loader = super().build_train_loader(cfg)
            check_num_classes(cfg, cfg.DATASETS.TRAIN)
            return loader
        skip = cfg.DATALOADER.SKIP_BAD_IMAGES
        dicts = get_checked_dataset_dicts(
            cfg.DATASETS.TRAIN, skip, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        check_num_classes(cfg, cfg.DATASETS.TRAIN)  # loading completes lazily filled metadata
        spares = random.Random(0).sample(dicts, min(len(dicts), 16))  # replace unreadable ones
        # panoptic data (both panoptic stages): every segment's box and mask from the PNG
        panoptic = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("evaluator_type") == (
            "coco_panoptic_seg"
        )
        mapper_cls = DetrPanopticDatasetMapper if panoptic else DetrDatasetMapper
        mapper = CheckedMapper(mapper_cls(cfg, True), skip, spares)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = build_test_mapper(cfg)
        loader = build_detection_test_loader(cfg, dataset_name, mapper=CheckedMapper(mapper))
        check_num_classes(cfg, [dataset_name])
        return loader

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer just before calling this: the
        # hooks and resume_or_load get ours instead
        self.checkpointer = Checkpointer(
            self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        guards = [NoSaveAfterFailure(self.checkpointer)]
        if amp_dtype(self.cfg) != torch.float16:  # float16 skips non-finite steps instead
            guards.append(NonFiniteLossGuard(self.checkpointer))
        return guards + super().build_hooks()

    def run_step(self):
        with explain_non_finite(self):
            super().run_step()

    # detectron2 0.6's DefaultTrainer checkpoints the iteration and the hooks' state (LR scheduler)
    # but not the optimizer's (nor the float16 GradScaler's): without these, --resume would
    # restart AdamW's moments from zero
    def state_dict(self):
        return dict(super().state_dict(), _trainer=self._trainer.state_dict())

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state: the optimizer starts afresh")


def setup(args):
    cfg = get_cfg()
    add_detr_config(cfg)
    merge_config_file(cfg, args.config_file)
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ValueError(f"Invalid config option on the command line: {e}") from e
    # before registering: the json check and the class count are logged to OUTPUT_DIR too
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detr_d2")
    register.register_coco_from_args(args)  # in every process, before the datasets are used
    register.resolve_num_classes(cfg, args.opts)  # NUM_CLASSES from the data unless set
    register.apply_epoch_schedule(cfg)  # SOLVER.EPOCHS -> MAX_ITER / STEPS
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(
            "MODEL.DEVICE is %s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE
        )
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """Train, or evaluate with --eval-only; the function `launch` runs on every process."""
    results = _train_or_evaluate(args)
    shut_down_process_group()  # every rank finished: end the process group before the exit
    return results


def _train_or_evaluate(args):
    cfg = setup(args)
    # datasets whose metadata already lists their classes; the loaders check the others
    check_num_classes(
        cfg, list(cfg.DATASETS.TEST) + ([] if args.eval_only else list(cfg.DATASETS.TRAIN))
    )
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_eval(model, cfg, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    register.add_register_coco_argument(parser)
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
