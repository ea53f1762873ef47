"""The PostgreSQL event store: SQLAlchemy's async engine over asyncpg, behind a group-commit writer.

A fleet's shared log: several processes on several hosts append to one database. Install the
driver with ``pip install 'poolwarden[postgres]'`` and open ``postgresql://user:pw@host/db`` (or
``postgresql+asyncpg://...``) wherever a path is accepted.

Appends go through the backend-neutral :class:`~poolwarden.storage.writer.GroupCommitWriter`,
as on SQLite; this module gives it the transaction, one per batch, on the writer's connection:

1. ``SELECT pg_advisory_xact_lock(K)``: one lock, the same in every process, held to the end of
   the transaction;
2. read the heads of the batch's streams, the log's last position and the leases the batch is
   fenced by; :func:`~poolwarden.storage.rows.plan_batch` checks versions and fences and assigns
   versions and positions;
3. insert the rows (``INSERT ... SELECT FROM unnest(...)`` for a small batch, ``COPY`` for a
   large one), upsert the snapshots, ``pg_notify`` the last position; ``COMMIT``.

Four round trips a batch, fenced or not: statements without parameters share one message
(``BEGIN`` with the lock, ``NOTIFY`` with ``COMMIT``), and the heads, the last position and the
lease fences are one query.

**Why the advisory lock.** Positions are assigned by the writer (``MAX(position) + 1``), not by a
sequence. A sequence hands out numbers at insert time, and two transactions may commit in the
other order: a reader (``read_all``, ``follow``) would see position 12 before 11 exists, skip 11
for ever, and a follower would miss an event. The transaction-level lock serialises every write
transaction of every process: the next writer reads ``MAX(position)`` only after the previous
one committed (READ COMMITTED: each statement sees what was committed before it began), so
positions become visible strictly in increasing order, with no gap a reader could step over.
The same lock makes the version check and the insert atomic across processes; the unique
``(stream, version)`` constraint stays as the last guard. Lease changes take the same lock, so
a fencing number is unique across the log and a fence check and the write it guards are one
step. The cost is that one database takes one write transaction at a time, which group commit
makes large.

**Connections lost.** Any error of the server or the network becomes a typed error
(:mod:`~poolwarden.storage.postgres_errors`): :class:`~poolwarden.errors.DatabaseUnavailable`
for a server that is down, a refused password, a missing database or a connection lost
mid-batch. A batch whose connection is lost before ``COMMIT`` was sent wrote nothing; one lost
while committing is looked up on another connection once the write lock is free (the lost
transaction held it until the server ended it either way), by its first row, which is
unmistakable (position, stream, version, ``recorded_at``): an append either returns committed or
raises. A retry of one that raised never duplicates an event written with an expected version:
the version check (and the unique constraint) refuse it as a conflict. The writer's connection
is replaced on the next batch; readers' connections are checked when taken from the pool.

**Following.** Each write transaction sends ``NOTIFY`` on a channel; :meth:`follow` listens on
one connection of its own and wakes at once on a commit from any process. If that connection
cannot be had or is lost, followers poll (``poll_interval``) until it is back.

Times are REAL epoch seconds (double precision), as on SQLite; the schema and its Alembic
revisions are the same (:mod:`poolwarden.storage.schema`).
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import json
import logging
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from poolwarden.clock import Clock, system_clock
from poolwarden.envelope import COLUMN_NAMES
from poolwarden.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    PoolwardenError,
    StoreError,
)
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.lease import Lease, LeaseRow
from poolwarden.storage import migrate
from poolwarden.storage.backend import WriterBackedStore, refuse_unusable_schema
from poolwarden.storage.base import Durability
from poolwarden.storage.postgres_errors import is_connection_lost, translate
from poolwarden.storage.rows import (
    INSERT_COLUMNS,
    fence_names,
    plan_batch,
)
from poolwarden.storage.schema import events as events_table
from poolwarden.storage.writer import GroupCommitWriter, Outcome, PendingAppend, Work

__all__ = [
    "NOTIFY_CHANNEL",
    "WRITE_LOCK",
    "PostgresEventStore",
    "is_postgres_url",
    "portable",
    "postgres_url",
    "write_lock",
]

log = logging.getLogger(__name__)

WRITE_LOCK = 0x706F6F6C77617264  # "poolward": the advisory lock every write transaction holds
"""The advisory lock key of a store in schema ``public``; a store in another schema has its own
(:func:`write_lock`), since advisory locks are the database's, whatever the schema."""
NOTIFY_CHANNEL = "poolwarden_events"
"""The channel each write transaction notifies (its payload: the last position written); a store
in another schema than ``public`` appends ``_`` and the schema's name."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def write_lock(schema: str) -> int:
    """The advisory lock key of the store in ``schema``."""
    if schema == "public":
        return WRITE_LOCK
    return WRITE_LOCK ^ (zlib.crc32(schema.encode()) << 8)


_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")
_WRITABLE_STATES = (migrate.SchemaState.EMPTY, migrate.SchemaState.CURRENT, migrate.SchemaState.OUTDATED)

_PG_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "FLOAT": "double precision", "TEXT": "text"}
_ARRAY_TYPES = tuple(
    _PG_TYPES[type(events_table.c[name].type).__name__.upper().replace("BIGINTEGER", "BIGINT")]
    for name in INSERT_COLUMNS
)
_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_ARRAY_TYPES, start=1))
    + ")"
)
_COPY_ABOVE = 200  # rows: a larger batch is inserted by COPY
_SELECT_EVENTS = f"SELECT {', '.join(COLUMN_NAMES)} FROM events"
# The log's last position, the batch's stream heads and its lease fences, in one round trip.
_HEADS_AND_FENCES = (
    "SELECT 0, NULL::text, MAX(position) FROM events UNION ALL "
    "SELECT 1, s.name, (SELECT MAX(version) FROM events e WHERE e.stream = s.name) "
    "FROM unnest($1::text[]) AS s(name) UNION ALL "
    "SELECT 2, name, CASE WHEN released_at IS NULL THEN fence END FROM leases WHERE name = ANY($2::text[])"
)
_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (stream, version, schema_version, taken_at, state) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
    "schema_version = excluded.schema_version, taken_at = excluded.taken_at, state = excluded.state "
    "WHERE excluded.version >= snapshots.version"
)
_UPSERT_LEASE = (
    "INSERT INTO leases (name, holder, fence, acquired_at, renewed_at, expires_at, released_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, NULL) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "fence = excluded.fence, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at, "
    "expires_at = excluded.expires_at, released_at = NULL"
)


def is_postgres_url(target: object) -> bool:
    """Whether ``target`` is a PostgreSQL URL (``postgresql://``, ``postgres://``, ``postgresql+asyncpg://``)."""
    return isinstance(target, str) and target.split("://", 1)[0].lower() in _SCHEMES and "://" in target


def postgres_url(target: str) -> URL:
    """``target`` as SQLAlchemy's URL for the asyncpg driver (``postgresql://`` is normalised)."""
    if not is_postgres_url(target):
        raise ConfigurationError(f"not a PostgreSQL URL: {target!r}")
    try:
        url = make_url(target)
    except Exception as error:
        raise ConfigurationError(f"not a valid database URL: {error}") from error
    return url.set(drivername="postgresql+asyncpg")


# --- SQLite's dialect of the read-only queries, as PostgreSQL takes it ---------------------------

_JSON_EXTRACT = re.compile(r"json_extract\(\s*([\w.]+)\s*,\s*'\$\.(\w+)'\s*\)", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_]\w*")


def portable(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` and its parameters as asyncpg takes them: ``?`` and ``:name`` become ``$n``, and
    SQLite's ``json_extract(column, '$.key')`` becomes ``(column::jsonb ->> 'key')`` (text: cast
    it where a number is wanted, ``CAST(... AS INTEGER)``, which both databases read alike)."""
    sql = _JSON_EXTRACT.sub(r"(\1::jsonb ->> '\2')", sql)
    out: list[str] = []
    args: list[Any] = []
    named: dict[str, int] = {}
    positional = 0
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == char:
                    if end + 1 < n and sql[end + 1] == char:  # a doubled quote inside the literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
            continue
        if char == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 2
            continue
        if char == "?":
            if isinstance(params, Mapping):
                raise ConfigurationError("a query with ? parameters takes a sequence, not a mapping")
            positional += 1
            out.append(f"${positional}")
            i += 1
            continue
        if char == ":" and (match := _NAME.match(sql, i + 1)):
            if not isinstance(params, Mapping):
                raise ConfigurationError("a query with :name parameters takes a mapping")
            name = match.group()
            if name not in params:
                raise ConfigurationError(f"no value for parameter :{name}")
            if name not in named:
                args.append(params[name])
                named[name] = len(args)
            out.append(f"${named[name]}")
            i = match.end()
            continue
        out.append(char)
        i += 1
    if positional:
        args = list(params)
        if len(args) != positional:
            raise ConfigurationError(
                f"the query has {positional} ? parameters, {len(args)} values were given"
            )
    return "".join(out), args


def _plain(value: Any) -> Any:
    """A NUMERIC (what PostgreSQL's SUM of integers gives) as the int or float SQLite would give."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


SESSION_SETTINGS: dict[str, str] = {
    # A session idle inside a transaction (its host cut off between BEGIN and COMMIT) is ended
    # by the server after 10 s, which frees the log's write lock for every other host.
    "idle_in_transaction_session_timeout": "10000",
    # The server notices a client that is gone within ~25 s (keepalives) or once unacknowledged
    # data has waited 15 s, rather than after the kernel's hours-long defaults.
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "15000",
}
"""Server settings of every connection a PostgreSQL store opens (all settable by any user)."""


class PostgresEventStore(WriterBackedStore):
    """An :class:`~poolwarden.storage.base.EventStore` in a PostgreSQL database.

    :param url: ``postgresql://user:password@host:port/database`` (or ``postgresql+asyncpg://``;
        any query options asyncpg takes, such as ``?host=/run/postgresql`` for a socket).
    :param durability: ``"sync"`` (append returns after commit) or ``"buffered"``.
    :param upgrade: upgrade an older schema on open; with ``False`` such a database is refused.
    :param read_only: open for reading only (appends raise :class:`ReadOnlyDatabase`; every
        transaction is read-only on the server too).
    :param max_batch: most events committed in one transaction.
    :param linger: seconds the writer waits for more appends when a batch is small.
    :param max_pending: appends that may wait in the queue before appenders are made to wait.
    :param lock_timeout: seconds the writer retries a batch refused for a lock or a serialisation
        failure before failing.
    :param connect_timeout: seconds a connection attempt may take.
    :param write_timeout: seconds one statement of the writer may go unanswered (a server across
        a network partition, or the write lock held that long) before the batch fails with
        :class:`~poolwarden.errors.DatabaseUnavailable` (its events are kept by their owner).
    :param read_timeout: the same for a read (``None``: unbounded).
    :param pool_size: reader connections kept open.
    :param schema: the PostgreSQL schema that holds the store's tables (created if missing):
        several logs may share one database, each in its own schema.
    :param clock: source of ``recorded_at`` and of the leases' times.
    """

    where: str  # the URL without its password (and the schema, if not the default)

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "sync",
        upgrade: bool = True,
        read_only: bool = False,
        max_batch: int = 5000,
        linger: float = 0.0,
        max_pending: int = 10_000,
        lock_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        write_timeout: float = 10.0,
        read_timeout: float | None = 120.0,
        pool_size: int = 4,
        schema: str = "public",
        clock: Clock = system_clock,
    ) -> None:
        if durability not in ("sync", "buffered"):
            raise ConfigurationError(f"durability must be 'sync' or 'buffered', not {durability!r}")
        if max_batch < 1 or max_pending < 1:
            raise ConfigurationError("max_batch and max_pending must be at least 1")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(f"a schema name is 1 to 41 of a-z, 0-9 and '_', not {schema!r}")
        self.url = postgres_url(url)
        self.schema = schema
        self._lock_key = write_lock(schema)
        self._channel = NOTIFY_CHANNEL if schema == "public" else f"{NOTIFY_CHANNEL}_{schema}"
        self.where = self.url.render_as_string(hide_password=True)
        if schema != "public":
            self.where += f" schema {schema}"
        self.path = None  # no file: code that looks for one (SQLite's) finds none
        self.durability = durability
        self.upgrade = upgrade
        self.read_only = read_only
        self.max_batch = max_batch
        self.linger = linger
        self.max_pending = max_pending
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self._clock = clock
        self._engine: AsyncEngine | None = None  # the writer's and the listener's connections
        self._reader_engine: AsyncEngine | None = None
        self._writer_conn: AsyncConnection | None = None
        self._write_lock = asyncio.Lock()
        self._writer: GroupCommitWriter | None = None
        self._committed = asyncio.Event()
        self._listener: AsyncConnection | None = None
        self._listener_retry_at = 0.0
        self._dropping: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._state = "new"

    def __repr__(self) -> str:
        return f"<PostgresEventStore {self.where} {self.durability} {self._state}>"

    # --- opening and closing ------------------------------------------------------------------

    def _create_engine(self, pool_size: int, *, pre_ping: bool, timeout: float | None) -> AsyncEngine:
        settings = {**SESSION_SETTINGS, "application_name": "poolwarden", "search_path": self.schema}
        if self.read_only:
            settings["default_transaction_read_only"] = "on"
        return create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=pre_ping,
            connect_args={
                "timeout": self.connect_timeout,
                "command_timeout": timeout,  # asyncpg's, per statement: TimeoutError, translated
                "server_settings": settings,
            },
        )

    async def open(self) -> None:
        if self._state != "new":
            raise StoreError(f"{self!r} was already opened")
        try:
            import asyncpg  # noqa: F401  (only to say what to install when it is missing)
        except ImportError as error:
            raise ConfigurationError(
                "a PostgreSQL store needs asyncpg: pip install 'poolwarden[postgres]'"
            ) from error
        try:
            self._engine = self._create_engine(2, pre_ping=False, timeout=self.write_timeout)
            self._reader_engine = self._create_engine(
                self.pool_size, pre_ping=True, timeout=self.read_timeout
            )
            await self._prepare_schema()
        except BaseException:
            await self._dispose()
            self._state = "closed"
            raise
        self._start_writing()

    async def _prepare_schema(self) -> None:
        assert self._engine is not None
        try:
            async with self._engine.connect() as conn:
                await conn.begin()
                if not self.read_only:
                    # Two processes opening a new database at once: one creates the schema.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key})
                    if self.schema != "public":
                        await conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                status = await conn.run_sync(migrate.schema_status)
                if not self.read_only and (
                    status.state is migrate.SchemaState.EMPTY
                    or (status.state is migrate.SchemaState.OUTDATED and self.upgrade)
                ):
                    log.info("upgrading %s from schema %s to %s", self.where, status.current, status.head)
                    await conn.run_sync(migrate.upgrade)
                await conn.commit()
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from error
        refuse_unusable_schema(
            status, self.where, kind="a PostgreSQL database", upgrade=self.upgrade, read_only=self.read_only
        )

    async def _dispose(self) -> None:
        if self._listening is not None and not self._listening.done():
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listening
        for name in ("_listener", "_writer_conn"):
            conn: AsyncConnection | None = getattr(self, name)
            if conn is not None:
                with contextlib.suppress(Exception):  # closing after a failure must not hide it
                    await conn.close()
                setattr(self, name, None)
        for engine in (self._engine, self._reader_engine):
            if engine is not None:
                await engine.dispose()
        self._engine = self._reader_engine = None

    def _translate(self, error: BaseException) -> StoreError:
        if isinstance(error, StoreError):
            return error
        translated = translate(error, self.where)
        if translated is not None:
            return translated
        return DatabaseUnavailable(self.where, f"{type(error).__name__}: {error}", hint="see the cause")

    # --- appending ----------------------------------------------------------------------------

    # --- the transaction the group-commit writer runs -----------------------------------------

    async def _commit_batch(self, work: list[Work]) -> list[Outcome]:
        """One transaction for ``work`` under the write lock; the server's errors become typed ones."""
        try:
            return await self._transaction(work)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from error

    async def _transaction(self, work: list[Work]) -> list[Outcome]:
        # Four round trips a batch: BEGIN with the lock; the heads and fences; the insert; NOTIFY with
        # COMMIT (statements without parameters share one simple-protocol message). Small
        # batches insert from arrays (unnest); large ones by COPY, which encodes rows faster.
        in_doubt: tuple[Any, ...] | None = None
        try:
            async with self._writing() as driver:
                committing = False
                rows: list[tuple[Any, ...]] = []
                try:
                    await driver.execute(f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})")
                    streams = {item.stream for item in work if isinstance(item, PendingAppend)}
                    heads, position, fences = await self._heads(driver, streams, fence_names(work))
                    outcomes, rows, snapshots = plan_batch(work, heads, position, self._clock(), fences)
                    if len(rows) > _COPY_ABOVE:
                        await driver.copy_records_to_table(
                            "events", records=rows, columns=INSERT_COLUMNS, schema_name=self.schema
                        )
                    elif rows:
                        columns = (list(column) for column in zip(*rows, strict=True))
                        await driver.execute(_INSERT_EVENTS, *columns)
                    if snapshots:
                        await driver.executemany(_UPSERT_SNAPSHOT, snapshots)
                    committing = True
                    # The channel is a checked schema name and the payload a number: no quoting.
                    notify = f"SELECT pg_notify('{self._channel}', '{rows[-1][0]}'); " if rows else ""
                    await driver.execute(notify + "COMMIT")
                except BaseException as error:
                    if committing and rows and isinstance(error, Exception) and is_connection_lost(error):
                        in_doubt = rows[0]  # the server may have committed: asked below
                    with contextlib.suppress(Exception):  # the original error is the one to report
                        await driver.execute("ROLLBACK")
                    raise
        except Exception:
            # Lost while committing. The connection is gone now (dropped by _writing), so the
            # server ends its transaction; once it has (the write lock is free), the batch is
            # either in the log or not.
            if in_doubt is not None and await self._committed_after_all(in_doubt):
                return outcomes
            raise
        return outcomes

    async def _committed_after_all(self, first: tuple[Any, ...]) -> bool:
        """Whether the batch whose first row is ``first`` is in the log (its connection was lost
        while committing). Raises a typed error if the server cannot tell yet."""
        position, stream, version, recorded_at = first[:4]
        try:
            async with self._reading() as driver, driver.transaction(readonly=True):
                # Waits for the lost transaction to end: it held the write lock until then.
                await driver.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}")
                await driver.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
                found = await driver.fetch(
                    "SELECT 1 FROM events"
                    " WHERE position = $1 AND stream = $2 AND version = $3 AND recorded_at = $4",
                    position,
                    stream,
                    version,
                    recorded_at,
                )
        except Exception as error:
            raise DatabaseUnavailable(
                self.where,
                f"the connection was lost while committing, and whether the batch committed cannot be "
                f"told yet: {error}",
                hint="retry with the expected version: a batch that did commit makes it a conflict",
            ) from error
        return bool(found)

    @staticmethod
    async def _heads(
        driver: Any, streams: Iterable[str], names: set[str]
    ) -> tuple[dict[str, int], int, dict[str, int | None] | None]:
        """The current version of each of ``streams``, the log's last position and the fencing
        number of each lease in ``names`` (``None``: released or none), in one query."""
        heads: dict[str, int] = {}
        position = 0
        listed = sorted(names)
        fences: dict[str, int | None] | None = dict.fromkeys(listed) if listed else None
        for kind, name, value in await driver.fetch(_HEADS_AND_FENCES, list(streams), listed):
            if kind == 0:
                position = value or 0
            elif kind == 1:
                if value is not None:
                    heads[name] = int(value)
            else:
                assert fences is not None
                fences[name] = None if value is None else int(value)
        return heads, int(position), fences

    # --- leases (the rules are poolwarden.lease's) ------------------------------------------------

    async def release_lease(self, lease: Lease) -> None:
        self._require_open()
        self._require_writer()
        async with self._lease_transaction() as driver:
            now = self._clock()
            await driver.execute(
                "UPDATE leases SET released_at = $1, expires_at = $1 "
                "WHERE name = $2 AND fence = $3 AND released_at IS NULL",
                now,
                lease.name,
                lease.fence,
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
            found = await driver.fetch(
                "SELECT name, holder, fence, expires_at, released_at FROM leases WHERE name = $1", name
            )
            row = None
            if found:
                name_, holder, fence, expires_at, released_at = found[0]
                row = LeaseRow(name_, holder, int(fence), expires_at, released_at is not None)
            last = await driver.fetchval("SELECT COALESCE(MAX(fence), 0) FROM leases")
            now = self._clock()
            lease: Lease = decide(row, int(last), now)
            await driver.execute(
                _UPSERT_LEASE, lease.name, lease.holder, lease.fence, lease.acquired_at, now, lease.expires_at
            )
            return lease

    @contextlib.asynccontextmanager
    async def _lease_transaction(self) -> AsyncIterator[Any]:
        """A transaction on the writer's connection under the write lock, between two batches."""
        try:
            async with self._writing() as driver, driver.transaction():
                await driver.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
                yield driver
        except PoolwardenError:  # the lease's own verdicts (LeaseHeld, LeaseLost) and typed store errors
            raise
        except Exception as error:
            raise self._translate(error) from error

    # --- connections --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[Any]:
        """The writer's asyncpg connection, exclusively; (re)connected when it has none.

        A connection that failed because it was lost is dropped here, so that the next batch
        connects again (when the server is back) instead of failing on a dead socket.
        """
        async with self._write_lock:
            if self._writer_conn is None:
                assert self._engine is not None
                self._writer_conn = await self._engine.connect()
            conn = self._writer_conn
            try:
                yield (await conn.get_raw_connection()).driver_connection
            except BaseException as error:
                if isinstance(error, Exception) and is_connection_lost(error):
                    self._writer_conn = None
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                raise

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[Any]:
        """An asyncpg connection of the readers' pool (checked when taken from it)."""
        self._require_open()
        assert self._reader_engine is not None
        try:
            async with self._reader_engine.connect() as conn:
                try:
                    yield (await conn.get_raw_connection()).driver_connection
                except BaseException as error:
                    if isinstance(error, Exception) and is_connection_lost(error):
                        with contextlib.suppress(Exception):
                            await conn.invalidate()
                    raise
        except StoreError:
            raise
        except Exception as error:
            raise self._translate(error) from error

    async def _query(self, sql: str, *args: Any) -> list[Any]:
        """Rows of a read. A read is idempotent: one whose connection turns out dead (the server
        restarted, or the connection was killed, since the pool's check) is tried once more on a
        new connection before its error is raised."""
        try:
            async with self._reading() as driver:
                return list(await driver.fetch(sql, *args))
        except DatabaseUnavailable:
            async with self._reading() as driver:
                return list(await driver.fetch(sql, *args))

    async def _events(self, sql: str, *args: Any) -> list[RecordedEvent]:
        new = tuple.__new__
        return [new(RecordedEvent, row) for row in await self._query(sql, *args)]

    # --- reading ------------------------------------------------------------------------------

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        sql = f"{_SELECT_EVENTS} WHERE stream = $1 AND version >= $2 ORDER BY version"
        if limit is not None:
            return await self._events(sql + " LIMIT $3", stream, from_version, limit)
        return await self._events(sql, stream, from_version)

    async def read_all(
        self, from_position: int = 1, limit: int = 1000, *, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        if limit < 1:
            raise ConfigurationError(f"limit must be at least 1, not {limit}")
        sql, extra = self._page_query(types)
        return await self._events(sql, from_position, *extra, limit)

    @staticmethod
    def _page_query(types: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
        """A page of the log from ``$1`` on, at most ``$n`` events (the last parameter)."""
        if types is None:
            return f"{_SELECT_EVENTS} WHERE position >= $1 ORDER BY position LIMIT $2", ()
        sql = f"{_SELECT_EVENTS} WHERE position >= $1 AND type = ANY($2::text[]) ORDER BY position LIMIT $3"
        return sql, (list(types),)

    async def iter_pages(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        sql, extra = self._page_query(types)
        new = tuple.__new__

        async def page(driver: Any, position: int) -> list[RecordedEvent]:
            return [new(RecordedEvent, row) for row in await driver.fetch(sql, position, *extra, batch)]

        # One reader connection for the whole walk; the next page is asked for while the caller
        # works through this one.
        async with self._reading() as driver:
            loop = asyncio.get_running_loop()
            ahead = loop.create_task(page(driver, from_position))
            try:
                while events := await ahead:
                    ahead = loop.create_task(page(driver, events[-1].position + 1))
                    yield events
            finally:
                if not ahead.done():
                    ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead  # the connection must be idle before it goes back to the pool

    async def follow(
        self, from_position: int = 1, *, poll_interval: float = 0.05, batch: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        position = from_position
        while True:
            committed = self._committed
            self._listen()
            events = await self.read_all(position, batch)
            for recorded in events:
                yield recorded
                position = recorded.position + 1
            if len(events) < batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(committed.wait(), poll_interval)

    def _listen(self) -> None:
        """Make sure one connection LISTENs for other processes' commits, connecting it in the
        background (a follower never waits for it); until it is there, followers poll, and it
        is tried again at most once a second."""
        if self._listener is not None or self._engine is None or self._state != "open":
            return
        if self._listening is not None and not self._listening.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._listener_retry_at:
            return
        self._listener_retry_at = loop.time() + 1.0
        self._listening = loop.create_task(self._connect_listener(), name=f"poolwarden-listen:{self.where}")

    async def _connect_listener(self) -> None:
        assert self._engine is not None
        loop = asyncio.get_running_loop()
        try:
            conn = await self._engine.connect()
        except Exception as error:
            log.debug("no LISTEN connection to %s (%s): polling", self.where, error)
            return
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None

            def lost(_connection: Any) -> None:
                if self._listener is conn:  # followers poll until _listen() connects again
                    self._listener = None
                    self._dropping = loop.create_task(self._drop(conn))

            driver.add_termination_listener(lost)
            await driver.add_listener(self._channel, lambda *_args: self._wake_followers())
        except Exception as error:
            log.debug("LISTEN on %s failed (%s): polling", self.where, error)
            await self._drop(conn)
            return
        if self._state != "open":  # closed while connecting
            await self._drop(conn)
            return
        self._listener = conn

    @staticmethod
    async def _drop(conn: AsyncConnection) -> None:
        with contextlib.suppress(Exception):
            await conn.invalidate()

    async def stream_version(self, stream: str) -> int:
        rows = await self._query("SELECT MAX(version) FROM events WHERE stream = $1", stream)
        return int(rows[0][0] or 0)

    async def head_position(self) -> int:
        rows = await self._query("SELECT MAX(position) FROM events")
        return int(rows[0][0] or 0)

    async def streams(self, prefix: str = "") -> dict[str, int]:
        if prefix:
            rows = await self._query(
                "SELECT stream, MAX(version) FROM events WHERE starts_with(stream, $1) "
                "GROUP BY stream ORDER BY stream",
                prefix,
            )
        else:
            rows = await self._query(
                "SELECT stream, MAX(version) FROM events GROUP BY stream ORDER BY stream"
            )
        return {stream: int(version) for stream, version in rows}

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        rows = await self._query(
            "SELECT stream, version, state, taken_at, schema_version FROM snapshots WHERE stream = $1", stream
        )
        return _snapshot(rows[0]) if rows else None

    async def load_snapshots(self, prefix: str = "") -> dict[str, Snapshot]:
        sql = "SELECT stream, version, state, taken_at, schema_version FROM snapshots"
        rows = await (
            self._query(sql + " WHERE starts_with(stream, $1)", prefix) if prefix else self._query(sql)
        )
        return {row[0]: _snapshot(row) for row in rows}

    async def fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query over the store's schema (aggregates for telemetry).

        The query is written as for SQLite (``?`` or ``:name`` parameters, ``json_extract``) and
        translated (:func:`portable`); it runs in a read-only transaction on a reader connection,
        so even a statement that slipped past the check could not write. NUMERIC results come
        back as int or float, as SQLite gives them.
        """
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ConfigurationError("fetch() runs read-only queries (SELECT or WITH) only")
        query, args = portable(sql, params)
        async with self._reading() as driver, driver.transaction(readonly=True):
            rows = await driver.fetch(query, *args)
        return [tuple(_plain(value) for value in row) for row in rows]


def _snapshot(row: Any) -> Snapshot:
    return Snapshot(
        stream=row[0],
        version=int(row[1]),
        state=json.loads(row[2]),
        taken_at=float(row[3]),
        schema_version=int(row[4]),
    )
