"""Loading the event log into one typed pandas DataFrame, fast, without ever writing to it.

How it is read, and why (a log of 1,000,000 events, ``/tmp/a1m.db`` built by
``poolwarden.bench.analysis.build_log``, on a 2-core machine shared with other work; wall and
CPU seconds, best of several runs): the obvious ``cursor.fetchall()`` builds a tuple and a
Python object per cell, then every column is walked again to type it (``pandas.read_sql``:
6.5 to 9.7 s). Here one query per chunk of events has SQLite write each column as one long
text, in the shape cheapest to decode (``analysis/columns.py``):

- integers and times (as integer microseconds) comma-separated, parsed by ``numpy.fromstring``:
  0.03 s a column where ``json.loads`` plus ``numpy.asarray`` took 0.13 s;
- the ten category columns as one JSON line per event: ~2,700 distinct lines among the million,
  coded with a dictionary, 0.25 s for all ten where a JSON array per column decoded and
  factorised took 1.3 s (``pd.factorize`` 0.12 s a column, a dict lookup 0.06 s, plus decoding
  the strings). SQLite pays 0.7 s for the lines against 0.6 s for ten arrays;
- payloads, already JSON, joined into one array for one ``json.loads`` (0.5 s, a ``json.loads``
  per payload costs 1.5 s).

SQLite releases the GIL while it steps through a query, so a reader thread runs the queries
while this thread decodes the previous chunk (``analysis/snapshot.py``): SQLite's ~1.45 s and
the decoding's ~1.3 s overlap on the two cores. The whole load measured 1.6 to 2.0 s wall
(2.6 to 2.9 s CPU) in the quietest runs, up to 3 s while other work took a core;
the single-threaded JSON-array loader it replaced took 4.6 to 5.6 s (4.6 to 5.5 s CPU) on the
same file in the same runs. Chunks are 10,000 events: the decoding waits little for the first
one, little is left after the last, and no C call of the decoder holds the GIL long enough to
keep the reader waiting (its queries waited 0.015 s in all). The cyclic garbage collector is
paused while the million dicts are made: with it running the load took 0.2 to 0.4 s more.

Re-measured for issue 14 (the same file, CPU seconds, single-threaded): SQLite's texts 1.08 s
(0.36 of it the category lines: per-column texts or ``||`` with separators cost more), decoding
0.86 s (0.42 of it the payload dicts), ~0.1 s of hand-over between the threads. On a machine
where other work holds a core the two threads share one, and the load takes its CPU total
however the work is split, so issue 14 (point 7) cut the total, to ~1.6 s from ~1.85 in fresh
processes run alternately: msgspec decodes the payload and incident arrays (0.16 s where
``json.loads`` took 0.35; orjson is as fast but makes a float of an integer past 64 bits, so it
would change values); an unfiltered chunk is read with a leaner select that leaves out the
positions (a range, when the chunk holds every one) and NULL fences (SQLite 0.97 s); each
category column's codes are made in the integer type pandas keeps them in (it narrowed ten int32
arrays with a copy). A second reader connection on every other chunk (its snapshot taken after
the first's, the same events up to its last position in an append-only log) was tried: no
steadier on the loaded machine, and 20 MB more peak at 3,000,000 events, so not kept. The
frame's memory and what is left of the load's cost are in docs/analysis.md ("How the load is
fast").

Times are read as integer microseconds (SQLite prints a REAL in JSON with 15 significant digits,
too few for epoch seconds), so ``occurred_at`` keeps the store's precision.

The file is opened with ``mode=ro``: the database file is never written. All chunks are read in
one read transaction, so a log another process is appending to (WAL) loads as one consistent
snapshot. SQLite itself may create the ``-wal`` and ``-shm`` files beside a WAL database, since a
reader needs the shared-memory index; a log left by a killed writer (its WAL not checkpointed)
reads in full, the WAL's committed frames included.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from poolwarden.analysis.columns import CHUNK_SELECT, DENSE_CHUNK_SELECT, ChunkDecoder, dense_row
from poolwarden.analysis.select import of_pool
from poolwarden.analysis.snapshot import ChunkRead, chunks_in_background
from poolwarden.collector import collector_paused
from poolwarden.errors import (
    ConfigurationError,
    SchemaMismatch,
    SchemaOutdated,
    SchemaTooNew,
)
from poolwarden.lease import check_pool_name
from poolwarden.storage.migrate import SchemaState, head_revision, schema_status
from poolwarden.storage.postgres import is_postgres_url
from poolwarden.storage.sqlite import check_file, sqlite_url
from poolwarden.storage.sqlite_errors import translate

__all__ = ["TimeLike", "load_events"]

TimeLike = datetime | pd.Timestamp | str | float | int
"""A point in time: an aware datetime or Timestamp, an ISO string (naive means UTC), or epoch seconds."""

CHUNK = 10_000
"""Events per query: small, so that decoding waits little for the first chunk and little is left after
the last, yet large enough that the per-query cost does not show; a chunk's texts are ~2 MB."""


def _path_of(db: str | os.PathLike[str]) -> Path:
    _, path = sqlite_url(db)
    if path is None:
        raise ConfigurationError("an in-memory database holds no log to analyse; give a file path or URL")
    return path


