"""Support for the lifecycle tests: deterministic incident ids and a synchronous log.

The pure machine's tests cannot await a store, so :class:`SyncLog` keeps a stream in a list,
each event passed through JSON exactly as a store returns it. The driver's tests use the real
SQLite store.
"""

from __future__ import annotations

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
    return RecordedEvent.of(new, position=position, stream=stream, version=version, recorded_at=recorded_at)
