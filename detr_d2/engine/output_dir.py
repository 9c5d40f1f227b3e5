"""One training run per OUTPUT_DIR.

Two trainings into one folder would overwrite each other's checkpoints and interleave their
metrics.json, both exiting 0. A training (rank 0) holds an exclusive lock on
``OUTPUT_DIR/train.lock`` for its whole life: a POSIX record lock (``fcntl.lockf``), which the
kernel drops when the process ends, however it ends, so a killed run never leaves a stale lock
(unlike ``flock``, it is not shared with forked dataloader workers, which may outlive a killed
parent by seconds). The file says who holds it (pid, host, start time), and a second training
stops at once naming the folder and the holder.

``--eval-only`` takes no lock. While a training holds the folder, an evaluation writes its log,
config.yaml and results into ``OUTPUT_DIR/eval-<UTC time>/`` instead, so that nothing of the
training's is touched (with ``--resume`` it evaluates the training's last complete checkpoint).
"""

import fcntl
import os
import socket
import time
from typing import Optional

import torch
from detectron2.utils import comm

from .checkpoint import DetrCheckpointer

__all__ = ["OutputDirInUseError", "hold_output_dir", "redirect_eval_output", "release_output_dirs"]

LOCK_NAME = "train.lock"
_held = {}  # folder -> open lock file of this process, released by release_output_dirs


class OutputDirInUseError(RuntimeError):
    """Another training run holds the OUTPUT_DIR."""


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or "a process that is starting"
    except OSError:
        return "unknown"


def hold_output_dir(output_dir: str) -> None:
    """Lock ``output_dir`` for this process's training (creating the folder), or raise
    :class:`OutputDirInUseError` naming the folder and the run that holds it. Released by
    :func:`release_output_dirs` or when the process ends. Holding it already: nothing to do."""
    output_dir = os.path.abspath(output_dir)
    if output_dir in _held:
        return
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EACCES or EAGAIN: another process holds it
        os.close(fd)
        raise OutputDirInUseError(
            f"OUTPUT_DIR {output_dir} is in use by another training run "
            f"({_holder(path)}). Give this run another OUTPUT_DIR, or wait for that one to end."
        ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n".encode())
    _held[output_dir] = fd


def release_output_dirs() -> None:
    """Release the locks :func:`hold_output_dir` took in this process."""
    while _held:
        os.close(_held.popitem()[1])  # closing the descriptor drops the lock


def _training_holder(output_dir: str) -> Optional[str]:
    """The holder of ``output_dir``'s lock while a training holds it, else None."""
    if os.path.abspath(output_dir) in _held:
        return None  # this process's own training (an in-process caller)
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return _holder(path)
    finally:
        os.close(fd)  # also drops the shared lock, if taken


def redirect_eval_output(cfg, resume: bool) -> Optional[str]:
    """For ``--eval-only``, before ``cfg.freeze()``: while a training holds cfg.OUTPUT_DIR, move
    cfg.OUTPUT_DIR to a new ``eval-<time>`` folder inside it (the same on every rank); with
    ``resume``, MODEL.WEIGHTS becomes the training's last complete checkpoint. Returns the
    message to log when it moved (the logger writes to the new folder), else None."""
    holder = _training_holder(cfg.OUTPUT_DIR)
    if comm.get_world_size() > 1:
        holder = comm.all_gather(holder)[0]  # rank 0 decides for all
    if holder is None:
        return
    if resume:
        last = DetrCheckpointer(torch.nn.Module(), cfg.OUTPUT_DIR).get_checkpoint_file()
        cfg.MODEL.WEIGHTS = last or cfg.MODEL.WEIGHTS
    name = time.strftime("eval-%Y%m%d-%H%M%S", time.gmtime())
    if comm.get_world_size() > 1:
        name = comm.all_gather(name)[0]
    training_dir, cfg.OUTPUT_DIR = cfg.OUTPUT_DIR, os.path.join(cfg.OUTPUT_DIR, name)
    return (
        f"OUTPUT_DIR {training_dir} is in use by a training run ({holder}): this evaluation "
        f"writes its log, config and results to {cfg.OUTPUT_DIR}"
    )
