"""The requests a worker connection waits on, and their deadlines under one timer.

Every request to a worker page has a timeout. An ``asyncio.timeout()`` per request costs a timer
handle pushed on the loop's heap and cancelled again, a context manager and its bookkeeping: about
6 us of CPU a request in ``poolwarden bench pool``, the largest single cost of the pool's own
path. :class:`PendingRequests` keeps each request's deadline next to its future instead, and arms
one timer for the whole connection, at the earliest deadline of the requests it holds (when a new
request's deadline is later, as with equal timeouts it always is, nothing is armed or cancelled).
When the timer fires, every request past its deadline and still unanswered is expired: taken out
(so that the worker's late answer finds nobody and is dropped), and its task cancelled, as
``asyncio.timeout()`` does, so that a request waiting in the send (a peer that reads nothing)
is cut short as one waiting for its answer is. The request's own ``except CancelledError`` asks
:meth:`PendingRequests.expired` whether the cancellation was the deadline's, and turns it into
its typed timeout; a cancellation by the caller stays one.

A request answered in the same loop iteration as its deadline passed keeps its answer (its
future is done: it is not expired).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["PendingRequests"]

Reply = TypeVar("Reply")


class PendingRequests(Generic[Reply]):
    """Request id -> (future of its reply, deadline, task), with one timer for all deadlines."""

    __slots__ = ("_entries", "_expired", "_loop", "_timer", "_wake_at")

    def __init__(self) -> None:
        self._entries: dict[int, tuple[asyncio.Future[Reply], float, asyncio.Task[Any]]] = {}
        self._expired: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's
        self._wake_at = math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        request_id: int,
        future: asyncio.Future[Reply],
        deadline: float,
        task: asyncio.Task[Any],
    ) -> None:
        """Wait for ``request_id``'s reply in ``future`` until ``deadline`` (the loop's time);
        ``task`` is cancelled if the deadline passes first."""
        if loop is not self._loop and self._entries:
            # A connection used again after its loop ended: requests left from that loop can
            # never run again (their tasks cannot even be cancelled), so they are dropped.
            entries = self._entries.items()
            self._entries = {key: entry for key, entry in entries if entry[2].get_loop() is loop}
        self._entries[request_id] = (future, deadline, task)
        # A timer armed in another loop (a connection used again after its loop ended) rings never.
        if deadline < self._wake_at or loop is not self._loop:
            self._arm(loop, deadline)

    def future(self, request_id: int) -> asyncio.Future[Reply] | None:
        """The future waiting for ``request_id``'s reply (None: unknown, answered or expired)."""
        entry = self._entries.get(request_id)
        return entry[0] if entry is not None else None

    def discard(self, request_id: int) -> None:
        """The request ended (answered, failed, cancelled or expired): forget it."""
        self._entries.pop(request_id, None)
        if self._expired:
            self._expired.discard(request_id)

    def expired(self, request_id: int) -> bool:
        """Whether ``request_id`` was expired by its deadline (its task's cancellation is ours)."""
        return request_id in self._expired

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """Fail every request still waiting with ``error()`` (the socket closed).

        The entries stay until their requests end (each discards its own): a request still in
        its send is not waiting on its future, so failing the future does not reach it, and its
        deadline must still cut the send short.
        """
        for future, _, _ in self._entries.values():
            if not future.done():
                future.set_exception(error())

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = at
        self._loop = loop
        self._timer = loop.call_at(at, self._expire, loop, at)

    def _expire(self, loop: asyncio.AbstractEventLoop, armed_for: float) -> None:
        self._timer = None
        self._wake_at = math.inf
        # The loop may run a timer up to its clock resolution early: what it was armed for is due.
        now = max(loop.time(), armed_for)
        entries = self._entries
        soonest = math.inf
        for request_id, (future, deadline, task) in list(entries.items()):
            if deadline > now:
                soonest = min(soonest, deadline)
            elif not _answered(future):  # answered meanwhile: the answer wins
                del entries[request_id]
                self._expired.add(request_id)
                task.cancel()
        if soonest < math.inf:
            self._arm(loop, soonest)


def _answered(future: asyncio.Future[Any]) -> bool:
    """Whether ``future`` holds its reply (not a disconnect set by ``fail_all``, not nothing yet)."""
    return future.done() and not future.cancelled() and future.exception() is None
