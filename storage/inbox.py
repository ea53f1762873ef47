"""The group-commit writer's bounded queue: many appenders put, one task takes.

An ``asyncio.Queue`` does this too, but every append pays for its generality (a coroutine a put,
``full()`` and ``qsize()`` as method calls, a waiter deque looked at on each get): 0.5 us an
append, as much as encoding the event. Here a put that finds room is a ``deque.append`` and, when
the task waits for work, one future's result; the task takes a whole batch in one call.

The rules are ``asyncio.Queue``'s: a put waits while the inbox holds ``limit`` items (nothing
is dropped), putters waiting for room are let in first come, first served, and a put cancelled
while it waits leaves nothing behind and passes its turn on. One task takes (:meth:`Inbox.first`
is not for concurrent callers). Once :meth:`Inbox.close` has run (the taker is stopping), a put,
and every put still waiting for room, raises :class:`InboxClosed`: none is left waiting for a
taker that is gone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Inbox", "InboxClosed"]

T = TypeVar("T")


class InboxClosed(Exception):
    """The inbox was closed: it takes no more items."""


class Inbox(Generic[T]):
    """A bounded FIFO of items for one taker; see the module docstring."""

    __slots__ = ("_closed", "_getter", "_items", "_limit", "_putters")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an inbox holds at least one item, not {limit}")
        self._items: deque[T] = deque()
        self._limit = limit
        self._getter: asyncio.Future[None] | None = None  # the taker, waiting for an item
        self._putters: deque[asyncio.Future[None]] = deque()  # putters waiting for room
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> bool:
        """Add ``item`` if there is room, without waiting; whether it was added.

        Raises :class:`InboxClosed` once the inbox is closed.
        """
        if self._closed:
            raise InboxClosed
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    async def put(self, item: T) -> None:
        """Add ``item``, first waiting while the inbox is full."""
        while not self.offer(item):
            await self._room()

    async def _room(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._items) >= self._limit and not self._closed:
            putter: asyncio.Future[None] = loop.create_future()
            self._putters.append(putter)
            try:
                await putter
            except BaseException:
                putter.cancel()
                try:
                    self._putters.remove(putter)
                except ValueError:  # already woken: the room it was given goes to the next one
                    if len(self._items) < self._limit:
                        self._wake_putters(1)
                raise

    async def first(self) -> T:
        """The oldest item, waiting for one if the inbox is empty."""
        items = self._items
        while not items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        item = items.popleft()
        if self._putters:
            self._wake_putters(1)
        return item

    def take(self, size: int, limit: int, size_of: Callable[[T], int]) -> list[T]:
        """Items from the front, oldest first, while ``size`` plus their sizes stays below
        ``limit`` (the last one taken may cross it), without waiting."""
        items = self._items
        taken: list[T] = []
        while size < limit and items:
            item = items.popleft()
            taken.append(item)
            size += size_of(item)
        if taken and self._putters:
            self._wake_putters(len(taken))
        return taken

    def take_all(self) -> list[T]:
        """Every item, oldest first, without waiting (putters waiting for room are let in)."""
        taken = list(self._items)
        self._items.clear()
        if taken and self._putters:
            self._wake_putters(len(taken))
        return taken

    def close(self) -> list[T]:
        """Take no more items: every put from now on, and every put waiting for room, raises
        :class:`InboxClosed`. Returns the items left, oldest first (for the taker to fail)."""
        self._closed = True
        left = list(self._items)
        self._items.clear()
        self._wake_putters(len(self._putters))
        return left

    def _wake_putters(self, count: int) -> None:
        putters = self._putters
        while count > 0 and putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)
                count -= 1
