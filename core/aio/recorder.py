"""The pool's own events, recorded without making a request wait for the store.

Serving a request ends in an event (``InferenceFailed``, a summary of successes, ...). Appending
each one to the store from the request's coroutine would put an append, and whatever the store
is doing, on every request's path. :class:`EventRecorder` makes recording a list append: a
background task appends what gathered, in batches of at most :data:`BATCH` events, at most
:data:`LINGER` seconds after the first of them. Events made only at append time (the pool's
summaries of successes, from ``gather``) may ask for a later append with :meth:`wake`; any event
recorded meanwhile brings it forward.

The store's backpressure still reaches the requests, at admission: while more than
:data:`HIGH_WATER` events wait for the store, :meth:`EventRecorder.room` makes new requests
wait (within their deadlines) until the store has taken them. Nothing recorded is dropped: a
failed append keeps its events, in order, for the next attempt, and :meth:`EventRecorder.flush`
raises the failure to whoever waits for the log to be complete (unless a later append has
written the kept events meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from poolwarden.clock import Clock
from poolwarden.codec import DomainEvent, encode
from poolwarden.errors import WriteFailed
from poolwarden.events import NewEvent
from poolwarden.storage.base import EventStore, Receipt

__all__ = ["BATCH", "HIGH_WATER", "LINGER", "EventRecorder"]

log = logging.getLogger(__name__)

BATCH = 256
"""Events appended to the store at once."""

LINGER = 0.02
"""Seconds the first recorded event waits for others to share its append."""

HIGH_WATER = 16 * BATCH
"""Events waiting for the store beyond which new requests wait at admission."""


class EventRecorder:
    """Records events on one stream of ``store``; see the module docstring."""

    def __init__(
        self,
        store: EventStore,
        stream: str,
        clock: Clock,
        gather: Callable[[], list[NewEvent]] | None = None,
        preview: Callable[[], list[NewEvent]] | None = None,
    ) -> None:
        self.store = store
        self.stream = stream
        self.clock = clock
        self._gather = gather  # more events to take at each append (summaries made then)
        self._preview = preview  # what ``gather`` would give now, without taking it
        self._pending: list[NewEvent] = []
        # Batches handed to the store whose commit is not confirmed yet, and the stream's version
        # of the last confirmed event, from its receipt (None until one is): so that a synchronous
        # reader of the log can tell which recorded events the file does not hold yet.
        self._handed: deque[tuple[Receipt, list[NewEvent]]] = deque()
        self._confirmed: int | None = None
        self._lock = asyncio.Lock()  # one append at a time keeps the stream in recording order
        self._flusher: asyncio.Task[None] | None = None  # started once, lives until close()
        self._stopped = False  # closed, or the flusher was cancelled: no task is started again
        self._closing = False
        self._rung = asyncio.Event()  # the flusher waits for it
        self._timer: asyncio.TimerHandle | None = None  # rings at ``_due`` (loop time)
        self._due = 0.0
        self._failure: BaseException | None = None
        self._drained: asyncio.Event | None = None

    def start(self) -> None:
        """Start the background append task now (the first recorded event starts it otherwise).

        An owner that starts it with itself knows that no task is created later, in whatever
        code runs while its loop is being torn down: a task born then would be destroyed pending.
        """
        if self._flusher is None and not self._stopped:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name=f"poolwarden recorder {self.stream}"
            )

    def emit(self, event: DomainEvent) -> None:
        """Record a domain event now: stored by :mod:`poolwarden.codec`, at the recorder's clock."""
        self.record_event(encode(event, self.clock()))

    def record(self, type: str, **fields: Any) -> None:
        """Record an event of no domain family now (``fields`` as for
        :class:`~poolwarden.events.NewEvent`): for tools and tests (the pool uses :meth:`emit`)."""
        self.record_event(NewEvent(type=type, occurred_at=self.clock(), **fields))

    def record_event(self, event: NewEvent) -> None:
        """Record an event made elsewhere (the bridge makes its own)."""
        self._pending.append(event)
        self._schedule(LINGER, sooner=True)

    def wake(self, delay: float = LINGER) -> None:
        """Have an append made within ``delay`` seconds (for events that ``gather`` will make
        then): the pool's summaries of successes ask for one a second, and any event recorded
        meanwhile brings it forward to :data:`LINGER`."""
        if self._timer is not None:  # an append is due already (the pool asks once a request)
            return
        self._schedule(delay, sooner=False)  # one is due already: at most ``delay`` from now, or sooner

    def _schedule(self, delay: float, *, sooner: bool) -> None:
        """Have the flusher append at ``delay`` from now, unless an append is due already (and
        is due sooner, when ``sooner``). After close, or once the flusher was cancelled, nothing
        is scheduled: :meth:`flush` appends what is pending."""
        self.start()
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._timer is not None and (not sooner or due >= self._due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = loop.call_at(due, self._ring)

    def _ring(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._rung.set()

    @property
    def pending(self) -> int:
        """Events recorded but not yet handed to the store."""
        return len(self._pending)

    async def room(self) -> None:
        """Return at once unless the store is behind; then wait until it has caught up."""
        if len(self._pending) <= HIGH_WATER:
            return
        if self._drained is None:
            self._drained = asyncio.Event()
        await self._drained.wait()

    async def flush(self) -> None:
        """Hand every recorded event to the store. Raises :class:`WriteFailed` if an append failed
        (the events are kept, and the next flush tries them again)."""
        await self._append_pending()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise WriteFailed([(self.stream, failure)]) from failure

    async def close(self) -> None:
        """Have the background append run now and finish (it is not cancelled: an append cut
        short could not tell whether the store took its batch), then flush what is left.

        If the close itself is cancelled, the background task is cancelled too, and the
        cancellation goes on: nothing of the recorder outlives it.
        """
        self._closing = True
        self._stopped = True
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            self._ring()
            try:
                await asyncio.shield(flusher)
            except asyncio.CancelledError:
                if not flusher.done():  # we are being cancelled: stop the flusher with us
                    flusher.cancel()
                    raise
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:  # its appends keep their failure: the flush below reports it
                pass
        await self.flush()

    async def _flush_loop(self) -> None:
        try:
            while not self._closing:
                await self._rung.wait()
                self._rung.clear()
                while True:  # at least once: a wake() may have left nothing but what gather() makes
                    await self._append_pending()
                    if self._failure is not None or not self._pending:
                        break  # a failure is kept for flush(), retried when the next event comes
        finally:
            self._stopped = True  # cancelled (the loop is ending) or closed: start no task again
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _confirm(self) -> None:
        """Forget the handed batches whose append has committed (noting the stream's version it
        reached) or failed (writing nothing)."""
        while self._handed and self._handed[0][0].done():
            receipt, _ = self._handed.popleft()
            try:
                self._confirmed = receipt.result().last_version
            except Exception:  # written nothing: takes no version (the store's flush reports it)
                continue

    def not_in_log(self, version_in_log: int) -> list[NewEvent]:
        """The events recorded so far that a reader of the log finds no version of when the
        recorder's stream stands at ``version_in_log`` there: handed to the store but not yet
        committed, waiting for an append, and what ``gather`` would add now. The stream is this
        recorder's alone, so its events take consecutive versions in the order they were handed.
        """
        self._confirm()
        unseen: list[NewEvent] = []
        if self._confirmed is None:
            # No append confirmed yet (the pool's first moments): its version in the log is not
            # known, so everything recorded is taken as not there yet.
            unseen.extend(e for _, batch in self._handed for e in batch)
            unseen.extend(self._pending)
        else:
            version = self._confirmed
            for event in [e for _, batch in self._handed for e in batch] + self._pending:
                version += 1  # the batch being appended leads _pending: it may be in the log already
                if version > version_in_log:
                    unseen.append(event)
        if self._preview is not None:
            unseen.extend(self._preview())
        return unseen

    async def _append_pending(self) -> None:
        async with self._lock:
            if self._gather is not None:
                self._pending.extend(self._gather())
            while self._pending:
                batch = self._pending[:BATCH]
                try:
                    receipt = await self.store.append(self.stream, batch, durability="buffered")
                except Exception as error:  # kept, in order; reported by flush()
                    log.warning("could not record %d pool events: %s", len(batch), error)
                    self._failure = error
                    return
                del self._pending[: len(batch)]
                self._handed.append((receipt, batch))
                self._confirm()
                self._failure = None  # what had failed is written now: nothing is missing
                self._wake_if_drained()

    def _wake_if_drained(self) -> None:
        if self._drained is not None and len(self._pending) <= HIGH_WATER // 2:
            self._drained.set()
            self._drained = None
