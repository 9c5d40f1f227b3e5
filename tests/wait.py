"""Waiting on a train_net subprocess: until a condition holds, failing if it exits or times out."""

import time


def wait_for(condition, proc, timeout: float = 400.0, poll: float = 0.05) -> None:
    start = time.time()
    while not condition():
        assert proc.poll() is None, f"training exited early ({proc.returncode})"
        assert time.time() - start < timeout, "timed out"
        time.sleep(poll)
