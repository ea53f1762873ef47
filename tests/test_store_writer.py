"""The group-commit writer on its own, with a fake transaction: batching, failures, barriers, close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from poolwarden.errors import (
    ConcurrencyConflict,
    DatabaseError,
    DatabaseLocked,
    StoreClosed,
    StoreError,
    WriteFailed,
)
from poolwarden.events import AppendResult
from poolwarden.storage.base import Receipt
from poolwarden.storage.writer import GroupCommitWriter, Outcome, PendingAppend, Work

ROW: tuple[Any, ...] = ("Happened",)


class FakeLog:
    """A transaction callable over a list: records each batch; fails the ones it is told to."""

    def __init__(self) -> None:
        self.batches: list[list[Work]] = []
        self.heads: dict[str, int] = {}
        self.position = 0
        self.fail_next: list[BaseException] = []
        self.gate: asyncio.Event | None = None  # when set, each transaction waits for it
        self.commits = 0

    async def commit_batch(self, work: list[Work]) -> Sequence[Outcome]:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(list(work))
        if self.fail_next:
            raise self.fail_next.pop(0)
        outcomes: list[Outcome] = []
        for item in work:
            if not isinstance(item, PendingAppend):
                outcomes.append(None)
                continue
            head = self.heads.get(item.stream, 0)
            if item.expected_version is not None and item.expected_version != head:
                outcomes.append(ConcurrencyConflict(item.stream, item.expected_version, head))
                continue
            first = self.position + 1
            self.position += len(item.rows)
            self.heads[item.stream] = head + len(item.rows)
            outcomes.append(AppendResult(item.stream, head + 1, head + len(item.rows), first, self.position))
        return outcomes

    def on_commit(self) -> None:
        self.commits += 1


def _writer(log: FakeLog, **options: Any) -> GroupCommitWriter:
    writer = GroupCommitWriter(log.commit_batch, owner="fake store", on_commit=log.on_commit, **options)
    writer.start("test-writer")
    return writer


async def test_appends_that_arrive_together_share_one_transaction() -> None:
    """Appends queued while the writer works are committed together, each with its own result."""
    log = FakeLog()
    writer = _writer(log)
    futures = await asyncio.gather(
        *(writer.append(f"s/{i}", [ROW, ROW], 0, buffered=False) for i in range(10))
    )
    results = await asyncio.gather(*futures)
    assert len(log.batches) == 1
    assert [r.last_version for r in results] == [2] * 10
    assert sorted(r.last_position for r in results) == list(range(2, 21, 2))
    assert log.commits == 1
    await writer.close()


async def test_max_batch_bounds_the_events_of_one_transaction() -> None:
    """No batch holds more than max_batch events (an item is never split)."""
    log = FakeLog()
    writer = _writer(log, max_batch=3)
    futures = await asyncio.gather(*(writer.append("s/a", [ROW], None, buffered=True) for _ in range(10)))
    await writer.flush()
    assert all(f.done() for f in futures)
    assert [len(batch) for batch in log.batches] == [3, 3, 3, 1]
    await writer.close()


async def test_a_refused_append_fails_alone() -> None:
    """An outcome that is an error fails only its own append; the others of the batch commit."""
    log = FakeLog()
    writer = _writer(log)
    ok, stale = await asyncio.gather(
        writer.append("s/a", [ROW], 0, buffered=False), writer.append("s/b", [ROW], 5, buffered=False)
    )
    assert (await ok).last_version == 1
    with pytest.raises(ConcurrencyConflict):
        await stale
    await writer.close()


async def test_a_failed_transaction_fails_its_batch_and_the_next_one_commits() -> None:
    """The transaction's error goes to every item of its batch; the writer carries on."""
    log = FakeLog()
    log.fail_next.append(DatabaseError(None, "disk full"))
    writer = _writer(log)
    first = await asyncio.gather(*(writer.append("s/a", [ROW], None, buffered=False) for _ in range(3)))
    for future in first:
        with pytest.raises(DatabaseError, match="disk full"):
            await future
    later = await writer.append("s/a", [ROW], 0, buffered=False)
    assert (await later).first_version == 1
    assert log.commits == 1  # only the transaction that committed woke followers
    await writer.close()


