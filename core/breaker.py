"""The circuit breaker: a pure state machine that decides whether a call may go ahead.

It takes outcomes (:meth:`CircuitBreaker.record_success`, :meth:`CircuitBreaker.record_failure`)
and reads the time from an injected clock; it emits past-tense domain events
(:mod:`poolwarden.breaker_events`) that a driver drains and persists. It never awaits, sleeps or
touches the store.

Event sourcing is built in: every change of state is made by *applying an event*, the same code
whether the event was just decided (live) or read back from the log (replay), so a replayed
breaker equals the live one by construction. The only state changed outside an event is the
closed-state bookkeeping of successes, and every event carries the summary of those successes
(:class:`~poolwarden.breaker_events.Successes`) so replay can apply them at the same point.

Transitions go through ONE shared :class:`transitions.Machine` for the class, built from
``_TRANSITIONS``. Breakers are not added to it as models (see ``_fire`` for why and what pins
it): the machine's events are triggered on the slotted breaker directly, and replay checks each
recorded transition against a table read back from the same Machine. The hot path (``allow``
and ``record_success`` in CLOSED) touches no trigger at all.

Several processes may share one breaker (one stream, several writers; the driver,
:mod:`poolwarden.aio.durable_breakers`, does the I/O). The merge rule:

* **transitions are shared**: another writer's open, half-open, close and manual override are
  applied to the live breaker with their own timestamps (:meth:`CircuitBreaker.merge`), so
  every process rejects calls while any of them has the breaker open;
* **outcome windows are local**: another writer's failures, summaries and trial admissions
  change nothing here; each process judges its own calls;
* **a half-open round has one owner** when trials are claimed (:meth:`CircuitBreaker.claim_trials`,
  which the durable driver turns on for breakers shared through a log): the round belongs to the
  process whose ``BreakerHalfOpened`` comes first in the stream. A process whose wait has passed
  emits its ``BreakerHalfOpened`` (its claim) and admits no trial until its driver has appended
  it with nobody else's before it (:meth:`CircuitBreaker.confirm_claim`); a process that meets
  another's first (merged, or on a rebase) rejects every call until that round's outcome reaches
  it. A round held elsewhere that shows no trial within the claim timeout (or whose trial
  outlives ``half_open.max_seconds`` by it) is abandoned: ``BreakerOpened(reason=
  "trial_abandoned")`` with no added wait, and a claim of its own, so a dead owner never holds a
  breaker half-open. A fleet thus runs at most ``half_open.trials`` trials per round;
* **concurrent transitions are settled by log order**: an event marked ``decided_on`` (its
  writer had not seen the events before it) that the state machine no longer allows from the
  state replay has reached is *superseded* and changes nothing; the first writer to append wins,
  a manual override always applies. Replay (:meth:`CircuitBreaker.apply`) and the live fold
  follow the same rule, and a writer whose append met another's events takes the log's view
  (:meth:`CircuitBreaker.rebase`), so every process ends in the state a replay of the log gives.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from transitions import Machine, MachineError

from poolwarden.breaker_events import (
    BreakerClosed,
    BreakerEvent,
    BreakerEvicted,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerOverridden,
    BreakerTrialAdmitted,
    BreakerTrialReleased,
    BreakerWouldHaveOpened,
    CallFailed,
    CallsSummarised,
    Rejections,
    Successes,
    from_recorded,
)
from poolwarden.clock import Clock
from poolwarden.errors import ConfigurationError, InvalidTransition
from poolwarden.events import RecordedEvent
from poolwarden.outcome_window import FAILED, SLOW, CountWindow, OutcomeWindow, new_window, window_from_json
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, RandomSource, counts

__all__ = ["ABANDONED", "BreakerState", "CircuitBreaker", "Decision", "TrialClaim"]

_FAST_TYPES: dict[str, int] = {
    cls.TYPE: cls.SCHEMA_VERSION for cls in (CallFailed, CallsSummarised, BreakerTrialAdmitted)
}
"""The types :meth:`CircuitBreaker.apply_recorded` folds from their columns and payload, without
the codec, when they are of this schema version (an older one is upcast by the codec first)."""


class BreakerState(enum.StrEnum):
    """Where a breaker is. The last three are set by hand only."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"


_STATES: Final = {state.value: state for state in BreakerState}
_LEVELS: Final = {level.value: level for level in BreakerLevel}
"""Values to members in a dict lookup, where calling the enum costs a microsecond (a restore
converts two a breaker); a value not there goes to the enum, which refuses it as ever."""
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED
_METRICS_ONLY = BreakerState.METRICS_ONLY
_COUNTING = (_CLOSED, _METRICS_ONLY)

_OVERRIDES: dict[str, BreakerState] = {
    "force_open": _FORCED_OPEN,
    "disable": _DISABLED,
    "metrics_only": _METRICS_ONLY,
    "reset": _CLOSED,
}

