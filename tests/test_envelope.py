"""The event envelope is the one list of an event's columns; everything else agrees with it."""

from __future__ import annotations

import ast
import dataclasses
import json
import sqlite3
from pathlib import Path

import pandas as pd
from sqlalchemy import create_engine

import poolwarden.envelope as envelope_module
from poolwarden.analysis.frames import DERIVED_COLUMNS, TIME_DTYPE
from poolwarden.analysis.frames import EVENT_COLUMNS as FRAME_COLUMNS
from poolwarden.cli.eventlog import _as_json
from poolwarden.envelope import COLUMN_NAMES, ENVELOPE, EVENT_FIELDS, INDEXED_FIELDS, TIME_DTYPE_NAME
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.lease import Lease
from poolwarden.storage import migrate
from poolwarden.storage.rows import INSERT_COLUMNS, event_row, plan_batch
from poolwarden.storage.schema import events
from poolwarden.storage.writer import PendingAppend


def test_the_envelope_module_is_pure() -> None:
    """envelope.py imports nothing but the standard library's dataclasses and typing."""
    tree = ast.parse(Path(envelope_module.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "dataclasses", "typing"}


def test_the_table_is_the_envelope() -> None:
    """schema.py's events table has the envelope's columns, in order, with their nullability and types."""
    assert tuple(c.name for c in events.columns) == COLUMN_NAMES
    for column, table_column in zip(ENVELOPE, events.columns, strict=True):
        assert table_column.nullable == column.nullable, column.name
        assert table_column.type.python_type is column.python_type, column.name
        assert table_column.primary_key == column.primary_key, column.name


def test_the_migrated_table_is_the_envelope(tmp_path: Path) -> None:
    """The Alembic migrations (history, written out) build the envelope's columns and nullability."""
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.begin() as conn:
        migrate.upgrade(conn)
    engine.dispose()
    with sqlite3.connect(tmp_path / "fresh.db") as raw:
        info = raw.execute("PRAGMA table_info(events)").fetchall()
    raw.close()
    assert [(name, bool(notnull) or bool(pk)) for _, name, _, notnull, _, pk in info] == [
        (c.name, not c.nullable) for c in ENVELOPE
    ]


def test_the_event_classes_spell_out_the_envelope() -> None:
    """RecordedEvent's fields are the envelope's columns in order; NewEvent's are the event's own."""
    assert RecordedEvent._fields == tuple(c.attribute for c in ENVELOPE)
    assert {f.name for f in dataclasses.fields(NewEvent)} == set(EVENT_FIELDS)
    assert INDEXED_FIELDS == (
        "connection_id",
        "model_id",
        "browser",
        "error_kind",
        "from_state",
        "to_state",
        "rung",
        "outcome",
        "latency_ms",
    )


def test_a_planned_row_holds_every_field_of_the_event_by_name() -> None:
    """event_row and plan_batch make rows whose INSERT_COLUMNS name each value correctly."""
    assert sorted(INSERT_COLUMNS) == sorted(COLUMN_NAMES)
    new = NewEvent(
        type="Happened",
        occurred_at=5,
        payload={"a": 1},
        schema_version=2,
        incident_id="inc-1",
        **{name: f"{name}-value" for name in INDEXED_FIELDS if name != "latency_ms"},
        latency_ms=3,
    )
    lease = Lease("main", "host:1:2", 3, 0.0, 10.0)
    item = PendingAppend("s/a", None, [event_row(new)], None, buffered=False, fence=lease)  # type: ignore[arg-type]
    _, rows, _ = plan_batch([item], {"s/a": 4}, 10, recorded_at=7.5, fences={"main": 3})
    stored = dict(zip(INSERT_COLUMNS, rows[0], strict=True))
    assert stored == {
        "position": 11,
        "stream": "s/a",
        "version": 5,
        "recorded_at": 7.5,
        "fence": 3,
        "type": "Happened",
        "schema_version": 2,
        "occurred_at": 5.0,
        "payload": '{"a":1}',
        "incident_id": "inc-1",
        **{name: f"{name}-value" for name in INDEXED_FIELDS if name != "latency_ms"},
        "latency_ms": 3.0,
    }


def test_analysis_dtypes_are_the_envelope_s() -> None:
    """The frame's columns are the envelope's, the payload last, with the dtypes it names, and the
    derived ones (``pool``) after ``stream``."""
    assert pd.api.types.pandas_dtype(TIME_DTYPE_NAME) == TIME_DTYPE
    stored = [name for name in FRAME_COLUMNS if name not in DERIVED_COLUMNS]
    assert stored == [c.name for c in ENVELOPE if c.name != "payload"] + ["payload"]
    assert list(FRAME_COLUMNS)[2 : 2 + len(DERIVED_COLUMNS)] == list(DERIVED_COLUMNS) == ["pool"]
    for column in ENVELOPE:
        assert str(FRAME_COLUMNS[column.name]) == column.dtype, column.name


def test_the_printed_json_keeps_its_order() -> None:
    """``poolwarden events --json`` prints every column, the payload decoded and last."""
    recorded = RecordedEvent(1, "s/a", 1, "Happened", 1, 5.0, 6.0, '{"a": 1}', None, "conn-1")
    record = json.loads(_as_json(recorded))
    assert list(record) == [
        "position",
        "stream",
        "version",
        "type",
        "schema_version",
        "occurred_at",
        "recorded_at",
        "incident_id",
        *INDEXED_FIELDS,
        "fence",
        "payload",
    ]
    assert record["payload"] == {"a": 1}
    assert record["connection_id"] == "conn-1"


def test_recorded_of_is_the_inverse_of_to_new_event() -> None:
    """RecordedEvent.of numbers an event as a store would; to_new_event gives the same event back."""
    new = NewEvent(
        type="Happened",
        occurred_at=5.0,
        payload={"a": [1, 2], "b": "é"},
        schema_version=2,
        incident_id="inc-1",
        connection_id="conn-1",
        rung="ping",
        latency_ms=1.5,
    )
    recorded = RecordedEvent.of(new, position=7, stream="s/a", version=3, recorded_at=6.0)
    assert (recorded.position, recorded.stream, recorded.version, recorded.recorded_at) == (7, "s/a", 3, 6.0)
    assert recorded.payload_json == '{"a":[1,2],"b":"é"}'
    assert recorded.to_new_event() == new
