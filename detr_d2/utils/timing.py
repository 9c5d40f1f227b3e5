"""Timing loops of tools/benchmark.py and tools/gpu_check.py. Each timed call runs on data already
in memory (data loading is not timed), with CUDA synchronized before reading the clock; warm-up
calls run first and are discarded."""

import itertools
import logging
import time
from typing import Callable, Dict, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def summarize(seconds: Sequence[float], items_per_iter: int = 1) -> Dict[str, float]:
    """Throughput statistics of per-iteration times. "*_per_s" values count ``items_per_iter``
    items (e.g. images) per iteration; the fast quartile is q75 (from the 25th-percentile time)."""
    t = np.asarray(seconds, dtype=np.float64)
    q25, median, q75 = (float(q) for q in np.percentile(t, [25, 50, 75]))
    lo, hi = float(t.min()), float(t.max())
    stats = dict(iterations=len(t), median_s=median, mean_s=float(t.mean()), min_s=lo, max_s=hi)
    per_s = {"median": median, "q25": q75, "q75": q25, "min": hi, "max": lo}
    return dict(stats, **{f"{k}_per_s": items_per_iter / v for k, v in per_s.items()})


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def alternating_times(fns: Dict[str, Callable], iters: int, warmup: int, device, log_period=1):
    """Seconds of each function of ``fns`` in the ``iters`` timed rounds after ``warmup`` untimed
    ones; the functions run in turn within every round, so that a change of machine load weighs
    on all alike. Logs progress every ``log_period`` rounds (0: never)."""
    times, total, start = {name: [] for name in fns}, warmup + iters, time.perf_counter()
    for done in range(1, total + 1):
        seconds = {name: _timed(fn, device) for name, fn in fns.items()}
        if done > warmup:
            for name, s in seconds.items():
                times[name].append(s)
        if log_period > 0 and (done % log_period == 0 or done == total):
            elapsed, phase = time.perf_counter() - start, "warm-up" if done <= warmup else "timed"
            runs = ", ".join(f"{name} {s:.4f} s" for name, s in seconds.items())
            eta = elapsed / done * (total - done)
            logger.info(f"{done}/{total} ({phase}) {runs}; {elapsed:.1f}s elapsed, ETA {eta:.1f}s")
    return times


def benchmark_inference(model, batches, iters: int, warmup: int, log_period=10) -> Dict[str, float]:
    """Images/s of ``model`` in eval mode without autograd (``median_per_s`` etc.), cycling over
    ``batches`` (lists of input dicts)."""
    model.eval()
    cycle = itertools.cycle(batches)

    def inference():
        with torch.no_grad():
            model(next(cycle))

    times = alternating_times({"inference": inference}, iters, warmup, model.device, log_period)
    return summarize(times["inference"], items_per_iter=len(batches[0]))
