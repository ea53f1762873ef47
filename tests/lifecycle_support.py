"""Support for the lifecycle tests: deterministic ids, a synchronous log, an in-memory store.

The in-memory EventStore stands in until the SQLite store is merged. It keeps the interface's
promises that the lifecycle relies on: appends are all or nothing, checked against
``expected_version``; payloads go through JSON (so what is read back is what a real store would
give); positions increase across streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from poolwarden.clock import Clock
from poolwarden.errors import ConcurrencyConflict, StoreClosed
from poolwarden.events import AppendResult, NewEvent, RecordedEvent, Snapshot
from poolwarden.lifecycle_events import LifecycleEvent, stream_of
from poolwarden.storage.base import ANY_VERSION, Durability, EventStore, Receipt


class CountingIds:
    """Incident ids ``inc-1``, ``inc-2``, ... so tests can name them."""

    def __init__(self) -> None:
        self.issued = 0

    def __call__(self) -> str:
        self.issued += 1
        return f"inc-{self.issued}"


class SyncLog:
    """A connection stream kept in a list, each event stored as a real store would return it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.events: list[RecordedEvent] = []

    def persist(self, events: Sequence[LifecycleEvent]) -> None:
        """Append ``events`` (drained from a machine) to the stream."""
        for event in events:
            version = len(self.events) + 1
            self.events.append(
                record(
                    event.to_new_event(),
                    position=version,
                    stream=stream_of(event.connection_id),
                    version=version,
                    recorded_at=self._clock(),
                )
            )


def record(new: NewEvent, *, position: int, stream: str, version: int, recorded_at: float) -> RecordedEvent:
    """``new`` as a store would give it back, its payload round-tripped through JSON."""
    return RecordedEvent(
        position=position,
        stream=stream,
        version=version,
        type=new.type,
        schema_version=new.schema_version,
        occurred_at=new.occurred_at,
        recorded_at=recorded_at,
        payload_json=json.dumps(dict(new.payload)),
        incident_id=new.incident_id,
        connection_id=new.connection_id,
        model_id=new.model_id,
        browser=new.browser,
        error_kind=new.error_kind,
        from_state=new.from_state,
        to_state=new.to_state,
        rung=new.rung,
        outcome=new.outcome,
        latency_ms=new.latency_ms,
    )


class MemoryEventStore(EventStore):
    """Events in lists; ``durability`` is always ``sync``."""

    def __init__(self, clock: Clock) -> None:
        self.durability: Durability = "sync"
        self._clock = clock
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._closed = False
        self._grew = asyncio.Event()

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY_VERSION,
        *,
        durability: Durability | None = None,
    ) -> Receipt:
        if self._closed:
            raise StoreClosed("the memory store is closed")
        held = self._streams.setdefault(stream, [])
        if expected_version is not None and expected_version != len(held):
            raise ConcurrencyConflict(stream, expected_version, len(held))
        first_version, first_position = len(held) + 1, len(self._log) + 1
        for new in events:
            recorded = record(
                new,
                position=len(self._log) + 1,
                stream=stream,
                version=len(held) + 1,
                recorded_at=self._clock(),
            )
            held.append(recorded)
            self._log.append(recorded)
        self._grew.set()
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        future.set_result(AppendResult(stream, first_version, len(held), first_position, len(self._log)))
        return Receipt(stream, future)

    async def flush(self) -> None:
        return None

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        held = self._streams.get(stream, [])[from_version - 1 :]
        return held if limit is None else held[:limit]

    async def read_all(
        self, from_position: int = 1, limit: int = 1000, *, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        tail = [e for e in self._log[from_position - 1 :] if types is None or e.type in types]
        return tail[:limit]

    async def follow(
        self, from_position: int = 1, *, poll_interval: float = 0.05, batch: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        position = from_position
        while True:
            for event in self._log[position - 1 :]:
                position = event.position + 1
                yield event
            self._grew.clear()
            await self._grew.wait()

    async def stream_version(self, stream: str) -> int:
        return len(self._streams.get(stream, []))

    async def head_position(self) -> int:
        return len(self._log)

    async def streams(self, prefix: str = "") -> dict[str, int]:
        return {name: len(held) for name, held in self._streams.items() if name.startswith(prefix)}

    async def save_snapshot(
        self, stream: str, version: int, state: Mapping[str, Any], *, schema_version: int = 1
    ) -> None:
        self._snapshots[stream] = Snapshot(
            stream, version, json.loads(json.dumps(dict(state))), self._clock(), schema_version
        )

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        return self._snapshots.get(stream)

    async def load_snapshots(self, prefix: str = "") -> dict[str, Snapshot]:
        return {name: snap for name, snap in self._snapshots.items() if name.startswith(prefix)}
