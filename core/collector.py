"""Pausing Python's cyclic garbage collector around a bulk build of objects that form no cycle.

Each full pass of the collector visits every live container in the process. Building tens of
thousands of objects at once (restoring the breakers of a log, loading a log into frames) sets
off passes again and again over the same live objects, and since what is being built holds no
reference cycle, those passes free nothing: they only add time (a third of a 10,000-breaker
restore, measured). Reference counting still frees everything at once while the collector waits.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_paused"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, and enable it again after if it was enabled.

    Nested or overlapping uses are safe: only the one that found the collector enabled turns it
    back on (an inner block may so run its end with the collector on again, which costs time,
    never correctness). Cycles made meanwhile are collected by the first pass after the block.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