# The declared transitions; "*" is every state (the dest included: resetting a closed breaker is a
# transition too).
_TRANSITIONS: Final[tuple[dict[str, Any], ...]] = (
    {"trigger": "trip", "source": [_CLOSED, _HALF_OPEN], "dest": _OPEN},
    {"trigger": "trip_manually", "source": "*", "dest": _OPEN},
    {"trigger": "half_open", "source": _OPEN, "dest": _HALF_OPEN},
    {"trigger": "close", "source": _HALF_OPEN, "dest": _CLOSED},
    *({"trigger": action, "source": "*", "dest": dest} for action, dest in _OVERRIDES.items()),
)
_MACHINE: Final = Machine(
    model=None,
    states=BreakerState,
    transitions=list(_TRANSITIONS),
    initial=_CLOSED,
    auto_transitions=False,
)
_TRIGGERS: Final = _MACHINE.events
# The same table, read back out of the Machine through its public get_triggers/get_transitions,
# for replay: checking a recorded transition needs no callbacks, and skipping the ~8 us trigger
# makes folding a long log several times faster. tests/test_state_machines.py holds it equal to
# the declared transitions and to what the triggers do.
_TABLE: Final[dict[tuple[str, BreakerState], BreakerState]] = {
    (name, BreakerState[transition.source]): BreakerState[str(transition.dest)]
    for name in _MACHINE.get_triggers(*BreakerState)
    for transition in _MACHINE.get_transitions(name)
}
_TRIGGER_OF: Final[dict[type[BreakerEvent], str]] = {
    BreakerOpened: "trip",
    BreakerHalfOpened: "half_open",
    BreakerClosed: "close",
}
"""The trigger of each automatic transition's event (overrides name theirs in ``action``)."""
_SHARED_EVENTS: Final = (BreakerOpened, BreakerHalfOpened, BreakerClosed, BreakerOverridden)
"""The events another writer of the stream makes this breaker follow (:meth:`CircuitBreaker.merge`)."""

ABANDONED: Final = "trial_abandoned"
"""The reason of the ``BreakerOpened`` with which a process ends a half-open round held by
another process that shows no sign of life (see :meth:`CircuitBreaker.claim_trials`)."""


class TrialClaim(enum.StrEnum):
    """Who may run the trials of a half-open round, when trials are claimed through the log."""

    OFF = "off"
    """Trials are not claimed: this process runs its own (a breaker with one writer)."""
    CLAIMING = "claiming"
    """This process half-opened the breaker; no trial until its claim is in the log."""
    HELD = "held"
    """This process's claim came first in the log: it runs the round's trials."""
    ELSEWHERE = "elsewhere"
    """Another process's claim came first: every call is rejected until the round's outcome."""
    NO_ROUND = "no_round"
    """Trials are claimed, and the breaker is not half-open."""


_OFF = TrialClaim.OFF
_CLAIMING = TrialClaim.CLAIMING
_HELD = TrialClaim.HELD
_ELSEWHERE = TrialClaim.ELSEWHERE
_NO_ROUND = TrialClaim.NO_ROUND


def _error_kind(value: object) -> ErrorKind:
    try:
        return ErrorKind(str(value))
    except ValueError:
        raise ConfigurationError(
            f"{value!r} is not an error kind; use one of {', '.join(k.value for k in ErrorKind)}"
        ) from None


class Decision:
    """The answer of :meth:`CircuitBreaker.allow`: truthy when the call may go ahead.

    ``permit`` is the breaker's epoch when the call was admitted; hand it back with the result
    so that a result from before the breaker's last transition is ignored. ``retry_at`` says
    when a rejected call may be tried again (``None`` when nobody knows, e.g. forced open).
    """

    __slots__ = ("allowed", "permit", "reason", "retry_at")

    allowed: bool
    reason: str
    retry_at: float | None
    permit: int | None

    def __init__(self, allowed: bool, reason: str, retry_at: float | None, permit: int | None) -> None:
        # Breakers hand the same Decision to many callers, so nobody may change it.
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "retry_at", retry_at)
        object.__setattr__(self, "permit", permit)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Decision is immutable (tried to set {name!r})")

    def __bool__(self) -> bool:
        return self.allowed

    def as_pair(self) -> tuple[bool, str]:
        """``(allowed, reason)``: the shape of the seed's ``check_circuit_breaker``."""
        return self.allowed, self.reason

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, reason={self.reason!r}, retry_at={self.retry_at}, "
            f"permit={self.permit})"
        )


