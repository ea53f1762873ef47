"""What-if: replay a recorded log of calls through another breaker policy.

For each breaker stream of the log, the calls are rebuilt from its events: each counted or
ignored failure (``CallFailed``, with its time, kind and duration), the successes summarised in
each event, the half-open trials (admitted at ``BreakerTrialAdmitted``, answered by the failure,
release or success that followed), and the calls the recorded breaker rejected. The recorded
inputs that are not calls are replayed too: manual overrides and trips, the recovery signals that
half-opened a breaker early (``BreakerHalfOpened(reason=...)``), evictions, and the backoff's
jitter draws (``BreakerOpened.draw``), which the new breaker draws again in the same order. They
are fed, in time order, through a fresh breaker with the new policy, and the report says when it
would have opened and closed and how many calls it would have rejected.

Replayed through the policy that recorded it, a log reproduces the recorded transitions exactly
(``tests/test_whatif.py`` holds that over random histories). Only then is a difference under
another policy the policy's doing.

What the log cannot say, and how this module fills the gap (listed in
:attr:`WhatIfReport.approximations`):

* Successes are summarised, not logged one by one: the ``n`` successes carried by an event are
  spread evenly over the time since the breaker's previous event (or over their whole-second
  buckets, when the recording breaker had a time window), in their recorded order, the last at
  the event itself (it is the one that caused the event).
* A success's duration is not logged: a success the recording policy found slow counts as slow
  under any threshold, the others as fast.
* A call the recorded breaker rejected never ran, so its outcome is unknown: if the new policy
  would reject it too, it counts as rejected; if it would admit it, it counts in
  ``unknown_outcome`` and moves nothing. These are the calls a changed policy cannot know.
* Calls that were never made (a caller that backed off because the breaker was open) are not in
  the log at all.
* Kinds the taxonomy never counts at a level (``input``, ``cancelled``; ``validation`` at a
  connection) are not in the log, so no policy can be made to count them.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import (
    STREAM_PREFIX,
    BreakerClosed,
    BreakerEvent,
    BreakerEvicted,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerOverridden,
    BreakerTrialAdmitted,
    BreakerTrialReleased,
    CallFailed,
    Successes,
    from_recorded,
    key_of_stream,
)
from poolwarden.events import RecordedEvent
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, OpenBackoff
from poolwarden.replay import level_of

__all__ = ["APPROXIMATIONS", "BreakerWhatIf", "WhatIfReport", "what_if"]

APPROXIMATIONS: tuple[str, ...] = (
    "successes are spread evenly over the time between the events that summarise them",
    "a success's duration is unknown: recorded-slow successes count as slow, others as fast",
    "calls the recorded breaker rejected have no outcome; admitted ones count as unknown_outcome",
    "calls never made (callers that backed off while the breaker was open) are not in the log",
)
"""The guesses every what-if makes, in words for the report."""


@dataclass(frozen=True, slots=True)
class BreakerWhatIf:
    """One breaker's history under the new policy, beside what was recorded."""

    key: str
    opened: tuple[float, ...]
    closed: tuple[float, ...]
    rejected: int
    calls: int
    unknown_outcome: int
    final_state: BreakerState
    recorded_opened: tuple[float, ...]
    recorded_rejected: int
    transitions: tuple[tuple[str, float, str], ...] = ()
    recorded_transitions: tuple[tuple[str, float, str], ...] = ()

    @property
    def reproduces(self) -> bool:
        """Whether the replay took exactly the recorded transitions (it must, under the recording
        policy)."""
        return self.transitions == self.recorded_transitions


@dataclass(frozen=True, slots=True)
class WhatIfReport:
    """Per breaker key, what the new policy would have done."""

    breakers: dict[str, BreakerWhatIf]
    approximations: tuple[str, ...] = APPROXIMATIONS


