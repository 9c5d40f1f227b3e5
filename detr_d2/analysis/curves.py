"""Training curves (losses, lr, AP over iterations) from detectron2's metrics.json."""

from typing import Dict, List, Sequence, Tuple

# A bare Figure renders with Agg when saved, without pyplot's global backend state.
from matplotlib.figure import Figure

from .table import read_metrics

__all__ = ["DEFAULT_KEYS", "metric_series", "plot_curves"]

DEFAULT_KEYS = ("total_loss", "loss_ce", "loss_bbox", "loss_giou", "lr", "bbox/AP", "bbox/AP50")


def metric_series(records: List[Dict], key: str) -> Tuple[List[int], List[float]]:
    """(iterations, values) of ``key``, sorted by iteration. A resumed run appends iterations it
    had already logged; the later record of an iteration wins."""
    by_iter = {r["iteration"]: r[key] for r in records if key in r and "iteration" in r}
    iters = sorted(by_iter)
    return iters, [by_iter[i] for i in iters]


def plot_curves(
    metrics_path: str, output_path: str, keys: Sequence[str] = DEFAULT_KEYS, columns: int = 2
) -> List[str]:
    """One subplot per key found in ``metrics_path``, saved as an image to ``output_path``.
    Returns the keys plotted; raises ValueError if none of ``keys`` is in the file."""
    records = read_metrics(metrics_path)
    series = {k: metric_series(records, k) for k in keys}
    series = {k: s for k, s in series.items() if s[0]}
    if not series:
        raise ValueError(f"none of {list(keys)} in {metrics_path}")
    rows = (len(series) + columns - 1) // columns
    fig = Figure(figsize=(5 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (key, (iters, values)) in zip(axes.flat, series.items()):
        ax.plot(iters, values, marker="o" if len(iters) < 20 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if key.startswith("loss") or key == "total_loss":
            ax.set_yscale("log" if min(values) > 0 else "linear")
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(output_path, dpi=100)
    return list(series)
