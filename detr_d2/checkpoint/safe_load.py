"""Load third-party ``.pth`` and ``.pkl`` files without running code from them (unpickling can call
any importable function): ``torch.load(weights_only=True)`` plus the ``argparse.Namespace`` of the
official DETR checkpoints, and for ``.pkl`` an unpickler that resolves only numpy's globals."""

import argparse
import pickle
import re
from typing import Any

import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list; nothing of it was executed."""


def load_checkpoint_safely(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with ``argparse.Namespace`` allowed;
    :class:`UnsafeCheckpointError` naming the file and the refused global for any other pickled
    object (never retried with ``weights_only=False``)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        # torch names the first global it refused as "GLOBAL <module>.<name>"
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found:
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: it contains a pickled {found.group(1)}, which is not a "
                "tensor, a plain container or an allowed class (argparse.Namespace). Loading it "
                "could run code; the file was not loaded."
            ) from e
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", message, re.DOTALL)
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: weights-only unpickling failed "
            f"({detail.group(1) if detail else message.splitlines()[0]}); the file is corrupt or "
            "holds more than tensors and plain containers. It was not loaded."
        ) from e


# What Detectron2 model-zoo and ImageNet ``.pkl`` files hold besides plain containers: numpy
# arrays, dtypes and scalars (numpy 1 names them numpy.core, numpy 2 numpy._core), the latin-1
# encoding of bytes that a protocol-2 pickle written by Python 3 uses, and OrderedDict.
SAFE_PICKLE_GLOBALS = frozenset(
    {("collections", "OrderedDict"), ("_codecs", "encode")}
    | {("numpy", n) for n in ("ndarray", "dtype")}
    | {(f"numpy.{c}.multiarray", n) for c in ("core", "_core") for n in ("_reconstruct", "scalar")}
)


def load_pickle_safely(path: str) -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy arrays, else
    :class:`UnsafeCheckpointError`. latin1: how Python 2 pickles (the model zoo's) decode."""

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module, name):  # raises before an unknown global is looked up
            if (module, name) in SAFE_PICKLE_GLOBALS:
                return super().find_class(module, name)
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: it contains a pickled {module}.{name}, which is not a "
                "plain container or a numpy array / dtype (all that Detectron2 .pkl weights "
                "hold). Loading it could run code; the file was not loaded."
            )

    with open(path, "rb") as f:
        return RestrictedUnpickler(f, encoding="latin1").load()
