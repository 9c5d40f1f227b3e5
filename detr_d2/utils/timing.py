"""Timing loops of tools/benchmark.py and tools/gpu_check.py. Each timed call runs on data already
in memory (data loading is not timed), with CUDA synchronized before reading the clock; warm-up
calls run first and are discarded."""

import itertools
import logging
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

__all__ = ["summarize", "time_iterations", "alternating_times", "benchmark_inference"]
__all__ += ["benchmark_train"]

logger = logging.getLogger(__name__)


def summarize(seconds: Sequence[float], items_per_iter: int = 1) -> Dict[str, float]:
    """Throughput statistics of per-iteration times. "*_per_s" values count ``items_per_iter``
    items (e.g. images) per iteration; the fast quartile is q75 (from the 25th-percentile time)."""
    t = np.asarray(seconds, dtype=np.float64)
    q25, median, q75 = (float(q) for q in np.percentile(t, [25, 50, 75]))
    lo, hi = float(t.min()), float(t.max())
    stats = {"iterations": len(t), "median_s": median, "mean_s": float(t.mean())}
    stats.update(min_s=lo, max_s=hi)
    per_s = {"median": median, "q25": q75, "q75": q25, "min": hi, "max": lo}
    return dict(stats, **{f"{k}_per_s": items_per_iter / v for k, v in per_s.items()})


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of ``fn()``, CUDA synchronized before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


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
    times, total, start = [], warmup + iters, time.perf_counter()
    for done, batch in enumerate(itertools.islice(itertools.cycle(batches), total), 1):
        seconds = _timed(lambda: step(batch), device)
        if done > warmup:
            times.append(seconds)
        if log_period > 0 and (done % log_period == 0 or done == total):
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (total - done)
            phase = "warm-up" if done <= warmup else "timed"
            logger.info(f"{name} {done}/{total} ({phase}), {elapsed:.1f}s elapsed, ETA {eta:.1f}s")
    return times


def alternating_times(
    fns: Dict[str, Callable], iters: int, warmup: int, device: torch.device
) -> Dict[str, List[float]]:
    """Seconds of each function of ``fns``, run in turn within every round, so that a change of
    machine load weighs on all alike."""
    times = {name: [] for name in fns}
    for r in range(warmup + iters):
        seconds = {name: _timed(fn, device) for name, fn in fns.items()}
        if r >= warmup:
            for name, s in seconds.items():
                times[name].append(s)
            runs = ", ".join(f"{name} {s:.4f} s" for name, s in seconds.items())
            logger.info(f"  {r - warmup + 1}/{iters}: {runs}")
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
    model, optimizer, batches, iters: int, warmup: int, log_period: int = 10
) -> Dict:
    """Training iterations/s: forward, the sum of the loss dict, backward and optimizer step."""
    model.train()

    def step(batch):
        losses = sum(model(batch).values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()

    times = time_iterations(step, batches, iters, warmup, model.device, log_period, "train")
    return summarize(times, items_per_iter=1)
