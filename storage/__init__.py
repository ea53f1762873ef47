"""The durable event store: an append-only log of events in streams, with snapshots.

>>> async with open_store("poolwarden.db") as store:          # doctest: +SKIP
...     await store.append("breaker/conn-1", [event], expected_version=0)

Code above this package names only :class:`EventStore` (the interface) and :func:`open_store`
(the one factory), never a backend class, so that a backend can be added without touching it.
"""

from __future__ import annotations

import os
from typing import Any

from poolwarden.storage.base import ANY_VERSION, Durability, EventStore, Receipt
from poolwarden.storage.postgres import PostgresEventStore, is_postgres_url
from poolwarden.storage.sqlite import SQLiteEventStore

__all__ = [
    "ANY_VERSION",
    "Durability",
    "EventStore",
    "PostgresEventStore",
    "Receipt",
    "SQLiteEventStore",
    "open_store",
]


def open_store(target: str | os.PathLike[str] = ":memory:", **options: Any) -> EventStore:
    """The event store for ``target``: a file path, ``":memory:"``, an SQLite URL or a PostgreSQL
    URL (``postgresql://user:pw@host/db`` or ``postgresql+asyncpg://...``).

    ``open_store(path, read_only=True)`` reads a log without ever writing to it. Use the result
    as an async context manager (``async with open_store(path) as store``), or
    call ``await store.open()`` and ``await store.close()``. Options go to the backend
    (:class:`SQLiteEventStore` for SQLite, :class:`PostgresEventStore` for PostgreSQL).
    """
    if is_postgres_url(target):
        return PostgresEventStore(str(target), **options)
    return SQLiteEventStore(target, **options)
