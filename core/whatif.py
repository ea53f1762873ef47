"""What-if: replay a recorded log of calls through another breaker policy.

For each breaker stream of the log, the calls are rebuilt from its events: each counted or
ignored failure (``CallFailed``, with its time, kind and duration), the successes summarised in
each event, and the calls the recorded breaker rejected. They are fed, in time order, through
a fresh breaker with the new policy, and the report says when it would have opened and closed
and how many calls it would have rejected.

What the log cannot say, and how this module fills the gap (listed in
:attr:`WhatIfReport.approximations`):

* Successes are summarised, not logged one by one: the ``n`` successes carried by an event are
  spread evenly over the time since the breaker's previous event (or over their whole-second
  buckets, when the recording breaker had a time window), in their recorded order.
* A success's duration is not logged: a success the recording policy found slow counts as slow
  under any threshold, the others as fast.
* A call the recorded breaker rejected never ran, so its outcome is unknown: if the new policy
  would reject it too, it counts as rejected; if it would admit it, it counts in
  ``unknown_outcome`` and moves nothing.
* Calls are taken as instantaneous: a half-open trial's result arrives at its admission.
* Kinds the taxonomy never counts at a level (``input``, ``cancelled``; ``validation`` at a
  connection) are not in the log, so no policy can be made to count them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import (
    STREAM_PREFIX,
    BreakerClosed,
    BreakerEvent,
    BreakerOpened,
    BreakerOverridden,
    CallFailed,
    Successes,
    from_recorded,
    key_of_stream,
)
from poolwarden.events import RecordedEvent
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind
from poolwarden.replay import level_of

__all__ = ["APPROXIMATIONS", "BreakerWhatIf", "WhatIfReport", "what_if"]

APPROXIMATIONS: tuple[str, ...] = (
    "successes are spread evenly over the time between the events that summarise them",
    "a success's duration is unknown: recorded-slow successes count as slow, others as fast",
    "calls the recorded breaker rejected have no outcome; admitted ones count as unknown_outcome",
    "calls are instantaneous: a trial's result arrives when it is admitted",
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


# A call rebuilt from the log: (time, what, kind, duration); what is ok, fail, unknown or an override.
_Call = tuple[float, str, ErrorKind | None, float | None, BreakerOverridden | None]
_SLOW_ALWAYS = float("inf")


def what_if(
    records: Iterable[RecordedEvent],
    policy: BreakerPolicy | Callable[[str, BreakerLevel], BreakerPolicy],
    *,
    seed: int = 0,
) -> WhatIfReport:
    """Replay every ``breaker/...`` stream of ``records`` through ``policy`` (or ``policy(key, level)``).

    ``seed`` seeds the backoff jitter, so the same inputs give the same report.
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


def _replay_one(
    key: str, level: BreakerLevel, events: list[BreakerEvent], policy: BreakerPolicy, rng: random.Random
) -> BreakerWhatIf:
    clock = _SimClock(events[0].at)
    first = events[0]
    breaker = CircuitBreaker(
        key,
        policy,
        clock=clock,
        rng=rng,
        level=level,
        connection_id=first.connection_id,
        model_id=first.model_id,
    )
    rejected = calls = unknown = 0
    recorded_rejected = 0
    for event in events:
        if event.rejections is not None:
            recorded_rejected += event.rejections.n
    for at, what, kind, duration, override in _calls(events):
        clock.now = max(clock.now, at)
        if override is not None:
            getattr(breaker, override.action)(override.who, override.why)
            continue
        if what == "unknown":
            breaker.poll()
            if _would_reject(breaker):
                rejected += 1
            else:
                unknown += 1
            continue
        decision = breaker.allow()
        if not decision:
            rejected += 1
            continue
        calls += 1
        if what == "ok":
            breaker.record_success(decision.permit, duration)
        else:
            assert kind is not None
            breaker.record_failure(kind, duration, decision.permit)
    simulated = breaker.drain_events()
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
    )


def _closes(event: BreakerEvent) -> bool:
    if isinstance(event, BreakerClosed):
        return True
    return isinstance(event, BreakerOverridden) and event.action == "reset" and event.from_state != "closed"


def _would_reject(breaker: CircuitBreaker) -> bool:
    state = breaker.state
    if state is BreakerState.OPEN or state is BreakerState.FORCED_OPEN:
        return True
    return state is BreakerState.HALF_OPEN and breaker.trials_admitted >= breaker.policy.half_open.trials


def _calls(events: list[BreakerEvent]) -> Iterator[_Call]:
    """The calls the events describe, in time order."""
    previous = events[0].at
    for event in events:
        batch: list[_Call] = []
        if event.successes is not None:
            batch.extend(_successes(event.successes, previous, event.at))
        if event.rejections is not None:
            batch.extend(
                _spread("unknown", event.rejections.n, event.rejections.first_at, event.rejections.last_at)
            )
        batch.sort(key=lambda call: call[0])  # stable: recorded order survives equal times
        yield from batch
        if isinstance(event, CallFailed):
            yield (event.at, "fail", event.kind, event.duration, None)
        elif isinstance(event, BreakerOverridden):
            yield (event.at, "override", None, None, event)
        previous = event.at


def _successes(summary: Successes, start: float, end: float) -> Iterator[_Call]:
    if summary.buckets:
        for second, count, slow in summary.buckets:
            low = max(start, float(second))
            high = min(end, second + 1.0)
            yield from _mixed(count, slow, low, max(low, high))
    elif summary.runs:
        total = sum(count for _, count in summary.runs)
        step = (end - start) / total
        index = 0
        for code, count in summary.runs:
            for _ in range(count):
                index += 1
                yield (start + step * index, "ok", None, _SLOW_ALWAYS if code else None, None)
    else:
        yield from _mixed(summary.n, summary.slow, start, end)


def _mixed(count: int, slow: int, start: float, end: float) -> Iterator[_Call]:
    """``count`` successes, ``slow`` of them slow and spread among the rest, evenly over (start, end]."""
    step = (end - start) / count if count else 0.0
    for index in range(count):
        # Exactly ``slow`` indices satisfy this, evenly spaced.
        is_slow = (index + 1) * slow // count > index * slow // count
        yield (start + step * (index + 1), "ok", None, _SLOW_ALWAYS if is_slow else None, None)


def _spread(what: str, count: int, first: float, last: float) -> Iterator[_Call]:
    step = (last - first) / (count - 1) if count > 1 else 0.0
    for index in range(count):
        yield (first + step * index, what, None, None, None)
