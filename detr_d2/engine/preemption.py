"""Preemption: SIGTERM (what SLURM and Kubernetes send before a kill) ends a training cleanly.

Without this, SIGTERM kills the run at once and everything since the last periodic checkpoint is
lost. With :class:`SaveOnSigterm`, the signal only sets a flag; every rank finishes its current
iteration, the ranks agree (one all-reduce of the flag per iteration, so a signal reaching any
rank stops all of them at the same iteration), rank 0 writes an atomic checkpoint of that
iteration, logs one line, and every rank exits with PREEMPTED_EXIT_CODE. ``--resume`` continues
from that checkpoint. The process that ``launch`` starts the ranks from passes a SIGTERM on to
them (:func:`forward_sigterm_to_workers`): Kubernetes signals only the container's first process.
"""

import logging
import multiprocessing
import os
import signal

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

from .distributed import shut_down_process_group

__all__ = ["PREEMPTED_EXIT_CODE", "SaveOnSigterm", "forward_sigterm_to_workers"]

logger = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class SaveOnSigterm(HookBase):
    """Register it last, so that the iteration's other hooks (LR scheduler, writers) have run
    before the checkpoint is written.

    Args:
        checkpointer: the trainer's checkpointer (its ``save`` writes on rank 0 only).
    """

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer
        self._requested = False
        self._previous = None

    def _on_sigterm(self, signum, frame):
        self._requested = True

    def before_train(self):
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def after_train(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _any_rank_requested(self) -> bool:
        if comm.get_world_size() == 1:
            return self._requested
        flag = torch.tensor([int(self._requested)])  # GLOO and NCCL's CPU fallback: on CPU
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def after_step(self):
        if not self._any_rank_requested():
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        self._checkpointer.save(name, iteration=iteration)
        self._checkpointer.save_to_disk = False  # the last checkpoint: none from after_train
        if comm.is_main_process():
            logger.warning(
                f"SIGTERM: stopped after iteration {iteration}, saved {name}.pth in "
                f"{self._checkpointer.save_dir}; run again with --resume to continue from it."
            )
        shut_down_process_group()  # waits for every rank, so for rank 0's checkpoint too
        raise SystemExit(PREEMPTED_EXIT_CODE)


def forward_sigterm_to_workers() -> None:
    """In the process ``launch`` starts its worker processes from, before ``launch``: a SIGTERM
    is passed on to the workers (which save and exit, and ``launch`` then exits non-zero)
    instead of ending this process alone and leaving them training."""

    def forward(signum, frame):
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
