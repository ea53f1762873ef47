"""The group-commit writer: appends that arrive together are committed in one transaction.

Any backend's appends go through one :class:`GroupCommitWriter`. It knows nothing of SQL: the
backend gives it a *transaction callable*, ``commit_batch(work) -> outcomes``, which runs ONE
transaction for a batch of work items (check each append's expected version, assign versions and
positions, insert, commit) and returns one outcome per item, in order: an
:class:`~poolwarden.events.AppendResult` for a committed append, a
:class:`~poolwarden.errors.ConcurrencyConflict` (or another exception) for an append refused
inside the transaction, ``None`` for a saved snapshot. If the whole transaction fails it raises a
typed error (:class:`~poolwarden.errors.StoreError`), and every item of the batch fails with it.

What the writer does around that callable:

- a bounded queue: :meth:`GroupCommitWriter.append` waits while it is full (backpressure, nothing
  is dropped);
- batching: one task takes an item from the queue, yields to the appenders the last commit woke
  (and, with ``linger``, waits a little), then takes whatever else is queued, up to ``max_batch``
  events, and hands the batch to ``commit_batch``;
- a lone sync append (:meth:`GroupCommitWriter.append_sync`, with ``inline=True``): when the
  task is idle and the last commit woke no other appender, the appender commits its append in
  its own task, two turns of the loop fewer; anything queued meanwhile waits for it;
- lock retries: a batch that fails with :class:`~poolwarden.errors.DatabaseLocked` is retried
  with jittered backoff until ``lock_timeout`` has passed, then fails with ``DatabaseLocked``;
- per-append outcomes: each append's future completes with its own result or error; a failed
  *buffered* append (one that no one awaits) is kept and reported by the next :meth:`flush` or
  :meth:`close` as :class:`~poolwarden.errors.WriteFailed`;
- barriers: :meth:`flush` and :meth:`close` queue a barrier that completes once everything
  queued before it has been handled; :meth:`close` then stops the task, and appenders still
  waiting for room are told :class:`~poolwarden.errors.StoreClosed`, never left hanging.

If the task itself stops on an unexpected error (or is cancelled), :attr:`GroupCommitWriter.broken`
holds it and everything still queued fails with :class:`~poolwarden.errors.StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from poolwarden.errors import DatabaseLocked, StoreClosed, StoreError, WriteFailed
from poolwarden.events import AppendResult
from poolwarden.lease import Lease
from poolwarden.storage.inbox import Inbox, InboxClosed

__all__ = [
    "CommitBatch",
    "Committed",
    "GroupCommitWriter",
    "Outcome",
    "PendingAppend",
    "PendingSnapshot",
    "Work",
]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class PendingAppend:
    """One append waiting for its transaction, and the promise of its outcome.

    ``rows`` are the backend's encoded events (the writer only counts them): for the stores in
    this package, :func:`~poolwarden.storage.rows.event_row`'s, the columns the event gives.

    A sync append's ``future`` is made with it (its appender waits on it). A buffered append
    gets one only if someone waits for it (:meth:`waiter`): most are never awaited, and a future
    apiece, kept alive from queue to commit, was a tenth of a buffered append's time (making it,
    and the collector's full passes over thousands of them waiting in the queue).
    """

    stream: str
    expected_version: int | None
    rows: Sequence[tuple[Any, ...]]
    future: asyncio.Future[AppendResult] | None
    buffered: bool
    fence: Lease | None = None
    """The lease the append is made under: the transaction refuses it if the lease moved on."""
    outcome: AppendResult | Committed | BaseException | None = None
    """What became of it (None: not yet): where it landed, or the error that refused it."""

    def done(self) -> bool:
        """Whether the append has committed or failed (or its appender gave up on it)."""
        future = self.future
        return self.outcome is not None or (future is not None and future.done())

    def _landed(self) -> AppendResult | BaseException | None:
        """The outcome, a Committed tuple made the AppendResult it stands for."""
        outcome = self.outcome
        if outcome.__class__ is tuple:
            outcome = self.outcome = AppendResult(self.stream, *outcome)
        assert not isinstance(outcome, tuple)
        return outcome

    def result(self) -> AppendResult:
        """The committed append's result; raises its error, or ``InvalidStateError`` if pending."""
        outcome = self._landed()
        if outcome is None:
            if self.future is not None:
                return self.future.result()
            raise asyncio.InvalidStateError("the append is not committed yet")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def exception(self) -> BaseException | None:
        """The error that refused the append (None if it committed); ``InvalidStateError`` if pending."""
        outcome = self._landed()
        if outcome is None:
            if self.future is not None:
                return self.future.exception()
            raise asyncio.InvalidStateError("the append is not committed yet")
        return outcome if isinstance(outcome, BaseException) else None

    def waiter(self) -> asyncio.Future[AppendResult]:
        """A future that completes with the append (made now, on the running loop, if it has none)."""
        future = self.future
        if future is None:
            future = self.future = asyncio.get_running_loop().create_future()
            outcome = self._landed()
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            elif outcome is not None:
                future.set_result(outcome)
        return future

    def settle(self, outcome: AppendResult | Committed | BaseException) -> None:
        """Record the outcome and complete the future, if there is one (the writer's call)."""
        self.outcome = outcome
        future = self.future
        if future is not None:
            landed = self._landed()
            if isinstance(landed, BaseException):
                future.set_exception(landed)
                if self.buffered:
                    future.exception()  # retrieved here; flush() and close() report it
            else:
                assert landed is not None
                future.set_result(landed)

    def __await__(self) -> Generator[Any, None, AppendResult]:
        return asyncio.shield(self.waiter()).__await__()


