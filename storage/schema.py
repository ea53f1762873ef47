"""The event store's tables, as SQLAlchemy metadata.

The events table's columns come from the event envelope (``poolwarden.envelope``), the one
description of an event's columns; the rest of the schema is written here. This module is the
schema's one description: the Alembic migrations in ``poolwarden.migrations``
build exactly these tables (a test upgrades an empty file and compares), and ``analysis`` reads
through these names. Migrations are additive: columns are added, never renamed or dropped.

Times are UTC epoch seconds (REAL), so a store can be read from any language without a date
parser and pandas converts a column in one vectorised call.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

from poolwarden.envelope import ENVELOPE, Kind
from poolwarden.envelope import Column as EnvelopeColumn

__all__ = ["EVENT_COLUMNS", "events", "leases", "metadata", "snapshots", "store_info"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite makes an INTEGER PRIMARY KEY the rowid (no separate index); elsewhere it is 64-bit.
_position_type = BigInteger().with_variant(Integer(), "sqlite")

# Times are REAL epoch seconds; a JSON payload is TEXT.
_SQL_TYPES: dict[Kind, type[TypeEngine[Any]]] = {
    "integer": Integer,
    "real": Float,
    "time": Float,
    "text": Text,
    "json": Text,
}


def _event_column(column: EnvelopeColumn) -> Column[Any]:
    if column.primary_key:
        return Column(column.name, _position_type, primary_key=True, autoincrement=True)
    return Column(column.name, _SQL_TYPES[column.kind], nullable=column.nullable)


events = Table(
    "events",
    metadata,
    *(_event_column(column) for column in ENVELOPE),
    # Optimistic concurrency: two writers that both think a stream is at version N cannot both
    # write N + 1. The same index serves reading one stream in order.
    UniqueConstraint("stream", "version"),
)
"""One row per event; its columns are the envelope's (:data:`poolwarden.envelope.ENVELOPE`)."""

snapshots = Table(
    "snapshots",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("taken_at", Float, nullable=False),
    Column("state", Text, nullable=False),
)

store_info = Table(
    "store_info",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
"""What the store says of itself: ``store_id`` (a UUID made when the file was created), ``created_at``."""

leases = Table(
    "leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("fence", BigInteger, nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("renewed_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("released_at", Float, nullable=True),
)
"""One row per pool name: who holds its lease, under which fencing number, until when
(``poolwarden.lease`` has the rules). Rows are never deleted: the highest ``fence`` ever given
is the next owner's floor."""

EVENT_COLUMNS: tuple[str, ...] = tuple(column.name for column in events.columns)
"""The events table's columns in table order, which is also RecordedEvent's argument order."""
