"""``poolwarden bench store --db postgresql://...``: the store on PostgreSQL against raw asyncpg.

The runs of :mod:`poolwarden.bench.store` (32 appenders, buffered then sync; a replay), each in a
schema of its own on the given server (``CREATE`` on the database is needed), and the baseline
in the same process and run: the same rows written with plain asyncpg into a copy of the same
table (``CREATE TABLE ... (LIKE events INCLUDING ALL)``: the same columns, keys and indexes),
first with ``executemany`` in transactions of 5,000 rows (what the SQLite baseline does), then
with ``COPY`` (PostgreSQL's bulk path, the fastest a client can write). Every schema is dropped
afterwards, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from poolwarden.bench.store import (
    _RAW_COLUMNS,
    APPENDERS,
    STREAMS,
    _append_all,
    _as_they_are,
    _event,
    _replay,
)
from poolwarden.envelope import COLUMN_NAMES
from poolwarden.storage.postgres import postgres_url

__all__ = ["run", "run_postgres"]

_BATCH = 5000


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _rows(start: int, stop: int) -> list[tuple[Any, ...]]:
    """The raw baseline's rows ``start`` to ``stop`` (0-based): what the store would write."""
    encode = _encode
    rows = []
    for i in range(start, stop):
        new = _event(i)
        stream, version = f"bench/stream-{i % STREAMS}", i // STREAMS + 1
        rows.append((i + 1, stream, version, time.time(), encode(new.payload), *_as_they_are(new)))
    return rows


def run(db: str, events: int = 200_000, sync_events: int | None = None) -> dict[str, Any]:
    """Run the store benchmark on the PostgreSQL server of ``db`` and return its figures."""
    return asyncio.run(run_postgres(db, events, sync_events or events))


async def run_postgres(db: str, events: int, sync_events: int) -> dict[str, Any]:
    """The store benchmark's figures on the PostgreSQL server of ``db``."""
    import asyncpg

    url = postgres_url(db)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    prefix = f"pw_bench_{os.getpid()}"
    buffered, sync, raw = f"{prefix}_buffered", f"{prefix}_sync", f"{prefix}_raw"
    admin = await asyncpg.connect(dsn)
    try:
        buffered_s = await _append_all(db, events, "buffered", schema=buffered)
        sync_s = await _append_all(db, sync_events, "sync", schema=sync)
        replay_s, replayed = await _replay(db, schema=buffered)
        if replayed != events:
            raise AssertionError(f"replayed {replayed} events, appended {events}")
        await admin.execute(
            f"CREATE SCHEMA {raw}; CREATE TABLE {raw}.events (LIKE {buffered}.events INCLUDING ALL)"
        )
        sql = (
            f"INSERT INTO {raw}.events ({', '.join(_RAW_COLUMNS)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(_RAW_COLUMNS) + 1))})"
        )
        # As the sqlite3 baseline does, each run builds its rows (JSON payloads) as it writes.
        started = time.perf_counter()
        for start in range(0, events, _BATCH):
            async with admin.transaction():
                await admin.executemany(sql, _rows(start, min(start + _BATCH, events)))
        raw_s = time.perf_counter() - started
        await admin.execute(f"TRUNCATE {raw}.events")
        started = time.perf_counter()
        for start in range(0, events, _BATCH):
            rows = _rows(start, min(start + _BATCH, events))
            async with admin.transaction():
                await admin.copy_records_to_table(
                    "events", schema_name=raw, columns=_RAW_COLUMNS, records=rows
                )
        copy_s = time.perf_counter() - started
        started = time.perf_counter()
        replay_rows = await admin.fetch(
            f"SELECT {', '.join(COLUMN_NAMES)} FROM {buffered}.events ORDER BY position"
        )
        raw_replay_s = time.perf_counter() - started
        if len(replay_rows) != events:
            raise AssertionError("nothing to replay")
        size = await admin.fetchval(f"SELECT pg_total_relation_size('{buffered}.events')")
    finally:
        try:
            for schema in (buffered, sync, raw):
                await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await admin.close()
    result: dict[str, Any] = {
        "backend": "postgresql",
        "server": url.render_as_string(hide_password=True),
        "events": events,
        "sync_events": sync_events,
        "appenders": APPENDERS,
        "streams": STREAMS,
        "buffered_events_per_s": round(events / buffered_s),
        "sync_events_per_s": round(sync_events / sync_s),
        "raw_asyncpg_events_per_s": round(events / raw_s),
        "raw_asyncpg_copy_events_per_s": round(events / copy_s),
        "replay_events_per_s": round(replayed / replay_s),
        "raw_replay_events_per_s": round(events / raw_replay_s),
        "db_bytes": int(size),
    }
    result["buffered_ratio"] = round(result["buffered_events_per_s"] / result["raw_asyncpg_events_per_s"], 3)
    result["buffered_ratio_copy"] = round(
        result["buffered_events_per_s"] / result["raw_asyncpg_copy_events_per_s"], 3
    )
    result["replay_ratio"] = round(result["replay_events_per_s"] / result["raw_replay_events_per_s"], 3)
    return result