@dataclass(slots=True)
class PendingSnapshot:
    """One snapshot waiting for its transaction; ``row`` is the backend's encoded snapshot."""

    row: tuple[Any, ...]
    future: asyncio.Future[None]
    fence: Lease | None = None


@dataclass(slots=True)
class _Barrier:
    """Completes once everything queued before it has been handled: flush() and close()."""

    future: asyncio.Future[None]
    stop: bool = False


Work = PendingAppend | PendingSnapshot
"""What a transaction writes: appends and snapshots."""

Committed = tuple[int, int, int, int]
"""Where a committed append landed, as :func:`~poolwarden.storage.rows.plan_batch` gives it: its
first and last versions and positions. The :class:`~poolwarden.events.AppendResult` it stands for
is made when someone asks (a buffered append's seldom is): a tuple of numbers costs a third as
much to make in the write transaction, and is one the collector stops tracking."""

Outcome = AppendResult | Committed | BaseException | None
"""What became of one work item: where it landed (an AppendResult, or a Committed tuple), the
error that refused it, or None (a snapshot)."""

CommitBatch = Callable[[list[Work]], Awaitable[Sequence[Outcome]]]
"""The backend's transaction: commits a batch in one transaction, one outcome per item, in order."""

_Item = PendingAppend | PendingSnapshot | _Barrier


@dataclass(slots=True)
class _Failures:
    """Buffered appends that failed, reported by the next flush() or close()."""

    items: list[tuple[str, BaseException]] = field(default_factory=list)

    def take(self) -> list[tuple[str, BaseException]]:
        items, self.items = self.items, []
        return items


def _size(item: _Item) -> int:
    return len(item.rows) if isinstance(item, PendingAppend) else 1


