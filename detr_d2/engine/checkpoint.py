"""Checkpoints that a crash cannot corrupt, and resumption from the last complete one.

fvcore's ``Checkpointer.save`` writes ``model_XXXXXXX.pth`` in place and then rewrites
``last_checkpoint``: a process killed mid-write leaves a truncated file that ``last_checkpoint`` may
already name (or an empty ``last_checkpoint``). Here a checkpoint is written to a temporary file,
fsynced and renamed over its final name (``os.replace`` is atomic on a POSIX file system), and
``last_checkpoint`` is rewritten the same way only after that, so a final name only ever holds a
complete file. On resume the checkpoint ``last_checkpoint`` names is verified (zip CRCs); if it is
missing or damaged, the newest complete ``model_*.pth`` is used instead.
"""

import logging
import os
import time
import zipfile
from typing import Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "NonFiniteWeightsError", "is_complete_checkpoint"]

logger = logging.getLogger(__name__)

# Test hook: a save whose file name equals this variable's value stops for 10 minutes after its
# first bytes are on disk, so a test can kill the process in the middle of writing a checkpoint.
PAUSE_IN_SAVE_ENV = "DETR_D2_TEST_PAUSE_IN_SAVE"
# "<name>.pth.tmp-<pid>": does not end in ".pth", so it is never taken for a checkpoint
TMP_SUFFIX = ".tmp-"


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN or infinite weights; such a state is never written as a checkpoint."""


class _PausingWriter:
    """Forwards writes to ``f``; after the first one, flushes and sleeps (see PAUSE_IN_SAVE_ENV)."""

    def __init__(self, f):
        self.f = f
        self.paused = False

    def write(self, data):
        n = self.f.write(data)
        if not self.paused:
            self.paused = True
            self.f.flush()
            os.fsync(self.f.fileno())
            time.sleep(600)
        return n

    def flush(self):
        self.f.flush()


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


class AtomicCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer (same files, same loading) that

    * saves atomically (see the module docstring) and refuses to save NaN / infinite weights
      (:class:`NonFiniteWeightsError`), so every checkpoint on disk is complete and finite;
    * resumes from the last *complete* checkpoint (:meth:`get_checkpoint_file`);
    * keeps the result of the last load in ``incompatible`` (missing / unexpected keys and wrong
      shapes), for callers that must not run a partly random model (``--eval-only``).
    """

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.incompatible = None
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
        pause = os.environ.get(PAUSE_IN_SAVE_ENV) == basename
        atomic_write(path, lambda f: torch.save(data, _PausingWriter(f) if pause else f))
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

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible
