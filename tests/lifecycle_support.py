"""Support for the lifecycle tests: deterministic incident ids and a synchronous log.

The pure machine's tests cannot await a store, so :class:`SyncLog` keeps a stream in a list,
each event passed through JSON exactly as a store returns it. The driver's tests use the real
SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from poolwarden.clock import Clock
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.lifecycle_events import LifecycleEvent, stream_of


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
