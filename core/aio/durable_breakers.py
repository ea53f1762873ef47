"""The asyncio driver that makes a registry's breakers durable in an :class:`EventStore`.

The breakers stay pure; this driver does the waiting and the I/O:

* :meth:`DurableBreakers.restore` loads every ``breaker/...`` stream's snapshot and the events
  after it, folds them (:mod:`poolwarden.replay`) and hands the breakers to the registry. Those
  whose wait passed while the process was down turn half-open now, and that event is persisted.
* :meth:`DurableBreakers.flush` drains each breaker's events and appends them to its stream with
  ``expected_version``, so a second process writing the same breaker is detected, not merged.
  Every ``snapshot_every`` events a stream gets a snapshot, taken at the very moment its events
  were drained (after a checkpoint, so no success is both in the snapshot and in a later event).
* :meth:`DurableBreakers.run` flushes every ``flush_interval`` seconds, and every
  ``summary_interval`` seconds has every breaker summarise its successes, so a crash loses at most
  that much success bookkeeping (never a failure or a transition that was flushed).

Events that could not be appended are kept and retried on the next flush, in order; a version
conflict is not retried, it is raised (another process owns the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import STREAM_PREFIX, BreakerEvent, key_of_stream
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.errors import ConcurrencyConflict, ConfigurationError, StoreError
from poolwarden.events import Snapshot
from poolwarden.policy import BreakerLevel
from poolwarden.replay import level_of, restore
from poolwarden.storage.base import EventStore

__all__ = ["DurableBreakers"]

_READ_CONCURRENCY = 32


class DurableBreakers:
    """Persists the events of ``registry``'s breakers to ``store``; an async context manager.

    ``async with DurableBreakers(store, registry):`` restores, then flushes in the background,
    and on exit summarises, flushes and waits for everything to be committed.
    """

    def __init__(
        self,
        store: EventStore,
        registry: BreakerRegistry,
        *,
        snapshot_every: int = 10,
        flush_interval: float = 0.25,
        summary_interval: float = 30.0,
    ) -> None:
        if snapshot_every < 1:
            raise ConfigurationError("snapshot_every must be at least 1")
        if not flush_interval > 0 or not summary_interval > 0:
            raise ConfigurationError("flush_interval and summary_interval must be > 0 seconds")
        self.store = store
        self.registry = registry
        self.snapshot_every = snapshot_every
        self.flush_interval = flush_interval
        self.summary_interval = summary_interval
        self._versions: dict[str, int] = {}
        self._snapshot_versions: dict[str, int] = {}
        self._unsent: dict[str, list[BreakerEvent]] = {}
        self._evicted: list[CircuitBreaker] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.last_error: StoreError | None = None

    # --- start-up ------------------------------------------------------------------------------

    async def restore(self) -> int:
        """Rebuild every breaker the store knows into the registry; returns how many."""
        versions = await self.store.streams(STREAM_PREFIX)
        snapshots = await self.store.load_snapshots(STREAM_PREFIX)
        limiter = asyncio.Semaphore(_READ_CONCURRENCY)

        async def one(stream: str, version: int) -> CircuitBreaker:
            snapshot = snapshots.get(stream)
            after = snapshot.version if snapshot is not None else 0
            async with limiter:
                tail = await self.store.read_stream(stream, after + 1) if version > after else []
            key = key_of_stream(stream)
            level = _level(snapshot, tail)
            return restore(
                key,
                tail,
                policy=self.registry.policy_for(key, level),
                snapshot=snapshot,
                level=level,
                clock=self.registry.clock,
                rng=self.registry.rng,
            )

        streams = sorted(versions)
        breakers = await asyncio.gather(*(one(stream, versions[stream]) for stream in streams))
        for stream, breaker in zip(streams, breakers, strict=True):
            self.registry.adopt(breaker)
            self._versions[stream] = versions[stream]
            snapshot = snapshots.get(stream)
            self._snapshot_versions[stream] = snapshot.version if snapshot is not None else 0
        return len(breakers)

    # --- persisting ----------------------------------------------------------------------------

    async def flush(self, *, snapshot_all: bool = False) -> int:
        """Append every breaker's pending events (and due snapshots); returns how many were written.

        With ``snapshot_all`` every breaker whose snapshot is behind its stream gets a new one
        (done at a clean shutdown, so the next start-up reads no tails at all).

        Raises the first store error (a version conflict first of all) after every stream has
        been tried; the events of the streams that failed are kept for the next flush.
        """
        async with self._lock:
            # Evicted breakers' last events go first in their streams, before anything a breaker
            # created again for the same key has emitted since.
            for gone in self._evicted:
                stream = STREAM_PREFIX + gone.key
                self._unsent[stream] = self._unsent.get(stream, []) + gone.drain_events()
            self._evicted.clear()
            batches: list[tuple[str, list[BreakerEvent], dict[str, Any] | None]] = []
            for breaker in self.registry:
                stream = STREAM_PREFIX + breaker.key
                held = self._unsent.pop(stream, [])
                pending = len(held) + breaker.pending_events
                version = self._versions.get(stream, 0)
                snapshot_version = self._snapshot_versions.get(stream, 0)
                due = version + pending >= snapshot_version + self.snapshot_every or (
                    snapshot_all and (pending or breaker.has_summary or version > snapshot_version)
                )
                if not pending and not due:
                    continue
                state = None
                if due:
                    # Summarise first: the snapshot must hold nothing a later event will carry again.
                    breaker.checkpoint()
                    events = held + breaker.drain_events()
                    state = breaker.snapshot()
                else:
                    events = held + breaker.drain_events()
                batches.append((stream, events, state))
            for stream in list(self._unsent):  # streams whose breaker is no longer held
                batches.append((stream, self._unsent.pop(stream), None))
            results = await asyncio.gather(
                *(self._append(stream, events) for stream, events, _ in batches), return_exceptions=True
            )
            written = 0
            failure: BaseException | None = None
            snapshots = []
            for (stream, events, state), result in zip(batches, results, strict=True):
                if isinstance(result, BaseException):
                    self._unsent[stream] = events
                    if failure is None or isinstance(result, ConcurrencyConflict):
                        failure = result
                    continue
                written += len(events)
                if state is not None:
                    snapshots.append(self._snapshot(stream, result, state))
            # A failed snapshot costs only restore time: its events are committed either way.
            for error in await asyncio.gather(*snapshots, return_exceptions=True):
                if failure is None and isinstance(error, BaseException):
                    failure = error
        if failure is not None:
            raise failure
        return written

    async def _append(self, stream: str, events: Sequence[BreakerEvent]) -> int:
        expected = self._versions.get(stream, 0)
        if not events:
            return expected
        receipt = await self.store.append(
            stream, [event.to_new_event() for event in events], expected_version=expected
        )
        result = await receipt
        self._versions[stream] = result.last_version
        return result.last_version

    async def _snapshot(self, stream: str, version: int, state: dict[str, Any]) -> None:
        await self.store.save_snapshot(stream, version, state)
        self._snapshot_versions[stream] = version

    async def checkpoint(self, *, snapshot_all: bool = False) -> int:
        """Have every breaker summarise its successes, then flush (see :meth:`flush`)."""
        for breaker in self.registry:
            breaker.checkpoint()
        return await self.flush(snapshot_all=snapshot_all)

    def evict_idle(self) -> int:
        """Let the registry forget idle breakers; their eviction events go out with the next flush."""
        evicted = self.registry.evict_idle()
        self._evicted.extend(evicted)
        return len(evicted)

    def wake(self) -> None:
        """Ask the background loop to flush now rather than at its next tick."""
        self._wake.set()

    # --- the background loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Flush forever; summarise and evict idle breakers every ``summary_interval``.

        Store errors other than a version conflict are retried on the next tick (the events
        wait in memory); a conflict ends the loop with the error.
        """
        loop = asyncio.get_running_loop()
        next_summary = loop.time() + self.summary_interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                if loop.time() >= next_summary:
                    next_summary = loop.time() + self.summary_interval
                    await self.checkpoint()
                    self.evict_idle()
                else:
                    await self.flush()
            except ConcurrencyConflict:
                raise
            except StoreError as exc:
                # The events wait in _unsent and the next tick tries again; the error stays
                # visible here, and the final flush at exit raises it if it persists.
                self.last_error = exc

    async def __aenter__(self) -> DurableBreakers:
        self._stopping = False
        await self.restore()
        await self.flush()  # the half-open transitions that restore caught up on
        self._task = asyncio.get_running_loop().create_task(self.run(), name="poolwarden-breaker-flusher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the background loop, then summarise, flush and snapshot everything.

        The loop is asked to stop and awaited, never cancelled: a flush cancelled between its
        drain and its append would drop the drained events, or (cancelled after the commit)
        forget the stream's new version and make the final flush a version conflict. The
        loop's own failure (a version conflict) is raised here, after the final flush tried.
        """
        task, self._task = self._task, None
        failure: BaseException | None = None
        if task is not None:
            self._stopping = True
            self.wake()
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():  # we are being cancelled: the loop still stops, cancel it
                    task.cancel()
                    raise
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                # Only the loop was cancelled (by someone else): the final flush below still runs.
            except ConcurrencyConflict as error:
                failure = error
        await self.checkpoint(snapshot_all=True)
        await self.store.flush()
        if failure is not None:
            raise failure

    @property
    def pending(self) -> int:
        """Events accepted by breakers but not yet committed."""
        unsent = sum(len(events) for events in self._unsent.values())
        evicted = sum(breaker.pending_events for breaker in self._evicted)
        return unsent + evicted + sum(breaker.pending_events for breaker in self.registry)


def _level(snapshot: Snapshot | None, tail: Sequence[object]) -> BreakerLevel:
    if snapshot is not None:
        return BreakerLevel(snapshot.state["level"])
    first = tail[0] if tail else None
    return level_of(getattr(first, "connection_id", None), getattr(first, "model_id", None))
