"""Load third-party ``.pth`` files without running code from them.

A ``.pth`` file is a pickle, and unpickling can call any importable function (``os.system`` among
them). ``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; on top of that
we allow the one class the official DETR checkpoints carry, ``argparse.Namespace`` (their
``"args"`` entry: strings, numbers, bools, lists and None). Anything else is refused, never retried
with ``weights_only=False``.
"""

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
    """``torch.load(path, weights_only=True)`` with ``argparse.Namespace`` (and the classes in
    ``extra_safe_globals``, for a caller that trusts them) allowed, mapped to ``map_location``.

    Raises :class:`UnsafeCheckpointError`, naming the file and the refused global, when the file
    holds any other pickled object.
    """
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
