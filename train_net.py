#!/usr/bin/env python
"""Train and evaluate DETR and Detectron2 model-zoo baselines with one entry point.

    python train_net.py --config-file configs/detr_r50.yaml --num-gpus 8
    python train_net.py --config-file configs/detr_r50.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/faster_rcnn_R_50_FPN_3x.yaml --num-gpus 8
    python train_net.py --config-file configs/detr_r50.yaml --num-gpus 8 --resume  # after a crash

Bad data, a wrong class count or weights that do not fit the model stop the run before it starts;
checkpoints are atomic, --resume takes the last complete one, SIGTERM saves (docs/reliability.md).
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli


def argument_parser():
    return cli.argument_parser(__doc__, launch=True)


ARGS = argument_parser().parse_args() if __name__ == "__main__" else None

import logging
import os
import random
import warnings
import weakref

import detectron2.utils.comm as comm
import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, launch
from detectron2.evaluation import verify_results
from detectron2.utils.events import CommonMetricPrinter

from detr_d2.config import is_detr_config
from detr_d2.data import build_test_mapper, build_train_mapper
from detr_d2.data.dataset_checks import CheckedMapper, WithoutSkipped, get_checked_dataset_dicts
from detr_d2.data.dataset_checks import warn_more_objects_than_queries
from detr_d2.data.resumable_loader import ResumableStream, ResumableTrainLoader
from detr_d2.data.resumable_loader import build_resumable_train_loader
from detr_d2.engine import DetrCheckpointer, DetrTrainLoop, NoSaveAfterFailure, NonFiniteLossGuard
from detr_d2.engine import amp_dtype, check_num_classes, explain_non_finite, load_weights_for_eval
from detr_d2.engine import MetricPrinter, shut_down_process_group, train_loop_args
from detr_d2.engine.output_dir import release_output_dirs
from detr_d2.engine.hooks import SaveOnSigterm, forward_sigterm_to_workers
from detr_d2.evaluation import build_evaluator
from detr_d2.solver import build_optimizer

logger = logging.getLogger("detr_d2")


class Trainer(DefaultTrainer):
    """DefaultTrainer with DETR's data, optimizer and training step (DetrTrainLoop), checked data,
    crash-safe checkpoints and a non-finite-loss guard."""

    def __init__(self, cfg):
        loop_args = train_loop_args(cfg)  # a wrong SOLVER.AMP / ACCUM_ITERS fails before any work
        with warnings.catch_warnings():  # its AMPTrainer (replaced below) warns without CUDA
            warnings.filterwarnings("ignore", "torch.cuda.amp.GradScaler is enabled, but CUDA")
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
        filter_empty = cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        dicts = get_checked_dataset_dicts(cfg.DATASETS.TRAIN, skip, filter_empty)
        check_num_classes(cfg, cfg.DATASETS.TRAIN)  # loading completes lazily filled metadata
        warn_more_objects_than_queries(dicts, cfg.MODEL.DETR.NUM_OBJECT_QUERIES)
        spares = random.Random(0).sample(dicts, min(len(dicts), 16))  # replace unreadable ones
        mapper = CheckedMapper(build_train_mapper(cfg), skip, spares)
        return build_resumable_train_loader(cfg, mapper, dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        skip = cfg.DATALOADER.SKIP_BAD_IMAGES  # left out of the metrics, counted, logged
        mapper = CheckedMapper(build_test_mapper(cfg), skip, replace=False)
        loader = build_detection_test_loader(cfg, dataset_name, mapper=mapper)
        check_num_classes(cfg, [dataset_name])
        return WithoutSkipped(loader)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    def build_hooks(self):
        # replaces the DetectionCheckpointer DefaultTrainer.__init__ made just before this call
        proxy = weakref.proxy(self)
        self.checkpointer = DetrCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=proxy)
        guards = [NoSaveAfterFailure(self.checkpointer)]
        if amp_dtype(self.cfg) != torch.float16:  # float16 skips non-finite steps instead
            guards.append(NonFiniteLossGuard(self.checkpointer))
        if isinstance(self._trainer.data_loader, ResumableTrainLoader):  # DETR: resume exactly
            guards.append(ResumableStream(self._trainer.data_loader))
        return guards + super().build_hooks() + [SaveOnSigterm(self.checkpointer)]

    def build_writers(self):
        # the log line shows class_error too (MetricPrinter), Detectron2's other writers as they are
        printer, writers = MetricPrinter(self.max_iter), super().build_writers()
        return [printer if isinstance(w, CommonMetricPrinter) else w for w in writers]

    def run_step(self):
        with explain_non_finite(self):
            super().run_step()

    # detectron2 0.6's DefaultTrainer checkpoints the iteration and the hooks (LR scheduler), not
    # the optimizer (nor the float16 GradScaler): without these, --resume restarts AdamW's moments
    def state_dict(self):
        return dict(super().state_dict(), _trainer=self._trainer.state_dict())

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state: the optimizer starts afresh")


def setup(args):
    return cli.setup_cfg(args, training=True)


def main(args):
    """Train, or evaluate with --eval-only; the function `launch` runs on every process."""
    try:
        cfg = setup(args)
        # datasets whose metadata already lists their classes; the loaders check the others
        train = () if args.eval_only else cfg.DATASETS.TRAIN
        check_num_classes(cfg, [*cfg.DATASETS.TEST, *train])
        if args.eval_only:
            model = Trainer.build_model(cfg)
            load_weights_for_eval(model, cfg, resume=args.resume)
            results = Trainer.test(cfg, model)
            if comm.is_main_process():
                verify_results(cfg, results)
        else:
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=args.resume)
            results = trainer.train()
    finally:
        release_output_dirs()  # in-process callers may train into the folder again
    shut_down_process_group()  # every rank finished: end the process group before the exit
    return results


if __name__ == "__main__":
    if ARGS.num_gpus * ARGS.num_machines > 1:  # launch starts worker processes
        forward_sigterm_to_workers()
    launch(main, ARGS.num_gpus, ARGS.num_machines, ARGS.machine_rank, ARGS.dist_url, args=(ARGS,))
