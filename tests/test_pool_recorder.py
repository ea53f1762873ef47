"""The pool's event recorder: background appends in order, failures kept and reported, backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from poolwarden.aio.recorder import BATCH, HIGH_WATER, EventRecorder
from poolwarden.clock import FakeClock
from poolwarden.errors import DatabaseLocked, WriteFailed
from poolwarden.events import NewEvent
from poolwarden.storage import open_store
from poolwarden.storage.base import EventStore


class FlakyStore:
    """An event store whose next ``failures`` appends raise DatabaseLocked; the rest go through."""

    def __init__(self, store: EventStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.appends = 0

    async def append(self, stream: str, events: Sequence[NewEvent], **options: Any) -> Any:
        self.appends += 1
        if self.failures:
            self.failures -= 1
            raise DatabaseLocked(Path("flaky.db"), "locked by the test")
        return await self.store.append(stream, events, **options)


async def _types(store: EventStore) -> list[int]:
    await store.flush()
    return [e.payload["i"] async for e in store.iter_all()]


async def test_recorded_events_reach_the_store_in_order_without_a_flush(tmp_path: Path) -> None:
    """Events recorded synchronously are appended in the background, in recording order."""
    async with open_store(tmp_path / "log.db") as store:
        recorder = EventRecorder(store, "pool/main", FakeClock(1.0))
        for i in range(BATCH + 10):
            recorder.record("Thing", payload={"i": i})
        assert recorder.pending == BATCH + 10

        async def landed() -> list[int]:  # the background task appends them: no flush is asked
            seen = []
            async for event in store.follow():
                seen.append(event.payload["i"])
                if len(seen) == BATCH + 10:
                    return seen
            raise AssertionError("unreachable: follow never ends")

        assert await asyncio.wait_for(landed(), 30) == list(range(BATCH + 10))
        await recorder.close()


async def test_a_failed_append_loses_nothing_and_flush_reports_it(tmp_path: Path) -> None:
    """An append that fails keeps its events; flush raises WriteFailed, and the next flush writes them all."""
    async with open_store(tmp_path / "log.db") as store:
        flaky = FlakyStore(store, failures=1)
        recorder = EventRecorder(flaky, "pool/main", FakeClock(1.0))  # type: ignore[arg-type]
        for i in range(3):
            recorder.record("Thing", payload={"i": i})
        with pytest.raises(WriteFailed, match="locked by the test"):
            await recorder.flush()
        assert recorder.pending == 3
        recorder.record("Thing", payload={"i": 3})
        await recorder.flush()
        await recorder.close()
        assert await _types(store) == [0, 1, 2, 3]


async def test_room_waits_while_the_store_is_behind(tmp_path: Path) -> None:
    """Beyond the high-water mark, room() waits until the store has taken the backlog."""
    async with open_store(tmp_path / "log.db") as store:
        recorder = EventRecorder(store, "pool/main", FakeClock(1.0))
        await recorder.room()  # nothing pending: no wait
        for i in range(HIGH_WATER + 1):
            recorder.record("Thing", payload={"i": i})
        waiting = asyncio.create_task(recorder.room())
        await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(waiting, 30)
        assert recorder.pending <= HIGH_WATER // 2
        await recorder.close()
        assert len(await _types(store)) == HIGH_WATER + 1


async def test_a_wake_appends_what_gather_makes_without_any_recorded_event(tmp_path: Path) -> None:
    """Events that only the gather callable makes (the pool's summaries) are appended after a wake()."""
    async with open_store(tmp_path / "log.db") as store:
        made = [NewEvent(type="Thing", occurred_at=1.0, payload={"i": i}) for i in range(3)]

        def gather() -> list[NewEvent]:  # hands its events over once, as the pool's tally does
            taken = made[:]
            made.clear()
            return taken

        recorder = EventRecorder(store, "pool/main", FakeClock(1.0), gather=gather)
        recorder.wake()

        async def landed() -> list[int]:
            seen = []
            async for event in store.follow():
                seen.append(event.payload["i"])
                if len(seen) == 3:
                    return seen
            raise AssertionError("unreachable: follow never ends")

        assert await asyncio.wait_for(landed(), 30) == [0, 1, 2]
        await recorder.close()


async def test_a_recorded_event_brings_a_later_append_forward(tmp_path: Path) -> None:
    """After wake(60) (summaries can wait), a recorded event is still appended within moments."""
    async with open_store(tmp_path / "log.db") as store:
        recorder = EventRecorder(store, "pool/main", FakeClock(1.0))
        recorder.wake(60.0)
        recorder.record("Thing", payload={"i": 7})

        async def first() -> int:
            async for event in store.follow():
                return int(event.payload["i"])
            raise AssertionError("unreachable: follow never ends")

        assert await asyncio.wait_for(first(), 10) == 7  # not 60 s: the event hurried the append
        recorder.wake(60.0)
        await asyncio.wait_for(recorder.close(), 10)  # close rings the alarm rather than wait for it


async def test_once_its_task_is_cancelled_recording_starts_no_task(tmp_path: Path) -> None:
    """A recorder whose background task was cancelled (its loop is being torn down) only keeps
    what is recorded afterwards, for flush(): no task is born then, to be destroyed pending."""
    async with open_store(tmp_path / "log.db") as store:
        recorder = EventRecorder(store, "pool/main", FakeClock(1.0))
        recorder.start()
        flusher = recorder._flusher
        assert flusher is not None
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        before = asyncio.all_tasks()
        recorder.record("Thing", payload={"i": 1})
        recorder.wake()
        assert asyncio.all_tasks() == before
        await recorder.close()
        assert await _types(store) == [1]


async def test_a_cancelled_close_is_not_swallowed(tmp_path: Path) -> None:
    """Cancelling close() cancels the recorder's task with it and the cancellation propagates."""
    async with open_store(tmp_path / "log.db") as store:
        gate = asyncio.Event()

        class SlowStore:
            async def append(self, stream: str, events: Sequence[NewEvent], **options: Any) -> Any:
                await gate.wait()
                return await store.append(stream, events, **options)

        recorder = EventRecorder(SlowStore(), "pool/main", FakeClock(1.0))  # type: ignore[arg-type]
        recorder.record("Thing", payload={"i": 1})
        closing = asyncio.create_task(recorder.close())
        await asyncio.sleep(0.05)  # the append waits at the gate
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert recorder._flusher is not None
        assert recorder._flusher.done()
