"""The event store's tables, as SQLAlchemy metadata.

This module is the schema's one description: the Alembic migrations in ``poolwarden.migrations``
build exactly these tables (a test upgrades an empty file and compares), and ``analysis`` reads
through these names. Migrations are additive: columns are added, never renamed or dropped.

Times are UTC epoch seconds (REAL), so a store can be read from any language without a date
parser and pandas converts a column in one vectorised call.
"""

from __future__ import annotations

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

__all__ = ["EVENT_COLUMNS", "events", "metadata", "snapshots", "store_info"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite makes an INTEGER PRIMARY KEY the rowid (no separate index); elsewhere it is 64-bit.
_position_type = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("position", _position_type, primary_key=True, autoincrement=True),
    Column("stream", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("occurred_at", Float, nullable=False),
    Column("recorded_at", Float, nullable=False),
    Column("payload", Text, nullable=False),
    Column("incident_id", Text, nullable=True),
    Column("connection_id", Text, nullable=True),
    Column("model_id", Text, nullable=True),
    Column("browser", Text, nullable=True),
    Column("error_kind", Text, nullable=True),
    Column("from_state", Text, nullable=True),
    Column("to_state", Text, nullable=True),
    Column("rung", Text, nullable=True),
    Column("outcome", Text, nullable=True),
    Column("latency_ms", Float, nullable=True),
    # Optimistic concurrency: two writers that both think a stream is at version N cannot both
    # write N + 1. The same index serves reading one stream in order.
    UniqueConstraint("stream", "version"),
)

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

EVENT_COLUMNS: tuple[str, ...] = tuple(column.name for column in events.columns)
"""The events table's columns in table order, which is also RecordedEvent's argument order."""
