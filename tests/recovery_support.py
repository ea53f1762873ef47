"""Support for the recovery tests: a bridge event fan-out and the checks every recovery ends with."""

from __future__ import annotations

from collections.abc import Callable

from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.lifecycle_events import stream_of
from poolwarden.storage import EventStore


class EventFanout:
    """A bridge ``on_event`` sink that passes each event to every listener added so far."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[NewEvent], None]] = []

    def __call__(self, event: NewEvent) -> None:
        for listener in self.listeners:
            listener(event)


async def incident_events(store: EventStore, connection_id: str, incident_id: str) -> list[RecordedEvent]:
    """The stored events of one incident on the connection's stream, oldest first."""
    events = await store.read_stream(stream_of(connection_id))
    return [event for event in events if event.incident_id == incident_id]


async def assert_incident_logged(
    store: EventStore, connection_id: str, incident_id: str, rungs: list[str], outcome: str
) -> list[RecordedEvent]:
    """The incident's attempts are ``rungs`` in order, it ended with ``outcome``, all under one id."""
    events = await incident_events(store, connection_id, incident_id)
    types = [event.type for event in events]
    assert types[0] == "RecoveryStarted", types
    assert [e.rung for e in events if e.type == "RungAttempted"] == rungs, types
    assert types[-1] == ("RecoveryCompleted" if outcome == "recovered" else "ConnectionQuarantined"), types
    assert events[-1].outcome == outcome
    # Every rung attempt has its outcome logged under the same incident (an attempt cut short by
    # a stop of poolwarden ends in the RecoveryResumed that names it).
    ends = ("RungSucceeded", "RungFailed", "ConnectionQuarantined", "RecoveryResumed")
    outcomes = [e for e in events if e.type in ends]
    assert len(outcomes) >= len(rungs), types
    return events
