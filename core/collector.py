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
import threading
from collections.abc import Iterator

__all__ = ["collector_paused"]

_lock = threading.Lock()  # held only to count, never across the block (which may await)
_depth = 0  # blocks under way, in every thread
_enable_after = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, and enable it again after if it was enabled.

    The collector is one switch for the whole process, and blocks overlap: nested ones, a
    restore that pauses across an ``await`` on the loop's thread, a store's writer committing a
    big batch in its driver's thread. So the blocks are counted under a lock: the first to begin
    notes whether the collector was on and turns it off, the last to end turns it back on if it
    was. (Each block reading and setting the switch by itself, a block that began while another
    was ending could find the collector off, and leave it off for good.) Cycles made meanwhile
    are collected by the first pass after the last block.
    """
    global _depth, _enable_after
    with _lock:
        if _depth == 0:
            _enable_after = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _enable_after:
                gc.enable()
