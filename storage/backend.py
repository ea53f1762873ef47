"""What the SQL backends share around their group-commit writer.

A backend (``sqlite.py``, ``postgres.py``) connects, runs its write transaction
(``commit_batch``, given to the :class:`~poolwarden.storage.writer.GroupCommitWriter`) and its
reads, and reads and writes a lease row. Everything else an append, a snapshot, a lease call or a
close does is the same for both and lives here once: the store's state, checking and encoding what
is appended before it is queued, durability, the lease rules (``poolwarden.lease``), and the
verdict on a database's schema revision.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from poolwarden.clock import Clock
from poolwarden.errors import (
    ConfigurationError,
    ReadOnlyDatabase,
    SchemaMismatch,
    SchemaOutdated,
    SchemaTooNew,
    StoreClosed,
    StoreError,
)
from poolwarden.events import NewEvent
from poolwarden.lease import Lease, LeaseRow, decide_renew, decide_take
from poolwarden.storage import migrate
from poolwarden.storage.base import ANY_VERSION, Durability, EventStore, Receipt
from poolwarden.storage.rows import check_stream, encode_json, event_row
from poolwarden.storage.writer import GroupCommitWriter, Outcome, Work

__all__ = ["WriterBackedStore", "refuse_unusable_schema"]

Decide = Callable[[LeaseRow | None, int, float], Lease]
"""A lease rule: given the name's row, the log's highest fencing number and now, the new lease."""


def refuse_unusable_schema(
    status: migrate.SchemaStatus,
    where: str | Path | None,
    *,
    kind: str,
    upgrade: bool,
    read_only: bool,
) -> None:
    """Raise the typed error for a database this code cannot use as it stands (``kind`` names
    the database: "an SQLite database"); return for one it can."""
    if status.state is migrate.SchemaState.EMPTY and read_only:
        raise SchemaMismatch(where, None, status.head, "holds no poolwarden schema yet")
    if status.state is migrate.SchemaState.FOREIGN:
        raise SchemaMismatch(where, None, status.head, f"is {kind}, but not a poolwarden event store")
    if status.state is migrate.SchemaState.TOO_NEW:
        raise SchemaTooNew(
            where,
            status.current,
            status.head,
            f"has schema revision {status.current}, newer than this code's {status.head}",
        )
    if status.state is migrate.SchemaState.OUTDATED and (not upgrade or read_only):
        raise SchemaOutdated(
            where,
            status.current,
            status.head,
            f"has schema revision {status.current}, older than this code's {status.head}",
        )


class WriterBackedStore(EventStore):
    """An :class:`EventStore` whose writes go through a group-commit writer (see the module
    docstring). Subclasses set the attributes below in ``__init__`` and ``open``, and give
    :meth:`_dispose` and :meth:`_change_lease`."""

    durability: Durability
    where: str | Path | None
    """The database as errors name it (a file path; a URL without its password)."""
    _clock: Clock
    _state: str  # "new", "open", "closing", "closed"
    _writer: GroupCommitWriter | None  # None when read-only
    _committed: asyncio.Event  # replaced at each commit; followers wait on it
    read_only: bool
    max_batch: int
    linger: float
    max_pending: int
    lock_timeout: float
    _inline_commits = False
    """Whether a lone sync append may be committed in its appender's task (see
    ``GroupCommitWriter.append_sync``): only where ``_commit_batch`` is safe to cancel midway."""

    # --- what a backend gives -------------------------------------------------------------------

    @abc.abstractmethod
    async def _dispose(self) -> None:
        """Release the backend's connections (after the writer has stopped)."""

    @abc.abstractmethod
    async def _change_lease(self, name: str, decide: Decide) -> Lease:
        """In one write transaction: read ``name``'s row and the log's highest fencing number,
        let ``decide`` rule, write the lease it returns (or let its error through)."""

    @abc.abstractmethod
    async def _commit_batch(self, work: list[Work]) -> list[Outcome]:
        """The backend's write transaction for one batch (see ``storage.writer``)."""

    # --- state ----------------------------------------------------------------------------------

    def _start_writing(self) -> None:
        """The store is open: start its writer (none when read-only)."""
        if not self.read_only:
            self._writer = GroupCommitWriter(
                self._commit_batch,
                owner=self,
                max_batch=self.max_batch,
                linger=self.linger,
                max_pending=self.max_pending,
                lock_timeout=self.lock_timeout,
                on_commit=self._wake_followers,
                inline=self._inline_commits,
            )
            self._writer.start(name=f"poolwarden-writer:{self.where or ':memory:'}")
        self._state = "open"

    def _require_open(self) -> None:
        if self._state != "open":
            raise StoreClosed(f"{self!r} is not open")
        if self._writer is not None and self._writer.broken is not None:
            raise StoreError(f"{self!r} stopped writing after an unexpected error") from self._writer.broken

    def _require_writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise ReadOnlyDatabase(self.where, "the store was opened read-only")
        return self._writer

    def _wake_followers(self) -> None:
        self._committed.set()
        self._committed = asyncio.Event()

    async def close(self) -> None:
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            if self._writer is not None:
                await self._writer.close()  # raises WriteFailed for buffered appends it lost
        finally:
            self._state = "closed"
            self._committed.set()  # wake followers so that they see the store is closed
            await self._dispose()

    # --- appending ------------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY_VERSION,
        *,
        durability: Durability | None = None,
        fence: Lease | None = None,
    ) -> Receipt:
        writer = self._writer
        if self._state != "open" or writer is None or writer.broken is not None:
            self._require_open()  # raises the error that says why
            writer = self._require_writer()  # a read-only store refuses before anything else
        if not stream:
            raise ConfigurationError("a stream id must not be empty")
        if stream.__class__ is not str or not stream.isascii():  # check_stream's own fast test
            check_stream(stream)
        if expected_version is not None and expected_version < 0:
            raise ConfigurationError(f"expected_version must be >= 0, not {expected_version}")
        mode = durability or self.durability
        if mode not in ("sync", "buffered"):
            raise ConfigurationError(f"durability must be 'sync' or 'buffered', not {mode!r}")
        # event_row raises EventNotSerializable before anything is queued. A tuple of the rows
        # (each of plain values) is one the collector stops tracking: no list per append for its
        # full passes to walk while the append waits in the queue.
        rows = tuple([event_row(new) for new in events])
        if mode == "buffered":
            return Receipt(
                stream, await writer.append(stream, rows, expected_version, buffered=True, fence=fence)
            )
        future = await writer.append_sync(stream, rows, expected_version, fence=fence)
        # The future itself, not the receipt (which shields it for callers that await it later):
        # a shield's callback costs the loop one more turn before this append returns. Cancelled
        # here, the append is abandoned with the future; the receipt it would have returned is
        # never seen. Raises ConcurrencyConflict, LeaseLost or the write's error.
        await future
        return Receipt(stream, future)

    async def flush(self) -> None:
        self._require_open()
        if self._writer is not None:
            await self._writer.flush()

    async def save_snapshot(
        self,
        stream: str,
        version: int,
        state: Mapping[str, Any],
        *,
        schema_version: int = 1,
        fence: Lease | None = None,
    ) -> None:
        self._require_open()
        writer = self._require_writer()
        encoded = encode_json(state, f"snapshot of {stream}")
        await writer.save_snapshot((stream, version, schema_version, self._clock(), encoded), fence=fence)

    # --- leases (the rules are poolwarden.lease's) ------------------------------------------------

    async def take_lease(self, name: str, holder: str, ttl: float) -> Lease:
        self._require_open()
        self._require_writer()

        def decide(row: LeaseRow | None, last_fence: int, now: float) -> Lease:
            return decide_take(row, name=name, holder=holder, ttl=ttl, now=now, last_fence=last_fence)

        return await self._change_lease(name, decide)

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        self._require_open()
        self._require_writer()
        return await self._change_lease(
            lease.name, lambda row, _last, now: decide_renew(row, lease, ttl=ttl, now=now)
        )
