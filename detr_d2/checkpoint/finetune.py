"""Loading a checkpoint trained with another class count: fine-tuning on your own classes.

Only the class head depends on the class count (DETR: ``class_embed``, Linear(d, K+1), the last
row "no object"). :class:`DetrCheckpointer` loads every other weight and leaves the class head at
the values the model was built with (its from-scratch initialisation), saying so in one log line
with the old and new shapes. Any other shape mismatch raises :class:`CheckpointShapeError`, where
Detectron2's checkpointer would skip the weight with a warning and train on (e.g. a checkpoint of
another NUM_OBJECT_QUERIES or HIDDEN_DIM). Missing and unexpected keys are reported as Detectron2
does: an ImageNet backbone checkpoint legitimately lacks the transformer. (Files loaded by
Detectron2's name-matching heuristics, its ``.pkl`` backbones, are matched and checked by it.)
"""

import logging
from typing import List, Tuple

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["CheckpointShapeError", "DetrCheckpointer", "is_class_head_key"]

logger = logging.getLogger(__name__)

# Modules whose output size is the class count: DETR's class head, and the two class-specific
# layers of Detectron2's Faster R-CNN box predictor (K+1 scores, 4K box deltas), so the
# baselines fine-tune the same way.
CLASS_HEAD_MODULES = (
    "class_embed",
    "roi_heads.box_predictor.cls_score",
    "roi_heads.box_predictor.bbox_pred",
)


class CheckpointShapeError(ValueError):
    """A checkpoint weight does not fit the model and may not be re-initialised."""


def is_class_head_key(key: str) -> bool:
    """Whether state-dict ``key`` is a parameter of one of the CLASS_HEAD_MODULES."""
    module = key.rsplit(".", 1)[0]
    return any(module == m or module.endswith("." + m) for m in CLASS_HEAD_MODULES)


def _format(mismatches: List[Tuple[str, tuple, tuple]]) -> str:
    return ", ".join(f"{k} {tuple(old)} -> {tuple(new)}" for k, old, new in mismatches)


class DetrCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that re-initialises a class head of another class count and
    fails on any other shape mismatch.

    Args:
        model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        reinit_class_head: False for evaluation (``--eval-only``), where an untrained class head
            would give meaningless results: a class-count mismatch raises too.
    """

    def __init__(
        self, model, save_dir="", *, reinit_class_head=True, save_to_disk=None, **checkpointables
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.reinit_class_head = reinit_class_head

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        shapes = incompatible.incorrect_shapes
        head = [m for m in shapes if is_class_head_key(m[0])]
        other = [m for m in shapes if not is_class_head_key(m[0])]
        if other:
            raise CheckpointShapeError(
                f"The checkpoint does not fit the model built from the config (checkpoint -> "
                f"model shapes): {_format(other)}. Only the class head may differ; check the "
                "model options (e.g. NUM_OBJECT_QUERIES, HIDDEN_DIM, backbone depth)."
            )
        if head and not self.reinit_class_head:
            raise CheckpointShapeError(
                f"The checkpoint's class head has another class count than the model "
                f"(checkpoint -> model shapes): {_format(head)}. Evaluating with an untrained "
                "class head is meaningless: build the model with the checkpoint's class count."
            )
        if head:
            logger.info(
                f"Class head re-initialised for the new class count, every other weight "
                f"loaded (checkpoint -> model shapes): {_format(head)}"
            )
        # fvcore removed those weights from the checkpoint before loading: not "missing" either
        reinitialised = {k for k, _, _ in head}
        missing = [k for k in incompatible.missing_keys if k not in reinitialised]
        return incompatible._replace(incorrect_shapes=[], missing_keys=missing)
