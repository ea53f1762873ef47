"""The domain events of a circuit breaker, and their conversion to and from the store's events.

Every transition is an event, and so is every failure that counts. Successes are not: a closed
breaker sees far too many of them. Instead each event carries :class:`Successes`, a summary of
the successes recorded since the breaker's previous event (how many, how many slow, and in the
order or per-second buckets that the breaker's sliding window needs), and :class:`Rejections`,
the calls it turned away since then. :class:`CallsSummarised` carries only those summaries; the
driver emits it periodically and before a snapshot, so nothing a window depends on is left
outside the log.

Events live on the stream ``breaker/<key>``. Stream and key are the only identity: the
``connection_id`` and ``model_id`` columns are filled so that analysis can filter without
parsing the key.

Several processes may write one stream (a named breaker they share). An event appended after
another writer's events that its writer had not seen when it decided it carries
``decided_on``, the stream version it was decided on (:func:`decided_on`); replay uses it to
tell a concurrent transition that another writer's made moot from a corrupt log
(:meth:`poolwarden.breaker.CircuitBreaker.apply`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from poolwarden.codec import REGISTRY, DomainEvent, Stored, column, from_stream, occurred_at, payload
from poolwarden.errors import ConfigurationError, ReplayError
from poolwarden.events import RecordedEvent
from poolwarden.policy import ErrorKind

__all__ = [
    "EVENT_TYPES",
    "OVERRIDE_ACTIONS",
    "STREAM_PREFIX",
    "BreakerClosed",
    "BreakerEvent",
    "BreakerEvicted",
    "BreakerHalfOpened",
    "BreakerOpened",
    "BreakerOverridden",
    "BreakerTrialAdmitted",
    "BreakerTrialReleased",
    "BreakerWouldHaveOpened",
    "CallFailed",
    "CallsSummarised",
    "Rejections",
    "Successes",
    "decided_on",
    "from_recorded",
    "key_of_stream",
    "stream_of",
]

OVERRIDE_ACTIONS: frozenset[str] = frozenset({"force_open", "disable", "metrics_only", "reset"})
"""The manual changes a breaker accepts; each is also the name of its method."""

STREAM_PREFIX = "breaker/"
"""Every breaker stream id starts with this."""


def stream_of(key: str) -> str:
    """The stream id of the breaker ``key``."""
    return STREAM_PREFIX + key


def key_of_stream(stream: str) -> str:
    """The breaker key of a ``breaker/...`` stream id."""
    if not stream.startswith(STREAM_PREFIX):
        raise ConfigurationError(f"{stream!r} is not a breaker stream")
    return stream[len(STREAM_PREFIX) :]


@dataclass(frozen=True, slots=True)
class Successes:
    """The successes a breaker recorded since its previous event.

    ``runs`` keeps their order as ``(slow, count)`` pairs when the breaker has a count window;
    ``buckets`` keeps ``(second, count, slow)`` when it has a time window. Without a window only
    the totals matter.
    """

    n: int
    slow: int = 0
    runs: tuple[tuple[int, int], ...] | None = None
    buckets: tuple[tuple[int, int, int], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON data."""
        data: dict[str, Any] = {"n": self.n}
        if self.slow:
            data["slow"] = self.slow
        if self.runs is not None:
            data["runs"] = [list(run) for run in self.runs]
        if self.buckets is not None:
            data["buckets"] = [list(bucket) for bucket in self.buckets]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Successes:
        """Read :meth:`to_json`'s shape."""
        runs = data.get("runs")
        buckets = data.get("buckets")
        return cls(
            n=int(data["n"]),
            slow=int(data.get("slow", 0)),
            runs=None if runs is None else tuple((int(s), int(c)) for s, c in runs),
            buckets=None if buckets is None else tuple((int(s), int(c), int(w)) for s, c, w in buckets),
        )