async def test_flush_reports_failed_buffered_appends_once() -> None:
    """A buffered append that failed is reported by the next flush as WriteFailed, then forgotten."""
    log = FakeLog()
    log.fail_next.append(DatabaseError(None, "disk full"))
    writer = _writer(log)
    await writer.append("s/a", [ROW], None, buffered=True)
    with pytest.raises(WriteFailed) as caught:
        await writer.flush()
    assert [stream for stream, _ in caught.value.failures] == ["s/a"]
    await writer.flush()  # nothing more to report
    await writer.close()


async def test_a_locked_batch_is_retried_until_it_commits() -> None:
    """DatabaseLocked from the transaction is retried, within lock_timeout, and then commits."""
    log = FakeLog()
    log.fail_next.extend([DatabaseLocked(None, "busy"), DatabaseLocked(None, "busy")])
    writer = _writer(log, lock_timeout=5.0)
    future = await writer.append("s/a", [ROW], 0, buffered=False)
    assert (await future).last_version == 1
    assert len(log.batches) == 3
    await writer.close()


async def test_a_batch_locked_past_the_timeout_fails_with_database_locked() -> None:
    """After lock_timeout the batch fails with DatabaseLocked saying how long it waited."""
    log = FakeLog()
    log.fail_next.extend([DatabaseLocked(None, "busy")] * 1000)
    writer = _writer(log, lock_timeout=0.05)
    future = await writer.append("s/a", [ROW], 0, buffered=False)
    with pytest.raises(DatabaseLocked, match=r"still locked after 0\.05 s: busy"):
        await future
    log.fail_next.clear()
    await writer.close()


async def test_snapshots_commit_with_appends() -> None:
    """A snapshot is work like an append: save_snapshot returns once its transaction commits."""
    log = FakeLog()
    writer = _writer(log)
    await writer.save_snapshot(("s/a", 1, 1, 0.0, "{}"))
    assert len(log.batches) == 1
    await writer.close()


async def test_close_commits_what_is_queued_and_refuses_what_comes_after() -> None:
    """close() waits for the queued appends; an append after it is told StoreClosed."""
    log = FakeLog()
    writer = _writer(log)
    queued = [await writer.append("s/a", [ROW], None, buffered=True) for _ in range(5)]
    await writer.close()
    assert all(f.done() and f.exception() is None for f in queued)
    assert writer.stopped
    with pytest.raises(StoreClosed):
        await writer.append("s/a", [ROW], None, buffered=False)
    with pytest.raises(StoreClosed):
        await writer.append("s/a", [ROW], None, buffered=True)


async def test_close_raises_write_failed_for_lost_buffered_appends() -> None:
    """Buffered appends that failed and were never flushed are reported by close()."""
    log = FakeLog()
    log.fail_next.append(DatabaseError(None, "disk full"))
    writer = _writer(log)
    await writer.append("s/a", [ROW], None, buffered=True)
    with pytest.raises(WriteFailed):
        await writer.close()


