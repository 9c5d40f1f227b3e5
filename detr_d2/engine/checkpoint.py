"""DetrCheckpointer, the one checkpointer of train_net, --eval-only, the demo and the tools."""

import glob
import logging
import os
import pathlib
import zipfile
from typing import List, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

from ..checkpoint.safe_load import UnsafeCheckpointError, load_checkpoint_safely, load_pickle_safely

logger = logging.getLogger(__name__)

# Training stops when MODEL.WEIGHTS fills less than this fraction of the model's values: an
# ImageNet backbone fills 56.6% of DETR R50 (70.2% of R101, 56.4% of Faster R-CNN R50-FPN), a
# checkpoint of another architecture nothing or a few layers.
MIN_LOADED_FRACTION = 0.25
# Modules whose output size is the class count: DETR's class head and Faster R-CNN's K+1 scores
# and 4K box deltas, so the baselines fine-tune the same way.
CLASS_HEAD_MODULES = (
    "class_embed", "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"
)  # fmt: skip


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN or infinite weights; such a state is never written as a checkpoint."""


class WeightsMismatchError(ValueError):
    """A weights file does not match the model built from the config."""


class CheckpointShapeError(WeightsMismatchError):
    """A checkpoint weight does not fit the model and may not be re-initialised."""


class WeightsFileError(ValueError):
    """A weights file that cannot be read: empty, truncated, or not a checkpoint."""


def is_class_head_key(key: str) -> bool:
    module = key.rsplit(".", 1)[0]
    return any(module == m or module.endswith("." + m) for m in CLASS_HEAD_MODULES)


def atomic_write(path: str, write) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it, then rename it to
    ``path``. A crash at any point leaves ``path`` as it was (old content or absent)."""
    tmp = f"{path}.tmp-{os.getpid()}"  # no ".pth" ending: never taken for a checkpoint
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a ``torch.save`` zip whose every member's CRC checks out (unpickles
    nothing); a non-zip ``.pkl`` / ``.pyth`` only needs to be non-empty."""
    try:
        if os.path.getsize(path) == 0:
            return False
        if not zipfile.is_zipfile(path):
            return path.endswith((".pkl", ".pyth"))
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


class DetrCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer (same files and formats) that saves atomically and never NaN /
    infinite weights (:class:`NonFiniteWeightsError`), resumes from the last complete checkpoint
    and reads ``.pth`` weights-only, ``.pkl`` by a restricted unpickler. ``strict`` (evaluation,
    tools): every model tensor comes from the file and every entry of the file is used
    (:class:`WeightsMismatchError`). Training (False): a class head of another class count is left
    at its initialisation (one log line), any other shape mismatch raises
    :class:`CheckpointShapeError`, and a file filling less than MIN_LOADED_FRACTION of the model's
    values :class:`WeightsMismatchError` (another architecture would train from scratch)."""

    def __init__(self, model, save_dir="", *, strict=False, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self._loading = ""  # the file being loaded, for the errors
        self._verified = {}  # (path, size, mtime_ns) -> is_complete_checkpoint

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        state = self.model.state_dict()
        bad = [k for k, v in state.items() if not _finite(v)]
        if bad:
            raise NonFiniteWeightsError(
                f"Not saving checkpoint {name}: the model has NaN or infinite values in "
                f"{len(bad)} tensors ({', '.join(bad[:5])}). Last complete checkpoint: "
                f"{self.get_checkpoint_file() or 'none'}."
            )
        data = {"model": state, **{k: obj.state_dict() for k, obj in self.checkpointables.items()}}
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        name = last_filename_basename.encode()
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(name))

    def _complete(self, path: str) -> bool:
        """is_complete_checkpoint, remembered per (size, mtime)."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._verified:
            self._verified[key] = is_complete_checkpoint(path)
        return self._verified[key]

    def get_checkpoint_file(self) -> str:
        """``last_checkpoint``'s file if complete, else the newest complete ``model_*.pth``, or ""
        (OUTPUT_DIR is a local folder: train_net creates it with os.makedirs)."""
        last = os.path.join(self.save_dir, "last_checkpoint")  # replaced atomically, never removed
        tagged = pathlib.Path(last).read_text().strip() if os.path.isfile(last) else ""
        tagged = os.path.join(self.save_dir, tagged) if tagged else ""
        if tagged and self._complete(tagged):
            return tagged
        paths = glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth"))
        paths = sorted(paths, key=os.path.getmtime, reverse=True)
        found = next((p for p in paths if p != tagged and self._complete(p)), "")
        if tagged:
            none = f"{self.save_dir} holds no other complete model_*.pth"
            instead = f"using the newest complete checkpoint {found}" if found else none
            logger.warning(f"last_checkpoint names {tagged}, missing or incomplete; {instead}")
        return found

    def has_checkpoint(self) -> bool:
        return bool(self.get_checkpoint_file())

    def _load_file(self, filename: str):
        """Detectron2's formats, read without running code (:class:`WeightsFileError`)."""
        pkl = filename.endswith(".pkl")
        try:
            if filename.endswith(".pyth"):  # pycls: torch.load, weights-only by default
                return super()._load_file(filename)
            loaded = (load_pickle_safely if pkl else load_checkpoint_safely)(filename)
        except UnsafeCheckpointError:
            raise
        except Exception as e:  # torch / pickle raise anything from EOFError to KeyError
            raise WeightsFileError(
                f"Cannot read weights file {filename}: {type(e).__name__}: {e}. It is empty, "
                "truncated or not a checkpoint (a .pth saved by torch.save or a Detectron2 .pkl)."
            ) from e
        if not isinstance(loaded, dict):
            raise WeightsFileError(
                f"Weights file {filename} holds a {type(loaded).__name__}, not a state dict."
            )
        if not pkl:
            checkpoint = loaded if "model" in loaded else {"model": loaded}
        # a Detectron2 .pkl as DetectionCheckpointer reads it: a model-zoo file as it is, a
        # Caffe2 / ImageNet one (name-matched) without its momentum entries
        elif "model" in loaded and "__author__" in loaded:
            self.logger.info(f"Reading a file from '{loaded['__author__']}'")
            checkpoint = loaded
        else:
            blobs = loaded.get("blobs", loaded)  # detection models keep theirs under "blobs"
            weights = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            checkpoint = {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
        _check_weights(checkpoint["model"], filename, list(loaded))
        return checkpoint

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        if self.strict:
            _check_complete(incompatible, self._loading, self.model)
            return incompatible
        head = [m for m in incompatible.incorrect_shapes if is_class_head_key(m[0])]
        other = [m for m in incompatible.incorrect_shapes if not is_class_head_key(m[0])]
        if other:
            raise CheckpointShapeError(
                f"Weights {self._loading} do not fit the model built from the config (file -> "
                f"model shapes): {_format(other)}. Only the class head may differ; check the "
                "model options (e.g. NUM_OBJECT_QUERIES, HIDDEN_DIM, backbone depth)."
            )
        if head:
            logger.info(f"Class head re-initialised, file -> model: {_format(head)}")
        # fvcore removed those weights from the checkpoint before loading: not "missing" either
        missing = [k for k in incompatible.missing_keys if k not in {m[0] for m in head}]
        _check_loaded_fraction(self.model.state_dict(), set(missing), self._loading)
        return incompatible._replace(incorrect_shapes=[], missing_keys=missing)

    def load(self, path: str, checkpointables=None):
        self._loading = path  # for the errors of _load_model, which fvcore gives no path
        return super().load(path, checkpointables)


def _check_weights(weights, path: str, top_level: List[str]) -> None:
    """:class:`WeightsFileError` unless ``weights`` maps names to tensors / numpy arrays;
    :class:`NonFiniteWeightsError` if any of them holds NaN or infinity."""
    if not isinstance(weights, dict):
        raise WeightsFileError(f"Weights file {path}: its 'model' entry is no state dict")
    other = next(
        (k for k, v in weights.items() if not isinstance(v, (torch.Tensor, np.ndarray))), None
    )
    if other is not None:
        raise WeightsFileError(
            f"Weights file {path} is no state dict: its entry {other!r} is a "
            f"{type(weights[other]).__name__}, not a tensor (top-level keys: {_few(top_level)}). "
            "Detectron2 reads {'model': state_dict} or a bare state dict; convert other formats "
            "(tools/convert_detr_weights.py, tools/convert_torchvision_backbone.py)."
        )
    bad = [k for k, v in weights.items() if not _finite(v)]
    if bad:
        raise NonFiniteWeightsError(
            f"Weights file {path} holds NaN or infinite values in {len(bad)} tensors: "
            f"{_few(bad)}. It was saved from a diverged run; use an earlier checkpoint."
        )


def _finite(v) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind != "f" or bool(np.isfinite(v).all())
    return not v.is_floating_point() or bool(v.isfinite().all())


def _format(mismatches: List[Tuple[str, tuple, tuple]]) -> str:
    return ", ".join(f"{k} {tuple(old)} -> {tuple(new)}" for k, old, new in mismatches)


def _few(items, n=5) -> str:
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def _check_loaded_fraction(model_state, missing, path: str) -> None:
    """:class:`WeightsMismatchError` when the file filled less than MIN_LOADED_FRACTION of the
    model's values (FrozenBatchNorm2d fills absent running statistics itself: they count as
    missing with their layer's weight)."""
    sizes = {k: v.numel() for k, v in model_state.items() if not k.endswith("num_batches_tracked")}
    stats = (".running_mean", ".running_var")
    weight_of = {k: k.rsplit(".", 1)[0] + ".weight" for k in sizes if k.endswith(stats)}
    missing = {k for k in sizes if k in missing or weight_of.get(k) in missing}
    total = sum(sizes.values())
    filled = sum(n for k, n in sizes.items() if k not in missing)
    if total and filled / total < MIN_LOADED_FRACTION:
        missing = sorted(missing)
        raise WeightsMismatchError(
            f"Weights {path} fill only {len(sizes) - len(missing)} of the model's {len(sizes)} "
            f"tensors ({filled / total:.1%} of its values, less than {MIN_LOADED_FRACTION:.0%}):"
            f" training would start from a randomly initialized model. Missing: {_few(missing)}."
            " Check that the file is a checkpoint of this architecture, or set MODEL.WEIGHTS "
            '"" to train from scratch.'
        )


def _check_complete(incompatible, path: str, model) -> None:
    """Strict: :class:`WeightsMismatchError` for missing, unexpected or reshaped tensors
    (``num_batches_tracked``, absent from converted weights and unused, is not counted)."""
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    missing = _filter_reused_missing_keys(model, missing) if missing else []
    unexpected, shapes = incompatible.unexpected_keys, incompatible.incorrect_shapes
    head_only = shapes and all(is_class_head_key(k) for k, _, _ in shapes)
    problems = [
        (missing, f"{len(missing)} model keys missing from the file: {_few(missing)}"),
        (unexpected, f"{len(unexpected)} keys of the file not in the model: {_few(unexpected)}"),
        (shapes, f"{len(shapes)} tensors of another shape (file -> model): {_format(shapes)}"),
        (head_only, "the class head has another class count: build the model with the file's"),
    ]
    problems = [text for found, text in problems if found]
    if problems:
        raise WeightsMismatchError(
            f"Weights {path} do not match the model built from the config: {'; '.join(problems)}. "
            "Evaluating would use randomly initialized weights for them; check that the config "
            "(architecture, MODEL.DETR.*) is the one the weights were trained with."
        )
