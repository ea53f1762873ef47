"""What one write transaction inserts: events encoded as rows, and a batch's versions and positions.

Both halves are the same for every backend, so they live here rather than in one backend:

- :func:`event_row` encodes a :class:`~poolwarden.events.NewEvent` when it is appended, before
  anything is queued (so a payload JSON cannot hold is refused at once): the columns the event
  itself gives, as :data:`EVENT_ROW` lists them;
- :func:`plan_batch` runs inside a backend's write transaction, once it has read the stream
  heads and the log's last position: it checks each append's expected version, assigns versions
  and positions, and returns the outcome of each item and the rows to insert, whose columns
  :data:`INSERT_COLUMNS` lists (the store's own first, then the event's).

Both lists come from the event envelope (:mod:`poolwarden.envelope`); a column added there and
not handled here stops this module at import rather than writing rows of the wrong shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from poolwarden.envelope import ENVELOPE, EVENT_FIELDS, STORE_SET
from poolwarden.errors import ConcurrencyConflict, ConfigurationError, EventNotSerializable, LeaseLost
from poolwarden.events import NewEvent
from poolwarden.storage.writer import Outcome, PendingAppend, PendingSnapshot, Work

__all__ = [
    "EVENT_ROW",
    "INSERT_COLUMNS",
    "check_stream",
    "check_text",
    "encode_json",
    "event_row",
    "fence_names",
    "plan_batch",
]

# The event's columns that event_row converts (a finite float time, JSON, a float or NULL), and
# those it copies as they are: text and integers, NULL where unset.
_CONVERTED = ("type", "schema_version", "occurred_at", "payload")
_COPIED = tuple(
    c.name for c in ENVELOPE if c.set_by == "event" and c.name not in _CONVERTED and c.kind != "real"
)
_REAL = tuple(c.name for c in ENVELOPE if c.set_by == "event" and c.kind == "real")
if set(_CONVERTED + _COPIED + _REAL) != set(EVENT_FIELDS) or _REAL != ("latency_ms",):
    raise RuntimeError(f"storage.rows does not know how to encode every event column of {EVENT_FIELDS}")

EVENT_ROW: tuple[str, ...] = (*_CONVERTED, *_COPIED, *_REAL)
"""The columns of :func:`event_row`'s row, in its order."""

INSERT_COLUMNS: tuple[str, ...] = (*STORE_SET, *EVENT_ROW)
"""The columns of :func:`plan_batch`'s rows, in order: position, stream, version, recorded_at, fence,
then :data:`EVENT_ROW`."""
if STORE_SET != ("position", "stream", "version", "recorded_at", "fence"):
    raise RuntimeError(
        f"plan_batch assigns position, stream, version, recorded_at and fence, not {STORE_SET}"
    )

_copied = attrgetter(*_COPIED)

# One encoder for every payload: json.dumps with options builds a new encoder on each call.
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
_encode_json = _encoder.encode


def _c_encoder() -> Callable[[Any, int], Sequence[str]] | None:
    """json's C encoder with :data:`_encoder`'s options, made once: ``JSONEncoder.encode`` makes
    a new one (and a table of the containers it is in) on every call, a third of a payload's
    encoding. This one keeps no table (it holds no state, so any thread may use it): a value that
    contains itself ends in a ``RecursionError``, which :func:`encode_json` turns into the same
    refusal as any other value JSON cannot hold."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without json's C accelerator
        return None
    made: Callable[[Any, int], Sequence[str]] = make(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return made


_c_encode = _c_encoder()


def encode_json(value: Mapping[str, Any], what: str) -> str:
    """``value`` as compact JSON; raises :class:`EventNotSerializable` naming ``what`` if it cannot be."""
    try:
        if _c_encode is None or type(value) is not dict:
            return _encode_json(value)
        return "".join(_c_encode(value, 0))
    except RecursionError as error:  # nested too deep, or (no table of containers) contains itself
        raise EventNotSerializable(what, f"nested too deep, or it contains itself ({error})") from error
    except (TypeError, ValueError) as error:
        raise EventNotSerializable(what, str(error)) from error


def check_text(value: str, what: str, event_type: str) -> None:
    """Raise :class:`EventNotSerializable` if ``value`` is text UTF-8 cannot encode (a lone
    surrogate, as a decoded ``"\\ud800"`` escape gives): refused here, for this one event, it
    cannot fail the write transaction of a whole batch and other appenders' events with it."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise EventNotSerializable(
            event_type, f"{what} holds text UTF-8 cannot encode ({error.reason} at {error.start})"
        ) from error


