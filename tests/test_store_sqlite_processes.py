"""Several processes on one SQLite file, and a writer killed with SIGKILL mid-append."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from poolwarden.events import NewEvent
from poolwarden.storage import SQLiteEventStore

CHILD = str(Path(__file__).with_name("child_appender.py"))

pytestmark = pytest.mark.slow


def _spawn(db: Path, prefix: str, count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, str(db), prefix, str(count), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _acknowledged(lines: list[str]) -> list[tuple[str, int, int]]:
    return [(s, int(v), int(p)) for s, v, p in (line.split() for line in lines if line != "ready")]


async def test_two_processes_append_to_one_file(tmp_path: Path) -> None:
    """Two processes appending at once, to their own streams and a shared one, lose nothing."""
    db = tmp_path / "shared.db"
    async with SQLiteEventStore(db):  # create the schema first, as a pool would
        pass
    children = [_spawn(db, name, 300, "--shared", "pool/main") for name in ("p1", "p2")]
    outputs = [await asyncio.to_thread(child.communicate, timeout=120) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    acked = [ack for out, _ in outputs for ack in _acknowledged(out.splitlines())]
    assert len(acked) == 600
    async with SQLiteEventStore(db, read_only=True) as store:
        streams = await store.streams()
        assert streams["pool/main"] == 300
        assert all(streams[f"{p}/{i}"] == 38 - (i >= 2) for p in ("p1", "p2") for i in range(4))
        events = await store.read_all(limit=10_000)
        by_key = {(e.stream, e.version): e.position for e in events}
        assert all(by_key[(stream, version)] == position for stream, version, position in acked)
        assert len(events) == 600
        shared_versions = [e.version for e in events if e.stream == "pool/main"]
        assert shared_versions == list(range(1, 301))
        assert await store.integrity_check() == []


async def test_sigkill_mid_sync_appends_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    """A writer killed with SIGKILL loses nothing whose sync append had returned; the file is sound."""
    db = tmp_path / "killed.db"
    with _spawn(db, "k", 1_000_000) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        lines: list[str] = []
        while len(lines) < 400:  # wait for acknowledgements, not for time
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, child.stderr.read()
            lines.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait)
        assert child.returncode == -signal.SIGKILL
        rest = child.stdout.read().splitlines()  # printed between the last read and the kill
    acked = _acknowledged(lines + [line for line in rest if line.strip()])
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    async with SQLiteEventStore(db) as store:
        stored = {(e.stream, e.version): e.position for e in await store.read_all(limit=1_000_000)}
        missing = [ack for ack in acked if stored.get((ack[0], ack[1])) != ack[2]]
        assert missing == []
        assert len(stored) >= len(acked)
        # The store opens the file again for writing and continues each stream where it ended.
        version = await store.stream_version("k/0")
        result = (
            await store.append("k/0", [NewEvent(type="After", occurred_at=0.0)], expected_version=version)
        ).result()
        assert result.last_version == version + 1


async def test_follow_sees_events_written_by_another_process(tmp_path: Path) -> None:
    """follow() in one process yields what another process appends to the same file."""
    db = tmp_path / "follow.db"
    async with SQLiteEventStore(db) as store:
        follower = store.follow(poll_interval=0.02)
        with _spawn(db, "other", 5) as child:
            seen = [await asyncio.wait_for(anext(follower), timeout=30) for _ in range(5)]
            await follower.aclose()
            await asyncio.to_thread(child.communicate, timeout=60)
    assert {e.stream for e in seen} <= {f"other/{i}" for i in range(4)}
    assert [e.payload["n"] for e in seen] == [0, 1, 2, 3, 4]
