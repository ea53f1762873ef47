"""A view of a store through which every write is made under one lease (a pool's).

A pool hands :class:`FencedStore` to every part of itself that writes (its recorders, the
lifecycle drivers, the durable breakers), so each append and snapshot carries the pool's lease
and is refused (:class:`~poolwarden.errors.LeaseLost`) once another owner has taken the pool's
name over. Reads, follows and the lease calls go to the store as they are. Opening and closing
stay with whoever opened the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from poolwarden.errors import OwnershipError
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.lease import Lease, LeaseRow
from poolwarden.storage.base import ANY_VERSION, Durability, EventStore, Receipt

__all__ = ["FencedStore"]


class FencedStore(EventStore):
    """``store`` with every append and snapshot fenced by :attr:`lease` (which the holder renews).

    Until a lease is set (``None``), writes are refused with
    :class:`~poolwarden.errors.OwnershipError`: nothing is written unowned by mistake.
    """

    def __init__(self, store: EventStore, lease: Lease | None) -> None:
        self.store = store
        self.lease = lease
        self.durability = store.durability

    def __getattr__(self, name: str) -> Any:
        """What the view does not define is the store's (a SQLite store's ``path``, say)."""
        if name == "store":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)

    def __repr__(self) -> str:
        if self.lease is None:
            return f"<FencedStore {self.store!r} no lease>"
        return f"<FencedStore {self.store!r} pool={self.lease.name!r} fence={self.lease.fence}>"

    def _fence(self, fence: Lease | None) -> Lease:
        held = fence or self.lease
        if held is None:
            raise OwnershipError("this store writes under a pool's lease, and none is held yet")
        return held

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def append(
        self,
        stream: str,
        events: Sequence[Any],
        expected_version: int | None = ANY_VERSION,
        *,
        durability: Durability | None = None,
        fence: Lease | None = None,
    ) -> Receipt:
        return await self.store.append(
            stream, events, expected_version, durability=durability, fence=self._fence(fence)
        )

    async def save_snapshot(
        self,
        stream: str,
        version: int,
        state: Mapping[str, Any],
        *,
        schema_version: int = 1,
        fence: Lease | None = None,
    ) -> None:
        await self.store.save_snapshot(
            stream, version, state, schema_version=schema_version, fence=self._fence(fence)
        )

    async def flush(self) -> None:
        await self.store.flush()

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        return await self.store.read_stream(stream, from_version, limit)

    async def read_all(
        self, from_position: int = 1, limit: int = 1000, *, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        return await self.store.read_all(from_position, limit, types=types)

    def iter_all(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        return self.store.iter_all(from_position, batch=batch, types=types)

    def iter_pages(
        self, from_position: int = 1, *, batch: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        return self.store.iter_pages(from_position, batch=batch, types=types)

    def follow(
        self, from_position: int = 1, *, poll_interval: float = 0.05, batch: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        return self.store.follow(from_position, poll_interval=poll_interval, batch=batch)

    async def stream_version(self, stream: str) -> int:
        return await self.store.stream_version(stream)

    async def head_position(self) -> int:
        return await self.store.head_position()

    async def streams(self, prefix: str = "") -> dict[str, int]:
        return await self.store.streams(prefix)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        return await self.store.load_snapshot(stream)

    async def load_snapshots(self, prefix: str = "") -> dict[str, Snapshot]:
        return await self.store.load_snapshots(prefix)

    async def load_heads(self, prefix: str = "") -> dict[str, tuple[Snapshot | None, list[RecordedEvent]]]:
        return await self.store.load_heads(prefix)

    async def take_lease(self, name: str, holder: str, ttl: float) -> Lease:
        return await self.store.take_lease(name, holder, ttl)

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        return await self.store.renew_lease(lease, ttl)

    async def release_lease(self, lease: Lease) -> None:
        await self.store.release_lease(lease)

    async def leases(self) -> list[LeaseRow]:
        return await self.store.leases()

    async def fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        return await self.store.fetch(sql, params)
