"""Loading a PostgreSQL event log into the same DataFrame as an SQLite one, as fast.

The same chunk texts as from SQLite (``analysis/columns.py``: :data:`CHUNK_SELECT_POSTGRES`),
decoded by the same :class:`~poolwarden.analysis.columns.ChunkDecoder`. The server builds the
chunks' texts in two processes at once (two connections, chunks taken in turn) while this one
decodes: a reader thread runs the queries over asyncpg (its own event loop, so a caller inside
a running loop, a notebook, is served too) and hands the rows over, in order, through a bounded
queue. Both connections read in REPEATABLE READ, read-only, from ONE snapshot (the first
exports it, the second sets it, as ``pg_dump --jobs`` does): a log that other hosts append to
loads as one consistent snapshot. The log is never written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import Sequence
from typing import Any

import pandas as pd

from poolwarden.analysis.columns import CHUNK_SELECT_POSTGRES, ChunkDecoder
from poolwarden.errors import SchemaMismatch, SchemaTooNew, StoreError
from poolwarden.storage.migrate import SchemaState, schema_status
from poolwarden.storage.postgres import portable, postgres_url
from poolwarden.storage.postgres_errors import translate

__all__ = ["load_postgres"]

_AHEAD = 2
_END = object()
_CONNECTIONS = 2  # the server builds two chunks at once, in two processes, from one snapshot


class _Reader(threading.Thread):
    """Reads the span, then each chunk's row, into ``rows``; an error is put there as it is."""

    def __init__(self, url: str, sql: str, params: Sequence[Any], chunk: int) -> None:
        super().__init__(name="poolwarden-load-reader", daemon=True)
        self.url, self.sql, self.params, self.chunk = url, sql, params, chunk
        self.rows: queue.Queue[Any] = queue.Queue(maxsize=_AHEAD)
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as error:  # handed to the caller's thread, which raises it
            self.rows.put(error)
        finally:
            self.rows.put(_END)

    async def _read(self) -> None:
        import asyncpg
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        url = postgres_url(self.url)
        where = url.render_as_string(hide_password=True)
        settings = {"application_name": "poolwarden-analysis", "default_transaction_read_only": "on"}
        engine = create_async_engine(url, poolclass=NullPool, connect_args={"server_settings": settings})
        try:
            async with engine.connect() as conn:
                status = await conn.run_sync(schema_status)
        except StoreError:
            raise
        except Exception as error:
            raise translate(error, where) or error from error
        finally:
            await engine.dispose()
        if status.state is SchemaState.TOO_NEW:
            raise SchemaTooNew(
                where,
                status.current,
                status.head,
                f"has schema revision {status.current}, newer than the code's",
            )
        if status.state in (SchemaState.EMPTY, SchemaState.FOREIGN):
            raise SchemaMismatch(where, None, status.head, "holds no poolwarden event log")
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        connections: list[Any] = []
        try:
            for _ in range(_CONNECTIONS):
                connections.append(await asyncpg.connect(dsn, server_settings=settings))
            first, *others = connections
            await first.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = await first.fetchval("SELECT pg_export_snapshot()")
            for other in others:  # the same snapshot: every chunk sees the same log
                await other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                await other.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            low, high = await first.fetchrow("SELECT min(position), max(position) FROM events")
            self.rows.put(0 if low is None else high - low + 1)
            if low is None:
                return
            pending: collections.deque[asyncio.Task[Any]] = collections.deque()
            for index, start in enumerate(range(low, high + 1, self.chunk)):
                if self.stopping.is_set():
                    return
                connection = connections[index % len(connections)]
                query = connection.fetchrow(self.sql, start, start + self.chunk, *self.params)
                pending.append(asyncio.ensure_future(query))
                if len(pending) == len(connections):
                    self.rows.put(tuple(await pending.popleft()))
            while pending:
                self.rows.put(tuple(await pending.popleft()))
        except Exception as error:
            raise translate(error, where) or error from error
        finally:
            for connection in connections:
                with contextlib.suppress(Exception):
                    await connection.close()

    def take(self) -> Any:
        item = self.rows.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stopping.set()
        while self.is_alive() or not self.rows.empty():
            try:
                if self.rows.get(timeout=0.1) is _END:
                    break
            except queue.Empty:
                continue
        self.join()


def load_postgres(url: str, clauses: list[str], params: list[Any], chunk: int) -> pd.DataFrame:
    """The events of the PostgreSQL log at ``url`` matching ``clauses`` (SQLite-style ``?``
    parameters, as :func:`~poolwarden.analysis.load_events` builds them) as its DataFrame."""
    sql = f"{CHUNK_SELECT_POSTGRES} WHERE position >= ? AND position < ?" + "".join(
        f" AND {clause}" for clause in clauses
    )
    sql, _ = portable(sql, [0, 0, *params])
    reader = _Reader(url, sql, params, chunk)
    reader.start()
    try:
        span = int(reader.take())
        decoder = ChunkDecoder(postgres_url(url).render_as_string(hide_password=True), expected=span)
        while (row := reader.take()) is not _END:
            decoder.add(row)
    finally:
        reader.stop()
    return decoder.frame()