async def test_a_full_queue_makes_appenders_wait() -> None:
    """With the transaction stalled, appends beyond max_pending wait for room; then all commit."""
    log = FakeLog()
    log.gate = asyncio.Event()
    writer = _writer(log, max_pending=2, max_batch=1)
    tasks = [asyncio.create_task(writer.append("s/a", [ROW], None, buffered=True)) for _ in range(6)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert sum(t.done() for t in tasks) == 3  # one in the writer's hands, two in the queue
    log.gate.set()
    futures = await asyncio.gather(*tasks)
    await writer.flush()
    assert all(f.done() for f in futures)
    await writer.close()


async def test_cancelled_writer_is_broken_and_fails_what_it_held() -> None:
    """A writer cancelled mid-transaction is broken; the batch in hand and the queued work fail."""
    log = FakeLog()
    log.gate = asyncio.Event()
    writer = _writer(log, max_batch=1)
    in_hand = await writer.append("s/a", [ROW], None, buffered=False)
    for _ in range(5):
        await asyncio.sleep(0)
    queued = await writer.append("s/a", [ROW], None, buffered=False)
    task = writer._task
    assert task is not None
    task.cancel()
    await asyncio.wait({task})
    assert isinstance(writer.broken, asyncio.CancelledError)
    for future in (in_hand, queued):
        with pytest.raises(StoreError, match="writer stopped"):
            await future
    await writer.close()  # nothing left to do; the store reports the broken writer on its next call


class HoppingLog(FakeLog):
    """A FakeLog whose transaction suspends once (as a real one does, in the driver's thread),
    noting the task that ran it and the batches that entered it."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.entered: list[list[str]] = []

    async def commit_batch(self, work: list[Work]) -> Sequence[Outcome]:
        self.tasks.append(asyncio.current_task())
        self.entered.append([item.stream for item in work if isinstance(item, PendingAppend)])
        await asyncio.sleep(0)
        return await super().commit_batch(work)


async def test_a_lone_sync_append_is_committed_in_its_callers_task_when_allowed() -> None:
    """With inline=True and the writer idle, append_sync commits in the caller's task (two turns
    of the loop fewer); without it, in the writer's task, as append does."""
    for inline in (True, False):
        log = HoppingLog()
        writer = _writer(log, inline=inline)
        await asyncio.sleep(0)  # the task parks on its empty queue
        result = await (await writer.append_sync("s/a", [ROW], 0))
        assert result.last_version == 1
        assert (log.tasks[0] is asyncio.current_task()) is inline
        await writer.close()


async def test_appends_queued_during_an_inline_commit_follow_it_in_order() -> None:
    """While an appender commits its own append, the writer's task waits for it before it
    commits what was queued meanwhile (batched together); a flush waits for both."""
    log = HoppingLog()
    log.gate = asyncio.Event()
    writer = _writer(log, inline=True)
    await asyncio.sleep(0)
    first = asyncio.create_task(writer.append_sync("s/a", [ROW], 0))
    for _ in range(3):
        await asyncio.sleep(0)
    assert log.entered == [["s/a"]]  # committing in `first`'s task, held at the gate
    queued = [await writer.append_sync(f"s/{i}", [ROW], 0) for i in range(3)]  # not idle: queued
    flushed = asyncio.create_task(writer.flush())
    for _ in range(5):
        await asyncio.sleep(0)
    assert log.entered == [["s/a"]]  # the writer's task waits for the inline commit
    assert not flushed.done()
    log.gate.set()
    await flushed
    assert log.entered == [["s/a"], ["s/0", "s/1", "s/2"]]
    assert (await (await first)).last_position == 1
    assert [(await f).last_position for f in queued] == [2, 3, 4]
    await writer.close()


async def test_sync_appenders_woken_together_are_still_batched() -> None:
    """A commit that woke several appenders: their next appends go to the writer's queue and
    share a transaction, none is committed alone in its appender's task."""
    log = HoppingLog()
    writer = _writer(log, inline=True)
    await asyncio.sleep(0)

    async def appender(i: int) -> None:
        for version in range(5):
            await (await writer.append_sync(f"s/{i}", [ROW], version))

    await asyncio.gather(*(appender(i) for i in range(10)))
    sizes = [len(batch) for batch in log.entered]
    assert sizes[0] == 1  # the first found the writer idle
    assert sum(sizes) == 50
    assert len(sizes) <= 7, sizes  # then batches of the appenders each commit woke
    await writer.close()


async def test_a_buffered_append_makes_its_future_only_when_awaited() -> None:
    """A buffered append has no future until someone waits for it; after its commit it gives its
    result (done, result(), await) all the same, and a receipt of it does too."""
    log = FakeLog()
    writer = _writer(log)
    pending = await writer.append("s/a", [ROW, ROW], None, buffered=True)
    assert pending.future is None
    assert not pending.done()
    with pytest.raises(asyncio.InvalidStateError):
        pending.result()
    await writer.flush()
    assert pending.future is None
    assert pending.done()
    assert pending.exception() is None
    assert pending.result() == AppendResult("s/a", 1, 2, 1, 2)
    receipt = Receipt("s/a", pending)
    assert receipt.done()
    assert await receipt == AppendResult("s/a", 1, 2, 1, 2)
    assert await pending == AppendResult("s/a", 1, 2, 1, 2)
    await writer.close()