def _epoch(value: TimeLike) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"{value!r} is not a point in time") from error
    if pd.isna(stamp):
        raise ConfigurationError(f"{value!r} is not a point in time")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC)
    return float(stamp.timestamp())


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _where(
    since: TimeLike | None,
    until: TimeLike | None,
    types: str | Sequence[str] | None,
    streams: str | Sequence[str] | None,
) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("occurred_at >= ?")
        params.append(_epoch(since))
    if until is not None:
        clauses.append("occurred_at < ?")
        params.append(_epoch(until))
    wanted_types = _as_list(types)
    if wanted_types is not None:
        clauses.append(f"type IN ({', '.join('?' * len(wanted_types))})")
        params.extend(wanted_types)
    wanted_streams = _as_list(streams)
    if wanted_streams is not None:
        # A name ending in "/" is a prefix (``breaker/`` is every breaker), as in ``poolwarden events``.
        matches: list[str] = []
        for stream in wanted_streams:
            if stream.endswith("/"):
                matches.append("substr(stream, 1, ?) = ?")
                params.extend((len(stream), stream))
            else:
                matches.append("stream = ?")
                params.append(stream)
        clauses.append("(" + (" OR ".join(matches) or "0") + ")")
    return clauses, params


def _check_schema(uri: str, path: Path) -> None:
    """Refuse a file whose schema this code cannot read, with the store's own typed errors."""
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            status = schema_status(connection)
    except sqlite3.Error as error:
        raise _translate(error, path) from error
    except Exception as error:
        translated = translate(error, path)
        if translated is None:
            raise
        raise translated from error
    finally:
        engine.dispose()
    if status.state is SchemaState.TOO_NEW:
        raise SchemaTooNew(
            path,
            status.current,
            status.head,
            f"has schema revision {status.current}, newer than this code's {status.head}",
        )
    if status.state is SchemaState.EMPTY:
        raise SchemaMismatch(path, None, status.head, "holds no poolwarden event log")
    if status.state is SchemaState.FOREIGN:
        raise SchemaMismatch(
            path, None, status.head, "is an SQLite database, but not a poolwarden event store"
        )


def _translate(error: sqlite3.Error, path: Path) -> Exception:
    translated = translate(error, path)
    return translated if translated is not None else error


def _chunk_reader(clauses: list[str], params: list[Any]) -> ChunkRead:
    """How each chunk is read: with the dense select when nothing filters the events, else the full one."""
    where = " WHERE position >= ? AND position < ?" + "".join(f" AND {c}" for c in clauses)
    full = CHUNK_SELECT + where

    def read_full(connection: sqlite3.Connection, start: int, stop: int) -> Any:
        return connection.execute(full, (start, stop, *params)).fetchone()

    if clauses:  # a filter leaves gaps in the positions: the dense select would nearly always miss
        return read_full
    dense = DENSE_CHUNK_SELECT + where

    def read_dense(connection: sqlite3.Connection, start: int, stop: int) -> Any:
        row = dense_row(connection.execute(dense, (start, stop)).fetchone())
        return read_full(connection, start, stop) if row is None else row

    return read_dense


def _read(
    connection: sqlite3.Connection, uri: str, path: Path, clauses: list[str], params: list[Any]
) -> pd.DataFrame:
    with chunks_in_background(connection, _chunk_reader(clauses, params), CHUNK) as chunks:
        _check_schema(uri, path)  # while the reader starts
        decoder = ChunkDecoder(path, expected=chunks.span())
        for row in chunks:
            decoder.add(row)
    return decoder.frame()


def load_events(
    db_or_url: str | os.PathLike[str],
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    types: str | Sequence[str] | None = None,
    streams: str | Sequence[str] | None = None,
    pool: str | None = None,
) -> pd.DataFrame:
    """The events of the log at ``db_or_url`` as a DataFrame, one row per event, in position order.

    :param db_or_url: a file path, an ``sqlite://`` URL or a PostgreSQL URL
        (``analysis/load_postgres.py``). The log is only read.
    :param since: keep events that occurred at or after this time.
    :param until: keep events that occurred before this time.
    :param types: keep events of these types (one name or several).
    :param streams: keep events of these streams; a name ending in ``/`` keeps every stream
        starting with it (``"breaker/"``).
    :param pool: keep the events of the pool of this name (:func:`~poolwarden.analysis.select.of_pool`;
        a fleet's log holds several pools).

    Columns (see :data:`~poolwarden.analysis.frames.EVENT_COLUMNS`): ``position``, ``version``,
    ``schema_version`` (int64); ``occurred_at``, ``recorded_at`` (datetime64[us, UTC]); the
    low-cardinality text columns as categories, and ``pool`` (category: the pool whose stream the
    event is on, missing for a standalone breaker's); ``incident_id`` (str); ``latency_ms`` (float64,
    NaN where unset); ``payload`` (a dict per row).

    Raises :class:`~poolwarden.errors.DatabaseUnavailable` for a missing file,
    :class:`~poolwarden.errors.CorruptDatabase` for a file that is not SQLite,
    :class:`~poolwarden.errors.SchemaTooNew` for a log written by a newer poolwarden and
    :class:`~poolwarden.errors.SchemaMismatch` for an SQLite file that holds no event log.
    """
    if pool is not None:
        check_pool_name(pool)  # before the log is read
        return of_pool(load_events(db_or_url, since, until, types, streams), pool).reset_index(drop=True)
    clauses, params = _where(since, until, types, streams)
    if is_postgres_url(db_or_url):
        from poolwarden.analysis.load_postgres import load_postgres

        with collector_paused():
            return load_postgres(str(db_or_url), clauses, params, CHUNK)
    path = _path_of(db_or_url)
    check_file(path, must_exist=True)
    uri = f"file:{quote(str(path))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise _translate(error, path) from error
    try:
        with collector_paused():
            return _read(connection, uri, path, clauses, params)
    except sqlite3.Error as error:
        if isinstance(error, sqlite3.OperationalError) and "no such column" in str(error):
            raise SchemaOutdated(path, None, head_revision(), f"lacks an event column: {error}") from error
        raise _translate(error, path) from error
    finally:
        connection.close()
