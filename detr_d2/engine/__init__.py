"""DETR's training step (DetrTrainLoop) and reliability: crash-safe checkpoints, guards against
non-finite losses and saving after a failure, checks of config, datasets and weights up front."""

# ruff: noqa: F401  (the package's API, re-exported)
from .checkpoint import CheckpointShapeError, DetrCheckpointer, NonFiniteWeightsError
from .checkpoint import WeightsFileError, WeightsMismatchError, is_complete_checkpoint
from .checks import ConfigDatasetMismatchError, check_num_classes, load_weights_for_eval
from .hooks import NonFiniteLossError, NonFiniteLossGuard, NoSaveAfterFailure, explain_non_finite
from .hooks import shut_down_process_group
from .train_loop import DetrTrainLoop, MetricPrinter, amp_dtype, train_loop_args
