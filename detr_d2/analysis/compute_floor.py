"""The compute floor of a model on this CPU: its multiply-adds over the machine's fp32 GEMM rate.

The speed issue's target reads "<= ~1.6x the compute floor": a time below ~1.0x is only possible
with fewer operations (Winograd, lower precision), not with better kernels.
"""

import time
from typing import Dict, List

import torch

from .flop_handles import flop_count_analysis

__all__ = ["gemm_gflops", "model_gflop"]


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best fp32 GEMM rate of ``repeats`` (n, n) x (n, n) products, in GFLOP/s (2 n^3
    floating-point operations each), at the current number of torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def model_gflop(model: torch.nn.Module, inputs: List[Dict]) -> float:
    """Floating-point operations (2 per multiply-add) of one eval forward of ``inputs`` (a
    detectron2 batch), in GFLOP, as counted by Detectron2's FlopCountAnalysis (fvcore) with the
    attention handles; element-wise operations and norms are not counted."""
    analysis = flop_count_analysis(model.eval(), inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return 2 * analysis.total() / 1e9
