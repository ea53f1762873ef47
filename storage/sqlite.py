"""The SQLite event store: SQLAlchemy's async engine over aiosqlite, behind a group-commit writer.

Appends go through the backend-neutral :class:`~poolwarden.storage.writer.GroupCommitWriter`
(queue, batching, barriers, lock retries, durability). What this module gives it is the
transaction, one call into the writer connection's thread a batch: ``BEGIN IMMEDIATE``; read
the log's last position, the batch's lease fences and the heads of the streams the writer does
not remember, in one statement; check fences and versions and assign them
(:func:`~poolwarden.storage.rows.plan_batch`); insert; ``COMMIT``. SQLite's errors become the
error tree's (:mod:`~poolwarden.storage.sqlite_errors`). Reads use a separate pool of
connections; WAL lets them run while the writer writes, from this process or another.

Several processes may append to one file. ``BEGIN IMMEDIATE`` takes the write lock before the
version check, so the check and the insert are atomic; SQLite's busy handler waits for the
lock, and a batch still locked after it fails with :class:`~poolwarden.errors.DatabaseLocked`,
which the writer retries until ``lock_timeout`` (nothing of a failed batch is written). A head
the writer remembers, made stale by another process's append, is caught by the unique
(stream, version) index: the batch runs again with heads read from the file.

An in-memory store (``":memory:"``) has one connection, shared by the writer and readers in
turn, since every SQLite connection to ``:memory:`` is a database of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from poolwarden.clock import Clock, system_clock
from poolwarden.collector import collector_paused
from poolwarden.envelope import COLUMN_NAMES
from poolwarden.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    CorruptDatabase,
    DatabaseError,
    PoolwardenError,
    StoreError,
)
from poolwarden.events import RecordedEvent, Snapshot, decode_json
from poolwarden.lease import Lease, LeaseRow
from poolwarden.storage import migrate
from poolwarden.storage.backend import WriterBackedStore, refuse_unusable_schema
from poolwarden.storage.base import Durability
from poolwarden.storage.rows import (
    INSERT_COLUMNS,
    plan_batch,
)
from poolwarden.storage.sqlite_errors import translate
from poolwarden.storage.sqlite_files import check_file, sqlite_url
from poolwarden.storage.writer import GroupCommitWriter, Outcome, PendingAppend, Work

__all__ = ["SQLiteEventStore", "check_file", "sqlite_url"]

log = logging.getLogger(__name__)

_WRITABLE_STATES = (migrate.SchemaState.EMPTY, migrate.SchemaState.CURRENT, migrate.SchemaState.OUTDATED)
_MAX_VARIABLES = 500  # stream ids per IN (...) query; far below SQLite's limit
_HEADS_OF_WANTED = "SELECT 0, name, (SELECT MAX(version) FROM events WHERE stream = wanted.name) FROM wanted"
_LAST_POSITION = "SELECT MAX(position) FROM events"
_MAX_REMEMBERED = 100_000  # stream heads the writer remembers before it starts afresh
_BULK = 256  # items in a batch from which its transaction runs with the cyclic collector paused

_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
)
_SELECT_EVENTS = f"SELECT {', '.join(COLUMN_NAMES)} FROM events"  # RecordedEvent's fields, in order
_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (stream, version, schema_version, taken_at, state) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
    "schema_version = excluded.schema_version, taken_at = excluded.taken_at, state = excluded.state "
    "WHERE excluded.version >= snapshots.version"
)

SELECT_SNAPSHOTS_IN_RANGE = (
    "SELECT stream, version, state, taken_at, schema_version FROM snapshots WHERE stream >= ? AND stream < ?"
)
# Every stream in [?1, ?2) by a skip scan of the (stream, version) index (a seek a stream), then
# each stream's events after its snapshot (a seek a stream): no step reads the whole log. No
# ORDER BY: the plan yields the rows in (stream, version) order already (the names in order, each
# one's range of the index), and sorting them again in a temporary b-tree cost a tenth of the read.
# load_heads checks the order and sorts only a stream that ever came out of it.
SELECT_TAILS = f"""
WITH RECURSIVE names(stream) AS (
    SELECT MIN(stream) FROM events WHERE stream >= ?1 AND stream < ?2
    UNION ALL
    SELECT (SELECT MIN(stream) FROM events WHERE stream > names.stream AND stream < ?2)
    FROM names WHERE names.stream IS NOT NULL
)
SELECT {", ".join(f"e.{name}" for name in COLUMN_NAMES)}
FROM names JOIN events AS e ON e.stream = names.stream
WHERE e.version > COALESCE((SELECT version FROM snapshots WHERE stream = names.stream), 0)
"""

_UPSERT_LEASE = (
    "INSERT INTO leases (name, holder, fence, acquired_at, renewed_at, expires_at, released_at) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "fence = excluded.fence, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at, "
    "expires_at = excluded.expires_at, released_at = NULL"
)


class SQLiteEventStore(WriterBackedStore):
    """An :class:`~poolwarden.storage.base.EventStore` in one SQLite file (or in memory).

    :param target: a file path, ``":memory:"``, or a ``sqlite://`` / ``sqlite+aiosqlite://`` URL.
    :param durability: ``"sync"`` (append returns after commit) or ``"buffered"``.
    :param upgrade: upgrade an older schema on open; with ``False`` such a file is refused.
    :param read_only: open for reading only (appends raise :class:`ReadOnlyDatabase`).
    :param max_batch: most events committed in one transaction.
    :param linger: seconds the writer waits for more appends when a batch is small (besides
        yielding to the appenders woken by the last commit, which it always does).
    :param max_pending: appends that may wait in the queue before appenders are made to wait.
    :param busy_timeout: seconds SQLite's busy handler waits for a lock in one attempt.
    :param lock_timeout: seconds the writer keeps retrying a locked database before failing.
    :param synchronous: SQLite's ``synchronous`` pragma. ``NORMAL`` (with WAL) survives a crash
        of the process; ``FULL`` also survives a power cut, at an fsync per commit.
    :param clock: source of ``recorded_at``.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] = ":memory:",
        *,
        durability: Durability = "sync",
        upgrade: bool = True,
        read_only: bool = False,
        max_batch: int = 5000,
        linger: float = 0.0,
        max_pending: int = 10_000,
        busy_timeout: float = 5.0,
        lock_timeout: float = 60.0,
        synchronous: str = "NORMAL",
        clock: Clock = system_clock,
    ) -> None:
        if durability not in ("sync", "buffered"):
            raise ConfigurationError(f"durability must be 'sync' or 'buffered', not {durability!r}")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        if max_batch < 1 or max_pending < 1:
            raise ConfigurationError("max_batch and max_pending must be at least 1")
        self.url, self.path = sqlite_url(target)
        self.where = self.path
        self.durability = durability
        self.upgrade = upgrade
        self.read_only = read_only
        self.max_batch = max_batch
        self.linger = linger
        self.max_pending = max_pending
        self.busy_timeout = busy_timeout
        self.lock_timeout = lock_timeout
        self.synchronous = synchronous.upper()
        self._clock = clock
        self._writer_engine: AsyncEngine | None = None
        self._reader_engine: AsyncEngine | None = None
        self._writer_conn: AsyncConnection | None = None
        self._driver: Any = None  # the writer's aiosqlite connection, under _writer_conn
        self._known_heads: dict[str, int] = {}  # stream -> version, as this writer committed it
        self._shared_lock: asyncio.Lock | None = None  # in-memory: one connection for all
        self._write_lock = asyncio.Lock()  # the writer's connection: its batches, and lease changes
        self._writer: GroupCommitWriter | None = None  # None when read-only
        self._committed = asyncio.Event()  # replaced at each commit; followers wait on it
        self._state = "new"

    _inline_commits = True  # a batch is one call in the driver's thread: a cancellation cannot cut it

    def __repr__(self) -> str:
        where = self.path if self.path is not None else ":memory:"
        return f"<SQLiteEventStore {where} {self.durability} {self._state}>"

    # --- opening and closing ------------------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise StoreError(f"{self!r} was already opened")
        self._check_file()
        try:
            await self._connect()
            await self._prepare_schema()
        except BaseException:
            await self._dispose()
            self._state = "closed"
            raise
        self._start_writing()

    def _check_file(self) -> None:
        if self.path is None:
            if self.read_only:
                raise ConfigurationError("an in-memory store cannot be read-only: it starts empty")
            return
        check_file(self.path, must_exist=self.read_only)

    async def _connect(self) -> None:
        busy_ms = int(self.busy_timeout * 1000)
        pragmas = [f"PRAGMA busy_timeout = {busy_ms}", "PRAGMA foreign_keys = ON"]
        if not self.read_only:
            pragmas.append(f"PRAGMA synchronous = {self.synchronous}")
            if self.path is not None:
                pragmas.append("PRAGMA journal_mode = WAL")  # persistent; readers never block the writer

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transactions out of the sqlite3 module's hands: BEGIN is ours (see on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in pragmas:
                cursor.execute(pragma)
            cursor.close()

        def on_begin(connection: SyncConnection) -> None:
            # IMMEDIATE takes the write lock up front, so reading stream heads and inserting
            # are one atomic step across processes, and a busy lock is waited for, not failed.
            connection.exec_driver_sql("BEGIN" if self.read_only else "BEGIN IMMEDIATE")

        url = self.url
        if self.path is None:
            engine = create_async_engine(url, poolclass=StaticPool)
            event.listen(engine.sync_engine, "connect", on_connect)
            event.listen(engine.sync_engine, "begin", on_begin)
            self._writer_engine = self._reader_engine = engine
            self._shared_lock = asyncio.Lock()
        else:
            connect_args = {"timeout": self.busy_timeout}
            if self.read_only:
                url = f"sqlite+aiosqlite:///file:{self.path}?mode=ro&uri=true"
            writer = create_async_engine(url, pool_size=1, max_overflow=0, connect_args=connect_args)
            event.listen(writer.sync_engine, "connect", on_connect)
            event.listen(writer.sync_engine, "begin", on_begin)
            reader = create_async_engine(url, pool_size=4, max_overflow=4, connect_args=connect_args)
            event.listen(reader.sync_engine, "connect", on_connect)
            event.listen(reader.sync_engine, "begin", lambda c: c.exec_driver_sql("BEGIN"))
            self._writer_engine, self._reader_engine = writer, reader
        try:
            self._writer_conn = await self._writer_engine.connect()
            self._driver = (await self._writer_conn.get_raw_connection()).driver_connection
        except Exception as error:
            raise self._translate(error) from error

    async def _prepare_schema(self) -> None:
        conn = self._require_writer_conn()
        try:
            await conn.begin()
            status = await conn.run_sync(migrate.schema_status)
            if status.state is migrate.SchemaState.EMPTY and not self.read_only:
                await conn.run_sync(migrate.upgrade)
            elif status.state is migrate.SchemaState.OUTDATED and self.upgrade and not self.read_only:
                log.info("upgrading %s from schema %s to %s", self.path, status.current, status.head)
                await conn.run_sync(migrate.upgrade)
            if (
                not self.read_only
                and status.state in _WRITABLE_STATES
                and (self.upgrade or status.state is not migrate.SchemaState.OUTDATED)
            ):
                # SQLite opens a file it may not write read-only without a word, and in WAL mode
                # even BEGIN IMMEDIATE succeeds: only a write tells. This one changes nothing.
                await conn.exec_driver_sql("UPDATE store_info SET value = value WHERE key = 'store_id'")
            await conn.commit()
        except (StoreError, asyncio.CancelledError):
            await conn.rollback()
            raise
        except Exception as error:
            await conn.rollback()
            raise self._translate(error) from error
        refuse_unusable_schema(
            status, self.where, kind="an SQLite database", upgrade=self.upgrade, read_only=self.read_only
        )

    async def _dispose(self) -> None:
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):  # closing after a failure must not hide it
                await self._writer_conn.close()
            self._writer_conn = self._driver = None
        for engine in {self._writer_engine, self._reader_engine} - {None}:
            assert engine is not None
            await engine.dispose()
        self._writer_engine = self._reader_engine = None

    def _translate(self, error: BaseException) -> StoreError:
        if isinstance(error, StoreError):
            return error
        translated = translate(error, self.path)
        if translated is not None:
            return translated
        return DatabaseError(self.path, f"{type(error).__name__}: {error}", hint="see the cause")

    def _require_writer_conn(self) -> AsyncConnection:
        assert self._writer_conn is not None, "store not opened"
        return self._writer_conn

    def _require_driver(self) -> Any:
        """The writer's driver connection (an ``aiosqlite.Connection``), taken once at open:
        the writer's SQLAlchemy connection is held for the store's life and never replaced."""
        assert self._driver is not None, "store not opened"
        return self._driver

    # --- appending ----------------------------------------------------------------------------

    # --- the transaction the group-commit writer runs -----------------------------------------

    async def _commit_batch(self, work: list[Work]) -> list[Outcome]:
        """One ``BEGIN IMMEDIATE`` transaction for ``work``; SQLite's errors become typed ones.

        ONE hop into the driver's thread a batch: the whole transaction (BEGIN IMMEDIATE, the
        read, plan_batch, the insert, COMMIT) is one plain function that aiosqlite's thread runs
        on its sqlite3 connection, where each await of the driver's own methods (execute,
        executemany) would be a hop of its own, and SQLAlchemy's run_sync a hop per statement.
        """
        try:
            async with self._shared_lock or self._write_lock:
                driver = self._require_driver()
                write = self._write_batch if len(work) < _BULK else self._write_bulk
                outcomes: list[Outcome] = await driver._execute(write, driver._conn, work)
                return outcomes
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from error

    def _write_bulk(self, conn: sqlite3.Connection, work: list[Work]) -> list[Outcome]:
        """:meth:`_write_batch` for a batch of at least ``_BULK`` items, with Python's cyclic
        collector paused (:func:`~poolwarden.collector.collector_paused`).

        Planning a big batch makes an insert row and an outcome per item, thousands at
        once, while the appends waiting in the queue hold thousands more objects: the collector's
        passes set off meanwhile promote them all, and its full passes then walk every live object
        of the process to free none of them (they form no cycle). Paused for the transaction
        (milliseconds), it runs after; 32 buffered appenders went 7 % faster (3 full passes a
        300,000-append run, were 12). The collector is the process's: pauses in other threads
        overlapping this one are counted with it, and the last to end turns it back on.
        """
        with collector_paused():
            return self._write_batch(conn, work)

    def _write_batch(self, conn: sqlite3.Connection, work: list[Work], retry: bool = False) -> list[Outcome]:
        """The writer's transaction for one batch, run in the driver's thread (see _commit_batch).

        Stream heads come from :attr:`_known_heads` where it knows them: this process's writer is the
        only one here, and what it committed is what it remembers. Another process (or another
        connection) may have appended since; then a remembered head is too low, and the unique
        (stream, version) index refuses the insert: the transaction is rolled back, the batch's
        streams are forgotten and it runs once more with heads read from the file, so a
        conflicting append gets the same ``ConcurrencyConflict`` as ever and nothing is lost. A
        conflict found against a remembered head is checked against the file before it is
        reported. The log's last position and the batch's lease fences are read every time, in
        the same statement as the heads it does not know.
        """
        cache = self._known_heads
        streams: dict[str, None] = {}  # the batch's streams, in order, once each
        named: set[str] = set()
        for item in work:  # one pass: a batch has thousands of items
            if isinstance(item, PendingAppend):
                streams[item.stream] = None
            if item.fence is not None:
                named.add(item.fence.name)
        remembered: dict[str, int] = {}
        unknown: list[str] = []
        for stream in streams:
            head = cache.get(stream)
            if head is None:
                unknown.append(stream)
            else:
                remembered[stream] = head
        names = sorted(named)
        conn.execute("BEGIN IMMEDIATE")
        try:
            heads, position, fences = _read_state(conn, unknown, names)
            heads.update(remembered)
            now = self._clock()
            planned = dict(heads)
            outcomes, rows, snapshots = plan_batch(work, planned, position, now, fences)
            doubted = [
                outcome.stream
                for outcome in outcomes
                if isinstance(outcome, ConcurrencyConflict) and outcome.stream in remembered
            ]
            if doubted:  # the remembered head may be stale: the file has the last word
                heads.update(_read_state(conn, list(dict.fromkeys(doubted)), [])[0])
                for stream in doubted:
                    remembered.pop(stream, None)
                planned = dict(heads)
                outcomes, rows, snapshots = plan_batch(work, planned, position, now, fences)
            if rows:
                conn.executemany(_INSERT_EVENTS, rows)
            if snapshots:
                conn.executemany(_UPSERT_SNAPSHOT, snapshots)
            conn.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(Exception):  # the original error is the one to report
                conn.execute("ROLLBACK")
            for stream in streams:
                cache.pop(stream, None)
            if not retry and remembered and _is_version_clash(error):
                return self._write_batch(conn, work, retry=True)
            raise
        if len(cache) + len(planned) > _MAX_REMEMBERED:
            cache.clear()
        cache.update(planned)
        return outcomes

    # --- leases (the rules are poolwarden.lease's) ------------------------------------------------

    async def release_lease(self, lease: Lease) -> None:
        self._require_open()
        self._require_writer()
        async with self._lease_transaction() as driver:
            await driver.execute(
                "UPDATE leases SET released_at = ?, expires_at = ? "
                "WHERE name = ? AND fence = ? AND released_at IS NULL",
                (now := self._clock(), now, lease.name, lease.fence),
            )

    async def leases(self) -> list[LeaseRow]:
        rows = await self._query(
            "SELECT name, holder, fence, expires_at, released_at FROM leases ORDER BY name"
        )
        return [
            LeaseRow(name, holder, int(fence), expires_at, released is not None)
            for name, holder, fence, expires_at, released in rows
        ]

    async def _change_lease(self, name: str, decide: Callable[[LeaseRow | None, int, float], Lease]) -> Lease:
        """Read the name's row and the log's highest fence, let ``decide`` rule, write its lease."""
        async with self._lease_transaction() as driver:
            found = await driver.execute_fetchall(
                "SELECT name, holder, fence, expires_at, released_at FROM leases WHERE name = ?", (name,)
            )
            row = None
            if found:
                name_, holder, fence, expires_at, released_at = found[0]
                row = LeaseRow(name_, holder, int(fence), expires_at, released_at is not None)
            last = (await driver.execute_fetchall("SELECT MAX(fence) FROM leases"))[0][0] or 0
            now = self._clock()
            lease: Lease = decide(row, int(last), now)
            await driver.execute(
                _UPSERT_LEASE,
                (lease.name, lease.holder, lease.fence, lease.acquired_at, now, lease.expires_at),
            )
            return lease

    @contextlib.asynccontextmanager
    async def _lease_transaction(self) -> AsyncIterator[Any]:
        """A ``BEGIN IMMEDIATE`` transaction on the writer's connection, between two batches."""
        try:
            async with self._writing() as driver:
                await driver.execute("BEGIN IMMEDIATE")
                try:
                    yield driver
                    await driver.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):  # the original error is the one to report
                        await driver.execute("ROLLBACK")
                    raise
        except PoolwardenError:  # the lease's own verdicts (LeaseHeld, LeaseLost) and typed store errors
            raise
        except Exception as error:
            raise self._translate(error) from error

    # --- connections --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[Any]:
        """The writer's driver connection (an ``aiosqlite.Connection``), exclusively."""
        async with self._shared_lock or self._write_lock:
            yield self._require_driver()

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[Any]:
        """A driver connection for reading: one of the reader pool's, or in memory the only one."""
        self._require_open()
        try:
            if self._shared_lock is not None:
                async with self._shared_lock:
                    yield self._require_driver()
                return
            assert self._reader_engine is not None
            async with self._reader_engine.connect() as conn:
                yield (await conn.get_raw_connection()).driver_connection
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from error

    async def _events(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        """The events a ``SELECT`` of the envelope's columns finds, built in the driver's thread.

        The row factory makes each row a :class:`RecordedEvent` where SQLite hands it over, so the
        event loop receives finished events (a replay is 20 % faster than converting them after).
        """
        async with self._reading() as driver:
            return await self._events_on(driver, sql, params)

    async def _events_on(self, driver: Any, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        try:
            cursor = await driver.execute(sql, params)
            try:
                cursor.row_factory = _recorded_event
                events: list[RecordedEvent] = await cursor.fetchall()
                return events
            finally:
                await cursor.close()
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from error

    async def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        async with self._reading() as driver:
            return list(await driver.execute_fetchall(sql, params))

    # --- reading ------------------------------------------------------------------------------

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        sql = f"{_SELECT_EVENTS} WHERE stream = ? AND version >= ? ORDER BY version"
        params: tuple[Any, ...] = (stream, from_version)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        return await self._events(sql, params)

    async def read_all(
        self, from_position: int = 1, limit: int = 1000, *, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        if limit < 1:
            raise ConfigurationError(f"limit must be at least 1, not {limit}")
        return await self._page(from_position, limit, types)

    async def iter_all(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        async for page in self.iter_pages(from_position, batch=batch, types=types):
            for recorded in page:
                yield recorded

    async def iter_pages(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        if self._shared_lock is not None:
            # In memory the one connection is shared with the writer: take it page by page.
            async for page in super().iter_pages(from_position, batch=batch, types=types):
                yield page
            return
        sql, params = self._page_query(types)
        # One reader connection for the whole walk; the next page is read while the caller works
        # through this one (SQLite steps in the driver's thread and builds the events there).
        async with self._reading() as driver:
            loop = asyncio.get_running_loop()
            ahead = loop.create_task(self._events_on(driver, sql, (from_position, *params, batch)))
            try:
                while page := await ahead:
                    next_params = (page[-1].position + 1, *params, batch)
                    ahead = loop.create_task(self._events_on(driver, sql, next_params))
                    yield page
            finally:
                if not ahead.done():
                    ahead.cancel()
                # The driver must be idle before it goes back to the pool; gather, rather than
                # suppressing CancelledError, lets a cancellation of this walk itself go on.
                await asyncio.gather(ahead, return_exceptions=True)

    @staticmethod
    def _page_query(types: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
        sql = f"{_SELECT_EVENTS} WHERE position >= ?"
        params: tuple[Any, ...] = ()
        if types is not None:
            sql += f" AND type IN ({', '.join('?' * len(types))})"
            params = tuple(types)
        return sql + " ORDER BY position LIMIT ?", params

    async def _page(self, from_position: int, limit: int, types: Sequence[str] | None) -> list[RecordedEvent]:
        sql, params = self._page_query(types)
        return await self._events(sql, (from_position, *params, limit))

    async def follow(
        self, from_position: int = 1, *, poll_interval: float = 0.05, batch: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        position = from_position
        while True:
            committed = self._committed
            events = await self.read_all(position, batch)
            for recorded in events:
                yield recorded
                position = recorded.position + 1
            if len(events) < batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(committed.wait(), poll_interval)

    async def stream_version(self, stream: str) -> int:
        rows = await self._query("SELECT MAX(version) FROM events WHERE stream = ?", (stream,))
        return int(rows[0][0] or 0)

    async def head_position(self) -> int:
        rows = await self._query("SELECT MAX(position) FROM events")
        return int(rows[0][0] or 0)

    async def streams(self, prefix: str = "") -> dict[str, int]:
        sql = "SELECT stream, MAX(version) FROM events"
        params: tuple[Any, ...] = ()
        if prefix:
            sql += " WHERE stream >= ? AND stream < ?"
            params = (prefix, prefix + "\U0010ffff")
        sql += " GROUP BY stream ORDER BY stream"
        return {stream: int(version) for stream, version in await self._query(sql, params)}

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        rows = await self._query(
            "SELECT stream, version, state, taken_at, schema_version FROM snapshots WHERE stream = ?",
            (stream,),
        )
        return _snapshot(rows[0]) if rows else None

    async def load_snapshots(self, prefix: str = "") -> dict[str, Snapshot]:
        sql = "SELECT stream, version, state, taken_at, schema_version FROM snapshots"
        params: tuple[Any, ...] = ()
        if prefix:
            sql += " WHERE stream >= ? AND stream < ?"
            params = (prefix, prefix + "\U0010ffff")
        return {row[0]: _snapshot(row) for row in await self._query(sql, params)}

    async def load_heads(self, prefix: str = "") -> dict[str, tuple[Snapshot | None, list[RecordedEvent]]]:
        """Two statements in one read transaction (so a snapshot saved meanwhile cannot leave a
        gap): the snapshots, then every stream's events after its snapshot. The streams are found
        by a skip scan of the (stream, version) index, one seek a stream, where a ``GROUP BY``
        would read every version of every stream; each tail is a seek into the same index."""
        low, high = prefix, prefix + "\U0010ffff"
        async with self._reading() as driver:
            try:
                rows, tails = await driver._execute(_read_heads, driver._conn, low, high)
            except StoreError:
                raise
            except Exception as error:
                raise self._translate(error) from error
        return group_heads(rows, tails)

    async def fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query over the store's schema (aggregates for telemetry).

        Runs on a reader connection, never the writer's; anything but a SELECT is refused.
        sqlite3 takes both ``?`` (a sequence) and ``:name`` (a mapping) parameters as they are.
        """
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ConfigurationError("fetch() runs read-only queries (SELECT or WITH) only")
        return [tuple(row) for row in await self._query(sql, params)]

    async def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: an empty list when the file is sound."""
        try:
            rows = await self._query("PRAGMA integrity_check")
        except CorruptDatabase as error:  # damaged enough that the check itself cannot run
            return [error.detail]
        problems = [str(row[0]) for row in rows]
        return [] if problems == ["ok"] else problems


def _read_state(
    conn: sqlite3.Connection, streams: list[str], names: list[str]
) -> tuple[dict[str, int], int, dict[str, int | None] | None]:
    """Inside the write transaction: the head of each of ``streams`` (0 for a new one), the log's
    last position and the fencing number of each lease in ``names`` (``None``: released or none),
    in one statement (one more for each further ``_MAX_VARIABLES`` streams).

    Each head is its own ``MAX(version)`` subquery, which SQLite answers from the end of the
    (stream, version) index; a ``GROUP BY`` over an ``IN`` list would scan every version of
    every stream instead (6 ms a batch at 2,000 events a stream, 50 us this way).
    """
    if not streams and not names:  # every head remembered, no fence: a lone append's case
        return {}, conn.execute(_LAST_POSITION).fetchone()[0] or 0, None
    heads: dict[str, int] = {}
    position = 0
    fences: dict[str, int | None] | None = dict.fromkeys(names) if names else None
    chunks = [streams[i : i + _MAX_VARIABLES] for i in range(0, len(streams), _MAX_VARIABLES)] or [[]]
    for index, chunk in enumerate(chunks):
        parts: list[str] = []
        params: list[str] = list(chunk)
        if chunk:
            parts.append(
                "SELECT 0, name, (SELECT MAX(version) FROM events WHERE stream = wanted.name) FROM wanted"
            )
        if index == 0:
            if names:
                listed = ", ".join("?" * len(names))
                parts.append(
                    "SELECT 1, name, CASE WHEN released_at IS NULL THEN fence END"
                    f" FROM leases WHERE name IN ({listed})"
                )
                params += names
            parts.append("SELECT 2, NULL, MAX(position) FROM events")
        sql = " UNION ALL ".join(parts)
        if chunk:
            sql = f"WITH wanted(name) AS (VALUES {', '.join(['(?)'] * len(chunk))}) {sql}"
        for kind, name, value in conn.execute(sql, params):
            if kind == 0:
                heads[name] = value or 0
            elif kind == 1:
                assert fences is not None
                fences[name] = None if value is None else int(value)
            else:
                position = value or 0
    return heads, position, fences


def _is_version_clash(error: BaseException) -> bool:
    """Whether ``error`` is the unique (stream, version) index refusing an insert: another
    connection appended to a stream since this writer last saw its head."""
    return isinstance(error, sqlite3.IntegrityError) and "events.stream, events.version" in str(error)


def _read_heads(conn: sqlite3.Connection, low: str, high: str) -> tuple[list[Any], list[RecordedEvent]]:
    """load_heads' read transaction, run whole in the driver's thread (one hop, not one a
    statement): the snapshot rows and the tails, as events. The snapshots' JSON is decoded after,
    in the caller's thread: decoding it here meanwhile, the two threads would take turns at the
    GIL row by row, and both take longer."""
    conn.execute("BEGIN")
    try:
        snapshots = conn.execute(SELECT_SNAPSHOTS_IN_RANGE, (low, high)).fetchall()
        cursor = conn.execute(SELECT_TAILS, (low, high))
        try:
            # map() over the cursor makes each row an event with no Python frame a row, where the
            # row factory is a call a row (a tenth of the read, measured).
            tails: list[RecordedEvent] = list(map(_new_recorded_event, cursor))
        finally:
            cursor.close()
    finally:
        conn.execute("COMMIT")
    return snapshots, tails


_new_recorded_event: Callable[[tuple[Any, ...]], RecordedEvent] = functools.partial(
    tuple.__new__, RecordedEvent
)
"""A row of the envelope's columns, in order, as a RecordedEvent (its tuple, unchecked)."""


def _recorded_event(_cursor: Any, row: tuple[Any, ...]) -> RecordedEvent:
    """sqlite3's row factory for event rows: :data:`_new_recorded_event` of the row."""
    return _new_recorded_event(row)


def group_heads(
    snapshot_rows: list[Any], tails: list[RecordedEvent]
) -> dict[str, tuple[Snapshot | None, list[RecordedEvent]]]:
    """Each stream's snapshot (decoded from its row, if it has one) and its tail in version order.

    ``tails`` come grouped by stream and in version order from SQLite's plan of
    :data:`SELECT_TAILS` (which has no ORDER BY); a stream whose events ever came out of order is
    sorted rather than folded wrongly.
    """
    heads: dict[str, tuple[Snapshot | None, list[RecordedEvent]]] = {
        row[0]: (_snapshot(row), []) for row in snapshot_rows
    }
    unordered: set[str] = set()
    for recorded in tails:
        tail = heads.setdefault(recorded.stream, (None, []))[1]
        if tail and tail[-1].version > recorded.version:
            unordered.add(recorded.stream)
        tail.append(recorded)
    for stream in unordered:
        heads[stream][1].sort(key=_version_of)
    return heads


_version_of = operator.attrgetter("version")


def _snapshot(row: Any) -> Snapshot:
    return Snapshot(
        stream=row[0],
        version=int(row[1]),
        state=decode_json(row[2]),
        taken_at=float(row[3]),
        schema_version=int(row[4]),
    )
