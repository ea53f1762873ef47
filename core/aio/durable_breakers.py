"""The asyncio driver that makes a registry's breakers durable in an :class:`EventStore`.

The breakers stay pure; this driver does the waiting and the I/O:

* :meth:`DurableBreakers.restore` loads every ``breaker/...`` stream's snapshot and the events
  after it, folds them (:mod:`poolwarden.replay`) and hands the breakers to the registry. Those
  whose wait passed while the process was down turn half-open now, and that event is persisted.
* :meth:`DurableBreakers.flush` drains each breaker's events and appends them to its stream with
  ``expected_version``. Every ``snapshot_every`` events a stream gets a snapshot, taken at the
  very moment its events were drained (after a checkpoint, so no success is both in the
  snapshot and in a later event).
* :meth:`DurableBreakers.poll` reads the breaker events other processes appended since the last
  poll (one query from the last log position seen, whatever the number of breakers) and folds
  them into the local breakers.
* :meth:`DurableBreakers.run` flushes every ``flush_interval`` seconds, polls every
  ``poll_interval`` seconds, and every ``summary_interval`` seconds has every breaker summarise
  its successes, so a crash loses at most that much success bookkeeping (never a failure or a
  transition that was flushed).

Several processes may share a breaker (the same name on the same log). Each persists its own
events and follows the others' transitions; the merge rule is :mod:`poolwarden.breaker`'s:

* transitions are shared: another process's open, half-open, close, manual override (and
  eviction's reset of the re-open streak) are applied here with their timestamps, within
  ``poll_interval``;
* outcome windows are local: each process judges its own calls; a restore folds every
  process's outcomes since the last transition, as the log holds them;
* half-open trials are local too, for now: each process admits its policy's trials in a round.
  Claiming a trial through the log (append a ``BreakerTrialAdmitted`` with ``expected_version``,
  a conflict meaning another host took it) fits this design and is issue #12's;
* a version conflict is never raised nor dropped: the stream is read again (snapshot and tail),
  the events of this process not yet appended are marked ``decided_on`` the version they were
  decided on and folded after the others' (a concurrent transition the other side made moot is
  superseded, the first writer wins), the live breaker takes that state
  (:meth:`~poolwarden.breaker.CircuitBreaker.rebase`) and the append is retried at the new
  version. Every process then agrees with a replay of the log.

Events that could not be appended (a store error) are kept and retried on the next flush, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import (
    EVENT_TYPES,
    STREAM_PREFIX,
    BreakerEvent,
    BreakerHalfOpened,
    decided_on,
    from_recorded,
    key_of_stream,
)
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.collector import collector_paused
from poolwarden.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    InvalidTransition,
    ReplayError,
    StoreError,
)
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.policy import BreakerLevel
from poolwarden.replay import level_of, restore
from poolwarden.storage.base import EventStore

IncidentOf = Callable[[str, float], str | None]
"""(connection id, when) -> the incident id the connection was in then, or None."""

__all__ = ["DurableBreakers"]

_POLL_BATCH = 1000
_REBASES = 20
"""How many times one flush rebases a stream whose appends keep meeting other writers' events
before it keeps the events for the next flush (each conflict means another writer progressed)."""


class DurableBreakers:
    """Persists the events of ``registry``'s breakers to ``store``; an async context manager.

    ``async with DurableBreakers(store, registry):`` restores, then flushes and polls in the
    background, and on exit summarises, flushes and waits for everything to be committed.
    ``poll_interval=None`` follows no other process (their events are still merged when an
    append meets them). ``scope`` limits the driver to the breakers whose key starts with it (a
    pool's: ``conn-`` for the pool named ``main``, ``east.conn-`` for ``east``): it restores and
    follows only those, so pools sharing a log never take up each other's breakers.

    ``claim_trials`` (default: on when polling, i.e. when other processes share the breakers)
    makes each half-open round one process's: the one whose ``BreakerHalfOpened`` is first in the
    stream runs the trials, the others reject calls until its outcome arrives, and give the round
    up after ``trial_claim_timeout`` seconds without a sign of its owner (default: 5 s, or four
    times ``flush_interval + poll_interval`` if longer; see
    :mod:`poolwarden.breaker`). A claim is confirmed by the append that carries it, so the first
    trial waits up to ``flush_interval`` (the call that half-opens the breaker is rejected).
    """

    def __init__(
        self,
        store: EventStore,
        registry: BreakerRegistry,
        *,
        snapshot_every: int = 10,
        flush_interval: float = 0.25,
        summary_interval: float = 30.0,
        poll_interval: float | None = 0.5,
        scope: str = "",
        incident_of: IncidentOf | None = None,
        claim_trials: bool | None = None,
        trial_claim_timeout: float | None = None,
    ) -> None:
        if snapshot_every < 1:
            raise ConfigurationError("snapshot_every must be at least 1")
        if not flush_interval > 0 or not summary_interval > 0:
            raise ConfigurationError("flush_interval and summary_interval must be > 0 seconds")
        if poll_interval is not None and not poll_interval > 0:
            raise ConfigurationError("poll_interval must be > 0 seconds (or None: no polling)")
        if claim_trials is None:
            claim_trials = poll_interval is not None
        lag = flush_interval + (poll_interval or 0.0)  # how late another process's events arrive
        if trial_claim_timeout is None:
            trial_claim_timeout = max(5.0, 4 * lag)
        if claim_trials and not trial_claim_timeout > lag:
            raise ConfigurationError(
                "trial_claim_timeout must exceed flush_interval + poll_interval: another process's "
                "trial takes that long to be seen here"
            )
        self.store = store
        self.registry = registry
        self.trial_claim_timeout = trial_claim_timeout if claim_trials else None
        """Half-open rounds are claimed through the log (one process runs a round's trials; see
        :meth:`~poolwarden.breaker.CircuitBreaker.claim_trials`), giving up a round held
        elsewhere after this many seconds without a sign of its owner; ``None``: not claimed."""
        if self.trial_claim_timeout is not None:
            registry.claim_trials(self.trial_claim_timeout)
        self.snapshot_every = snapshot_every
        self.flush_interval = flush_interval
        self.summary_interval = summary_interval
        self.poll_interval = poll_interval
        self.scope = scope
        self.incident_of = incident_of
        """Tags each breaker event, as it is appended, with the incident its connection was in
        when the event occurred (the pool's :class:`~poolwarden.pool.incidents.IncidentBook`)."""
        self._prefix = STREAM_PREFIX + scope
        self._versions: dict[str, int] = {}
        self._snapshot_versions: dict[str, int] = {}
        self._unsent: dict[str, list[BreakerEvent]] = {}
        self._evicted: list[CircuitBreaker] = []
        self._position = 0
        self._in_flight = 0  # events being appended right now
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.last_error: StoreError | ReplayError | None = None
        self.rebased = 0
        """How many appends met other writers' events and were rebased onto them."""
        self.merged = 0
        """How many of other writers' events changed a local breaker's state."""

    # --- start-up ------------------------------------------------------------------------------

    async def restore(self) -> int:
        """Rebuild every breaker the store knows into the registry; returns how many."""
        # The log position first: whatever lands after it is polled, and folded only once
        # (versions at or below a stream's known version are skipped).
        self._position = await self.store.head_position()
        # Tens of thousands of events, snapshots and breakers are built here, and none forms a
        # cycle: the collector's full passes over them would find nothing (a third of the time).
        with collector_paused():
            # Every snapshot and every tail after it, in a constant number of statements.
            heads = await self.store.load_heads(self._prefix)
            streams = sorted(heads)
            for stream in streams:
                # Popped: each stream's events are freed once folded, before the collector is back
                # (its first pass then visits the breakers only, not every event read).
                snapshot, tail = heads.pop(stream)
                breaker, version, snapshot_version = self._fold(stream, snapshot, tail, catch_up=True)
                self.registry.adopt(breaker)
                self._versions[stream] = version
                self._snapshot_versions[stream] = snapshot_version
        return len(streams)

    async def _load(
        self, stream: str, snapshot: Snapshot | None, version: int | None, *, catch_up: bool
    ) -> tuple[CircuitBreaker, int, int]:
        """The breaker of ``stream`` as the log holds it: ``(breaker, its version, snapshot's version)``.

        ``version`` is the stream's version if known (reads nothing when the snapshot is that recent).
        """
        after = snapshot.version if snapshot is not None else 0
        tail = await self.store.read_stream(stream, after + 1) if version is None or version > after else []
        return self._fold(stream, snapshot, tail, catch_up=catch_up)

    def _fold(
        self, stream: str, snapshot: Snapshot | None, tail: list[RecordedEvent], *, catch_up: bool
    ) -> tuple[CircuitBreaker, int, int]:
        """The breaker ``snapshot`` and the events after it make: ``(breaker, version, snapshot's)``."""
        after = snapshot.version if snapshot is not None else 0
        key = key_of_stream(stream)
        level = _level(snapshot, tail)
        breaker = restore(
            key,
            tail,
            policy=self.registry.policy_for(key, level),
            snapshot=snapshot,
            level=level,
            clock=self.registry.clock,
            rng=self.registry.rng,
            catch_up=catch_up,
        )
        if self.trial_claim_timeout is not None:
            breaker.claim_trials(self.trial_claim_timeout)
        return breaker, max(after, tail[-1].version if tail else 0), after

    # --- persisting ----------------------------------------------------------------------------

    async def flush(self, *, snapshot_all: bool = False) -> int:
        """Append every breaker's pending events (and due snapshots); returns how many were written.

        With ``snapshot_all`` every breaker whose snapshot is behind its stream gets a new one
        (done at a clean shutdown, so the next start-up reads no tails at all). A stream that
        other processes wrote meanwhile is rebased onto their events and appended again.

        Raises the first store error after every stream has been tried; the events of the
        streams that failed are kept for the next flush.
        """
        async with self._lock:
            # Evicted breakers' last events go first in their streams, before anything a breaker
            # created again for the same key has emitted since.
            for gone in self._evicted:
                stream = STREAM_PREFIX + gone.key
                self._unsent[stream] = self._unsent.get(stream, []) + gone.drain_events()
            self._evicted.clear()
            batches: list[tuple[str, list[BreakerEvent], dict[str, Any] | None]] = []
            # Only breakers with events wait for a flush (the registry lists them as they emit);
            # a snapshot of all looks at every one, as do the idle summaries (``checkpoint``).
            for breaker in self.registry if snapshot_all else self.registry.take_dirty():
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
                *(self._persist(stream, events, state) for stream, events, state in batches),
                return_exceptions=True,
            )
        written = 0
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                written += result
        if failure is not None:
            raise failure
        return written

    async def _persist(self, stream: str, events: list[BreakerEvent], state: dict[str, Any] | None) -> int:
        """Append ``events`` to ``stream`` (rebasing them onto other writers' events as often as
        needed), then save the snapshot ``state`` if the append met nobody; returns how many
        events were appended. Events that could not be appended wait in ``_unsent``."""
        conflict: ConcurrencyConflict | None = None
        in_flight = len(events)
        self._in_flight += in_flight
        try:
            for _ in range(_REBASES):
                try:
                    version = await self._append(stream, events)
                except ConcurrencyConflict as exc:
                    conflict = exc
                    events = await self._rebase(stream, events)
                    state = None  # it described the breaker before the others' events
                    continue
                break
            else:
                assert conflict is not None
                raise conflict
        except BaseException:
            self._unsent[stream] = events
            raise
        finally:
            self._in_flight -= in_flight
        if self.trial_claim_timeout is not None:
            self._confirm_claims(stream, events)
        if state is not None:
            # A failed snapshot costs only restore time: its events are committed either way.
            await self.store.save_snapshot(stream, version, state)
            self._snapshot_versions[stream] = version
        return len(events)

    def _confirm_claims(self, stream: str, events: list[BreakerEvent]) -> None:
        """Our appended ``BreakerHalfOpened`` met nobody's events: its round is ours to try."""
        breaker = self.registry.get(key_of_stream(stream))
        if breaker is None:
            return
        for event in events:
            if isinstance(event, BreakerHalfOpened):
                breaker.confirm_claim(event.at)

    async def _append(self, stream: str, events: Sequence[BreakerEvent]) -> int:
        expected = self._versions.get(stream, 0)
        if not events:
            return expected
        new = [event.to_new_event() for event in events]
        if self.incident_of is not None:
            connection_id = key_of_stream(stream).split("/", 1)[0]
            new = [
                e
                if e.incident_id is not None
                or (incident := self.incident_of(connection_id, e.occurred_at)) is None
                else dataclasses.replace(e, incident_id=incident)
                for e in new
            ]
        receipt = await self.store.append(stream, new, expected_version=expected)
        result = await receipt
        self._versions[stream] = result.last_version
        return result.last_version

    async def _rebase(self, stream: str, events: list[BreakerEvent]) -> list[BreakerEvent]:
        """Other writers appended to ``stream`` since our known version: fold our unappended
        ``events`` (and those the breaker emitted since) after theirs, make the live breaker
        follow, and return our events marked as decided on the version we knew."""
        known = self._versions.get(stream, 0)
        snapshot = await self.store.load_snapshot(stream)
        replayed, version, _ = await self._load(stream, snapshot, None, catch_up=False)
        # No await from here on: nothing the breaker emits can slip between the fold and the rebase.
        key = key_of_stream(stream)
        breaker = self.registry.get(key)
        if breaker is not None:
            events = events + breaker.drain_events()
        marked = decided_on(events, known)
        for event in marked:
            try:
                applied = replayed.apply(event)
            except InvalidTransition as exc:  # a marked transition is superseded, never impossible
                raise ReplayError(stream, version, str(exc)) from exc
            if applied and isinstance(event, BreakerHalfOpened):
                replayed.take_claim()  # our claim still stands after the others' events
        if breaker is not None:
            breaker.rebase(replayed)
        elif not replayed.at_rest:
            self.registry.adopt(replayed)  # forgotten here, but another process has it in use
        self._versions[stream] = version
        self.rebased += 1
        return marked

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

    # --- following other writers ---------------------------------------------------------------

    async def poll(self) -> int:
        """Fold the breaker events other processes appended since the last poll; returns how
        many events were read for that.

        One read from the last log position seen (whatever the number of breakers). A stream
        whose breaker has events of its own waiting is left to its next append, which meets the
        others' events and rebases onto them. A stream with no breaker here (new, or forgotten
        while idle) is restored from the log.
        """
        async with self._lock:
            seen = 0
            while True:
                page = await self.store.read_all(self._position + 1, _POLL_BATCH, types=EVENT_TYPES)
                if not page:
                    break
                self._position = page[-1].position
                foreign: dict[str, list[RecordedEvent]] = {}
                for record in page:
                    stream = record.stream
                    if stream.startswith(self._prefix) and record.version > self._versions.get(stream, 0):
                        foreign.setdefault(stream, []).append(record)
                for stream, records in foreign.items():
                    seen += await self._follow(stream, records)
                if len(page) < _POLL_BATCH:
                    break
            return seen

    async def _follow(self, stream: str, records: list[RecordedEvent]) -> int:
        key = key_of_stream(stream)
        known = self._versions.get(stream, 0)
        if self._unsent.get(stream):
            return 0  # our append will meet these and rebase
        if records[0].version != known + 1:  # a gap (a backend whose positions commit out of order)
            records = await self.store.read_stream(stream, known + 1)
        breaker = self.registry.get(key)
        if breaker is None:
            loaded, version, snapshot_version = await self._load(
                stream, await self.store.load_snapshot(stream), None, catch_up=True
            )
            if self.registry.get(key) is not None or self._unsent.get(stream):
                return 0  # created here meanwhile: its first append rebases
            self.registry.adopt(loaded)
            self._versions[stream] = version
            self._snapshot_versions[stream] = snapshot_version
            self.merged += len(records)
            return len(records)
        if breaker.has_events:
            return 0
        for record in records:
            try:
                if breaker.merge(from_recorded(record)):
                    self.merged += 1
            except ReplayError:
                raise
            except Exception as exc:
                raise ReplayError(record.stream, record.version, str(exc)) from exc
            self._versions[stream] = record.version
        return len(records)

    # --- the background loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Flush forever, poll every ``poll_interval``; summarise and evict idle breakers every
        ``summary_interval``.

        Store errors are retried on the next tick (the events wait in memory) and kept in
        :attr:`last_error`; so is an event of another writer that cannot be folded.
        """
        loop = asyncio.get_running_loop()
        next_summary = loop.time() + self.summary_interval
        next_poll = loop.time()
        while not self._stopping:
            timeout = self.flush_interval
            if self.poll_interval is not None:
                timeout = max(0.0, min(timeout, next_poll - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: 3.11's can lose a cancellation
                    await self._wake.wait()
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
                if self.poll_interval is not None and loop.time() >= next_poll:
                    next_poll = loop.time() + self.poll_interval
                    await self.poll()
            except (StoreError, ReplayError) as exc:
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
        forget the stream's new version and make the final flush a version conflict.
        """
        task, self._task = self._task, None
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
        await self.checkpoint(snapshot_all=True)
        await self.store.flush()

    @property
    def pending(self) -> int:
        """Events accepted by breakers but not yet committed."""
        unsent = self._in_flight + sum(len(events) for events in self._unsent.values())
        evicted = sum(breaker.pending_events for breaker in self._evicted)
        return unsent + evicted + sum(breaker.pending_events for breaker in self.registry)


def _level(snapshot: Snapshot | None, tail: Sequence[object]) -> BreakerLevel:
    if snapshot is not None:
        return BreakerLevel(snapshot.state["level"])
    first = tail[0] if tail else None
    return level_of(getattr(first, "connection_id", None), getattr(first, "model_id", None))
