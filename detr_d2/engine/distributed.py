"""Orderly end of a multi-process run."""

import torch.distributed as dist
from detectron2.utils import comm


def shut_down_process_group():
    """At the end of a function `launch` runs: destroy the process groups once every rank is here.
    A GLOO worker exiting with its group alive can SIGABRT in C++ destructors, a "failed" run."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    comm.synchronize()
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None  # destroyed with the others; a new launch creates it again
