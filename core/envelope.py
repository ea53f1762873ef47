"""The event envelope: every column an event has in the store, defined once.

Each :class:`Column` says what one column holds (its kind and so its Python type), whether it
may be NULL, who sets it (the store at commit, the append's call, or the event itself) and the
pandas dtype analysis gives it. Everything else that lists an event's columns is derived from
:data:`ENVELOPE`: the store's table (``poolwarden.storage.schema``), its INSERT and SELECT
column lists, the rows a write transaction inserts (``poolwarden.storage.rows``), the raw
sqlite3 baselines of the benchmarks, analysis' frame columns and dtypes, and the event printer's
JSON. :class:`~poolwarden.events.NewEvent` and :class:`~poolwarden.events.RecordedEvent` are
written out as classes (for the type checker) and a test holds them to this list.

Pure: no SQL, pandas or asyncio here; the dtypes are pandas' names for them, as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "COLUMN_NAMES",
    "ENVELOPE",
    "EVENT_FIELDS",
    "INDEXED_FIELDS",
    "READING_ORDER",
    "STORE_SET",
    "TIME_DTYPE_NAME",
    "Column",
]

Kind = Literal["integer", "real", "text", "time", "json"]
"""What a column holds: a whole number, a real number, text, epoch seconds, a JSON document."""

SetBy = Literal["store", "append", "event"]
"""Who gives a column its value: the store at commit, the append call (the stream), the event."""

TIME_DTYPE_NAME = "datetime64[us, UTC]"
"""pandas' dtype for every point in time: microseconds, UTC (the store keeps epoch seconds)."""

_PYTHON_TYPES: dict[Kind, type] = {"integer": int, "real": float, "text": str, "time": float, "json": str}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the envelope.

    :param name: the column's name in the store, in analysis' frames and in the printed JSON.
    :param kind: what it holds; :attr:`python_type` follows from it.
    :param nullable: whether an event may leave it unset (NULL, ``None``).
    :param set_by: who gives it its value.
    :param dtype: the pandas dtype analysis gives the column (``"category"`` for text with few
        distinct values, ``"str"`` for text with many, ``"object"`` for decoded JSON).
    :param indexed: an attribute analysis filters on, kept as a real column (see
        :data:`INDEXED_FIELDS`).
    :param primary_key: the log's order, unique and assigned at commit (``position``).
    """

    name: str
    kind: Kind
    nullable: bool
    set_by: SetBy
    dtype: str
    indexed: bool = False
    primary_key: bool = False

    @property
    def python_type(self) -> type:
        """The Python type of a value of this column (``None`` too, where it is nullable)."""
        return _PYTHON_TYPES[self.kind]

    @property
    def attribute(self) -> str:
        """The column's attribute on :class:`~poolwarden.events.RecordedEvent` (the payload's is
        ``payload_json``: ``payload`` is the decoded property)."""
        return f"{self.name}_json" if self.kind == "json" else self.name


def _indexed(name: str, kind: Kind = "text") -> Column:
    return Column(name, kind, True, "event", "float64" if kind == "real" else "category", indexed=True)


ENVELOPE: tuple[Column, ...] = (
    Column("position", "integer", False, "store", "int64", primary_key=True),
    Column("stream", "text", False, "append", "category"),
    Column("version", "integer", False, "store", "int64"),
    Column("type", "text", False, "event", "category"),
    Column("schema_version", "integer", False, "event", "int64"),
    Column("occurred_at", "time", False, "event", TIME_DTYPE_NAME),
    Column("recorded_at", "time", False, "store", TIME_DTYPE_NAME),
    Column("payload", "json", False, "event", "object"),
    Column("incident_id", "text", True, "event", "str"),
    _indexed("connection_id"),
    _indexed("model_id"),
    _indexed("browser"),
    _indexed("error_kind"),
    _indexed("from_state"),
    _indexed("to_state"),
    _indexed("rung"),
    _indexed("outcome"),
    _indexed("latency_ms", "real"),
    # The fencing number of the lease the writing pool held (``poolwarden.lease``); NULL for a
    # writer that holds none (a standalone breaker, a tool). Last: it came with schema 0003.
    Column("fence", "integer", True, "append", "Int64"),
)
"""Every column of an event, in table order (which is also RecordedEvent's field order)."""

COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in ENVELOPE)
"""The columns' names in table order."""

INDEXED_FIELDS: tuple[str, ...] = tuple(column.name for column in ENVELOPE if column.indexed)
"""The event attributes stored as their own columns, in column order."""

EVENT_FIELDS: tuple[str, ...] = tuple(column.name for column in ENVELOPE if column.set_by == "event")
"""The columns a :class:`~poolwarden.events.NewEvent` gives (its fields), in table order."""

STORE_SET: tuple[str, ...] = tuple(column.name for column in ENVELOPE if column.set_by != "event")
"""The columns a store sets when it commits an append (the stream it was given, version,
position, recorded_at), in table order."""

READING_ORDER: tuple[Column, ...] = (
    *(column for column in ENVELOPE if column.kind != "json"),
    *(column for column in ENVELOPE if column.kind == "json"),
)
"""The columns in the order people read an event: where and when, the indexed columns, then the
payload (analysis' frames, the printed JSON)."""
