"""One training run per OUTPUT_DIR: rank 0 holds a POSIX record lock (``fcntl.lockf``: dropped
by the kernel however the process ends, and unlike ``flock`` not shared with forked dataloader
workers) on ``OUTPUT_DIR/train.lock``, which names its holder. An evaluation beside a running
training writes to ``OUTPUT_DIR/eval-<UTC time>/`` instead."""

import fcntl
import os
import socket
import time
from typing import Optional

import torch
from detectron2.utils import comm

from .checkpoint import DetrCheckpointer

LOCK_NAME = "train.lock"
_STARTING = "a process that is starting"  # the holder of a lock file not written yet
_held = {}  # folder -> open lock file of this process, released by release_output_dirs


class OutputDirInUseError(RuntimeError):
    """Another training run holds the OUTPUT_DIR."""


def hold_output_dir(output_dir: str) -> None:
    """Lock ``output_dir`` (created) for this process, or :class:`OutputDirInUseError` naming it
    and its holder; released by :func:`release_output_dirs` or when the process ends."""
    output_dir = os.path.abspath(output_dir)
    if output_dir in _held:
        return
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EACCES or EAGAIN: another process holds it
        holder = os.read(fd, 4096).decode().strip() or _STARTING
        os.close(fd)
        raise OutputDirInUseError(
            f"OUTPUT_DIR {output_dir} is in use by another training run "
            f"({holder}). Give this run another OUTPUT_DIR, or wait for that one to end."
        ) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n".encode())
    _held[output_dir] = fd


def release_output_dirs() -> None:
    while _held:
        os.close(_held.popitem()[1])  # closing the descriptor drops the lock


def _training_holder(output_dir: str) -> Optional[str]:
    """The holder of ``output_dir``'s lock while a training holds it, else None."""
    if os.path.abspath(output_dir) in _held:
        return None  # this process's own training (an in-process caller)
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        f = open(path)
    except OSError:
        return None
    with f:  # closing it drops the shared lock, if taken
        try:
            fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return f.read().strip() or _STARTING
    return None


def redirect_eval_output(cfg, resume: bool) -> Optional[str]:
    """``--eval-only``, before ``cfg.freeze()``: while a training holds cfg.OUTPUT_DIR, move it to
    a new ``eval-<time>`` folder inside (the same on every rank); with ``resume``, MODEL.WEIGHTS
    becomes the training's last complete checkpoint. Returns the message to log, or None."""
    name = time.strftime("eval-%Y%m%d-%H%M%S", time.gmtime())
    holder = _training_holder(cfg.OUTPUT_DIR)
    holder, name = comm.all_gather((holder, name))[0]  # rank 0 decides for all
    if holder is None:
        return
    if resume:
        last = DetrCheckpointer(torch.nn.Module(), cfg.OUTPUT_DIR).get_checkpoint_file()
        cfg.MODEL.WEIGHTS = last or cfg.MODEL.WEIGHTS
    training_dir, cfg.OUTPUT_DIR = cfg.OUTPUT_DIR, os.path.join(cfg.OUTPUT_DIR, name)
    return (
        f"OUTPUT_DIR {training_dir} is in use by a training run ({holder}): this evaluation "
        f"writes its log, config and results to {cfg.OUTPUT_DIR}"
    )
