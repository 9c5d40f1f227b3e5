"""The training log line with DETR's metrics: Detectron2's ``CommonMetricPrinter`` prints only
histories named "*loss*", so ``class_error`` reached metrics.json only."""

from detectron2.utils.events import CommonMetricPrinter, get_event_storage


class MetricPrinter(CommonMetricPrinter):
    """``CommonMetricPrinter`` whose line also shows the window median of ``class_error``."""

    def __init__(self, max_iter):
        super().__init__(max_iter)
        self._log, self.logger = self.logger, self  # write() logs through info() below

    def info(self, line: str) -> None:
        history = get_event_storage().histories().get("class_error")
        extra = "" if history is None else f"  class_error: {history.median(self._window_size):.4g}"
        self._log.info(line + extra)
