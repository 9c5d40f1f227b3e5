"""The orderly end of a run. SIGTERM (SLURM's and Kubernetes' warning before a kill) ends a training
cleanly: the signal sets a flag, the ranks agree on it after each iteration (a gather on the CPU,
no device sync), rank 0 checkpoints that iteration and every rank exits with PREEMPTED_EXIT_CODE;
``--resume`` continues from there. Every run ends by shutting its process group down."""

import logging
import multiprocessing
import os
import signal

import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


def shut_down_process_group():
    """At the end of a function `launch` runs: destroy the process groups once every rank is here.
    A GLOO worker exiting with its group alive can SIGABRT in C++ destructors, a "failed" run."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    comm.synchronize()
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None  # destroyed with the others; a new launch creates it again


class SaveOnSigterm(HookBase):
    """Register it last: the iteration's other hooks (LR scheduler, writers) run before the save."""

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer
        self._requested = False
        self._previous = None

    def _on_sigterm(self, signum, frame):
        self._requested = True

    def before_train(self):
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def after_train(self):
        if self._previous is not None:  # restoring twice is harmless
            signal.signal(signal.SIGTERM, self._previous)

    def after_step(self):
        if not any(comm.all_gather(self._requested)):  # [self._requested] on one process
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
    """Before ``launch`` starts workers: pass a SIGTERM on to them (Kubernetes signals only the
    container's first process), instead of ending this one alone and leaving them training."""

    def forward(signum, frame):
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