class _SimClock:
    """A clock the replay sets to each call's time (recorded times may repeat, never matter if equal)."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Draws:
    """The recorded jitter draws, in order, then a seeded source's: the new breaker draws what the
    recorded one drew, so the same policy waits the same, and another waits at the same quantile."""

    __slots__ = ("_draws", "_rng")

    def __init__(self, draws: Iterable[float], rng: random.Random) -> None:
        self._draws = deque(draws)
        self._rng = rng

    def random(self) -> float:
        return self._draws.popleft() if self._draws else self._rng.random()


_SLOW_ALWAYS = float("inf")


@dataclass(frozen=True, slots=True)
class _Step:
    """One input rebuilt from the log: a call's start or end, a manual action, a signal, a tick."""

    at: float
    what: str  # call, ok, fail, release, admit, unknown, override, trip, signal, evict, tick, round_over
    trial: bool = False  # an outcome of a held half-open trial (else a call that starts and ends now)
    kind: ErrorKind | None = None
    duration: float | None = None
    event: BreakerEvent | None = None


def what_if(
    records: Iterable[RecordedEvent],
    policy: BreakerPolicy | Callable[[str, BreakerLevel], BreakerPolicy],
    *,
    seed: int = 0,
) -> WhatIfReport:
    """Replay every ``breaker/...`` stream of ``records`` through ``policy`` (or ``policy(key, level)``).

    ``seed`` seeds the jitter draws past those recorded, so the same inputs give the same report.
    """
    by_stream: dict[str, list[BreakerEvent]] = {}
    levels: dict[str, BreakerLevel] = {}
    for record in records:
        if not record.stream.startswith(STREAM_PREFIX):
            continue
        by_stream.setdefault(record.stream, []).append(from_recorded(record))
        levels.setdefault(record.stream, level_of(record.connection_id, record.model_id))
    report: dict[str, BreakerWhatIf] = {}
    for stream, events in by_stream.items():
        key = key_of_stream(stream)
        level = levels[stream]
        chosen = policy if isinstance(policy, BreakerPolicy) else policy(key, level)
        report[key] = _replay_one(key, level, events, chosen, random.Random(f"{seed}:{key}"))
    return WhatIfReport(breakers=report)


def _recorded_draws(events: list[BreakerEvent], backoff: OpenBackoff) -> Iterator[float]:
    """Each recorded open's draw; an open recorded before draws were kept (schema version 1) gives
    the draw that yields its wait under ``backoff``, when ``backoff`` would draw at all."""
    for event in events:
        if not isinstance(event, BreakerOpened):
            continue
        if event.draw is not None:
            yield event.draw
            continue
        top = backoff.ceiling(event.streak)
        if backoff.jitter == "full" and top > backoff.base:
            share = (event.retry_at - event.at - backoff.base) / (top - backoff.base)
            yield min(max(share, 0.0), math.nextafter(1.0, 0.0))


