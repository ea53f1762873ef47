"""Test helpers: turn breaker domain events into the RecordedEvents a store would hand back."""

from __future__ import annotations

import json
from collections.abc import Iterable

from poolwarden.breaker_events import BreakerEvent
from poolwarden.events import RecordedEvent


class Log:
    """A list of RecordedEvents built the way a store numbers them (per-stream versions, global positions)."""

    def __init__(self) -> None:
        self.records: list[RecordedEvent] = []
        self.versions: dict[str, int] = {}

    def add(self, events: Iterable[BreakerEvent]) -> None:
        """Record ``events`` as appended, in order."""
        for event in events:
            new = event.to_new_event()
            version = self.versions.get(event.stream, 0) + 1
            self.versions[event.stream] = version
            self.records.append(
                RecordedEvent(
                    position=len(self.records) + 1,
                    stream=event.stream,
                    version=version,
                    type=new.type,
                    schema_version=new.schema_version,
                    occurred_at=new.occurred_at,
                    recorded_at=new.occurred_at,
                    payload_json=json.dumps(dict(new.payload)),
                    connection_id=new.connection_id,
                    model_id=new.model_id,
                    error_kind=new.error_kind,
                    from_state=new.from_state,
                    to_state=new.to_state,
                    outcome=new.outcome,
                    latency_ms=new.latency_ms,
                )
            )

    def stream(self, stream: str) -> list[RecordedEvent]:
        """The records of one stream, in version order."""
        return [record for record in self.records if record.stream == stream]
