"""Training: DETR's training step (DetrTrainLoop) and reliability: crash-safe checkpoints, guards
against non-finite losses and saving after a failure, and checks of the config against datasets
and weights before a run starts."""

from .checkpoint import (
    CheckpointShapeError,
    DetrCheckpointer,
    NonFiniteWeightsError,
    WeightsFileError,
    WeightsMismatchError,
    is_complete_checkpoint,
)
from .checks import (
    ConfigDatasetMismatchError,
    check_num_classes,
    check_weights_path,
    load_weights_for_eval,
)
from .distributed import shut_down_process_group
from .hooks import NonFiniteLossError, NonFiniteLossGuard, NoSaveAfterFailure, explain_non_finite
from .train_loop import DetrTrainLoop, amp_dtype, train_loop_args

__all__ = [
    "CheckpointShapeError",
    "ConfigDatasetMismatchError",
    "DetrCheckpointer",
    "DetrTrainLoop",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "NonFiniteWeightsError",
    "NoSaveAfterFailure",
    "WeightsFileError",
    "WeightsMismatchError",
    "amp_dtype",
    "check_num_classes",
    "check_weights_path",
    "explain_non_finite",
    "is_complete_checkpoint",
    "load_weights_for_eval",
    "shut_down_process_group",
    "train_loop_args",
]