def check_stream(stream: str) -> None:
    """Raise :class:`ConfigurationError` for a stream id that is not text UTF-8 can encode."""
    if not isinstance(stream, str):
        raise ConfigurationError(f"a stream id must be text, not {type(stream).__name__}")
    if not stream.isascii():
        try:
            stream.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ConfigurationError(f"stream id {stream!r} holds text UTF-8 cannot encode") from error


def event_row(new: NewEvent) -> tuple[Any, ...]:
    """The columns ``new`` gives (:data:`EVENT_ROW`); raises :class:`EventNotSerializable` for a bad
    event: no type, a time that is not finite, a payload JSON cannot hold, or text (in the type,
    the payload or a column) that UTF-8 cannot encode."""
    event_type = new.type
    if not event_type:
        raise EventNotSerializable("", "an event needs a type")
    if not isinstance(event_type, str):
        raise EventNotSerializable(repr(event_type), "the type must be text")
    if not event_type.isascii():  # check_text's own first test, here to save the call
        check_text(event_type, "the type", repr(event_type))
    occurred_at = new.occurred_at
    if not math.isfinite(occurred_at):
        raise EventNotSerializable(event_type, f"occurred_at must be a finite time, not {occurred_at}")
    latency = new.latency_ms
    payload = encode_json(new.payload, event_type)
    if not payload.isascii():
        check_text(payload, "the payload", event_type)
    copied = _copied(new)
    for value in copied:
        if isinstance(value, str) and not value.isascii():  # rare: then find and name the column
            for name, text in zip(_COPIED, copied, strict=True):
                if isinstance(text, str):
                    check_text(text, f"column {name}", event_type)
            break
    return (
        event_type,
        new.schema_version,
        float(occurred_at),
        payload,
        *copied,
        None if latency is None else float(latency),
    )


def fence_names(work: list[Work]) -> set[str]:
    """The lease names whose fencing numbers the batch's transaction must read."""
    return {item.fence.name for item in work if item.fence is not None}


def plan_batch(
    work: list[Work],
    heads: dict[str, int],
    position: int,
    recorded_at: float,
    fences: Mapping[str, int | None] | None = None,
) -> tuple[list[Outcome], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Inside the write transaction: check fences and versions, assign versions and positions.

    :param heads: each appended stream's current version (absent: 0); updated as appends land.
    :param position: the log's last position (0 when empty).
    :param fences: the current fencing number of each lease named by the batch's items
        (:func:`fence_names`; ``None``: released or absent). An item whose lease has moved on
        is refused with :class:`~poolwarden.errors.LeaseLost` and writes nothing.
    :returns: one outcome per item (a committed append's is a
        :data:`~poolwarden.storage.writer.Committed` tuple), the event rows to insert
        (:data:`INSERT_COLUMNS`) and the snapshot rows to save.
    """
    outcomes: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    snapshots: list[tuple[Any, ...]] = []
    add_outcome, add_row = outcomes.append, rows.append  # bound once: a batch has thousands of items
    head_of = heads.get
    for item in work:
        fence = item.fence
        number = None
        if fence is not None:
            current = fences.get(fence.name) if fences is not None else None
            if current != fence.fence:
                add_outcome(LeaseLost(fence.name, fence.fence, current))
                continue
            number = fence.fence
        if item.__class__ is not PendingAppend:
            assert isinstance(item, PendingSnapshot)
            snapshots.append(item.row)
            add_outcome(None)
            continue
        stream = item.stream
        head = head_of(stream, 0)
        expected = item.expected_version
        if expected is not None and expected != head:
            add_outcome(ConcurrencyConflict(stream, expected, head))
            continue
        first_position = position + 1
        event_rows = item.rows
        if len(event_rows) == 1:  # most appends carry one event: no loop to set up
            position = first_position
            last = head + 1
            add_row((position, stream, last, recorded_at, number, *event_rows[0]))
        else:
            last = head
            for row in event_rows:
                position += 1
                last += 1
                add_row((position, stream, last, recorded_at, number, *row))
        heads[stream] = last
        add_outcome((head + 1, last, first_position, position))
    return outcomes, rows, snapshots
