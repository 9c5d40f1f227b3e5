"""Log records of a logger in a test (caplog misses them once setup_logger stopped propagation)."""

import contextlib
import logging


@contextlib.contextmanager
def log_records(name):
    """The records logger ``name`` (and its children) emits inside the block, DEBUG and up."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
