"""The SQLite writer's transaction: one hop into the driver's thread a batch, and the stream heads
it remembers, which another process's appends make stale (the unique index catches it)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import poolwarden.storage.sqlite as sqlite_module
from poolwarden.errors import ConcurrencyConflict, LeaseLost
from poolwarden.events import NewEvent
from poolwarden.storage import SQLiteEventStore

# Another process: opens the file as a store of its own and appends to one stream, unchecked.
_OTHER = """
import asyncio, sys, time
from poolwarden.events import NewEvent
from poolwarden.storage import SQLiteEventStore

async def main(db, stream, count):
    async with SQLiteEventStore(db) as store:
        for n in range(count):
            event = NewEvent(type="ByOther", occurred_at=time.time(), payload={"n": n})
            await store.append(stream, [event])

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _other_process_appends(db: Path, stream: str, count: int = 1) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _OTHER, str(db), stream, str(count)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _ours(n: int) -> NewEvent:
    return NewEvent(type="Ours", occurred_at=1.0, payload={"n": n})


async def test_another_process_appending_between_two_of_ours_is_a_conflict_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """The writer remembers the head it committed; another process's append makes it stale.
    An append expecting the stale head fails with the same ConcurrencyConflict as ever (the
    file's head in it), one expecting the file's head commits, an unchecked one lands after the
    other process's events, and every event of both processes is in the log, versions 1..n."""
    db = tmp_path / "shared.db"
    async with SQLiteEventStore(db) as store:
        await store.append("s", [_ours(1)], expected_version=0)  # remembered: s at 1
        await asyncio.to_thread(_other_process_appends, db, "s")  # the file: s at 2

        # Remembered head 1 matches the expectation; the unique index refuses version 2.
        with pytest.raises(ConcurrencyConflict) as refused:
            await store.append("s", [_ours(2)], expected_version=1)
        assert (refused.value.expected_version, refused.value.actual_version) == (1, 2)
        assert (await store.append("s", [_ours(3)], expected_version=2)).result().last_version == 3

        # Stale again; this time the expectation is the file's head, above the remembered one.
        await asyncio.to_thread(_other_process_appends, db, "s", 2)  # the file: s at 5
        result = (await store.append("s", [_ours(4)], expected_version=5)).result()
        assert (result.first_version, result.last_version) == (6, 6)

        # Stale again, unchecked, in one batch with an append to another stream: both land.
        await asyncio.to_thread(_other_process_appends, db, "s")  # the file: s at 7
        s_receipt = await store.append("s", [_ours(5)], durability="buffered")
        t_receipt = await store.append("t", [_ours(6)], durability="buffered")
        await store.flush()
        assert s_receipt.result().last_version == 8
        assert t_receipt.result().last_version == 1

        events = await store.read_all(limit=100)
    by_stream = [(e.stream, e.version, e.type, e.payload.get("n")) for e in events if e.stream == "s"]
    assert by_stream == [
        ("s", 1, "Ours", 1),
        ("s", 2, "ByOther", 0),
        ("s", 3, "Ours", 3),
        ("s", 4, "ByOther", 0),
        ("s", 5, "ByOther", 1),
        ("s", 6, "Ours", 4),
        ("s", 7, "ByOther", 0),
        ("s", 8, "Ours", 5),
    ]
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 9  # s at 8, t at 1: the refused append wrote nothing


class _CountingQueue:
    """Stands in for aiosqlite's queue of calls into its thread, counting them; the thread still
    reads the real queue it was started with."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def put_nowait(self, item: Any) -> None:
        self.calls += 1
        self.real.put_nowait(item)


async def test_a_batch_is_one_call_into_the_drivers_thread(tmp_path: Path) -> None:
    """Every call aiosqlite makes into its connection's thread goes through its queue: a sync
    append, to a new stream or a known one, under a lease fence or refused for a conflict or a
    lost lease, is one call; so is a batch of several appenders, and one whose remembered head
    another process made stale."""
    db = tmp_path / "hops.db"
    async with SQLiteEventStore(db) as store:
        lease = await store.take_lease("main", "me", ttl=60)
        driver = store._driver
        counting = _CountingQueue(driver._tx)
        driver._tx = counting
        try:

            async def hops(append: Any) -> int:
                before = counting.calls
                with contextlib.suppress(ConcurrencyConflict, LeaseLost):
                    await append
                return counting.calls - before

            assert await hops(store.append("a", [_ours(1)], expected_version=0)) == 1  # a new stream
            assert await hops(store.append("a", [_ours(2)], expected_version=1)) == 1  # a known one
            assert await hops(store.append("a", [_ours(3)], expected_version=2, fence=lease)) == 1
            assert await hops(store.append("a", [_ours(4)], expected_version=0)) == 1  # a conflict
            stale = dataclasses.replace(lease, fence=lease.fence + 1)
            assert await hops(store.append("a", [_ours(5)], fence=stale)) == 1  # a lost lease

            await asyncio.to_thread(_other_process_appends, db, "a")
            assert await hops(store.append("a", [_ours(6)])) == 1  # stale head: the retry is inside

            before = counting.calls
            receipts = await asyncio.gather(
                *(store.append(f"b/{i}", [_ours(i)], durability="buffered") for i in range(20))
            )
            await store.flush()
            assert counting.calls - before == 1  # queued together, committed in one batch
            positions = sorted(r.result().last_position for r in receipts)
            assert positions == list(range(positions[0], positions[0] + 20))
        finally:
            driver._tx = counting.real


@pytest.mark.parametrize("enabled_before", [True, False])
async def test_a_bulk_batch_commits_with_the_collector_paused_and_leaves_it_as_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled_before: bool
) -> None:
    """A batch of at least _BULK items is planned with the cyclic collector paused, a small one
    with it as it was; after each the collector is as the store found it."""
    seen: list[tuple[int, bool]] = []
    plan = sqlite_module.plan_batch

    def watched(work: list[Any], *args: Any) -> Any:
        seen.append((len(work), gc.isenabled()))
        return plan(work, *args)

    monkeypatch.setattr(sqlite_module, "plan_batch", watched)
    was_enabled = gc.isenabled()
    if not enabled_before:
        gc.disable()
    try:
        async with SQLiteEventStore(tmp_path / "bulk.db", durability="buffered") as store:
            bulk = sqlite_module._BULK
            for n in range(bulk):  # queued together: one batch of them all
                await store.append(f"s/{n % 7}", [_ours(n)])
            await store.flush()
            await store.append("s/lone", [_ours(0)])
            await store.flush()
            assert gc.isenabled() is enabled_before
            assert await store.stream_version("s/lone") == 1
    finally:
        if was_enabled:
            gc.enable()
    assert seen[0] == (bulk, False)
    assert seen[-1] == (1, enabled_before)
