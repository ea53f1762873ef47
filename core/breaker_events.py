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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from poolwarden.errors import ConfigurationError, ReplayError
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.policy import ErrorKind

__all__ = [
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


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """Something that happened to the breaker ``key`` at ``at`` (epoch seconds)."""

    TYPE: ClassVar[str] = ""
    FROM_STATE: ClassVar[str | None] = None
    TO_STATE: ClassVar[str | None] = None

    key: str
    at: float
    connection_id: str | None = None
    model_id: str | None = None
    successes: Successes | None = None
    rejections: Rejections | None = None

    @property
    def stream(self) -> str:
        """The stream this event belongs to."""
        return stream_of(self.key)

    def _payload(self) -> dict[str, Any]:
        return {}

    def _columns(self) -> dict[str, Any]:
        return {"from_state": self.FROM_STATE, "to_state": self.TO_STATE}

    def to_new_event(self) -> NewEvent:
        """The event as the store appends it."""
        payload = self._payload()
        if self.successes is not None:
            payload["ok"] = self.successes.to_json()
        if self.rejections is not None:
            payload["rejected"] = self.rejections.to_json()
        return NewEvent(
            type=self.TYPE,
            occurred_at=self.at,
            payload=payload,
            connection_id=self.connection_id,
            model_id=self.model_id,
            **self._columns(),
        )

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def from_recorded(cls, record: RecordedEvent) -> BreakerEvent:
        """Rebuild the domain event from what the store holds."""
        payload = record.payload
        ok = payload.get("ok")
        rejected = payload.get("rejected")
        return cls(
            key=key_of_stream(record.stream),
            at=record.occurred_at,
            connection_id=record.connection_id,
            model_id=record.model_id,
            successes=None if ok is None else Successes.from_json(ok),
            rejections=None if rejected is None else Rejections.from_json(rejected),
            **cls._extra(record, payload),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFailed(BreakerEvent):
    """A call failed with an error of a kind that counts at this breaker's level.

    ``counted`` says whether it moved the breaker (a policy may ignore a kind; a disabled
    breaker counts nothing); it is recorded either way so a what-if can count it.
    """

    TYPE: ClassVar[str] = "CallFailed"

    kind: ErrorKind
    duration: float | None = None
    counted: bool = True
    slow: bool = False

    def _payload(self) -> dict[str, Any]:
        return {"counted": self.counted, "slow": self.slow, "duration": self.duration}

    def _columns(self) -> dict[str, Any]:
        latency = None if self.duration is None else self.duration * 1000.0
        return {
            "error_kind": self.kind.value,
            "latency_ms": latency,
            "outcome": "counted" if self.counted else "ignored",
        }

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "kind": ErrorKind(str(record.error_kind)),
            "duration": payload.get("duration"),
            "counted": bool(payload["counted"]),
            "slow": bool(payload.get("slow", False)),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CallsSummarised(BreakerEvent):
    """Successes and rejections since the previous event, written so that none is left unlogged."""

    TYPE: ClassVar[str] = "CallsSummarised"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerOpened(BreakerEvent):
    """The breaker opened (``from_state`` closed or half_open) and will try again at ``retry_at``.

    ``streak`` is the number of consecutive re-opens the wait was computed from; ``retry_at``
    is the drawn time itself, so a replay never draws again.
    """

    TYPE: ClassVar[str] = "BreakerOpened"
    TO_STATE: ClassVar[str | None] = "open"

    from_state: str
    reason: str
    retry_at: float
    streak: int

    def _payload(self) -> dict[str, Any]:
        return {"reason": self.reason, "retry_at": self.retry_at, "streak": self.streak}

    def _columns(self) -> dict[str, Any]:
        return {"from_state": self.from_state, "to_state": self.TO_STATE}

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "from_state": record.from_state,
            "reason": payload["reason"],
            "retry_at": float(payload["retry_at"]),
            "streak": int(payload["streak"]),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerHalfOpened(BreakerEvent):
    """The open breaker now admits trial calls: its wait ended (``at`` is its ``retry_at``), or,
    with a ``reason``, its owner learned early that the target works again (a recovery of the
    connection verified a round trip)."""

    TYPE: ClassVar[str] = "BreakerHalfOpened"
    FROM_STATE: ClassVar[str | None] = "open"
    TO_STATE: ClassVar[str | None] = "half_open"

    reason: str | None = None

    def _payload(self) -> dict[str, Any]:
        return {} if self.reason is None else {"reason": self.reason}

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"reason": payload.get("reason")}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerClosed(BreakerEvent):
    """Enough trial calls succeeded: the breaker closed."""

    TYPE: ClassVar[str] = "BreakerClosed"
    FROM_STATE: ClassVar[str | None] = "half_open"
    TO_STATE: ClassVar[str | None] = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTrialAdmitted(BreakerEvent):
    """The half-open breaker admitted a trial call under ``permit``."""

    TYPE: ClassVar[str] = "BreakerTrialAdmitted"

    permit: int

    def _payload(self) -> dict[str, Any]:
        return {"permit": self.permit}

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"permit": int(payload["permit"])}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTrialReleased(BreakerEvent):
    """A trial call ended with an error that says nothing about health; its slot is free again."""

    TYPE: ClassVar[str] = "BreakerTrialReleased"

    kind: ErrorKind

    def _columns(self) -> dict[str, Any]:
        return {"error_kind": self.kind.value}

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": ErrorKind(str(record.error_kind))}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerOverridden(BreakerEvent):
    """Someone (``who``) changed the breaker by hand (``action``), and said ``why``."""

    TYPE: ClassVar[str] = "BreakerOverridden"

    action: str
    from_state: str
    to_state: str
    who: str
    why: str

    def _payload(self) -> dict[str, Any]:
        return {"action": self.action, "who": self.who, "why": self.why}

    def _columns(self) -> dict[str, Any]:
        return {"from_state": self.from_state, "to_state": self.to_state}

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        action = payload["action"]
        if action not in OVERRIDE_ACTIONS:
            raise ValueError(f"unknown override action {action!r}")
        return {
            "action": action,
            "from_state": record.from_state,
            "to_state": record.to_state,
            "who": payload["who"],
            "why": payload["why"],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerWouldHaveOpened(BreakerEvent):
    """A metrics-only breaker's rule ``reason`` tripped; a live breaker would have opened here."""

    TYPE: ClassVar[str] = "BreakerWouldHaveOpened"

    reason: str

    def _payload(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def _extra(cls, record: RecordedEvent, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"reason": payload["reason"]}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvicted(BreakerEvent):
    """The breaker, closed and clean, was forgotten while idle; it starts again as a new one would."""

    TYPE: ClassVar[str] = "BreakerEvicted"


_TYPES: dict[str, type[BreakerEvent]] = {
    cls.TYPE: cls
    for cls in (
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
}


def from_recorded(record: RecordedEvent) -> BreakerEvent:
    """The domain event a recorded breaker event holds; unknown or malformed: :class:`ReplayError`."""
    cls = _TYPES.get(record.type)
    if cls is None:
        raise ReplayError(record.stream, record.version, f"{record.type!r} is not a breaker event")
    try:
        return cls.from_recorded(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplayError(record.stream, record.version, f"malformed {record.type}: {exc!r}") from exc
