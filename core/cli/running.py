"""How a command stops on SIGTERM: as on Ctrl-C, by cancelling its work, never mid-statement.

``asyncio.run`` turns Ctrl-C into a cancellation of the main task (so a pool closes, flushes its
log and stops its browsers), but only when SIGINT has its default handler. A shell's background
job starts with SIGINT ignored, and a handler raising ``KeyboardInterrupt`` from a signal lands
anywhere: inside a WebSocket frame parser it broke the connection's state, and the pool's close
then waited on sockets that could no longer close (a soak SIGTERMed in the background had not
ended 30 s later). So an async command runs through :func:`run_async`, which has the event loop
take SIGTERM and cancel the main task, whatever SIGINT is set to; a sync command keeps
:func:`sigterm_as_sigint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

__all__ = ["run_async", "sigterm_as_sigint", "terminated"]

T = TypeVar("T")

_came = threading.Event()


def terminated() -> bool:
    """Whether SIGTERM came while a command ran."""
    return _came.is_set()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with SIGTERM cancelling ``main`` as Ctrl-C does; a cancellation it
    made ends in ``KeyboardInterrupt`` (the command line's exit code for a signal)."""

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        previous = signal.getsignal(signal.SIGTERM)
        installed = False
        if previous is not signal.SIG_IGN and threading.current_thread() is threading.main_thread():

            def on_sigterm() -> None:
                _came.set()
                task.cancel()

            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, on_sigterm)
                installed = True
        try:
            return await main
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)
                signal.signal(signal.SIGTERM, previous)  # remove_signal_handler left SIG_DFL

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if terminated():
            raise KeyboardInterrupt from None
        raise


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGTERM stops a sync command the way Ctrl-C does: it is handed to the
    SIGINT handler in force (``KeyboardInterrupt`` when that is ignored). Yields a function
    telling whether SIGTERM came. A SIGTERM that the parent set to be ignored stays ignored; off
    the main thread nothing is installed (Python handles signals there only). An async command
    (:func:`run_async`) has its event loop take SIGTERM over for its run."""
    _came.clear()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _came.set()
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job of a shell): stop all the same
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield terminated
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield terminated
        return
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)