def _replay_one(
    key: str, level: BreakerLevel, events: list[BreakerEvent], policy: BreakerPolicy, rng: random.Random
) -> BreakerWhatIf:
    clock = _SimClock(_origin(events))
    first = events[0]

    def new_breaker() -> CircuitBreaker:
        return CircuitBreaker(
            key,
            policy,
            clock=clock,
            rng=draws,
            level=level,
            connection_id=first.connection_id,
            model_id=first.model_id,
        )

    draws = _Draws(_recorded_draws(events, policy.backoff), rng)
    breaker = new_breaker()
    simulated: list[BreakerEvent] = []
    held: deque[int | None] = deque()  # permits of trials admitted and not answered yet
    rejected = calls = unknown = 0
    recorded_rejected = sum(e.rejections.n for e in events if e.rejections is not None)
    for step in _steps(events):
        clock.now = max(clock.now, step.at)
        what = step.what
        if what in ("ok", "fail", "release") and step.trial:
            permit = held.popleft() if held else None
            # A trial is counted when its outcome is logged, as the log counts it: a call if the
            # new breaker admitted it, a rejection if not (a release is no call the log counts).
            if what != "release":
                if permit is None:
                    rejected += 1
                else:
                    calls += 1
            if permit is not None:
                if what == "ok":
                    breaker.record_success(permit, step.duration)
                else:
                    assert step.kind is not None
                    breaker.record_failure(step.kind, step.duration, permit)
        elif what in ("ok", "fail"):
            decision = breaker.allow()
            if not decision:
                rejected += 1
            else:
                calls += 1
                if what == "ok":
                    breaker.record_success(decision.permit, step.duration)
                else:
                    assert step.kind is not None
                    breaker.record_failure(step.kind, step.duration, decision.permit)
        elif what == "admit":
            decision = breaker.allow()
            held.append(decision.permit if decision else None)
        elif what == "round_over":
            held.clear()  # trials the recorded round never heard from again: they hung
        elif what == "unknown":
            breaker.poll()
            if _would_reject(breaker):
                rejected += 1
            else:
                unknown += 1
        elif what == "override":
            assert isinstance(step.event, BreakerOverridden)
            getattr(breaker, step.event.action)(step.event.who, step.event.why)
        elif what == "trip":
            assert isinstance(step.event, BreakerOpened)
            breaker.trip(step.event.who or "?", step.event.why or "?")
        elif what == "signal":
            assert isinstance(step.event, BreakerHalfOpened)
            breaker.half_open_now(step.event.reason or "recovered")
        elif what == "evict":
            breaker.checkpoint()
            simulated.extend(breaker.drain_events())
            if breaker.at_rest:  # as the registry would: the next call meets a new breaker
                breaker = new_breaker()
        else:  # a recorded time-driven transition: the new breaker's clock reaches it too
            breaker.poll()
        simulated.extend(breaker.drain_events())
    return BreakerWhatIf(
        key=key,
        opened=tuple(e.at for e in simulated if isinstance(e, BreakerOpened)),
        closed=tuple(e.at for e in simulated if _closes(e)),
        rejected=rejected,
        calls=calls,
        unknown_outcome=unknown,
        final_state=breaker.state,
        recorded_opened=tuple(e.at for e in events if isinstance(e, BreakerOpened)),
        recorded_rejected=recorded_rejected,
        transitions=_transitions(simulated),
        recorded_transitions=_transitions(events),
    )


Transition = tuple[str, float, str]
"""(event type, time, detail): a transition as the what-if compares them."""


def _transition(event: BreakerEvent) -> Transition | None:
    if isinstance(event, BreakerOpened):
        return ("BreakerOpened", event.at, f"{event.from_state} {event.reason} until {event.retry_at!r}")
    if isinstance(event, BreakerHalfOpened):
        return ("BreakerHalfOpened", event.at, event.reason or "")
    if isinstance(event, BreakerClosed):
        return ("BreakerClosed", event.at, "")
    if isinstance(event, BreakerOverridden):
        return ("BreakerOverridden", event.at, f"{event.from_state} {event.action}")
    return None


def _transitions(events: Iterable[BreakerEvent]) -> tuple[Transition, ...]:
    found = (_transition(event) for event in events)
    return tuple(t for t in found if t is not None)


def _closes(event: BreakerEvent) -> bool:
    if isinstance(event, BreakerClosed):
        return True
    return isinstance(event, BreakerOverridden) and event.action == "reset" and event.from_state != "closed"


def _would_reject(breaker: CircuitBreaker) -> bool:
    state = breaker.state
    if state is BreakerState.OPEN or state is BreakerState.FORCED_OPEN:
        return True
    return state is BreakerState.HALF_OPEN and breaker.trials_admitted >= breaker.policy.half_open.trials


_STATE_AFTER: dict[type[BreakerEvent], str] = {
    BreakerOpened: "open",
    BreakerHalfOpened: "half_open",
    BreakerClosed: "closed",
    BreakerEvicted: "closed",
}


