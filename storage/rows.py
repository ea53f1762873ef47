"""What one write transaction inserts: events encoded as rows, and a batch's versions and positions.

Both halves are the same for every backend, so they live here rather than in one backend:

- :func:`event_row` encodes a :class:`~poolwarden.events.NewEvent` when it is appended, before
  anything is queued (so a payload JSON cannot hold is refused at once): every column the event
  itself gives, in table order, i.e. all but position, stream, version and recorded_at;
- :func:`plan_batch` runs inside a backend's write transaction, once it has read the stream
  heads and the log's last position: it checks each append's expected version, assigns versions
  and positions, and returns the outcome of each item and the rows to insert.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from poolwarden.errors import ConcurrencyConflict, EventNotSerializable
from poolwarden.events import AppendResult, NewEvent
from poolwarden.storage.writer import Outcome, PendingAppend, Work

__all__ = ["encode_json", "event_row", "plan_batch"]

# One encoder for every payload: json.dumps with options builds a new encoder on each call.
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def encode_json(value: Mapping[str, Any], what: str) -> str:
    """``value`` as compact JSON; raises :class:`EventNotSerializable` naming ``what`` if it cannot be."""
    try:
        return _encode_json(value)
    except (TypeError, ValueError) as error:
        raise EventNotSerializable(what, str(error)) from error


def event_row(new: NewEvent) -> tuple[Any, ...]:
    """The columns ``new`` gives, in table order; raises :class:`EventNotSerializable` for a bad event."""
    if not new.type:
        raise EventNotSerializable("", "an event needs a type")
    if not math.isfinite(new.occurred_at):
        raise EventNotSerializable(new.type, f"occurred_at must be a finite time, not {new.occurred_at}")
    return (
        new.type,
        new.schema_version,
        float(new.occurred_at),
        encode_json(new.payload, new.type),
        new.incident_id,
        new.connection_id,
        new.model_id,
        new.browser,
        new.error_kind,
        new.from_state,
        new.to_state,
        new.rung,
        new.outcome,
        None if new.latency_ms is None else float(new.latency_ms),
    )


def plan_batch(
    work: list[Work], heads: dict[str, int], position: int, recorded_at: float
) -> tuple[list[Outcome], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Inside the write transaction: check versions, assign versions and positions.

    :param heads: each appended stream's current version (absent: 0); updated as appends land.
    :param position: the log's last position (0 when empty).
    :returns: one outcome per item, the event rows to insert (every column, in table order) and
        the snapshot rows to save.
    """
    outcomes: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    snapshots: list[tuple[Any, ...]] = []
    for item in work:
        if not isinstance(item, PendingAppend):
            snapshots.append(item.row)
            outcomes.append(None)
            continue
        head = heads.get(item.stream, 0)
        if item.expected_version is not None and item.expected_version != head:
            outcomes.append(ConcurrencyConflict(item.stream, item.expected_version, head))
            continue
        first_position = position + 1
        stream = item.stream
        for offset, (kind, schema, occurred, *rest) in enumerate(item.rows, start=1):
            position += 1
            rows.append((position, stream, head + offset, kind, schema, occurred, recorded_at, *rest))
        heads[stream] = head + len(item.rows)
        outcomes.append(AppendResult(stream, head + 1, head + len(item.rows), first_position, position))
    return outcomes, rows, snapshots
