"""DetrCheckpointer, the one checkpointer of train_net, --eval-only, the demo and the tools.

Saving: checkpoints that a crash cannot corrupt, and resumption from the last complete one.

fvcore's ``Checkpointer.save`` writes ``model_XXXXXXX.pth`` in place and then rewrites
``last_checkpoint``: a process killed mid-write leaves a truncated file that ``last_checkpoint`` may
already name (or an empty ``last_checkpoint``). Here a checkpoint is written to a temporary file,
fsynced and renamed over its final name (``os.replace`` is atomic on a POSIX file system), and
``last_checkpoint`` is rewritten the same way only after that, so a final name only ever holds a
complete file. On resume the checkpoint ``last_checkpoint`` names is verified (zip CRCs); if it is
missing or damaged, the newest complete ``model_*.pth`` is used instead.

Loading: no code runs from a weights file (``.pth`` weights-only, ``.pkl`` by a restricted
unpickler), and a file that cannot be read is an error naming it. What a loaded file must fit:

* training (``strict=False``): a class head of another class count (fine-tuning on your own
  classes) is left at its initialisation, with one log line; any other shape mismatch raises
  :class:`CheckpointShapeError`; missing and unexpected keys are reported as Detectron2 does (an
  ImageNet backbone legitimately lacks the transformer), but a file that fills less than
  MIN_LOADED_FRACTION of the model's values raises :class:`WeightsMismatchError` (a checkpoint
  of another architecture would otherwise train from random init);
* evaluation and tools (``strict=True``): every model tensor must come from the file and every
  entry of the file must be used (:class:`WeightsMismatchError`).
"""

import logging
import os
import zipfile
from typing import Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

from ..checkpoint.safe_load import (
    UnsafeCheckpointError,
    load_checkpoint_safely,
    load_pickle_safely,
)

__all__ = [
    "CheckpointShapeError",
    "DetrCheckpointer",
    "NonFiniteWeightsError",
    "WeightsFileError",
    "WeightsMismatchError",
    "is_class_head_key",
    "is_complete_checkpoint",
]

logger = logging.getLogger(__name__)

