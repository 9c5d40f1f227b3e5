"""Training reliability: crash-safe checkpoints, guards against non-finite losses and saving after a
failure, and checks of the config against datasets and weights before a run starts."""

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

__all__ = [
    "CheckpointShapeError",
    "ConfigDatasetMismatchError",
    "DetrCheckpointer",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "NonFiniteWeightsError",
    "NoSaveAfterFailure",
    "WeightsFileError",
    "WeightsMismatchError",
    "check_num_classes",
    "check_weights_path",
    "explain_non_finite",
    "is_complete_checkpoint",
    "load_weights_for_eval",
    "shut_down_process_group",
]
