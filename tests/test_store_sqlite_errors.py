"""Bad files, locked files and full queues: typed errors, and nothing stored is harmed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from poolwarden.errors import (
    CorruptDatabase,
    DatabaseLocked,
    DatabaseUnavailable,
    ReadOnlyDatabase,
    SchemaMismatch,
    SchemaOutdated,
    SchemaTooNew,
    StoreClosed,
)
from poolwarden.events import NewEvent
from poolwarden.storage import SQLiteEventStore, migrate

MakeEvent = Callable[..., NewEvent]


async def _store_with_events(path: Path, make_event: MakeEvent, count: int = 50) -> None:
    async with SQLiteEventStore(path) as store:
        await store.append("s/a", [make_event(payload={"pad": "x" * 400}) for _ in range(count)])


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (chattr +i), or by mode for other users."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a file read-only")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)


async def test_missing_folder_is_unavailable_and_not_created(tmp_path: Path) -> None:
    """A path in a folder that does not exist raises DatabaseUnavailable naming the folder."""
    target = tmp_path / "nowhere" / "events.db"
    with pytest.raises(DatabaseUnavailable) as caught:
        await SQLiteEventStore(target).open()
    assert "nowhere" in str(caught.value)
    assert caught.value.path == str(target)
    assert not target.parent.exists()


async def test_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    """A file that is not SQLite raises CorruptDatabase and keeps its bytes."""
    target = tmp_path / "notes.db"
    content = b"these are someone's notes, not a database\n" * 10
    target.write_bytes(content)
    with pytest.raises(CorruptDatabase, match="not an SQLite database"):
        await SQLiteEventStore(target).open()
    assert target.read_bytes() == content


async def test_truncated_file_is_refused_untouched(tmp_path: Path, make_event: MakeEvent) -> None:
    """A store file cut short raises CorruptDatabase and is left as it was."""
    target = tmp_path / "events.db"
    await _store_with_events(target, make_event, count=500)
    with sqlite3.connect(target) as raw:  # fold the WAL into the file, as a clean shutdown does
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = target.stat().st_size
    with target.open("r+b") as f:
        f.truncate(size // 2)
    content = target.read_bytes()
    with pytest.raises(CorruptDatabase, match="truncated"):
        await SQLiteEventStore(target).open()
    assert target.read_bytes() == content


async def test_damaged_pages_raise_corrupt_database_on_read(tmp_path: Path, make_event: MakeEvent) -> None:
    """Garbage in the middle of the file raises CorruptDatabase; the integrity check finds it."""
    target = tmp_path / "events.db"
    await _store_with_events(target, make_event, count=500)
    with sqlite3.connect(target) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    with target.open("r+b") as f:
        for page in range(3, target.stat().st_size // page_size, 2):
            f.seek(page * page_size)
            f.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    content = target.read_bytes()
    with pytest.raises(CorruptDatabase):  # at open (the write probe) or at the first read
        async with SQLiteEventStore(target) as store:
            await store.read_all(limit=100_000)
    async with SQLiteEventStore(target, read_only=True) as store:
        assert await store.integrity_check() != []
    assert target.read_bytes() == content


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite file with someone else's tables is refused, not written into."""
    target = tmp_path / "other.db"
    with sqlite3.connect(target) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(SchemaMismatch, match="not a poolwarden event store"):
        await SQLiteEventStore(target).open()
    with sqlite3.connect(target) as raw:
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"customers"}


async def test_schema_newer_than_the_code_is_refused(tmp_path: Path, make_event: MakeEvent) -> None:
    """A file stamped with a revision this code does not know raises SchemaTooNew."""
    target = tmp_path / "events.db"
    await _store_with_events(target, make_event, count=3)
    with sqlite3.connect(target) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(SchemaTooNew) as caught:
        await SQLiteEventStore(target).open()
    assert caught.value.found == "9999_from_the_future"
    assert "upgrade poolwarden" in str(caught.value)


def _file_at_revision(target: Path, revision: str) -> None:
    engine = create_engine(f"sqlite:///{target}")
    with engine.begin() as conn:
        migrate.upgrade(conn, revision)
    engine.dispose()


async def test_older_schema_is_upgraded_keeping_events(tmp_path: Path) -> None:
    """Opening a file at an older revision upgrades it to head, and its events survive."""
    target = tmp_path / "old.db"
    _file_at_revision(target, "0001")
    with sqlite3.connect(target) as raw:
        raw.execute(
            "INSERT INTO events (position, stream, version, type, schema_version, occurred_at, recorded_at,"
            " payload) VALUES (1, 's/old', 1, 'Old', 1, 1.0, 1.0, '{\"kept\": true}')"
        )
    async with SQLiteEventStore(target) as store:
        (event,) = await store.read_all()
        assert event.payload == {"kept": True}
    with sqlite3.connect(target) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrate.head_revision()


