"""Hooks that end a run cleanly. A non-finite loss stops it before the optimizer step, naming the
iteration, the loss terms and the last good checkpoint; a failed run saves nothing. SIGTERM
(SLURM's and Kubernetes' warning before a kill) sets a flag, the ranks agree on it after each
iteration (one all-reduce on the CPU, no device sync), rank 0 checkpoints that iteration and
every rank exits with PREEMPTED_EXIT_CODE; ``--resume`` continues from there. Every run ends by
shutting its process group down."""

import contextlib
import logging
import multiprocessing
import os
import signal

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class NonFiniteLossError(FloatingPointError):
    """A training loss is NaN or infinite (a FloatingPointError, like detectron2's own check)."""


class NonFiniteLossGuard(HookBase):
    """Checks every training forward's loss dict on every process before ``backward()``
    (detectron2 checks only the average, on rank 0, naming neither rank nor checkpoint)."""

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer
        self._handle = None

    def before_train(self):
        self._handle = self.trainer.model.register_forward_hook(self._check)

    def after_train(self):
        if self._handle is not None:  # removing twice is harmless
            self._handle.remove()

    def _check(self, module, inputs, losses):
        if not module.training or not isinstance(losses, dict) or not losses:
            return
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if bool(torch.isfinite(values).all()):
            return
        bad = ", ".join(k for k, finite in zip(losses, torch.isfinite(values)) if not finite)
        terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(losses, values.tolist()))
        what = f"{bad} not finite. Loss terms: {terms}"
        raise NonFiniteLossError(_message(self.trainer.iter, self._checkpointer, what))


def _message(iteration: int, checkpointer, what: str) -> str:
    last = checkpointer.get_checkpoint_file() or "none saved yet"
    return (
        f"Non-finite loss at iteration {iteration} (process rank {comm.get_rank()}): {what}. "
        "Training stopped before the optimizer step; nothing is saved after this point. Last "
        f"good checkpoint: {last}. To continue from it, run again with --resume (consider a "
        "lower SOLVER.BASE_LR or SOLVER.CLIP_GRADIENTS)."
    )


@contextlib.contextmanager
def explain_non_finite(trainer):
    """Around a training step: another FloatingPointError (the matcher's, detectron2's) becomes a
    :class:`NonFiniteLossError` naming the iteration and the last good checkpoint."""
    try:
        yield
    except NonFiniteLossError:
        raise
    except FloatingPointError as e:
        raise NonFiniteLossError(_message(trainer.iter, trainer.checkpointer, str(e))) from e


class NoSaveAfterFailure(HookBase):
    """Register it first: after an exception it turns saving off before any other hook's
    ``after_train`` (no ``model_final`` from a failed run)."""

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer

    def after_train(self):
        # TrainerBase.train leaves iter == max_iter only when the loop completed
        if self.trainer.iter < self.trainer.max_iter and self._checkpointer.save_to_disk:
            self._checkpointer.save_to_disk = False
            logger.warning(
                f"Training stopped by an error at iteration {self.trainer.iter}: no "
                "checkpoint is written after it."
            )


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

    def _any_rank_requested(self) -> bool:
        if comm.get_world_size() == 1:
            return self._requested
        # one all-reduce on the CPU (gloo) group: no device sync, no pickling, every iteration
        flag = torch.tensor([int(self._requested)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=comm._get_global_gloo_group())
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
    """Before ``launch`` starts workers: pass a SIGTERM on to them (Kubernetes signals only the
    container's first process), instead of ending this one alone and leaving them training."""

    def forward(signum, frame):
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