class GroupCommitWriter:
    """One task that commits queued appends and snapshots in batches through ``commit_batch``.

    :param commit_batch: the backend's transaction (see the module docstring).
    :param owner: the store this writer writes for; named (by ``repr``) in errors and the task.
    :param max_batch: most events committed in one transaction.
    :param linger: seconds to wait for more appends when a batch is small (besides yielding to
        the appenders woken by the last commit, which it always does).
    :param max_pending: items that may wait in the queue before appenders are made to wait.
    :param lock_timeout: seconds a locked batch is retried before it fails with ``DatabaseLocked``.
    :param on_commit: called after every committed transaction (to wake followers of the log).
    """

    def __init__(
        self,
        commit_batch: CommitBatch,
        *,
        owner: object,
        max_batch: int = 5000,
        linger: float = 0.0,
        max_pending: int = 10_000,
        lock_timeout: float = 60.0,
        on_commit: Callable[[], None] | None = None,
        inline: bool = False,
    ) -> None:
        self._commit_batch = commit_batch
        self._inline_allowed = inline
        self._idle = False  # the task waits on an empty queue with nothing in hand
        self._inline: asyncio.Future[None] | None = None  # an appender committing its own append
        self._last_woken = 0  # appenders the last commit woke
        self._owner = owner
        self.max_batch = max_batch
        self.linger = linger
        self.lock_timeout = lock_timeout
        self._on_commit = on_commit
        self._queue: Inbox[_Item] = Inbox(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._failures = _Failures()
        self.broken: BaseException | None = None
        """The unexpected error that stopped the writer's task, if one did."""
        self._woken = 0  # appenders waiting on the last commit's items (sync appends, snapshots)

    def start(self, name: str) -> None:
        """Start the writer's task (on the running loop), named ``name``."""
        if self._task is not None:
            raise StoreError(f"the writer of {self._owner!r} was already started")
        self._task = asyncio.get_running_loop().create_task(self._write_loop(), name=name)

    @property
    def stopped(self) -> bool:
        """Whether the task has ended (after close(), or on an unexpected error)."""
        return self._task is not None and self._task.done()

    # --- what appenders call ------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        rows: Sequence[tuple[Any, ...]],
        expected_version: int | None,
        *,
        buffered: bool,
        fence: Lease | None = None,
    ) -> PendingAppend:
        """Queue an append (waiting while the queue is full); it completes at commit.

        Raises StoreClosed (or the broken writer's error) if the writer stopped before the append
        was queued: it was never taken, so it must not look acknowledged (a buffered appender
        would hold a receipt nobody reports on).
        """
        future: asyncio.Future[AppendResult] | None = None
        if not buffered:
            future = asyncio.get_running_loop().create_future()
        item = PendingAppend(stream, expected_version, rows, future, buffered, fence)
        try:
            if not self._queue.offer(item):  # full: wait for room (no coroutine when there is some)
                await self._queue.put(item)
        except InboxClosed:  # the writer stopped (closed, or broken) before there was room
            raise self._closed_error() from None
        return item

    async def append_sync(
        self,
        stream: str,
        rows: Sequence[tuple[Any, ...]],
        expected_version: int | None,
        *,
        fence: Lease | None = None,
    ) -> asyncio.Future[AppendResult]:
        """A sync append: its future completes at commit, as :meth:`append`'s does.

        When the writer is idle (its task waits on an empty queue, no other append is being
        committed this way) and its last commit woke at most one appender, there is no one to
        batch with: the append is committed here, in the caller's task, which saves the two
        turns of the loop a hand-over to the writer's task and back would take. Appends queued
        meanwhile wait for it (order is kept) and are batched as ever. Only a writer made with
        ``inline=True`` does this: its ``commit_batch`` must be safe to cancel with the caller
        (SQLite's runs as one call in the driver's thread, which a cancellation cannot cut).
        """
        if (
            self._idle
            and self._inline is None
            and self._last_woken <= 1
            and self._inline_allowed
            and not self._queue
            and not self.stopped
        ):
            loop = asyncio.get_running_loop()
            future: asyncio.Future[AppendResult] = loop.create_future()
            self._inline = inline = loop.create_future()
            try:
                await self._commit([PendingAppend(stream, expected_version, rows, future, False, fence)])
            finally:
                self._inline = None
                inline.set_result(None)
            return future
        item = await self.append(stream, rows, expected_version, buffered=False, fence=fence)
        assert item.future is not None  # a sync append's is made with it
        return item.future

    async def save_snapshot(self, row: tuple[Any, ...], *, fence: Lease | None = None) -> None:
        """Queue a snapshot and wait until it is committed (or raise why it was not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._put(PendingSnapshot(row, future, fence))
        await asyncio.shield(future)

    async def flush(self) -> None:
        """Wait until everything queued so far is handled; raise WriteFailed for lost buffered appends."""
        await self._barrier(stop=False)
        self._raise_failures()

    async def close(self) -> None:
        """Handle everything queued, stop the task, then raise WriteFailed for lost buffered appends.

        An unexpected error that stopped the task is raised here too.
        """
        if self._task is not None and not self._task.done():
            with contextlib.suppress(StoreError):  # stopped meanwhile: the task says how
                await self._barrier(stop=True)
            await self._task
        self._raise_failures()

    async def _barrier(self, *, stop: bool) -> None:
        barrier = _Barrier(asyncio.get_running_loop().create_future(), stop=stop)
        await self._put(barrier)
        await asyncio.shield(barrier.future)

    async def _put(self, item: _Item) -> None:
        """Queue ``item``, waiting for room; StoreClosed once the writer has stopped."""
        try:
            await self._queue.put(item)
        except InboxClosed:
            raise self._closed_error() from None

    def _closed_error(self) -> StoreError:
        """Why nothing more is written: the error that broke the writer, or its close."""
        if self.broken is not None:
            return StoreError(f"the store's writer stopped: {self.broken!r}")
        return StoreClosed(f"{self._owner!r} closed before this append was written")

    def _raise_failures(self) -> None:
        failures = self._failures.take()
        if failures:
            raise WriteFailed(failures)

    # --- the task -----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        queue = self._queue
        batch: list[_Item] = []
        try:
            while True:
                self._idle = True
                batch = [await queue.first()]
                self._idle = False
                if self._inline is not None:  # an append committed by its appender came first
                    await asyncio.shield(self._inline)
                size = _size(batch[0])
                woken, self._woken = self._woken, 0
                # Appenders woken by the last commit are about to queue their next append: yield
                # to them (and, with linger, wait a little) so that they share this commit. Once
                # as many items are queued as the last commit woke appenders, none is left to
                # wait for: a lone appender's next append goes straight on.
                for _ in range(2):
                    if size + len(queue) >= self.max_batch or 1 + len(queue) >= woken:
                        break
                    await asyncio.sleep(0)
                if self.linger > 0 and size + len(queue) < self.max_batch:
                    await asyncio.sleep(self.linger)
                batch += queue.take(size, self.max_batch, _size)
                stop = await self._handle(batch)
                if stop:
                    # Appenders that were waiting for room when close() began queued behind
                    # the stop: they are told, not left waiting.
                    self._fail_queued()
                    return
        except BaseException as error:
            self.broken = error
            self._fail(batch, self._closed_error())  # the batch in hand: its appenders must not hang
            self._fail_queued()
            raise

    def _fail_queued(self) -> None:
        """The writer is stopping: fail what is queued with :meth:`_closed_error`, and close the
        queue, so that appenders waiting for room, and any that come later, are told rather than
        left waiting."""
        self._fail(self._queue.close(), self._closed_error())

    @staticmethod
    def _fail(items: list[_Item], error: StoreError) -> None:
        for item in items:
            if isinstance(item, PendingAppend):
                if not item.done():
                    item.settle(error)
                    if item.future is not None:
                        item.future.exception()  # retrieved: the appender, if still there, re-raises it
            elif not item.future.done():
                item.future.set_exception(error)
                item.future.exception()  # retrieved: the appender, if still there, re-raises it

    async def _handle(self, batch: list[_Item]) -> bool:
        work: list[Work] = [item for item in batch if not isinstance(item, _Barrier)]
        if work:
            await self._commit(work)
        stop = False
        for item in batch:
            if isinstance(item, _Barrier):
                stop = stop or item.stop
                if not item.future.done():
                    item.future.set_result(None)
        return stop

    async def _commit(self, work: list[Work]) -> None:
        """Commit ``work`` in one transaction, retrying a locked database until ``lock_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                outcomes = await self._commit_batch(work)
                break
            except DatabaseLocked as error:
                if loop.time() < deadline:
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)
                    continue
                detail = f"still locked after {self.lock_timeout:g} s: {error.detail}"
                self._settle_all(work, DatabaseLocked(error.path, detail))
                return
            except Exception as error:  # the transaction's typed error: every item of it failed
                self._settle_all(work, error)
                return
        woken = self._woken
        for item, outcome in zip(work, outcomes, strict=True):
            self._settle(item, outcome)
        self._last_woken = self._woken - woken
        if self._on_commit is not None:
            self._on_commit()

    def _settle_all(self, work: list[Work], error: BaseException) -> None:
        for item in work:
            self._settle(item, error)

    def _settle(self, item: Work, outcome: Outcome) -> None:
        if isinstance(item, PendingAppend):
            if item.done():  # failed already, or its sync appender was cancelled
                return
            assert outcome is not None
            item.settle(outcome)
            if not item.buffered:
                self._woken += 1
            elif isinstance(outcome, BaseException):
                if not self._failures.items:
                    log.error("buffered append to %s failed: %s (flush() reports all)", item.stream, outcome)
                self._failures.items.append((item.stream, outcome))
            return
        if item.future.done():
            return
        self._woken += 1
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(None)
