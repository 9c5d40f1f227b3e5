"""The training log line with DETR's metrics: Detectron2's ``CommonMetricPrinter`` prints only
histories named "*loss*", so ``class_error`` reached metrics.json only."""

from detectron2.utils.events import CommonMetricPrinter, get_event_storage


class MetricPrinter(CommonMetricPrinter):
    """``CommonMetricPrinter`` whose line also shows the window median of ``metrics``."""

    def __init__(self, max_iter, window_size: int = 20, metrics=("class_error",)):
        super().__init__(max_iter, window_size)
        self.metrics = metrics
        self._log, self.logger = self.logger, self  # write() logs through info() below

    def info(self, line: str) -> None:
        histories = get_event_storage().histories()
        window = self._window_size
        extra = [f"{k}: {histories[k].median(window):.4g}" for k in self.metrics if k in histories]
        self._log.info("  ".join([line] + extra))