async def _wait(pending: Any) -> AppendResult:
    result: AppendResult = await Receipt("s/a", pending)
    return result


async def test_a_buffered_append_awaited_before_its_commit_completes_with_it() -> None:
    """Waiting for a buffered append before its commit makes its future, which the commit completes."""
    log = FakeLog()
    log.gate = asyncio.Event()
    writer = _writer(log)
    pending = await writer.append("s/a", [ROW], None, buffered=True)
    waiting = asyncio.create_task(_wait(pending))
    await asyncio.sleep(0)
    assert pending.future is not None
    assert not waiting.done()
    log.gate.set()
    assert (await waiting).first_version == 1
    await writer.close()


async def test_a_failed_buffered_append_raises_its_error_when_awaited_after() -> None:
    """A buffered append that failed raises its error when awaited later, as well as being
    reported by flush()."""
    log = FakeLog()
    log.fail_next.append(DatabaseError(None, "disk full"))
    writer = _writer(log)
    pending = await writer.append("s/a", [ROW], None, buffered=True)
    with pytest.raises(WriteFailed):
        await writer.flush()
    assert isinstance(pending.exception(), DatabaseError)
    with pytest.raises(DatabaseError):
        pending.result()
    with pytest.raises(DatabaseError):
        await Receipt("s/a", pending)
    await writer.close()


async def test_a_committed_tuple_outcome_is_given_as_an_append_result() -> None:
    """A transaction may give a committed append's outcome as a Committed tuple (as plan_batch
    does): sync appenders and buffered receipts get the AppendResult it stands for."""

    async def commit_batch(work: list[Work]) -> Sequence[Outcome]:
        return [(1, 1, n, n) for n, _ in enumerate(work, start=1)]

    writer = GroupCommitWriter(commit_batch, owner="fake store")
    writer.start("test-writer")
    buffered = await writer.append("s/a", [ROW], None, buffered=True)
    synced = await writer.append("s/b", [ROW], None, buffered=False)
    assert await synced == AppendResult("s/b", 1, 1, 2, 2)
    assert buffered.result() == AppendResult("s/a", 1, 1, 1, 1)
    assert await Receipt("s/a", buffered) == AppendResult("s/a", 1, 1, 1, 1)
    await writer.close()


async def test_appenders_waiting_for_room_when_close_runs_are_all_told() -> None:
    """More appenders wait for room than the queue holds when close() begins, and more come
    after: each ends, committed or told StoreClosed (by its append, if it was never queued, or
    by its future); none is left waiting, and close() returns. A flush() after close is
    StoreClosed too, not a wait for a writer that is gone."""
    log = FakeLog()
    log.gate = asyncio.Event()
    writer = _writer(log, max_pending=2, max_batch=1)

    async def sync_append() -> AppendResult | StoreClosed:
        try:
            item = await writer.append("s/a", [ROW], None, buffered=False)
            assert item.future is not None
            return await item.future
        except StoreClosed as refused:
            return refused

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    appends = [asyncio.create_task(sync_append()) for _ in range(8)]
    await settle()
    closing = asyncio.create_task(writer.close())
    await settle()
    appends += [asyncio.create_task(sync_append()) for _ in range(6)]
    await settle()
    log.gate.set()
    async with asyncio.timeout(5.0):
        await closing
        outcomes = await asyncio.gather(*appends)
    committed = [o for o in outcomes if isinstance(o, AppendResult)]
    refused = [o for o in outcomes if isinstance(o, StoreClosed)]
    assert len(committed) + len(refused) == len(appends)
    assert committed, "the appends queued before close() commit"
    assert refused, "the ones behind the stop are told"
    assert len(committed) == sum(len(batch) for batch in log.batches)
    with pytest.raises(StoreClosed):
        await writer.flush()
