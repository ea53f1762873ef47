"""Printing the event log for people (``poolwarden events``)."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from poolwarden.envelope import READING_ORDER
from poolwarden.events import INDEXED_FIELDS, RecordedEvent
from poolwarden.storage import open_store

__all__ = ["format_event", "print_events"]


def format_event(event: RecordedEvent) -> str:
    """One line: time, position, stream@version, type, the indexed fields that are set, payload."""
    when = datetime.fromtimestamp(event.occurred_at, tz=UTC).isoformat(timespec="milliseconds")
    fields = " ".join(
        f"{name}={value}" for name in INDEXED_FIELDS if (value := getattr(event, name)) is not None
    )
    incident = f" incident={event.incident_id}" if event.incident_id else ""
    where = f"#{event.position} {event.stream}@{event.version}"
    return f"{when} {where} {event.type}{incident} {fields} {event.payload_json}"


def _as_json(event: RecordedEvent) -> str:
    """Every column of the event envelope, in reading order, the payload decoded."""
    record = {
        column.name: event.payload if column.kind == "json" else getattr(event, column.attribute)
        for column in READING_ORDER
    }
    return json.dumps(record)


def _wanted(event: RecordedEvent, stream: str | None, types: Sequence[str] | None) -> bool:
    if types and event.type not in types:
        return False
    if stream is None:
        return True
    return event.stream.startswith(stream) if stream.endswith("/") else event.stream == stream


async def print_events(
    db: str | os.PathLike[str],
    *,
    stream: str | None = None,
    types: Sequence[str] | None = None,
    follow: bool = False,
    as_json: bool = False,
    limit: int | None = None,
) -> int:
    """Print the matching events of the log at ``db``; with ``follow``, keep printing. Returns 0."""
    show = _as_json if as_json else format_event
    async with open_store(db, read_only=True) as store:
        # With a limit, only the last `limit` matches are kept while the log is read through.
        matched: deque[RecordedEvent] = deque(maxlen=limit)
        position = 1
        while page := await store.read_all(position, 5000, types=types):
            matched.extend(e for e in page if _wanted(e, stream, None))
            position = page[-1].position + 1
        for event in matched:
            print(show(event), flush=True)
        if follow:
            async for event in store.follow(position):
                if _wanted(event, stream, types):
                    print(show(event), flush=True)
    return 0
