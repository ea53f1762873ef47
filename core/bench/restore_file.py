"""Restoring breakers from the file on disk, in a fresh process, as a user's start-up does.

``poolwarden bench breaker`` folds its synthetic log in memory; this writes that log (events and
the snapshots the durable driver would have taken) to an SQLite file, then times, each in a
process of its own and alternately:

* ``restore_file_s``: ``DurableBreakers(store, registry).restore()`` on the file, opened by
  ``open_store`` (the path ``open_breakers`` and a pool take);
* ``raw_same_reads_s``: raw sqlite3 doing the same reads (every breaker stream's snapshot and the
  events after it, payloads and states JSON-decoded), with nothing folded.

Their ratio is the cost of the library's path over the reads it cannot avoid.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from poolwarden.breaker_events import STREAM_PREFIX
from poolwarden.envelope import COLUMN_NAMES
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.storage.sqlite import SELECT_SNAPSHOTS_IN_RANGE, SELECT_TAILS

__all__ = ["measure", "write_log"]

_LAST = STREAM_PREFIX + "\U0010ffff"

# The same reads, in the same statements, as the SQLite store's load_heads: every stream's
# snapshot, and every stream's events after its snapshot.
RAW_SNAPSHOTS = SELECT_SNAPSHOTS_IN_RANGE
RAW_TAILS = SELECT_TAILS


def write_log(path: Path, records: list[RecordedEvent], snapshots: dict[str, Snapshot]) -> None:
    """An event store file holding ``records`` and ``snapshots`` (the schema made by the store)."""
    from poolwarden.storage import open_store

    async def create() -> None:
        async with open_store(path):
            pass

    asyncio.run(create())
    with sqlite3.connect(path) as conn:
        marks = ", ".join("?" * len(COLUMN_NAMES))
        conn.executemany(f"INSERT INTO events ({', '.join(COLUMN_NAMES)}) VALUES ({marks})", records)
        conn.executemany(
            "INSERT INTO snapshots (stream, version, schema_version, taken_at, state) VALUES (?, ?, 1, ?, ?)",
            [(s.stream, s.version, s.taken_at, json.dumps(s.state)) for s in snapshots.values()],
        )


def _raw(path: str) -> dict[str, Any]:
    started = time.perf_counter()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    # In one read transaction, as the store reads them.
    conn.execute("BEGIN")
    states = {row[0]: json.loads(row[2]) for row in conn.execute(RAW_SNAPSHOTS, (STREAM_PREFIX, _LAST))}
    events = 0
    for row in conn.execute(RAW_TAILS, (STREAM_PREFIX, _LAST)):
        json.loads(row[7])
        events += 1
    conn.execute("COMMIT")
    conn.close()
    return {"seconds": time.perf_counter() - started, "snapshots": len(states), "tail_events": events}


async def _restore(path: str) -> dict[str, Any]:
    from poolwarden.aio.durable_breakers import DurableBreakers
    from poolwarden.breaker_registry import BreakerRegistry
    from poolwarden.clock import system_clock
    from poolwarden.storage import open_store

    started = time.perf_counter()
    async with open_store(path, read_only=True) as store:
        registry = BreakerRegistry(clock=system_clock, rng=random.Random(0))
        restored = await DurableBreakers(store, registry).restore()
    return {"seconds": time.perf_counter() - started, "breakers": restored}


def _child(mode: str, path: str) -> dict[str, Any]:
    process = subprocess.run(
        [sys.executable, "-m", "poolwarden.bench.restore_file", mode, path],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    return result


def measure(
    records: list[RecordedEvent], snapshots: dict[str, Snapshot], *, repeats: int = 5
) -> dict[str, Any]:
    """Write the log to a temporary file and time both paths ``repeats`` times, alternately, each
    in a fresh process; medians and their ratio.

    One untimed run of each comes first: the file was written a moment ago, and the first reads
    after writing 200 MB were measured 1.5-2x slower than every later one, for either path (the
    kernel still writing the pages back). A restart reads a log its previous process wrote.
    """
    with tempfile.TemporaryDirectory(prefix="poolwarden-restore-") as folder:
        path = Path(folder) / "breakers.db"
        write_log(path, records, snapshots)
        _child("raw", str(path))
        _child("restore", str(path))
        raw: list[float] = []
        library: list[float] = []
        restored = 0
        for _ in range(repeats):
            raw.append(_child("raw", str(path))["seconds"])
            run = _child("restore", str(path))
            library.append(run["seconds"])
            restored = run["breakers"]
        size = os.path.getsize(path)
    restore_s = statistics.median(library)
    raw_s = statistics.median(raw)
    return {
        "restore_file_s": round(restore_s, 3),
        "raw_same_reads_s": round(raw_s, 3),
        "restore_file_ratio": round(restore_s / raw_s, 2),
        "restore_file_breakers": restored,
        "restore_file_mb": round(size / 2**20, 1),
    }


if __name__ == "__main__":
    mode, target = sys.argv[1], sys.argv[2]
    print(json.dumps(_raw(target) if mode == "raw" else asyncio.run(_restore(target))))
