"""Orderly end of a multi-process run."""

import torch.distributed as dist
from detectron2.utils import comm


def shut_down_process_group():
    """Destroy the process groups that `detectron2.engine.launch` created, once every rank is here.

    A GLOO (CPU) worker that exits with its process group still alive can abort in the C++
    destructors ("terminate called without an active exception", SIGABRT), which `launch` reports
    as a failed run although the work finished. Call it at the end of a function run by `launch`;
    on a single process (no process group) it does nothing.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    comm.synchronize()
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None  # destroyed with the others; a new launch creates it again
