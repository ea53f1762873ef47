"""``poolwarden bench store``: the event store's append and replay speed against the raw driver.

In one process and one folder: N events (100 streams, ~150-byte payloads) appended through the
store by 32 concurrent appenders, buffered and then sync; all of them read back in order; and the
same rows written with plain ``sqlite3.executemany`` into the same schema, as the baseline that
machine noise affects equally.

A lone durable append, each in a fresh process on an idle file: the p50 of one-event sync
appends through the store (``lone_sync_append_us``) and of the same row through plain sqlite3
(``raw_lone_append_us``: ``BEGIN IMMEDIATE``, ``INSERT``, ``COMMIT``), into the same schema, a file
on disk of the same folder, with the store's pragmas (WAL, ``synchronous = NORMAL``); their
ratio is ``lone_ratio``.

With ``db=`` a PostgreSQL URL, the same runs go to that server (in schemas of their own, dropped
afterwards) and the baseline is raw asyncpg: ``executemany`` (batches of 5,000 rows a
transaction, as for sqlite3) and ``COPY``, into the same tables; :mod:`poolwarden.bench.store_postgres`.
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from poolwarden.envelope import COLUMN_NAMES, ENVELOPE
from poolwarden.events import NewEvent
from poolwarden.storage import open_store
from poolwarden.storage.base import Durability

__all__ = ["run"]

STREAMS = 100
APPENDERS = 32
LONE_APPENDS = 2000  # timed one-event appends, after LONE_WARMUP untimed ones
LONE_WARMUP = 200

# The raw baseline's rows: what the store sets, the payload, then the event's other columns as
# they are (all from the event envelope, so the baseline writes every column the store writes).
_AS_THEY_ARE = tuple(c.name for c in ENVELOPE if c.set_by == "event" and c.kind != "json")
_RAW_COLUMNS = ("position", "stream", "version", "recorded_at", "payload", *_AS_THEY_ARE)
_as_they_are = operator.attrgetter(*_AS_THEY_ARE)


def _event(i: int) -> NewEvent:
    return NewEvent(
        type="CallFailed",
        occurred_at=1_700_000_000.0 + i * 0.001,
        payload={"attempt": i, "detail": "websocket closed by peer during inference", "n": i % 7},
        connection_id=f"conn-{i % 8}",
        model_id="toy-mlp",
        error_kind="transport",
        latency_ms=12.5,
    )


async def _append_all(target: Path | str, events: int, durability: Durability, **options: Any) -> float:
    async with open_store(target, durability=durability, **options) as store:
        per_appender = events // APPENDERS
        extra = events - per_appender * APPENDERS

        async def appender(index: int) -> None:
            count = per_appender + (1 if index < extra else 0)
            owned = [f"bench/stream-{j}" for j in range(index, STREAMS, APPENDERS)]
            versions: dict[str, int] = {}
            for k in range(count):
                stream = owned[k % len(owned)]
                version = versions.get(stream, 0)
                await store.append(stream, [_event(k)], expected_version=version)
                versions[stream] = version + 1

        # Each appender owns the streams j with j % APPENDERS == index, as a breaker driver owns
        # its breaker's stream, and appends with the version it expects.
        started = time.perf_counter()
        await asyncio.gather(*(appender(i) for i in range(APPENDERS)))
        await store.flush()
        return time.perf_counter() - started


async def _replay(target: Path | str, **options: Any) -> tuple[float, int]:
    async with open_store(target, read_only=True, **options) as store:
        started = time.perf_counter()
        seen, last = 0, 0
        async for page in store.iter_pages():
            for recorded in page:
                if recorded.position <= last:
                    raise AssertionError("replay out of order")
                last = recorded.position
            seen += len(page)
        return time.perf_counter() - started, seen


def _raw_sqlite(path: Path, schema_from: Path, events: int) -> float:
    """The same rows through plain sqlite3.executemany, batches of 5,000 rows a transaction."""
    with sqlite3.connect(schema_from) as source:
        ddl = [sql for (sql,) in source.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in ddl:
        conn.execute(statement)
    sql = f"INSERT INTO events ({', '.join(_RAW_COLUMNS)}) VALUES ({', '.join('?' * len(_RAW_COLUMNS))})"
    encode = json.JSONEncoder(separators=(",", ":")).encode
    started = time.perf_counter()
    batch: list[tuple[Any, ...]] = []
    for i in range(events):
        new = _event(i)
        stream, version = f"bench/stream-{i % STREAMS}", i // STREAMS + 1
        batch.append((i + 1, stream, version, time.time(), encode(new.payload), *_as_they_are(new)))
        if len(batch) == 5000 or i == events - 1:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
            batch = []
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def _raw_replay(path: Path) -> float:
    """Every row of the log iterated in position order with plain sqlite3: the replay baseline."""
    conn = sqlite3.connect(path)
    started = time.perf_counter()
    count = sum(1 for _ in conn.execute(f"SELECT {', '.join(COLUMN_NAMES)} FROM events ORDER BY position"))
    elapsed = time.perf_counter() - started
    conn.close()
    if count == 0:
        raise AssertionError("nothing to replay")
    return elapsed


async def _lone_store(path: Path) -> list[float]:
    """Seconds each one-event sync append took, one after another on an otherwise idle store."""
    async with open_store(path, durability="sync") as store:
        samples: list[float] = []
        for i in range(LONE_WARMUP + LONE_APPENDS):
            new = _event(i)
            started = time.perf_counter()
            await store.append("lone/stream", [new], expected_version=i)
            samples.append(time.perf_counter() - started)
    return samples[LONE_WARMUP:]


def _lone_raw(path: Path, schema_from: Path) -> list[float]:
    """The same appends through plain sqlite3: a transaction of one INSERT each, the store's pragmas."""
    with sqlite3.connect(schema_from) as source:
        ddl = [sql for (sql,) in source.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("busy_timeout = 5000", "foreign_keys = ON", "synchronous = NORMAL", "journal_mode = WAL"):
        conn.execute(f"PRAGMA {pragma}")
    for statement in ddl:
        conn.execute(statement)
    sql = f"INSERT INTO events ({', '.join(_RAW_COLUMNS)}) VALUES ({', '.join('?' * len(_RAW_COLUMNS))})"
    encode = json.JSONEncoder(separators=(",", ":")).encode
    samples: list[float] = []
    for i in range(LONE_WARMUP + LONE_APPENDS):
        new = _event(i)
        started = time.perf_counter()
        row = (i + 1, "lone/stream", i + 1, time.time(), encode(new.payload), *_as_they_are(new))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, row)
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - started)
    conn.close()
    return samples[LONE_WARMUP:]