# "<name>.pth.tmp-<pid>": does not end in ".pth", so it is never taken for a checkpoint
TMP_SUFFIX = ".tmp-"
# Training stops when MODEL.WEIGHTS fills less than this fraction of the model's values: an
# ImageNet backbone fills 56.6% of DETR R50 (70.2% of R101, 56.4% of Faster R-CNN R50-FPN), a
# checkpoint of another architecture nothing or a few layers.
MIN_LOADED_FRACTION = 0.25
# Modules whose output size is the class count: DETR's class head, and the two class-specific
# layers of Detectron2's Faster R-CNN box predictor (K+1 scores, 4K box deltas), so the
# baselines fine-tune the same way.
CLASS_HEAD_MODULES = (
    "class_embed",
    "roi_heads.box_predictor.cls_score",
    "roi_heads.box_predictor.bbox_pred",
)


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN or infinite weights; such a state is never written as a checkpoint."""


class WeightsMismatchError(ValueError):
    """A weights file does not match the model built from the config."""


class CheckpointShapeError(WeightsMismatchError):
    """A checkpoint weight does not fit the model and may not be re-initialised."""


class WeightsFileError(ValueError):
    """A weights file that cannot be read: empty, truncated, or not a checkpoint."""


def is_class_head_key(key: str) -> bool:
    """Whether state-dict ``key`` is a parameter of one of the CLASS_HEAD_MODULES."""
    module = key.rsplit(".", 1)[0]
    return any(module == m or module.endswith("." + m) for m in CLASS_HEAD_MODULES)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it, then rename it to
    ``path``. A crash at any point leaves ``path`` as it was (old content or absent)."""
    tmp = f"{path}{TMP_SUFFIX}{os.getpid()}"
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
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a readable, undamaged checkpoint: a ``torch.save`` zip archive whose
    central directory and every member's CRC check out (reads the file; unpickles nothing).
    Pickles of the formats DetectionCheckpointer reads besides (``.pkl``, ``.pyth``) only need to
    exist and be non-empty; anything else that is not a zip is not a complete checkpoint."""
    try:
        if os.path.getsize(path) == 0:
            return False
        if not zipfile.is_zipfile(path):
            return path.endswith((".pkl", ".pyth"))
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def _non_finite_entries(state_dict: Dict[str, torch.Tensor]) -> List[str]:
    return [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


class DetrCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer (same files, same formats) that

    * saves atomically (see the module docstring) and refuses to save NaN / infinite weights
      (:class:`NonFiniteWeightsError`), so every checkpoint on disk is complete and finite;
    * resumes from the last *complete* checkpoint (:meth:`get_checkpoint_file`);
    * reads weights without running code from them, and checks that they fit the model.

    Args:
        model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        strict: evaluation and tools: the file must fill the whole model and nothing else
            (a class head of another class count included). False (training): see the module
            docstring.
    """

    def __init__(self, model, save_dir="", *, strict=False, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self._loading = ""  # the file being loaded, for the errors
        self._verified: Dict[str, Tuple[int, int, bool]] = {}  # path -> (size, mtime_ns, ok)

    def _is_local(self) -> bool:
        return bool(self.save_dir) and "://" not in self.save_dir

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():  # a remote path (PathManager handler): fvcore's plain save
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        bad = _non_finite_entries(data["model"])
        if bad:
            raise NonFiniteWeightsError(
                f"Not saving checkpoint {name}: the model has NaN or infinite values in "
                f"{len(bad)} tensors ({', '.join(bad[:5])}). Last complete checkpoint: "
                f"{self.get_checkpoint_file() or 'none'}."
            )
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def _complete(self, path: str) -> bool:
        """is_complete_checkpoint, remembered per (size, mtime) so that repeated calls are free."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        size, mtime, ok = self._verified.get(path, (None, None, None))
        if (size, mtime) != (st.st_size, st.st_mtime_ns):
            ok = is_complete_checkpoint(path)
            self._verified[path] = (st.st_size, st.st_mtime_ns, ok)
        return ok

    def _tagged_checkpoint(self) -> str:
        try:
            with open(os.path.join(self.save_dir, "last_checkpoint")) as f:
                name = f.read().strip()
        except OSError:
            return ""
        return os.path.join(self.save_dir, name) if name else ""

    def get_checkpoint_file(self) -> str:
        """The checkpoint to resume from: the one ``last_checkpoint`` names if it is complete,
        else the newest (by modification time) complete ``model_*.pth`` of ``save_dir``, else ""."""
        if not self._is_local():
            return super().get_checkpoint_file()
        tagged = self._tagged_checkpoint()
        if tagged and self._complete(tagged):
            return tagged
        try:
            names = os.listdir(self.save_dir)
        except OSError:
            return ""
        candidates = [
            os.path.join(self.save_dir, n)
            for n in names
            if n.startswith("model_") and n.endswith(".pth")
        ]
        candidates.sort(key=lambda p: os.path.getmtime(p), reverse=True)
        for path in candidates:
            if path != tagged and self._complete(path):
                if tagged:
                    logger.warning(
                        f"last_checkpoint names {tagged}, which is missing or "
                        f"incomplete; using the newest complete checkpoint {path}"
                    )
                return path
        if tagged:
            logger.warning(
                f"last_checkpoint names {tagged}, which is missing or incomplete, and "
                f"{self.save_dir} holds no other complete model_*.pth"
            )
        return ""

    def has_checkpoint(self) -> bool:
        return bool(self.get_checkpoint_file())

    # ---- loading ------------------------------------------------------------------------------

    def _load_file(self, filename: str):
        """Detectron2's formats, read without running code; :class:`WeightsFileError` naming the
        file when it is empty, truncated or not a checkpoint."""
        try:
            if filename.endswith(".pkl"):
                return _pkl_checkpoint(load_pickle_safely(filename), filename, self.logger)
            if filename.endswith(".pyth"):  # pycls: torch.load, weights-only by default
                return super()._load_file(filename)
            loaded = load_checkpoint_safely(filename)
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
        return loaded if "model" in loaded else {"model": loaded}

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        if self.strict:
            _check_complete(incompatible, self._loading, self.model)
            return incompatible
        shapes = incompatible.incorrect_shapes
        head = [m for m in shapes if is_class_head_key(m[0])]
        other = [m for m in shapes if not is_class_head_key(m[0])]
        if other:
            raise CheckpointShapeError(
                f"Weights {self._loading} do not fit the model built from the config (file -> "
                f"model shapes): {_format(other)}. Only the class head may differ; check the "
                "model options (e.g. NUM_OBJECT_QUERIES, HIDDEN_DIM, backbone depth)."
            )
        if head:
            logger.info(
                f"Class head re-initialised for the new class count, every other weight "
                f"loaded (checkpoint -> model shapes): {_format(head)}"
            )
        # fvcore removed those weights from the checkpoint before loading: not "missing" either
        reinitialised = {k for k, _, _ in head}
        missing = [k for k in incompatible.missing_keys if k not in reinitialised]
        _check_loaded_fraction(self.model.state_dict(), set(missing), self._loading)
        return incompatible._replace(incorrect_shapes=[], missing_keys=missing)

    def load(self, path: str, checkpointables=None):
        self._loading = path  # for the errors of _load_model, which fvcore gives no path
        return super().load(path, checkpointables)


def _pkl_checkpoint(data, path: str, log) -> Dict:
    """The checkpoint dict of a Detectron2 ``.pkl`` as DetectionCheckpointer reads it: a model-zoo
    file as it is, a Caffe2 / ImageNet one (name-matched) without its momentum entries."""
    if not isinstance(data, dict):
        raise WeightsFileError(f"Weights file {path} holds a {type(data).__name__}, not a dict.")
    if "model" in data and "__author__" in data:
        log.info(f"Reading a file from '{data['__author__']}'")
        return data
    blobs = data.get("blobs", data)  # detection models keep their weights under "blobs"
    weights = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def _format(mismatches: List[Tuple[str, tuple, tuple]]) -> str:
    return ", ".join(f"{k} {tuple(old)} -> {tuple(new)}" for k, old, new in mismatches)


def _few(items, n=5) -> str:
    return ", ".join(map(str, items[:n])) + (
        f", ... ({len(items) - n} more)" if len(items) > n else ""
    )


def _check_loaded_fraction(model_state, missing, path: str) -> None:
    """Training: :class:`WeightsMismatchError` when the file left so many model keys
    ``missing`` that it filled less than MIN_LOADED_FRACTION of the model's values. (Detectron2's
    FrozenBatchNorm2d fills its running statistics itself when a file lacks them: they count as
    missing with their layer's weight.)"""
    sizes = {k: v.numel() for k, v in model_state.items() if not k.endswith("num_batches_tracked")}
    stats = (".running_mean", ".running_var")
    missing = {
        k
        for k in sizes
        if k in missing or (k.endswith(stats) and k.rsplit(".", 1)[0] + ".weight" in missing)
    }
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
    """Evaluation: :class:`WeightsMismatchError` when loading ``path`` left model tensors at
    their initial values, ignored entries of the file or found tensors of another shape.
    BatchNorm's ``num_batches_tracked``
    (absent from converted weights, unused by the model) is not counted."""
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    missing = _filter_reused_missing_keys(model, missing) if missing else []
    problems = []
    if missing:
        problems.append(f"{len(missing)} model keys missing from the file: {_few(missing)}")
    if incompatible.unexpected_keys:
        problems.append(
            f"{len(incompatible.unexpected_keys)} keys of the file not in the "
            f"model: {_few(incompatible.unexpected_keys)}"
        )
    shapes = incompatible.incorrect_shapes
    if shapes:
        problems.append(
            f"{len(shapes)} tensors of another shape (file -> model): {_format(shapes)}"
        )
        if all(is_class_head_key(k) for k, _, _ in shapes):
            problems.append(
                "the class head has another class count: build the model with the file's"
            )
    if problems:
        raise WeightsMismatchError(
            f"Weights {path} do not match the model built from the config: "
            + "; ".join(problems)
            + ". Evaluating would use randomly initialized weights for "
            "them; check that the config (architecture, MODEL.DETR.*) is the one the weights "
            "were trained with."
        )
