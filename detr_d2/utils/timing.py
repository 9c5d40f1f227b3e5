"""Timing loops of tools/benchmark.py and tools/gpu_check.py: inference images/s, training
iterations/s.

Each timed iteration runs one batch already in memory (data loading is not timed, as in
detectron2's benchmark), synchronizing CUDA before reading the clock. Warm-up iterations run
first and are discarded. The summary reports the median and the spread (min, quartiles, max) of
the per-iteration times, converted to a throughput.
"""

import itertools
import logging
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

__all__ = ["summarize", "time_iterations", "benchmark_inference", "benchmark_train"]

logger = logging.getLogger(__name__)


def summarize(seconds: Sequence[float], items_per_iter: int = 1) -> Dict[str, float]:
    """Throughput statistics of per-iteration times. "*_per_s" values count ``items_per_iter``
    items (e.g. images) per iteration; the fast quartile is q75 (from the 25th-percentile time)."""
    t = np.asarray(seconds, dtype=np.float64)
    q25, median, q75 = np.percentile(t, [25, 50, 75])
    return {
        "iterations": len(t),
        "median_s": float(median),
        "mean_s": float(t.mean()),
        "min_s": float(t.min()),
        "max_s": float(t.max()),
        "median_per_s": items_per_iter / float(median),
        "q25_per_s": items_per_iter / float(q75),
        "q75_per_s": items_per_iter / float(q25),
        "min_per_s": items_per_iter / float(t.max()),
        "max_per_s": items_per_iter / float(t.min()),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(
    step: Callable[[object], None],
    batches: List,
    iters: int,
    warmup: int,
    device: torch.device,
    log_period: int = 10,
    name: str = "",
) -> List[float]:
    """Run ``step(batch)`` ``warmup`` + ``iters`` times, cycling over ``batches``; returns the
    wall-clock seconds of the ``iters`` timed calls. Logs progress every ``log_period`` calls."""
    times = []
    start = time.perf_counter()
    for i, batch in enumerate(itertools.islice(itertools.cycle(batches), warmup + iters)):
        _sync(device)
        t0 = time.perf_counter()
        step(batch)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        done = i + 1
        if log_period > 0 and (done % log_period == 0 or done == warmup + iters):
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (warmup + iters - done)
            phase = "warm-up" if done <= warmup else "timed"
            logger.info(
                f"{name} {done}/{warmup + iters} ({phase}), {elapsed:.1f}s elapsed, ETA {eta:.1f}s"
            )
    return times


def benchmark_inference(
    model: torch.nn.Module, batches: List[List[Dict]], iters: int, warmup: int, log_period: int = 10
) -> Dict[str, float]:
    """Images/s of ``model`` in eval mode without autograd (``median_per_s`` etc.)."""
    model.eval()

    def step(batch):
        with torch.no_grad():
            model(batch)

    times = time_iterations(step, batches, iters, warmup, model.device, log_period, "inference")
    return summarize(times, items_per_iter=len(batches[0]))


def benchmark_train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: List[List[Dict]],
    iters: int,
    warmup: int,
    log_period: int = 10,
) -> Dict[str, float]:
    """Training iterations/s: forward, the sum of the loss dict, backward and optimizer step."""
    model.train()

    def step(batch):
        losses = sum(model(batch).values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()

    times = time_iterations(step, batches, iters, warmup, model.device, log_period, "train")
    return summarize(times, items_per_iter=1)
