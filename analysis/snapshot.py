"""Reading chunks of the log in a background thread, every chunk from one read snapshot.

SQLite releases the GIL while it steps through a query, so a thread that runs the chunk queries
keeps one core busy in SQLite while the caller's thread decodes the previous chunk on the other.

All chunks are read on ONE connection inside ONE read transaction (``BEGIN``, then the first
SELECT fixes the snapshot, ``ROLLBACK`` at the end), as a single-threaded loop would: a log that
another process is appending to (WAL) still loads as one consistent snapshot. The connection is
used by the reader thread only, until it has ended; the caller may only interrupt it.

Whatever the reader raises (an ``sqlite3.Error`` above all) reaches the caller, raised again in
the caller's thread as the same exception object; the caller's own exceptions (a decoding error,
``KeyboardInterrupt``) stop the reader, interrupting a running query, and the thread is always
joined before :func:`chunks_in_background` returns or raises.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ChunkRead", "Chunks", "chunks_in_background"]

ChunkRead = Callable[[sqlite3.Connection, int, int], Any]
"""Reads the chunk of positions ``start`` (included) to ``stop`` (excluded) on the connection: one row."""

AHEAD = 2
"""Chunk rows the reader may hold ready before the caller takes them: bounds the text held at once."""

_END = object()


class Chunks(threading.Thread):
    """The thread that reads the chunks, and, for the caller, the chunk rows it reads in turn."""

    def __init__(self, connection: sqlite3.Connection, read: ChunkRead, chunk: int) -> None:
        super().__init__(name="poolwarden-load-reader", daemon=True)
        self.connection, self.read, self.chunk = connection, read, chunk
        self.rows: queue.Queue[Any] = queue.Queue(maxsize=AHEAD)
        self.stopping = threading.Event()
        self.ended = False  # the caller has taken _END: the reader is done with the connection
        self._span: int | None = None

    def run(self) -> None:
        try:
            self._read()
        except BaseException as error:  # handed to the caller's thread, which raises it
            self.rows.put(error)
        finally:
            self.rows.put(_END)

    def _read(self) -> None:
        connection = self.connection
        connection.execute("BEGIN")  # one snapshot for every chunk, whatever a writer does meanwhile
        try:
            low, high = connection.execute("SELECT min(position), max(position) FROM events").fetchone()
            self.rows.put(0 if low is None else high - low + 1)
            if low is None:
                return
            for start in range(low, high + 1, self.chunk):
                if self.stopping.is_set():
                    return
                self.rows.put(self.read(connection, start, start + self.chunk))
        finally:
            connection.rollback()  # a read transaction: nothing to keep, its snapshot is let go

    def _next(self) -> Any:
        item = self.rows.get()
        if item is _END:
            self.ended = True
        elif isinstance(item, BaseException):
            raise item
        return item

    def span(self) -> int:
        """The number of positions from the snapshot's first event to its last (0 for none).

        An upper bound on the events the chunks hold; waits until the reader has read it.
        """
        if self._span is None:
            self._span = int(self._next())  # the reader's first item, unless it failed
        return self._span

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        self.span()
        while (row := self._next()) is not _END:
            yield row

    def stop(self) -> None:
        """Make the reader end soon, and wait until it has."""
        if not self.ended:
            self.stopping.set()
            self.connection.interrupt()  # a chunk query under way ends now, with an error nobody reads
            while self.rows.get() is not _END:  # make room for any put it is blocked in
                pass
        self.join()


@contextlib.contextmanager
def chunks_in_background(connection: sqlite3.Connection, read: ChunkRead, chunk: int) -> Iterator[Chunks]:
    """What ``read`` returns for successive position ranges, read by a background thread.

    :param connection: opened with ``isolation_level=None`` and ``check_same_thread=False``; the
        reader uses it alone until the block ends.
    :param read: called once per range of ``chunk`` positions, from the log's first position to
        its last in the snapshot, with the connection and the range's start and stop (excluded).
    """
    reader = Chunks(connection, read, chunk)
    reader.start()
    try:
        yield reader
    finally:
        reader.stop()
