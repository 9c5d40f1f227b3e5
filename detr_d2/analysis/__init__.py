"""Model analysis for the paper's tables: FLOPs with attention counted, timing, Table 1, curves.

Used by tools/analyze_model.py, tools/benchmark.py, tools/compare.py and tools/plot_metrics.py.
"""

from .flop_handles import activation_count_analysis, attention_macs, flop_count_analysis

__all__ = ["activation_count_analysis", "attention_macs", "flop_count_analysis"]