class CircuitBreaker:
    """One breaker, for one key (a connection, a connection's model, or any name).

    ``rng`` draws the backoff jitter; the drawn ``retry_at`` goes into the event, so replaying
    never draws again. It is required, so that the breaker is deterministic given its inputs;
    one ``random.Random`` may serve many breakers (a registry's do share one): jitter needs no
    independence between breakers, and seeding a Random per breaker costs ~16 us.
    """

    __slots__ = (
        "_admit",
        "_buckets",
        "_burst",
        "_claim",
        "_claim_timeout",
        "_clock",
        "_consecutive",
        "_events",
        "_fast",
        "_ok",
        "_ok_mark",
        "_ok_slow",
        "_outbox",
        "_owner_seen_at",
        "_rej_first",
        "_rej_last",
        "_rej_n",
        "_rejected_total",
        "_replaying",
        "_rng",
        "_runs",
        "_seq",
        "_verdict",
        "_window",
        "closed_at",
        "connection_id",
        "epoch",
        "half_opened_at",
        "key",
        "level",
        "model_id",
        "opened_at",
        "override",
        "policy",
        "retry_at",
        "state",
        "streak",
        "trial_started_at",
        "trials_admitted",
        "trials_failed",
        "trials_ok",
    )

    def __init__(
        self,
        key: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Clock,
        rng: RandomSource,
        level: BreakerLevel = BreakerLevel.STANDALONE,
        connection_id: str | None = None,
        model_id: str | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigurationError("a breaker key is a non-empty string")
        self.key = key
        self.policy = policy if policy is not None else BreakerPolicy()
        self.level = level
        self.connection_id = connection_id
        self.model_id = model_id
        self._clock = clock
        self._rng = rng
        self.state = _CLOSED
        self.epoch = 0
        self.opened_at: float | None = None
        self.retry_at: float | None = None
        self.streak = 0
        self.closed_at: float | None = None
        self.half_opened_at: float | None = None
        self.trial_started_at: float | None = None
        self.trials_admitted = 0
        self.trials_ok = 0
        self.trials_failed = 0
        self.override: tuple[str, str] | None = None
        self._consecutive = 0
        self._window: OutcomeWindow | None = None
        if self.policy.uses_window:
            self._window = new_window(self.policy.window)
        self._burst: deque[float] | None = deque() if self.policy.failure_burst is not None else None
        self._events: list[BreakerEvent] = []
        self._seq = 0
        self._ok = 0
        self._ok_mark = 0
        self._ok_slow = 0
        self._runs: list[list[int]] | None = None
        self._buckets: list[list[int]] | None = None
        self._rej_n = 0
        self._rej_first = 0.0
        self._rej_last = 0.0
        self._rejected_total = 0
        self._replaying = False
        self._outbox: list[CircuitBreaker] | None = None
        self._claim = _OFF
        self._claim_timeout = 0.0
        self._owner_seen_at: float | None = None
        self._fast = True
        self._verdict: Decision | None = None
        self._refresh()  # sets _admit

    # --- the hot path ------------------------------------------------------------------------

    def allow(self) -> Decision:
        """May a call go ahead now? An open breaker whose wait has passed turns half-open here."""
        if self.state is _CLOSED:
            return self._admit
        return self._allow_elsewhere()

    def record_success(self, permit: int | None = None, duration: float | None = None) -> None:
        """A call admitted under ``permit`` succeeded (in ``duration`` seconds, if known).

        Without a permit the result is taken as belonging to the current epoch.
        """
        if self._fast and (permit is None or permit == self.epoch):
            self._consecutive = 0
            self._ok += 1
            return
        self._success_elsewhere(permit, duration)

    def record_failure(
        self, kind: ErrorKind, duration: float | None = None, permit: int | None = None
    ) -> None:
        """A call admitted under ``permit`` failed with an error of ``kind`` (an ErrorKind or its value)."""
        if kind.__class__ is not ErrorKind:
            kind = _error_kind(kind)
        now = self._clock()
        self._advance(now)
        if permit is not None and permit != self.epoch:
            return  # admitted before the last transition: a late result decides nothing
        state = self.state
        if not counts(kind, self.level):
            if state is _HALF_OPEN and self._outstanding():
                self._emit(BreakerTrialReleased(kind=kind, **self._common(now)))
            return
        if state is _OPEN or state is _FORCED_OPEN:
            return  # nothing was admitted in this epoch; only a permit-less result gets here
        if state is _HALF_OPEN and not self._outstanding():
            return
        counted = state is not _DISABLED and self.policy.counts(kind, self.level)
        slow = duration is not None and duration > self.policy.slow_call_seconds
        self._emit(CallFailed(kind=kind, duration=duration, counted=counted, slow=slow, **self._common(now)))
        if not counted:
            return
        if state is _HALF_OPEN:
            self._judge_trials(now)
        elif state in _COUNTING:
            self._judge_window(now, failure=True)

    # --- manual control ----------------------------------------------------------------------

    def force_open(self, who: str, why: str) -> None:
        """Reject every call until someone resets, disables or shadows the breaker."""
        self._override("force_open", who, why)

    def trip(self, who: str, why: str) -> None:
        """Open the breaker now, from any state, for the policy's normal timed wait (pybreaker's
        ``open()``, resilience4j's ``transitionToOpenState()``); after ``retry_at`` it half-opens
        and its trials decide, as after any open. Audited: ``BreakerOpened(reason="manual")``
        carries ``who`` and ``why``. :meth:`force_open` is the untimed hold."""
        self._check_person("trip", who, why)
        now = self._clock()
        self._advance(now)
        self._open(now, "manual", who, why)

    def disable(self, who: str, why: str) -> None:
        """Allow every call and count nothing."""
        self._override("disable", who, why)

    def metrics_only(self, who: str, why: str) -> None:
        """Allow every call but keep judging, emitting ``BreakerWouldHaveOpened`` where it would trip."""
        self._override("metrics_only", who, why)

    def reset(self, who: str, why: str) -> None:
        """Close the breaker, forget its windows and its re-open streak."""
        self._override("reset", who, why)

    def half_open_now(self, why: str) -> bool:
        """Admit trial calls now rather than at ``retry_at``: the owner knows the target works
        again (a recovery verified a round trip). Only an open breaker moves (a forced-open one
        stays an operator's decision); returns whether this one did. The trials still decide."""
        now = self._clock()
        self._advance(now)
        if self.state is not _OPEN:
            return False
        self._emit(BreakerHalfOpened(reason=why, **self._common(now)))
        return True

    # --- the driver's side -------------------------------------------------------------------

    def poll(self) -> None:
        """Carry out the transitions that time alone makes due (open -> half-open, a stuck trial)."""
        self._advance(self._clock())

    def checkpoint(self) -> None:
        """Write the successes and rejections seen since the last event into a ``CallsSummarised``."""
        if self.has_summary:
            self._emit(CallsSummarised(**self._common(self._clock())))

    def evict(self) -> None:
        """Record that this breaker, at rest, is being forgotten (``BreakerEvicted``).

        Replaying the event leaves the breaker exactly as a newly created one, which is what
        the registry hands out next for the key: epoch 0, empty windows, no re-open streak.
        """
        if not self.at_rest:
            raise InvalidTransition("CircuitBreaker", self.state.value, "evict")
        self._emit(BreakerEvicted(**self._common(self._clock())))

    def drain_events(self) -> list[BreakerEvent]:
        """The events emitted since the last drain, oldest first."""
        events, self._events = self._events, []
        return events

    def report_to(self, outbox: list[CircuitBreaker]) -> None:
        """Append this breaker to ``outbox`` whenever it goes from no pending event to one (and
        now, if it has some): a driver then finds the breakers with work without scanning all."""
        self._outbox = outbox
        if self._events:
            outbox.append(self)

    @property
    def has_events(self) -> bool:
        """Whether events wait to be drained."""
        return bool(self._events)

    @property
    def has_summary(self) -> bool:
        """Whether successes or rejections wait to be summarised by :meth:`checkpoint`."""
        return self._ok != self._ok_mark or bool(self._rej_n)

    @property
    def pending_events(self) -> int:
        """How many events wait to be drained."""
        return len(self._events)

    @property
    def activity(self) -> tuple[int, int, int]:
        """A value that changes whenever the breaker sees a call; a registry compares it to find idle ones."""
        return (self._ok, self._seq, self._rejected_total)

    @property
    def at_rest(self) -> bool:
        """Closed, nothing pending, no failure in any window: forgetting it loses nothing but successes."""
        window = self._window
        return (
            self.state is _CLOSED
            and not self._events
            and self._ok == self._ok_mark
            and not self._rej_n
            and self._consecutive == 0
            and (window is None or (window.failures == 0 and window.slow == 0))
            and not self._burst
        )

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON data: everything replay rebuilds, nothing pending.

        Take it right after :meth:`checkpoint` and :meth:`drain_events`, so that it describes
        exactly the events persisted so far.
        """
        return {
            "v": 1,
            "key": self.key,
            "level": self.level.value,
            "connection_id": self.connection_id,
            "model_id": self.model_id,
            "state": self.state.value,
            "epoch": self.epoch,
            "opened_at": self.opened_at,
            "retry_at": self.retry_at,
            "streak": self.streak,
            "closed_at": self.closed_at,
            "half_opened_at": self.half_opened_at,
            "trial_started_at": self.trial_started_at,
            "trials": [self.trials_admitted, self.trials_ok, self.trials_failed],
            "override": None if self.override is None else list(self.override),
            "consecutive": self._consecutive,
            "window": None if self._window is None else self._window.to_json(),
            "burst": None if self._burst is None else list(self._burst),
        }

    @classmethod
    def from_snapshot(
        cls,
        data: dict[str, Any],
        policy: BreakerPolicy | None = None,
        *,
        clock: Clock,
        rng: RandomSource,
    ) -> CircuitBreaker:
        """A breaker in the state :meth:`snapshot` saved; windows of another shape start empty."""
        if data.get("v") != 1:
            raise ConfigurationError(f"unknown breaker snapshot version {data.get('v')!r}")
        breaker = cls(
            data["key"],
            policy,
            clock=clock,
            rng=rng,
            level=_LEVELS.get(data["level"]) or BreakerLevel(data["level"]),
            connection_id=data["connection_id"],
            model_id=data["model_id"],
        )
        breaker.state = _STATES.get(data["state"]) or BreakerState(data["state"])
        breaker.epoch = data["epoch"]
        breaker.opened_at = data["opened_at"]
        breaker.retry_at = data["retry_at"]
        breaker.streak = data["streak"]
        breaker.closed_at = data["closed_at"]
        breaker.half_opened_at = data["half_opened_at"]
        breaker.trial_started_at = data["trial_started_at"]
        breaker.trials_admitted, breaker.trials_ok, breaker.trials_failed = data["trials"]
        breaker.override = None if data["override"] is None else (data["override"][0], data["override"][1])
        breaker._consecutive = data["consecutive"]
        if breaker._window is not None and data["window"] is not None:
            breaker._window = window_from_json(data["window"], breaker.policy.window)
        if breaker._burst is not None and data["burst"] is not None:
            breaker._burst.extend(data["burst"])
        breaker._refresh()
        return breaker

    # --- replay ------------------------------------------------------------------------------

    def apply(self, event: BreakerEvent) -> bool:
        """Fold a recorded event into the breaker (replay); returns whether it was applied.

        An impossible transition raises InvalidTransition, unless the event is marked
        ``decided_on`` (another writer's events came before it in the stream): then it is
        superseded, changes nothing and this returns ``False`` (its successes still fold).
        """
        if event.successes is not None:
            summary = event.successes
            self._fold_successes(summary.n, summary.runs, summary.buckets, summary.slow)
        if self._superseded(event):
            return False
        self._replaying = True
        try:
            self._apply(event)
        finally:
            self._replaying = False
        return True

    # --- sharing a stream with other processes -----------------------------------------------

    def merge(self, event: BreakerEvent) -> bool:
        """Follow an event another process wrote to this breaker's stream; returns whether the
        state changed.

        Call it only when this breaker's own events are all in the stream before ``event``
        (nothing pending); otherwise its writer must :meth:`rebase` instead. A transition is
        applied as replay applies it, with its timestamps, and starts a new round here (new
        epoch, empty windows); outcomes (failures, summaries, trial admissions) are the other
        process's judgement and are ignored. Another process forgetting its idle breaker
        (``BreakerEvicted``) resets the re-open streak here, as replay does; nothing else.
        """
        if isinstance(event, BreakerEvicted):
            if self._superseded(event):
                return False
            if self.state is not _CLOSED:
                raise InvalidTransition("CircuitBreaker", self.state.value, "evict")
            changed = self.streak != 0 or self.closed_at is not None or self.override is not None
            self.streak = 0
            self.closed_at = None
            self.override = None
            return changed
        if isinstance(event, BreakerTrialAdmitted):
            if self._claim is _ELSEWHERE and self.state is _HALF_OPEN:
                self._owner_seen_at = event.at  # the owner of the round is alive and trying
                self._verdict = None
            return False
        if not isinstance(event, _SHARED_EVENTS) or self._superseded(event):
            return False
        self._replaying = True
        try:
            self._apply(event)
        finally:
            self._replaying = False
        return True

    def shared_state(self) -> dict[str, Any]:
        """What every process sharing this breaker agrees on once each has seen the whole stream:
        the state, its timestamps, the re-open streak and a manual override."""
        return {
            "state": self.state.value,
            "opened_at": self.opened_at,
            "retry_at": self.retry_at,
            "half_opened_at": self.half_opened_at,
            "closed_at": self.closed_at,
            "streak": self.streak,
            "override": self.override,
        }

    def rebase(self, replayed: CircuitBreaker) -> bool:
        """Take the shared state of ``replayed``; returns whether it changed.

        ``replayed`` is this breaker's stream as the log holds it, with this breaker's own
        unpersisted events folded last (marked :func:`~poolwarden.breaker_events.decided_on`):
        what a replay will say once they are appended. When that is where this breaker already
        is, nothing local changes (epoch, trials, windows); otherwise the breaker starts a new
        round in the log's state, as after any transition (results of calls admitted before are
        ignored, windows start empty).
        """
        same = replayed.shared_state() == self.shared_state()
        # Whose round it is: ``replayed`` knows whether our claim survived the others' events (the
        # driver calls its take_claim when it does); a claim already confirmed stays.
        if self._claim is not _OFF and replayed.state is _HALF_OPEN and not (self._claim is _HELD and same):
            # (a replayed breaker that claims nothing knows no claim of ours)
            self._claim = _ELSEWHERE if replayed._claim is _OFF else replayed._claim
            self._owner_seen_at = replayed._owner_seen_at
            self._verdict = None
        if same:
            return False
        self.state = replayed.state
        self.opened_at = replayed.opened_at
        self.retry_at = replayed.retry_at
        self.half_opened_at = replayed.half_opened_at
        self.closed_at = replayed.closed_at
        self.streak = replayed.streak
        self.override = replayed.override
        self._new_epoch()
        self._clear_counts()
        self._refresh()
        return True

    def claim_trials(self, timeout: float) -> None:
        """Claim half-open rounds through the log from now on (see the module's merge rule).

        ``timeout`` is how long a round held by another process may show no trial (or its trial
        outlive ``half_open.max_seconds``) before this one abandons it; it must exceed the time
        the others' events take to arrive here (their flush plus this process's poll). A breaker
        already half-open is taken as held elsewhere (a restored one never claimed anything),
        unless its own pending ``BreakerHalfOpened`` made it so.
        """
        if not timeout > 0:
            raise ConfigurationError("a trial claim timeout must be > 0 seconds")
        self._claim_timeout = float(timeout)
        self._claim = _NO_ROUND
        if self.state is _HALF_OPEN:
            # A round this breaker half-opened itself (a restore catching up) is its claim.
            mine = any(isinstance(e, BreakerHalfOpened) and e.at == self.half_opened_at for e in self._events)
            self._claim = _CLAIMING if mine else _ELSEWHERE
        self._owner_seen_at = None
        self._verdict = None

    @property
    def trial_claim(self) -> TrialClaim:
        """Who runs this half-open round's trials."""
        if self._claim is _OFF or self.state is _HALF_OPEN:
            return self._claim
        return _NO_ROUND

    def take_claim(self) -> None:
        """The half-open round is this process's claim, not yet confirmed by the log: the driver
        calls it on a replayed breaker when a rebase folded this process's ``BreakerHalfOpened``
        after the others' events and it still applied."""
        if self._claim is not _OFF and self.state is _HALF_OPEN:
            self._claim = _CLAIMING
            self._verdict = None

    def confirm_claim(self, half_opened_at: float) -> bool:
        """This process's ``BreakerHalfOpened`` at ``half_opened_at`` was appended with nothing
        unseen before it: the round is this process's, its trials may run. Returns whether this
        confirmed the current round (a claim already lost, or an older round's, confirms nothing)."""
        if self._claim is _CLAIMING and self.state is _HALF_OPEN and self.half_opened_at == half_opened_at:
            self._claim = _HELD
            self._verdict = None
            return True
        return False

    def apply_recorded(self, record: RecordedEvent) -> None:
        """Fold a recorded event straight from its columns and payload (the replay fast path).

        The frequent types (failures, summaries, trial admissions) of their current schema version
        skip the codec (:mod:`poolwarden.codec`) and building the domain event: a restore reads a
        million of them. The rest, and events of an older schema version (which the codec
        upcasts), go through :meth:`apply`. Both end in the same ``_apply_*`` code.
        """
        kind = record.type
        if _FAST_TYPES.get(kind) != record.schema_version:
            self.apply(from_recorded(record))
            return
        payload = record.payload
        ok = payload.get("ok")
        if ok is not None:
            self._fold_successes(ok["n"], ok.get("runs"), ok.get("buckets"), ok.get("slow", 0))
        if kind == "CallFailed":
            self._apply_failure(payload["counted"], payload.get("slow", False), record.occurred_at)
        elif kind == "BreakerTrialAdmitted":
            self._apply_admitted(record.occurred_at)

    # --- internals ---------------------------------------------------------------------------

    def _common(self, now: float) -> dict[str, Any]:
        return {
            "key": self.key,
            "at": now,
            "connection_id": self.connection_id,
            "model_id": self.model_id,
            "successes": self._take_successes(),
            "rejections": self._take_rejections(),
        }

    def _take_successes(self) -> Successes | None:
        n = self._ok - self._ok_mark
        if not n:
            return None
        runs = None if self._runs is None else tuple((slow, count) for slow, count in self._runs)
        buckets = None if self._buckets is None else tuple((s, c, w) for s, c, w in self._buckets)
        summary = Successes(n=n, slow=self._ok_slow, runs=runs, buckets=buckets)
        self._ok_mark = self._ok
        self._ok_slow = 0
        self._runs = None
        self._buckets = None
        return summary

    def _take_rejections(self) -> Rejections | None:
        if not self._rej_n:
            return None
        summary = Rejections(n=self._rej_n, first_at=self._rej_first, last_at=self._rej_last)
        self._rej_n = 0
        return summary

    def _emit(self, event: BreakerEvent) -> None:
        self._apply(event)
        if not self._events and self._outbox is not None:
            self._outbox.append(self)
        self._events.append(event)
        self._seq += 1

    def _superseded(self, event: BreakerEvent) -> bool:
        """Whether ``event``, decided by a writer that had not seen the events before it, is a
        transition the state machine no longer allows: another writer's got in first."""
        if event.decided_on is None:
            return False
        if isinstance(event, BreakerOpened) and event.who is not None:
            return False  # a manual trip, like a manual override, always applies
        if isinstance(event, BreakerOpened) and event.abandons is not None:
            # only the round it gave up: that one may have ended meanwhile, another begun
            return self.state is not _HALF_OPEN or self.half_opened_at != event.abandons
        trigger = _TRIGGER_OF.get(type(event))
        if trigger is not None:
            if (trigger, self.state) not in _TABLE:
                return True
            if isinstance(event, BreakerOpened) and event.from_state != self.state.value:
                return True  # a trip judged on another state (calls while closed, not these trials)
            if isinstance(event, BreakerHalfOpened) and event.reason is None:
                return event.at != self.retry_at  # it ended the wait of another open, not this one
            # Decided before the current state began, it judged an earlier round (a half-open
            # that ended an earlier wait, a trip on an earlier round's trials): not this one's.
            began = {_OPEN: self.opened_at, _HALF_OPEN: self.half_opened_at, _CLOSED: self.closed_at}.get(
                self.state
            )
            return began is not None and event.at < began
        return isinstance(event, BreakerEvicted) and self.state is not _CLOSED

    def _fire(self, trigger: str) -> None:
        if self._replaying:
            dest = _TABLE.get((trigger, self.state))
            if dest is None:
                raise InvalidTransition("CircuitBreaker", self.state.value, trigger)
            self.state = dest
            return
        # Off transitions' documented path, on purpose: the breaker was never given to add_model.
        # Event.trigger(model) is what the method add_model binds would call (it is that method's
        # partial), so a trigger costs the same; what add_model would add is the cost. Measured
        # (transitions 0.9.3, 2-CPU test machine): 165 us and 6.6 kB in 23 attributes per breaker,
        # so 10,000 breakers would take 1.65 s to create instead of ~0.1 s (the target is 1 s) and
        # would need a __dict__ each; Machine.models would hold every breaker until remove_model.
        # A Machine per breaker costs 257 us. Hence transitions>=0.9.1,<0.10 in pyproject.toml,
        # and tests/test_state_machines.py checks this trigger against the declared transitions.
        try:
            _TRIGGERS[trigger].trigger(self)
        except MachineError as exc:
            raise InvalidTransition("CircuitBreaker", self.state.value, trigger) from exc

    def _refresh(self) -> None:
        """Rebuild what depends on the state only (cached decisions, the fast-path flag)."""
        state = self.state
        self._fast = state is _CLOSED and self._window is None
        reason = state.value
        if state is _FORCED_OPEN and self.override is not None:
            reason = f"forced_open by {self.override[0]}: {self.override[1]}"
        self._admit = Decision(True, reason, None, self.epoch)
        self._verdict = None

    def _allow_elsewhere(self) -> Decision:
        now = self._clock()
        self._advance(now)
        state = self.state
        if state is _HALF_OPEN:
            if self.trials_admitted < self.policy.half_open.trials and (
                self._claim is _OFF or self._claim is _HELD
            ):
                self._emit(BreakerTrialAdmitted(permit=self.epoch, **self._common(now)))
                return Decision(True, "half_open trial", None, self.epoch)
        elif state is not _OPEN and state is not _FORCED_OPEN:
            return self._admit
        self._rej_n += 1
        self._rejected_total += 1
        if self._rej_n == 1:
            self._rej_first = now
        self._rej_last = now
        verdict = self._verdict
        if verdict is None:
            verdict = self._verdict = self._rejection()
        return verdict

    def _rejection(self) -> Decision:
        state = self.state
        if state is _OPEN:
            return Decision(False, f"open until {self.retry_at:.3f}", self.retry_at, None)
        if state is _HALF_OPEN and self._claim is _CLAIMING:
            return Decision(False, "half_open: claiming the trial round through the log", None, None)
        if state is _HALF_OPEN and self._claim is _ELSEWHERE:
            return Decision(False, "half_open: trial round held by another process", self._abandon_at(), None)
        if state is _HALF_OPEN:
            assert self.trial_started_at is not None  # a full half-open round has admitted a trial
            limit = self.policy.half_open.max_seconds
            deadline = None if limit is None else self.trial_started_at + limit
            return Decision(False, "half_open: trial calls in flight", deadline, None)
        return Decision(False, self._admit.reason, None, None)

    def _success_elsewhere(self, permit: int | None, duration: float | None) -> None:
        now = self._clock()
        self._advance(now)
        if permit is not None and permit != self.epoch:
            return
        state = self.state
        slow = duration is not None and duration > self.policy.slow_call_seconds
        if state in _COUNTING:
            code = SLOW if slow else 0
            self._consecutive = 0
            self._ok += 1
            if slow:
                self._ok_slow += 1
            window = self._window
            if window is not None:
                self._note_pending(window, code, now)
                window.add(code, 1, now)
                if slow or self.policy.judge_rates == "every_call":
                    self._judge_window(now, failure=False)
        elif state is _HALF_OPEN:
            if not self._outstanding():
                return
            self._ok += 1
            if slow:
                self._ok_slow += 1  # the summary says so, and replay folds it as this did
            if slow and self.policy.slow_call_rate is not None:
                self.trials_failed += 1
            else:
                self.trials_ok += 1
            self._judge_trials(now)
        elif state is _DISABLED:
            self._ok += 1  # counted for the log (what-if), judged by nobody

    def _note_pending(self, window: OutcomeWindow, code: int, now: float) -> None:
        if isinstance(window, CountWindow):
            runs = self._runs
            if runs is None:
                self._runs = [[code, 1]]
            elif runs[-1][0] == code:
                runs[-1][1] += 1
            else:
                runs.append([code, 1])
        else:
            second = int(now // 1)
            buckets = self._buckets
            if buckets is None:
                self._buckets = [[second, 1, code >> 1]]
            elif buckets[-1][0] == second:
                buckets[-1][1] += 1
                buckets[-1][2] += code >> 1
            else:
                buckets.append([second, 1, code >> 1])

    def _outstanding(self) -> bool:
        """Whether a trial of this half-open round still waits for its result."""
        return self.trials_admitted > self.trials_ok + self.trials_failed

    def _advance(self, now: float) -> None:
        """Carry out the time-driven transitions due by ``now``, at the times they fell due."""
        while True:
            state = self.state
            if state is _OPEN:
                assert self.retry_at is not None
                if now < self.retry_at:
                    return
                self._emit(BreakerHalfOpened(**self._common(self.retry_at)))
            elif state is _HALF_OPEN and self._claim is _ELSEWHERE:
                deadline = self._abandon_at()
                if deadline is None or now < deadline:
                    return
                self._emit(
                    BreakerOpened(
                        from_state=state.value,
                        reason=ABANDONED,
                        retry_at=deadline,
                        streak=self.streak,
                        abandons=self.half_opened_at,
                        **self._common(deadline),
                    )
                )  # no added wait: the loop half-opens again at once, with a claim of its own
            elif state is _HALF_OPEN and self._claim is _CLAIMING:
                return  # the driver's next append settles it
            elif state is _HALF_OPEN and self.trial_started_at is not None:
                limit = self.policy.half_open.max_seconds
                if limit is None:
                    return
                deadline = self.trial_started_at + limit
                if now < deadline:
                    return
                self._open(deadline, "half_open_timeout")
            else:
                return

    def _abandon_at(self) -> float | None:
        """When a round held by another process is given up: ``claim timeout`` after its
        half-open with no trial seen, or after its trial's ``max_seconds`` ran out (never, with
        ``max_seconds=None``, as for a local trial)."""
        assert self.half_opened_at is not None
        seen = self._owner_seen_at
        if seen is None:
            return self.half_opened_at + self._claim_timeout
        limit = self.policy.half_open.max_seconds
        return None if limit is None else seen + limit + self._claim_timeout

    def _judge_window(self, now: float, *, failure: bool) -> None:
        policy = self.policy
        reason = None
        limit = policy.consecutive_failures
        burst = policy.failure_burst
        if failure and limit is not None and self._consecutive >= limit:
            reason = "consecutive_failures"
        elif failure and burst is not None and len(self._burst or ()) >= burst.max_failures:
            reason = "failure_burst"
        window = self._window
        if reason is None and window is not None and window.calls >= policy.window.min_calls:
            if policy.failure_rate is not None and window.failures >= policy.failure_rate * window.calls:
                reason = "failure_rate"
            elif policy.slow_call_rate is not None and window.slow >= policy.slow_call_rate * window.calls:
                reason = "slow_call_rate"
        if reason is None:
            return
        if self.state is _METRICS_ONLY:
            self._emit(BreakerWouldHaveOpened(reason=reason, **self._common(now)))
        else:
            self._open(now, reason)

    def _judge_trials(self, now: float) -> None:
        rule = self.policy.half_open
        need = rule.successes_to_close
        if rule.verdict == "round" and self.trials_ok + self.trials_failed < rule.trials:
            return  # resilience4j's way: every trial reports before the round is judged
        if self.trials_ok >= need:
            self._emit(BreakerClosed(**self._common(now)))
        elif self.trials_failed > rule.trials - need:
            self._open(now, "half_open_failed")

    def _open(self, at: float, reason: str, who: str | None = None, why: str | None = None) -> None:
        backoff = self.policy.backoff
        # A failed trial, or a trip soon after the last close, continues the streak.
        recent = self.closed_at is not None and at - self.closed_at < backoff.decay_after
        streak = self.streak + 1 if self.state is _HALF_OPEN or recent else 0
        draw = backoff.draw(streak, self._rng)
        retry_at = at + backoff.wait(streak, draw)
        self._emit(
            BreakerOpened(
                from_state=self.state.value,
                reason=reason,
                retry_at=retry_at,
                streak=streak,
                who=who,
                why=why,
                draw=draw,
                **self._common(at),
            )
        )

    @staticmethod
    def _check_person(action: str, who: str, why: str) -> None:
        for name, value in (("who", who), ("why", why)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"a manual {action} needs a non-empty {name!r}")

    def _override(self, action: str, who: str, why: str) -> None:
        self._check_person(action, who, why)
        now = self._clock()
        self._advance(now)
        self._emit(
            BreakerOverridden(
                action=action,
                from_state=self.state.value,
                to_state=_OVERRIDES[action].value,
                who=who,
                why=why,
                **self._common(now),
            )
        )

    def _clear_counts(self) -> None:
        self._consecutive = 0
        if self._window is not None:
            self._window = new_window(self.policy.window)
        if self._burst is not None:
            self._burst.clear()

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.trials_admitted = self.trials_ok = self.trials_failed = 0
        self.trial_started_at = None

    def _fold_successes(
        self,
        n: int,
        runs: Sequence[Sequence[int]] | None,
        buckets: Sequence[Sequence[int]] | None,
        slow: int = 0,
    ) -> None:
        """Apply summarised successes in the state they were seen in (no transition separates them)."""
        state = self.state
        if state in _COUNTING:
            self._consecutive = 0
            window = self._window
            if window is None:
                return
            if isinstance(window, CountWindow):
                for code, count in runs or ((0, n),):
                    window.add(code, count)
            else:
                for second, count, slow in buckets or ():
                    window.add_bucket(second, count, slow)
        elif state is _HALF_OPEN:
            bad = slow if self.policy.slow_call_rate is not None else 0
            self.trials_ok += n - bad
            self.trials_failed += bad

    def _apply(self, event: BreakerEvent) -> None:
        """Change state as ``event`` says; the one place state changes, live or in replay."""
        if isinstance(event, CallFailed):
            self._apply_failure(event.counted, event.slow, event.at)
        elif isinstance(event, BreakerOpened):
            self._fire("trip" if event.who is None else "trip_manually")
            self._new_epoch()
            self.opened_at = event.at
            self.retry_at = event.retry_at
            self.streak = event.streak
            self.half_opened_at = None
            self._clear_counts()
            self._refresh()
        elif isinstance(event, BreakerHalfOpened):
            self._fire("half_open")
            self._new_epoch()
            self.half_opened_at = event.at
            if self._claim is not _OFF:
                # Decided here, it is our claim; read from the log or another writer, not ours.
                self._claim = _ELSEWHERE if self._replaying else _CLAIMING
                self._owner_seen_at = None
            self._refresh()
        elif isinstance(event, BreakerClosed):
            self._fire("close")
            self._new_epoch()
            self.closed_at = event.at
            self.opened_at = self.retry_at = self.half_opened_at = None
            self._clear_counts()
            self._refresh()
        elif isinstance(event, BreakerTrialAdmitted):
            self._apply_admitted(event.at)
        elif isinstance(event, BreakerTrialReleased):
            self.trials_admitted -= 1
        elif isinstance(event, BreakerOverridden):
            self._apply_override(event)
        elif isinstance(event, BreakerWouldHaveOpened):
            self._clear_counts()
        elif isinstance(event, BreakerEvicted):
            self._forget()

    def _apply_failure(self, counted: bool, slow: bool, at: float) -> None:
        state = self.state
        if state is _HALF_OPEN:
            if counted:
                self.trials_failed += 1
            else:
                self.trials_admitted -= 1  # an ignored kind says nothing: the slot is free again
        elif state in _COUNTING and counted:
            self._consecutive += 1
            if self._window is not None:
                self._window.add(FAILED | (SLOW if slow else 0), 1, at)
            burst = self._burst
            if burst is not None and self.policy.failure_burst is not None:
                burst.append(at)
                horizon = at - self.policy.failure_burst.within_seconds
                while burst and burst[0] <= horizon:
                    burst.popleft()

    def _forget(self) -> None:
        """Back to a new breaker's state (the state machine stays CLOSED)."""
        if self.state is not _CLOSED:
            raise InvalidTransition("CircuitBreaker", self.state.value, "evict")
        self.epoch = 0
        self.trials_admitted = self.trials_ok = self.trials_failed = 0
        self.trial_started_at = self.opened_at = self.retry_at = self.half_opened_at = self.closed_at = None
        self.streak = 0
        self.override = None
        self._clear_counts()
        self._refresh()

    def _apply_admitted(self, at: float) -> None:
        if self.trials_admitted == 0:
            self.trial_started_at = at
        self.trials_admitted += 1
        self._verdict = None

    def _apply_override(self, event: BreakerOverridden) -> None:
        self._fire(event.action)
        self._new_epoch()
        self.override = (event.who, event.why)
        self.opened_at = self.retry_at = self.half_opened_at = None
        if event.action == "reset":
            self.streak = 0
            self.closed_at = None
            self.override = None
        self._clear_counts()
        self._refresh()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.key!r} {self.state.value} epoch={self.epoch}>"