@dataclass(frozen=True, slots=True)
class Rejections:
    """The calls a breaker rejected since its previous event, and when the first and last came."""

    n: int
    first_at: float
    last_at: float

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON data."""
        return {"n": self.n, "first_at": self.first_at, "last_at": self.last_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rejections:
        """Read :meth:`to_json`'s shape."""
        return cls(n=int(data["n"]), first_at=float(data["first_at"]), last_at=float(data["last_at"]))


def _ms(duration: float | None) -> float | None:
    return None if duration is None else duration * 1000.0


def _outcome(counted: bool) -> str:
    return "counted" if counted else "ignored"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent(DomainEvent):
    """Something that happened to the breaker ``key`` at ``at`` (epoch seconds).

    How it is stored is declared on its fields (:mod:`poolwarden.codec`): ``key`` is the stream's
    (not stored), ``at`` the event's time, the summaries go to the payload's ``ok`` and
    ``rejected`` after the event's own keys, and only when there are any.
    """

    key: str = field(metadata=from_stream(key_of_stream))
    at: float = field(metadata=occurred_at())
    connection_id: str | None = None
    model_id: str | None = None
    successes: Successes | None = field(
        default=None,
        metadata=payload(
            "ok", omit_none=True, last=True, to_json=Successes.to_json, from_json=Successes.from_json
        ),
    )
    rejections: Rejections | None = field(
        default=None,
        metadata=payload(
            "rejected", omit_none=True, last=True, to_json=Rejections.to_json, from_json=Rejections.from_json
        ),
    )
    decided_on: int | None = field(default=None, metadata=payload(omit_none=True, last=True))
    """The stream version its writer had seen when it decided this event, when other writers'
    events were appended in between (its append was retried after a version conflict); ``None``
    when it follows the events its writer knew, as every event of a one-writer stream does."""

    @property
    def stream(self) -> str:
        """The stream this event belongs to."""
        return stream_of(self.key)

    @classmethod
    def from_recorded(cls, record: RecordedEvent) -> BreakerEvent:
        """Rebuild the domain event from what the store holds (:func:`from_recorded`)."""
        return from_recorded(record)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFailed(BreakerEvent):
    """A call failed with an error of a kind that counts at this breaker's level.

    ``counted`` says whether it moved the breaker (a policy may ignore a kind; a disabled
    breaker counts nothing); it is recorded either way so a what-if can count it. It also fills
    the ``outcome`` column (``counted``/``ignored``), and ``duration`` (seconds) ``latency_ms``.
    """

    kind: ErrorKind = field(metadata=column("error_kind"))
    counted: bool = field(default=True, metadata=payload(derived={"outcome": _outcome}))
    slow: bool = False
    duration: float | None = field(default=None, metadata=payload(derived={"latency_ms": _ms}))


