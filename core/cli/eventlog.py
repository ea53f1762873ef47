"""Printing the event log for people (``poolwarden events``)."""

from __future__ import annotations

import difflib
import json
import os
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from poolwarden.envelope import READING_ORDER
from poolwarden.errors import ConfigurationError
from poolwarden.events import INDEXED_FIELDS, RecordedEvent
from poolwarden.pool_streams import PoolStreams
from poolwarden.storage import open_store

__all__ = ["check_types", "display_value", "format_event", "known_types", "print_events"]

_EPOCH_FLOOR = 1e9  # seconds: 2001-09-09; a time key with a smaller number is a duration or a count
_TIME_SUFFIXES = ("_at", "_deadline")


def _is_time_key(key: str) -> bool:
    return key.endswith(_TIME_SUFFIXES) or key in ("deadline", "at", "until")


def display_value(value: Any, key: str = "") -> Any:
    """A payload value as a person reads it: an epoch under a time key as an ISO time (UTC, to the
    millisecond), other floats to three decimals; lists and dicts element by element."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float) and _is_time_key(key) and value >= _EPOCH_FLOOR:
        return datetime.fromtimestamp(value, tz=UTC).isoformat(timespec="milliseconds")
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [display_value(v, key) for v in value]
    if isinstance(value, dict):
        return {k: display_value(v, str(k)) for k, v in value.items()}
    return value


def format_event(event: RecordedEvent) -> str:
    """One line: time, position, stream@version, type, the indexed fields that are set, payload."""
    when = datetime.fromtimestamp(event.occurred_at, tz=UTC).isoformat(timespec="milliseconds")
    fields = " ".join(
        f"{name}={display_value(value)}"
        for name in INDEXED_FIELDS
        if (value := getattr(event, name)) is not None
    )
    incident = f" incident={event.incident_id}" if event.incident_id else ""
    where = f"#{event.position} {event.stream}@{event.version}"
    payload = json.dumps(display_value(event.payload), separators=(",", ":"), ensure_ascii=False)
    return f"{when} {where} {event.type}{incident} {fields} {payload}"


def known_types() -> frozenset[str]:
    """Every event type name poolwarden writes (each family registers its classes when imported)."""
    import poolwarden.breaker_events
    import poolwarden.bridge_events
    import poolwarden.lifecycle_events
    import poolwarden.memory
    import poolwarden.pool_events  # noqa: F401  (imported for the classes they register)
    from poolwarden.codec import REGISTRY

    return REGISTRY.types()


def check_types(types: Sequence[str], in_log: set[str]) -> None:
    """Raise :class:`ConfigurationError` for a type name that neither poolwarden writes nor the log
    holds, naming the close ones: a misspelt ``--type`` would otherwise print nothing."""
    known = known_types() | in_log
    for name in types:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.5)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; the log holds {', '.join(sorted(in_log)) or 'no events'}"
            )
            raise ConfigurationError(f"no event type is named {name!r}{hint}")


def _as_json(event: RecordedEvent) -> str:
    """Every column of the event envelope, in reading order, the payload decoded."""
    record = {
        column.name: event.payload if column.kind == "json" else getattr(event, column.attribute)
        for column in READING_ORDER
    }
    return json.dumps(record)


def _wanted(
    event: RecordedEvent, stream: str | None, types: Sequence[str] | None, pool: PoolStreams | None = None
) -> bool:
    if types and event.type not in types:
        return False
    if pool is not None and not pool.owns(event.stream):
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
    pool: str | None = None,
) -> int:
    """Print the matching events of the log at ``db``; with ``follow``, keep printing. Returns 0.

    ``pool`` keeps the streams of the pool of that name (a fleet's log holds several)."""
    show = _as_json if as_json else format_event
    owner = PoolStreams(pool) if pool is not None else None
    async with open_store(db, read_only=True) as store:
        if types:
            in_log = {str(row[0]) for row in await store.fetch("SELECT DISTINCT type FROM events")}
            check_types(types, in_log)
        # With a limit, only the last `limit` matches are kept while the log is read through.
        matched: deque[RecordedEvent] = deque(maxlen=limit)
        position = 1
        while page := await store.read_all(position, 5000, types=types):
            matched.extend(e for e in page if _wanted(e, stream, None, owner))
            position = page[-1].position + 1
        for event in matched:
            print(show(event), flush=True)
        if follow:
            async for event in store.follow(position):
                if _wanted(event, stream, types, owner):
                    print(show(event), flush=True)
    return 0
