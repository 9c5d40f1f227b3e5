"""Hooks that stop a failing run cleanly: a non-finite loss stops it before the optimizer step,
naming the iteration, the loss terms and the last good checkpoint; a failed run saves nothing."""

import contextlib
import logging

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)


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
