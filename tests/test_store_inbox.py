"""The writer's bounded inbox: FIFO, backpressure, cancelled putters, batches taken whole."""

from __future__ import annotations

import asyncio

import pytest

from poolwarden.storage.inbox import Inbox, InboxClosed


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _full_with_three_waiting() -> tuple[Inbox[int], list[asyncio.Task[None]]]:
    """An inbox of two holding 0 and 1, with putters of 2, 3 and 4 waiting for room."""
    inbox: Inbox[int] = Inbox(2)
    await inbox.put(0)
    await inbox.put(1)
    waiting = [asyncio.create_task(inbox.put(n)) for n in (2, 3, 4)]
    await _settle()
    assert not any(task.done() for task in waiting)
    return inbox, waiting


async def test_items_come_out_in_the_order_they_went_in() -> None:
    """first() and take() give the oldest items first, and take() stops at the size limit."""
    inbox: Inbox[int] = Inbox(10)
    for n in range(6):
        await inbox.put(n)
    assert await inbox.first() == 0
    assert inbox.take(1, 4, lambda n: 1) == [1, 2, 3]
    assert len(inbox) == 2
    assert inbox.take_all() == [4, 5]
    assert len(inbox) == 0


async def test_first_waits_for_an_item() -> None:
    """The taker waits on an empty inbox until an item is put."""
    inbox: Inbox[str] = Inbox(2)
    taker = asyncio.create_task(inbox.first())
    await _settle()
    assert not taker.done()
    await inbox.put("a")
    assert await taker == "a"


async def test_a_full_inbox_makes_putters_wait_first_come_first_served() -> None:
    """Putters wait while the inbox is full; as items are taken they get in in the order they came."""
    inbox, waiting = await _full_with_three_waiting()
    assert await inbox.first() == 0
    await _settle()
    assert [task.done() for task in waiting] == [True, False, False]
    assert inbox.take(0, 10, lambda n: 1) == [1, 2]
    await _settle()
    assert all(task.done() for task in waiting)
    assert inbox.take_all() == [3, 4]


async def test_a_putter_cancelled_while_waiting_leaves_nothing_and_passes_its_turn() -> None:
    """A put cancelled while it waits for room adds nothing; the room it was given goes to the next putter."""
    inbox: Inbox[int] = Inbox(1)
    await inbox.put(0)
    first = asyncio.create_task(inbox.put(1))
    second = asyncio.create_task(inbox.put(2))
    await _settle()
    assert await inbox.first() == 0  # wakes `first`, which is cancelled before it runs
    first.cancel()
    await _settle()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert second.done()
    assert inbox.take_all() == [2]


async def test_an_inbox_holds_at_least_one_item() -> None:
    """A limit below one is refused."""
    with pytest.raises(ValueError, match="at least one"):
        Inbox(0)


async def test_close_tells_every_waiting_and_later_putter_and_gives_what_was_left() -> None:
    """close() returns the items left; putters waiting for room, and puts after it, raise InboxClosed."""
    inbox, waiting = await _full_with_three_waiting()
    assert inbox.close() == [0, 1]
    for task in waiting:
        with pytest.raises(InboxClosed):
            await task
    with pytest.raises(InboxClosed):
        inbox.offer(6)
    with pytest.raises(InboxClosed):
        await inbox.put(7)
    assert len(inbox) == 0