def _steps(events: list[BreakerEvent]) -> Iterator[_Step]:
    """The inputs the events describe, in time order, with the recorded state they came in."""
    previous = _origin(events)
    state = "closed"
    for event in events:
        trial = state == "half_open"
        batch: list[_Step] = []
        if event.successes is not None:
            if trial:
                batch.extend(_trial_successes(event, previous))
            else:
                batch.extend(_successes(event.successes, previous, event.at))
        if event.rejections is not None:
            batch.extend(_spread(event.rejections.n, event.rejections.first_at, event.rejections.last_at))
        # Stable: recorded order survives equal times. A rejection summarised with an event came
        # before that event's deciding result, so at equal times rejections go first.
        batch.sort(key=lambda step: (step.at, step.what != "unknown"))
        yield from batch
        if isinstance(event, CallFailed):
            yield _Step(event.at, "fail", trial, event.kind, event.duration)
        elif isinstance(event, BreakerTrialReleased):
            yield _Step(event.at, "release", True, event.kind)
        elif isinstance(event, BreakerTrialAdmitted):
            yield _Step(event.at, "admit")
        elif isinstance(event, BreakerOverridden):
            yield _Step(event.at, "override", event=event)
        elif isinstance(event, BreakerOpened) and event.who is not None:
            yield _Step(event.at, "trip", event=event)
        elif isinstance(event, BreakerHalfOpened) and event.reason is not None:
            yield _Step(event.at, "signal", event=event)
        elif isinstance(event, BreakerEvicted):
            yield _Step(event.at, "evict")
        elif type(event) in _STATE_AFTER:
            yield _Step(event.at, "tick")
        after = (
            event.to_state if isinstance(event, BreakerOverridden) else _STATE_AFTER.get(type(event), state)
        )
        if state == "half_open" and after != "half_open":
            yield _Step(event.at, "round_over")
        state = after
        previous = event.at


def _origin(events: list[BreakerEvent]) -> float:
    """When the log's first calls may have happened: its first event, or earlier for the calls
    that event summarises (their whole-second buckets, their rejections)."""
    first = events[0]
    origin = first.at
    if first.successes is not None and first.successes.buckets:
        origin = min(origin, float(first.successes.buckets[0][0]))
    if first.rejections is not None:
        origin = min(origin, first.rejections.first_at)
    return origin


def _trial_successes(event: BreakerEvent, previous: float) -> Iterator[_Step]:
    """The half-open trials that succeeded, summarised in ``event``.

    Each happened after the previous event and before the round's deadline (a later one would
    have found the round over), so they are placed at the previous event's time; except the one
    that decided the round when ``event`` closed it (or re-opened it on a slow trial): that one is
    at the event's time. Only the deciding result's place matters to a round: the slow ones
    (failed trials, under a slow-call rule) go last when the round re-opened, first otherwise.
    """
    summary = event.successes
    assert summary is not None
    decided = isinstance(event, BreakerClosed) or (
        isinstance(event, BreakerOpened) and event.reason == "half_open_failed"
    )
    fast = summary.n - summary.slow
    if isinstance(event, BreakerOpened):
        order = [False] * fast + [True] * summary.slow
    else:
        order = [True] * summary.slow + [False] * fast
    for index, is_slow in enumerate(order):
        at = event.at if decided and index == summary.n - 1 else previous
        yield _Step(at, "ok", True, duration=_SLOW_ALWAYS if is_slow else None)


def _successes(summary: Successes, start: float, end: float) -> Iterator[_Step]:
    """Successes in a counting state, spread over (start, end] in their recorded order."""
    if summary.buckets:
        for second, count, slow in summary.buckets:
            low = max(start, float(second))
            high = min(end, math.nextafter(second + 1.0, -math.inf))  # inside its second
            yield from _mixed(count, slow, low, max(low, high))
    elif summary.runs:
        total = sum(count for _, count in summary.runs)
        step = (end - start) / total
        index = 0
        for code, count in summary.runs:
            for _ in range(count):
                index += 1
                at = end if index == total else start + step * index
                yield _Step(at, "ok", duration=_SLOW_ALWAYS if code else None)
    else:
        yield from _mixed(summary.n, summary.slow, start, end)


def _mixed(count: int, slow: int, start: float, end: float) -> Iterator[_Step]:
    """``count`` successes, ``slow`` of them slow and spread among the rest, evenly over (start, end]."""
    step = (end - start) / count if count else 0.0
    for index in range(count):
        # Exactly ``slow`` indices satisfy this, evenly spaced.
        is_slow = (index + 1) * slow // count > index * slow // count
        at = end if index == count - 1 else start + step * (index + 1)
        yield _Step(at, "ok", duration=_SLOW_ALWAYS if is_slow else None)


def _spread(count: int, first: float, last: float) -> Iterator[_Step]:
    step = (last - first) / (count - 1) if count > 1 else 0.0
    for index in range(count):
        yield _Step(last if index == count - 1 else first + step * index, "unknown")
