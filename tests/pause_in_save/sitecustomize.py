"""Test-only fault injection, active only in a process started with this folder on PYTHONPATH
and DETR_D2_TEST_PAUSE_IN_SAVE=<checkpoint file name>: the save of that checkpoint stops for 10
minutes after its first bytes are on disk, so a test can kill the process mid-write."""

import os
import time

PAUSE_IN_SAVE_ENV = "DETR_D2_TEST_PAUSE_IN_SAVE"


class _PausingWriter:
    """Forwards writes to ``f``; after the first one, flushes, fsyncs and sleeps."""

    def __init__(self, f):
        self.f = f
        self.paused = False

    def write(self, data):
        n = self.f.write(data)
        if not self.paused:
            self.paused = True
            self.f.flush()
            os.fsync(self.f.fileno())
            time.sleep(600)
        return n

    def flush(self):
        self.f.flush()


if os.environ.get(PAUSE_IN_SAVE_ENV):
    import torch

    _save = torch.save
    _prefix = os.environ[PAUSE_IN_SAVE_ENV] + ".tmp-"  # the atomic save's temporary file

    def _pausing_save(obj, f, *args, **kwargs):
        if os.path.basename(str(getattr(f, "name", ""))).startswith(_prefix):
            f = _PausingWriter(f)
        return _save(obj, f, *args, **kwargs)

    torch.save = _pausing_save