def lone_child(kind: str, folder: str) -> float:
    """In a fresh process (see :func:`_lone_in_fresh_process`): the p50 in microseconds."""
    base = Path(folder)
    if kind == "store":
        samples = asyncio.run(_lone_store(base / "lone.db"))
    else:
        samples = _lone_raw(base / "raw-lone.db", base / "lone.db")
    return round(statistics.median(samples) * 1e6, 1)


def _lone_in_fresh_process(kind: str, folder: Path) -> float:
    code = "import sys; from poolwarden.bench.store import lone_child as c; print(c(*sys.argv[1:3]))"
    done = subprocess.run(
        [sys.executable, "-c", code, kind, str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the lone {kind} append run failed: {done.stderr.strip()}")
    return float(done.stdout.strip().splitlines()[-1])


def run(events: int = 200_000, sync_events: int | None = None) -> dict[str, Any]:
    """Run the store benchmark and return its figures."""
    sync_events = sync_events or events
    with tempfile.TemporaryDirectory(prefix="poolwarden-bench-") as folder:
        base = Path(folder)
        lone_us = _lone_in_fresh_process("store", base)  # first: it creates the schema raw copies
        raw_lone_us = _lone_in_fresh_process("raw", base)
        buffered_s = asyncio.run(_append_all(base / "buffered.db", events, "buffered"))
        sync_s = asyncio.run(_append_all(base / "sync.db", sync_events, "sync"))
        replay_s, replayed = asyncio.run(_replay(base / "buffered.db"))
        if replayed != events:
            raise AssertionError(f"replayed {replayed} events, appended {events}")
        raw_s = _raw_sqlite(base / "raw.db", base / "buffered.db", events)
        raw_replay_s = _raw_replay(base / "buffered.db")
        size = os.path.getsize(base / "buffered.db")
    result: dict[str, Any] = {
        "events": events,
        "sync_events": sync_events,
        "appenders": APPENDERS,
        "streams": STREAMS,
        "buffered_events_per_s": round(events / buffered_s),
        "sync_events_per_s": round(sync_events / sync_s),
        "raw_sqlite_events_per_s": round(events / raw_s),
        "replay_events_per_s": round(replayed / replay_s),
        "db_bytes": size,
    }
    result["lone_sync_append_us"] = lone_us
    result["raw_lone_append_us"] = raw_lone_us
    result["lone_ratio"] = round(lone_us / raw_lone_us, 2)
    result["raw_replay_events_per_s"] = round(events / raw_replay_s)
    result["buffered_ratio"] = round(result["buffered_events_per_s"] / result["raw_sqlite_events_per_s"], 3)
    result["replay_ratio"] = round(result["replay_events_per_s"] / result["raw_replay_events_per_s"], 3)
    return result
