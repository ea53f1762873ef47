"""The event store's interface, which every backend implements and the contract tests check.

A backend appends events to streams with optimistic concurrency, reads a stream or the whole
log in order, follows the log as it grows, and keeps one snapshot per stream.

Appends go through a group-commit writer. Durability is chosen per store and may be overridden
per append:

* ``"sync"``: :meth:`EventStore.append` returns once the transaction holding its events has
  committed; a conflict or a write error is raised right there.
* ``"buffered"``: :meth:`EventStore.append` returns as soon as the append is queued. The
  returned :class:`Receipt` completes when it commits (``await receipt``). The queue is bounded:
  when it is full, appenders wait (backpressure), nothing is dropped. :meth:`EventStore.flush`
  and :meth:`EventStore.close` wait for everything queued and raise
  :class:`~poolwarden.errors.WriteFailed` for buffered appends that failed and that no one awaited.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from typing import Any, Literal, Protocol, Self

from poolwarden.events import AppendResult, NewEvent, RecordedEvent, Snapshot
from poolwarden.lease import Lease, LeaseRow

__all__ = ["ANY_VERSION", "Durability", "EventStore", "Receipt"]

Durability = Literal["sync", "buffered"]

ANY_VERSION: None = None
"""``expected_version`` meaning: append after whatever the stream holds, without a check."""


class AppendPromise(Protocol):
    """What a :class:`Receipt` holds besides a future: an append that makes its future only
    when someone waits for it (the group-commit writer's buffered appends)."""

    def done(self) -> bool: ...

    def result(self) -> AppendResult: ...

    def waiter(self) -> asyncio.Future[AppendResult]: ...


class Receipt:
    """The promise of one append: awaiting it gives its :class:`AppendResult` once committed.

    In ``sync`` mode the receipt is already complete when ``append`` returns.
    """

    __slots__ = ("_future", "stream")

    def __init__(self, stream: str, future: asyncio.Future[AppendResult] | AppendPromise) -> None:
        self.stream = stream
        self._future = future

    def done(self) -> bool:
        """Whether the append has committed or failed."""
        return self._future.done()

    def result(self) -> AppendResult:
        """The committed append's result; raises its error, or ``InvalidStateError`` if pending."""
        return self._future.result()

    def __await__(self) -> Generator[Any, None, AppendResult]:
        promise = self._future
        future = promise if isinstance(promise, asyncio.Future) else promise.waiter()
        return asyncio.shield(future).__await__()

    def __repr__(self) -> str:
        state = "done" if self._future.done() else "pending"
        return f"<Receipt stream={self.stream!r} {state}>"


class EventStore(abc.ABC):
    """An append-only log of events in streams, with snapshots. Use it as an async context manager."""

    durability: Durability

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, check (and if allowed, upgrade) the schema, and start the writer."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything queued, stop the writer and release the database."""

    @abc.abstractmethod
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY_VERSION,
        *,
        durability: Durability | None = None,
        fence: Lease | None = None,
    ) -> Receipt:
        """Append ``events`` to ``stream``, all or nothing.

        ``expected_version`` is the version the stream must be at (0 for a new stream), or
        :data:`ANY_VERSION` to append without a check. A mismatch raises (or, buffered, completes
        the receipt with) :class:`~poolwarden.errors.ConcurrencyConflict`, and writes nothing of
        this append.

        ``fence`` is the lease the append is made under (see :mod:`poolwarden.lease`): the
        transaction that would write it refuses it with :class:`~poolwarden.errors.LeaseLost`
        if another owner has taken the lease since, and the events record its fencing number.
        """

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything appended so far has committed."""

    @abc.abstractmethod
    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The events of ``stream`` from ``from_version`` on, in version order."""

    @abc.abstractmethod
    async def read_all(
        self, from_position: int = 1, limit: int = 1000, *, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of every stream from ``from_position`` on, in position order."""

    async def iter_all(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """Every event from ``from_position`` to the end of the log, in position order.

        Unlike :meth:`follow` it stops at the end. Backends may read ahead while the caller works.
        """
        async for page in self.iter_pages(from_position, batch=batch, types=types):
            for recorded in page:
                yield recorded

    async def iter_pages(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        """:meth:`iter_all` a page (at most ``batch`` events) at a time: the fastest way to replay."""
        position = from_position
        while page := await self.read_all(position, batch, types=types):
            yield page
            position = page[-1].position + 1

    @abc.abstractmethod
    def follow(
        self, from_position: int = 1, *, poll_interval: float = 0.05, batch: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event from ``from_position`` on, then each new one as it lands, forever.

        Events appended by this store wake the follower at once; events written by another
        process are seen within ``poll_interval`` seconds.
        """

    @abc.abstractmethod
    async def stream_version(self, stream: str) -> int:
        """The stream's current version (0 if it has no events)."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The position of the last committed event (0 if the log is empty)."""

    @abc.abstractmethod
    async def streams(self, prefix: str = "") -> dict[str, int]:
        """Each stream whose id starts with ``prefix``, with its current version."""

    @abc.abstractmethod
    async def save_snapshot(
        self,
        stream: str,
        version: int,
        state: Mapping[str, Any],
        *,
        schema_version: int = 1,
        fence: Lease | None = None,
    ) -> None:
        """Save ``state`` as the stream's snapshot at ``version``, replacing an older one.

        ``fence``: as for :meth:`append`, a snapshot of a lost lease is refused.
        """

    @abc.abstractmethod
    async def load_snapshot(self, stream: str) -> Snapshot | None:
        """The stream's latest snapshot, or ``None``."""

    @abc.abstractmethod
    async def load_snapshots(self, prefix: str = "") -> dict[str, Snapshot]:
        """The latest snapshot of every stream whose id starts with ``prefix``."""

    async def load_heads(self, prefix: str = "") -> dict[str, tuple[Snapshot | None, list[RecordedEvent]]]:
        """Every stream whose id starts with ``prefix``: its latest snapshot (or ``None``) and the
        events after it, in version order; what a restore reads, as one consistent view.

        Backends answer it in a constant number of statements (SQLite: two, in one read
        transaction); this default reads the stream list, the snapshots and each stream's tail.
        """
        versions = await self.streams(prefix)
        snapshots = await self.load_snapshots(prefix)
        heads: dict[str, tuple[Snapshot | None, list[RecordedEvent]]] = {}
        for stream in sorted(versions):
            snapshot = snapshots.get(stream)
            after = snapshot.version if snapshot is not None else 0
            tail = await self.read_stream(stream, after + 1) if versions[stream] > after else []
            heads[stream] = (snapshot, tail)
        return heads

    # --- leases: who owns a pool's streams (the rules are poolwarden.lease's) -------------------

    @abc.abstractmethod
    async def take_lease(self, name: str, holder: str, ttl: float) -> Lease:
        """Take the lease on ``name`` for ``ttl`` seconds with a new fencing number, or raise
        :class:`~poolwarden.errors.LeaseHeld` while another holder's lease has not expired."""

    @abc.abstractmethod
    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend ``lease`` to ``ttl`` seconds from now, or raise
        :class:`~poolwarden.errors.LeaseLost` if it was taken over or released."""

    @abc.abstractmethod
    async def release_lease(self, lease: Lease) -> None:
        """Give ``lease`` up (if it is still this one): the next owner may take it at once."""

    @abc.abstractmethod
    async def leases(self) -> list[LeaseRow]:
        """Every lease the log holds, by name: who holds it (or last held it), until when."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query (``SELECT`` or ``WITH``) over the store's tables.

        For aggregates the typed methods do not give (telemetry's counts). The tables and
        columns are those of :mod:`poolwarden.storage.schema`. Parameters are named (``:name``,
        a mapping: the form of SQLAlchemy's ``text()``, which any backend can take) or
        positional (``?``, a sequence). Anything but a query is refused with
        :class:`~poolwarden.errors.ConfigurationError`; it never runs on the writer's connection.
        """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