async def test_older_schema_is_refused_when_upgrades_are_off(tmp_path: Path) -> None:
    """With upgrade=False an older file raises SchemaOutdated and stays at its revision."""
    target = tmp_path / "old.db"
    _file_at_revision(target, "0001")
    with pytest.raises(SchemaOutdated, match="poolwarden db upgrade"):
        await SQLiteEventStore(target, upgrade=False).open()
    with sqlite3.connect(target) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"


async def test_read_only_file_refuses_writes_but_reads(tmp_path: Path, make_event: MakeEvent) -> None:
    """A file that cannot be written raises ReadOnlyDatabase; read_only=True still reads it."""
    target = tmp_path / "events.db"
    await _store_with_events(target, make_event, count=5)
    with _read_only(target):
        with pytest.raises(ReadOnlyDatabase) as caught:
            await SQLiteEventStore(target).open()
        assert "read_only=True" in str(caught.value)
        async with SQLiteEventStore(target, read_only=True) as store:
            assert len(await store.read_all()) == 5
            with pytest.raises(ReadOnlyDatabase):
                await store.append("s/a", [make_event()])


async def test_lock_held_past_the_timeout_fails_the_append_and_loses_nothing(
    tmp_path: Path, make_event: MakeEvent
) -> None:
    """A write lock held by another connection past lock_timeout raises DatabaseLocked; then writes resume."""
    target = tmp_path / "events.db"
    async with SQLiteEventStore(target, busy_timeout=0.05, lock_timeout=0.3) as store:
        await store.append("s/a", [make_event()], expected_version=0)
        blocker = sqlite3.connect(target, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DatabaseLocked) as caught:
                await store.append("s/a", [make_event()], expected_version=1)
            assert "still locked" in str(caught.value)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await store.append("s/a", [make_event()], expected_version=1)
        assert [e.version for e in await store.read_stream("s/a")] == [1, 2]


async def test_full_queue_makes_appenders_wait_and_drops_nothing(
    tmp_path: Path, make_event: MakeEvent
) -> None:
    """With the writer stalled, buffered appends beyond max_pending wait; once it resumes, all commit."""
    target = tmp_path / "events.db"
    async with SQLiteEventStore(
        target, durability="buffered", max_pending=3, max_batch=2, busy_timeout=30
    ) as store:
        blocker = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            tasks = [asyncio.create_task(store.append("s/a", [make_event()])) for _ in range(8)]
            for _ in range(50):  # let every appender run as far as it can
                await asyncio.sleep(0)
            returned = sum(task.done() for task in tasks)
            # Two appends (max_batch) are in the stalled writer's hands, three (max_pending) fill
            # the queue, and the other three appenders wait for room.
            assert returned == 5
        finally:
            await asyncio.to_thread(blocker.execute, "ROLLBACK")
            blocker.close()
        receipts = await asyncio.gather(*tasks)
        await store.flush()
        assert all(r.done() for r in receipts)
        assert await store.stream_version("s/a") == 8


async def test_close_while_appenders_wait_for_room_leaves_none_hanging(
    tmp_path: Path, make_event: MakeEvent
) -> None:
    """Appenders waiting on a full queue when close() starts either commit or get StoreClosed; none hang."""
    target = tmp_path / "events.db"
    store = SQLiteEventStore(target, max_pending=1, max_batch=1, busy_timeout=30)
    await store.open()
    blocker = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    appends = [asyncio.create_task(store.append("s/a", [make_event()])) for _ in range(6)]
    for _ in range(20):
        await asyncio.sleep(0)
    closing = asyncio.create_task(store.close())
    for _ in range(20):
        await asyncio.sleep(0)
    with pytest.raises(StoreClosed):  # a new append after close() began is refused at once
        await store.append("s/a", [make_event()])
    await asyncio.to_thread(blocker.execute, "ROLLBACK")
    blocker.close()
    await asyncio.wait_for(closing, timeout=30)
    outcomes = await asyncio.wait_for(asyncio.gather(*appends, return_exceptions=True), timeout=30)
    committed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, StoreClosed) for o in refused), refused
    assert committed, "the append in the writer's hands when close() began must commit"
    async with SQLiteEventStore(target) as reopened:
        assert await reopened.stream_version("s/a") == len(committed)