@dataclass(frozen=True, slots=True, kw_only=True)
class CallsSummarised(BreakerEvent):
    """Successes and rejections since the previous event, written so that none is left unlogged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerOpened(BreakerEvent):
    """The breaker opened and will try again at ``retry_at``.

    ``from_state`` is closed or half_open, or any state for a manual trip (``reason`` is
    ``"manual"``, and ``who`` and ``why`` say who tripped it and why). ``streak`` is the number of
    consecutive re-opens the wait was computed from; ``retry_at`` is the drawn time itself, so a
    replay never draws again, and ``draw`` the jitter's draw in [0, 1) (``None`` when nothing was
    drawn), so a what-if under another backoff can draw the same.

    ``abandons`` is set when a process gave up a half-open round held by another process (reason
    ``"trial_abandoned"``): the ``half_opened_at`` of that round, so that the give-up applies to
    that round only.

    Schema version 2 added ``who``, ``why`` and ``draw``; a version-1 event reads with all three
    ``None`` (it was an automatic open, and its draw was not kept). Version 3 added ``abandons``
    (``None`` in older events: no trial claims then).
    """

    SCHEMA_VERSION: ClassVar[int] = 3
    COLUMNS: ClassVar[Mapping[str, Any]] = {"to_state": "open"}

    from_state: str
    reason: str
    retry_at: float
    streak: int
    who: str | None = field(default=None, metadata=payload(omit_none=True))
    why: str | None = field(default=None, metadata=payload(omit_none=True))
    draw: float | None = field(default=None, metadata=payload(omit_none=True))
    abandons: float | None = field(default=None, metadata=payload(omit_none=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerHalfOpened(BreakerEvent):
    """The open breaker now admits trial calls: its wait ended (``at`` is its ``retry_at``), or,
    with a ``reason``, its owner learned early that the target works again (a recovery of the
    connection verified a round trip)."""

    COLUMNS: ClassVar[Mapping[str, Any]] = {"from_state": "open", "to_state": "half_open"}

    reason: str | None = field(default=None, metadata=payload(omit_none=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerClosed(BreakerEvent):
    """Enough trial calls succeeded: the breaker closed."""

    COLUMNS: ClassVar[Mapping[str, Any]] = {"from_state": "half_open", "to_state": "closed"}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTrialAdmitted(BreakerEvent):
    """The half-open breaker admitted a trial call under ``permit``."""

    permit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTrialReleased(BreakerEvent):
    """A trial call ended with an error that says nothing about health; its slot is free again."""

    kind: ErrorKind = field(metadata=column("error_kind"))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerOverridden(BreakerEvent):
    """Someone (``who``) changed the breaker by hand (``action``, one of :data:`OVERRIDE_ACTIONS`),
    and said ``why``."""

    action: str
    from_state: str
    to_state: str
    who: str
    why: str

    def __post_init__(self) -> None:
        if self.action not in OVERRIDE_ACTIONS:
            raise ValueError(f"unknown override action {self.action!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerWouldHaveOpened(BreakerEvent):
    """A metrics-only breaker's rule ``reason`` tripped; a live breaker would have opened here."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvicted(BreakerEvent):
    """The breaker, closed and clean, was forgotten while idle; it starts again as a new one would."""


_CLASSES: tuple[type[BreakerEvent], ...] = (
    CallFailed,
    CallsSummarised,
    BreakerOpened,
    BreakerHalfOpened,
    BreakerClosed,
    BreakerTrialAdmitted,
    BreakerTrialReleased,
    BreakerOverridden,
    BreakerWouldHaveOpened,
    BreakerEvicted,
)
REGISTRY.register(*_CLASSES)


@REGISTRY.upcaster("BreakerOpened", 1)
def _opened_v1(stored: Stored) -> Stored:
    """Version 1 knew only automatic opens and kept no draw: who, why and draw are null."""
    body = dict(stored.payload)
    for name in ("who", "why", "draw"):
        body.setdefault(name, None)
    return Stored(body, stored.columns)


@REGISTRY.upcaster("BreakerOpened", 2)
def _opened_v2(stored: Stored) -> Stored:
    """Version 2 had no trial claims, so no open gave up another process's round."""
    return Stored({**stored.payload, "abandons": None}, stored.columns)


_TYPES: dict[str, type[BreakerEvent]] = {cls.TYPE: cls for cls in _CLASSES}
EVENT_TYPES: tuple[str, ...] = tuple(_TYPES)
"""The type names of every breaker event (what a reader of the log filters on)."""


def decided_on(events: Iterable[BreakerEvent], version: int) -> list[BreakerEvent]:
    """``events`` marked as decided on stream ``version`` (those already marked keep their mark):
    what a writer appends after other writers' events it had not seen."""
    return [event if event.decided_on is not None else replace(event, decided_on=version) for event in events]


def from_recorded(record: RecordedEvent) -> BreakerEvent:
    """The domain event a recorded breaker event holds, upcast to its current schema version
    (:mod:`poolwarden.codec`); unknown or malformed: :class:`ReplayError`."""
    cls = _TYPES.get(record.type)
    if cls is None:
        raise ReplayError(record.stream, record.version, f"{record.type!r} is not a breaker event")
    return REGISTRY.decode_as(cls, record)
