"""DETR's training step (DetrTrainLoop): mixed precision on CPU and CUDA (Detectron2's AMPTrainer
asserts CUDA), exact gradient accumulation, and full-model clipping of the true gradients (a
clipping optimizer would clip float16 gradients still scaled, once per micro-batch). One step:
1. fetch ``accum_iters`` micro-batches; the criterion normalizes over all their target boxes;
2. forward (autocast when ``amp_dtype`` is set) and backward each, DDP all-reducing in the last;
3. float16: unscale; clip; optimizer step, which the GradScaler skips on non-finite gradients
   (logged, ``amp_skipped_steps`` in metrics.json; ``max_consecutive_skips`` in a row: an error)."""

import contextlib
import logging
import time
from typing import Optional

import torch
from detectron2.engine import SimpleTrainer, TrainerBase
from detectron2.utils.events import CommonMetricPrinter, get_event_storage
from torch.nn.parallel import DistributedDataParallel

from ..modeling.criterion import effective_batch
from ..solver import full_model_clipping

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def amp_dtype(cfg) -> Optional[torch.dtype]:
    """The autocast dtype of SOLVER.AMP (None: AMP off); a clear error for a wrong value."""
    name = cfg.SOLVER.AMP.DTYPE
    if cfg.SOLVER.AMP.ENABLED and name not in AMP_DTYPES:
        raise ValueError(f'SOLVER.AMP.DTYPE must be "bfloat16" or "float16", got {name!r}')
    return AMP_DTYPES[name] if cfg.SOLVER.AMP.ENABLED else None


def train_loop_args(cfg) -> dict:
    """DetrTrainLoop's keyword arguments from SOLVER.AMP, ACCUM_ITERS and CLIP_GRADIENTS, checked
    (call it before any work is spent)."""
    if cfg.SOLVER.ACCUM_ITERS < 1:
        raise ValueError(f"SOLVER.ACCUM_ITERS must be >= 1, got {cfg.SOLVER.ACCUM_ITERS}")
    clip_max_norm, clip_norm_type = full_model_clipping(cfg)
    return dict(
        amp_dtype=amp_dtype(cfg), accum_iters=cfg.SOLVER.ACCUM_ITERS, clip_max_norm=clip_max_norm,
        clip_norm_type=clip_norm_type, max_consecutive_skips=cfg.SOLVER.AMP.MAX_CONSECUTIVE_SKIPS,
    )  # fmt: skip


class DetrTrainLoop(SimpleTrainer):
    """A SimpleTrainer whose ``run_step`` is the module docstring's step; ``state_dict`` adds the
    GradScaler's to the optimizer's. ``amp_dtype``: torch.bfloat16 / torch.float16 to autocast the
    forward, None: off; ``accum_iters``: data loader items per optimizer step; ``clip_max_norm``
    (0: no), ``clip_norm_type``: of all gradients together; ``grad_scaler``: float16's (default:
    torch's; given without float16, it scales a loss of any precision); ``data_loader_iter``: an
    iterator of ``data_loader`` already started (None: start one)."""

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        *,
        amp_dtype: Optional[torch.dtype] = None,
        accum_iters: int = 1,
        clip_max_norm: float = 0.0,
        clip_norm_type: float = 2.0,
        max_consecutive_skips: int = 20,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        data_loader_iter=None,
    ):
        if amp_dtype not in (None, torch.bfloat16, torch.float16) or accum_iters < 1:
            raise ValueError(f"amp_dtype {amp_dtype}, accum_iters {accum_iters}: see the docstring")
        TrainerBase.__init__(self)
        model.train()
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        # a second iter() would start the loader's workers again
        self._data_loader_iter = iter(data_loader) if data_loader_iter is None else data_loader_iter
        self.amp_dtype, self.accum_iters = amp_dtype, accum_iters
        self.clip_max_norm, self.clip_norm_type = clip_max_norm, clip_norm_type
        self.max_consecutive_skips = max_consecutive_skips
        self.device_type = next(model.parameters()).device.type
        if grad_scaler is None and amp_dtype == torch.float16:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler
        self._params = [p for g in optimizer.param_groups for p in g["params"]]  # clipped together
        self.skipped_steps = 0  # float16 steps skipped for non-finite gradients, in this run
        self._consecutive_skips = 0

    def _forward_backward(self, data, sync: bool) -> dict:
        """Loss dict of one micro-batch, after its backward (gradients added to ``.grad``)."""
        no_sync = isinstance(self.model, DistributedDataParallel) and not sync
        with self.model.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(self.device_type, self.amp_dtype, enabled=bool(self.amp_dtype)):
                loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
            (self.grad_scaler.scale(losses) if self.grad_scaler else losses).backward()
        return loss_dict

    def run_step(self):
        assert self.model.training, "[DetrTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        batches = [next(self._data_loader_iter) for _ in range(self.accum_iters)]
        data_time = time.perf_counter() - start
        counts = [len(x["instances"]) if "instances" in x else 0 for b in batches for x in b]
        self.optimizer.zero_grad()
        loss_dict = {}
        with effective_batch(counts):
            for i, data in enumerate(batches):
                for k, v in self._forward_backward(data, i == len(batches) - 1).items():
                    loss_dict[k] = loss_dict.get(k, 0) + v.detach()  # the effective batch's
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # clip true gradients
        if self.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self._params, self.clip_max_norm, self.clip_norm_type)
        if self.grad_scaler is None:
            self.optimizer.step()
        elif not self._scaled_step():
            return  # nothing to log: the losses are not finite
        self._write_metrics(loss_dict, data_time)

    def _scaled_step(self) -> bool:
        """GradScaler step and update; False when it skipped the step (same on every process)."""
        old_scale = self.grad_scaler.get_scale()
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        scale = self.grad_scaler.get_scale()
        skipped = scale < old_scale  # the scale backs off only on inf / NaN
        self._consecutive_skips = self._consecutive_skips + 1 if skipped else 0
        self.skipped_steps += skipped
        get_event_storage().put_scalars(
            amp_scale=scale, amp_skipped_steps=self.skipped_steps, smoothing_hint=False
        )
        if not skipped:
            return True
        logger.warning(
            f"Iteration {self.iter}: float16 gradients not finite, optimizer step skipped "
            f"({self._consecutive_skips} in a row, {self.skipped_steps} in this run); loss scale "
            f"now {scale:g}"
        )
        if self._consecutive_skips >= self.max_consecutive_skips:
            raise FloatingPointError(
                f"float16: {self._consecutive_skips} optimizer steps in a row skipped for "
                f"non-finite gradients, the last at iteration {self.iter} "
                f"(SOLVER.AMP.MAX_CONSECUTIVE_SKIPS {self.max_consecutive_skips}; loss scale "
                f"{scale:g}): the model diverged or overflows float16 even "
                'unscaled; SOLVER.AMP.DTYPE "bfloat16" has float32\'s range'
            )
        return False

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
        elif self.grad_scaler is not None:
            logger.warning("The checkpoint has no GradScaler state: the loss scale starts afresh")


class MetricPrinter(CommonMetricPrinter):
    """``CommonMetricPrinter`` whose line also shows the window median of ``class_error``, which
    reached metrics.json only (Detectron2's printer shows the histories named "*loss*")."""

    def __init__(self, max_iter):
        super().__init__(max_iter)
        self._log, self.logger = self.logger, self  # write() logs through info() below

    def info(self, line: str) -> None:
        history = get_event_storage().histories().get("class_error")
        extra = "" if history is None else f"  class_error: {history.median(self._window_size):.4g}"
        self._log.info(line + extra)
