"""Load third-party ``.pth`` and ``.pkl`` files without running code from them (unpickling can call
any importable function): ``torch.load(weights_only=True)`` plus the ``argparse.Namespace`` of the
official DETR checkpoints, and for ``.pkl`` an unpickler that resolves only numpy's globals."""

import argparse
import pickle
import re
from typing import Any, Iterable

import torch

# Classes the official DETR checkpoints need beyond what weights_only allows by default.
SAFE_GLOBALS = (argparse.Namespace,)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list; nothing of it was executed."""


def load_checkpoint_safely(
    path: str, extra_safe_globals: Iterable[type] = (), map_location: Any = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)`` with ``argparse.Namespace`` and
    ``extra_safe_globals`` allowed; :class:`UnsafeCheckpointError` naming the file and the refused
    global for any other pickled object (never retried with ``weights_only=False``)."""
    allowed = list(SAFE_GLOBALS) + list(extra_safe_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        # torch names the first global it refused as "GLOBAL <module>.<name>"
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", message, re.DOTALL)
            reason = detail.group(1) if detail else message.splitlines()[0]
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: weights-only unpickling failed ({reason}); the file is "
                "corrupt or holds more than tensors and plain containers. It was not loaded."
            ) from e
        allowed_names = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in allowed)
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it contains a pickled {found.group(1)}, which is not a "
            f"tensor, a plain container or an allowed class ({allowed_names}). Loading it could "
            "run code; the file was not loaded."
        ) from e


# What Detectron2 model-zoo and ImageNet ``.pkl`` files hold besides plain containers: numpy
# arrays, dtypes and scalars (numpy 1 names them numpy.core, numpy 2 numpy._core), the latin-1
# encoding of bytes that a protocol-2 pickle written by Python 3 uses, and OrderedDict.
SAFE_PICKLE_GLOBALS = frozenset(
    {("collections", "OrderedDict"), ("_codecs", "encode")}
    | {("numpy", n) for n in ("ndarray", "dtype")}
    | {(f"numpy.{c}.multiarray", n) for c in ("core", "_core") for n in ("_reconstruct", "scalar")}
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of SAFE_PICKLE_GLOBALS; any other raises before it is looked up."""

    def __init__(self, f, path: str, **kwargs):
        super().__init__(f, **kwargs)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"Refusing to load {self.path}: it contains a pickled {module}.{name}, which is not "
            "a plain container or a numpy array / dtype (all that Detectron2 .pkl weights hold). "
            "Loading it could run code; the file was not loaded."
        )


def load_pickle_safely(path: str, encoding: str = "latin1") -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy arrays, else
    :class:`UnsafeCheckpointError`. latin1: how Python 2 pickles (the model zoo's) decode."""
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path, encoding=encoding).load()
