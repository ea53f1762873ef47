"""The pool's events (stream ``pool/main``); the telemetry queries count them by their ``TYPE``.

Each event is a frozen dataclass stored by :mod:`poolwarden.codec`: fields named like the
envelope's indexed columns (``connection_id``, ``model_id``, ``browser``, ``error_kind``,
``outcome``, ``latency_ms``) are those columns, the rest go to the JSON payload, in field order.
None of them carries its time: the pool's recorder stamps it from the pool's clock when it
records the event (:meth:`poolwarden.aio.recorder.EventRecorder.emit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolwarden.codec import REGISTRY, DomainEvent, payload

__all__ = [
    "AttemptFailed",
    "ConnectionReplaced",
    "FallbackServed",
    "FaultInjected",
    "InferenceFailed",
    "InferenceServed",
    "InferencesServed",
    "ModelEvicted",
    "ModelLoadFailed",
    "ModelLoadRefused",
    "ModelPlaced",
    "PageReattached",
    "PanicRouted",
    "PoolEvent",
    "PoolStarted",
    "PoolStopped",
    "RecycleStarted",
    "SpareLaunched",
    "SparePromoted",
    "SpareRetired",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolEvent(DomainEvent):
    """The base of the pool's events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStarted(PoolEvent):
    """The pool started ``connections`` connections of ``workers`` kinds; the bridge listens on ``port``.

    ``name`` is the pool's, ``holder`` the process that took its lease (host:pid:start) and
    ``took_over_from`` the holder whose expired lease it took over (``None``: the name was free).
    The lease's fencing number is the event's ``fence`` column, as for every event it writes.
    """

    connections: int
    workers: list[str]
    port: int
    name: str = "main"
    holder: str = ""
    took_over_from: str | None = field(default=None, metadata=payload(omit_none=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStopped(PoolEvent):
    """The pool stopped; its request counters as they ended."""

    requests: int
    served: int
    failed: int
    retries: int
    fallbacks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionReplaced(PoolEvent):
    """A quarantined connection (``replaced``) was replaced by ``connection_id``."""

    connection_id: str
    browser: str
    replaced: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoadRefused(PoolEvent):
    """Memory pressure refused to load ``model_id``."""

    model_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoadFailed(PoolEvent):
    """Loading ``model_id`` failed (``error_kind``: the error's class name; ``reason``: its text):
    on ``connection_id`` (None when no connection could take it, or the kind is unknown)."""

    connection_id: str | None
    model_id: str
    browser: str | None
    error_kind: str
    reason: str
    latency_ms: float
    outcome: str = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPlaced(PoolEvent):
    """A model loaded on a connection in ``latency_ms``; ``model_type`` is what placement learns by."""

    connection_id: str
    model_id: str
    browser: str
    latency_ms: float
    backend: str
    model_type: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEvicted(PoolEvent):
    """A model was unloaded from a connection."""

    connection_id: str
    model_id: str
    browser: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecycleStarted(PoolEvent):
    """A connection began draining to be recycled, with ``in_flight`` requests still running."""

    connection_id: str
    browser: str
    reason: str
    in_flight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SpareLaunched(PoolEvent):
    """A warm spare browser of kind ``browser`` is ready: launched, its page loaded to hello, no
    models, not a connection. ``spare_id`` is its worker id (issued by the pool, authenticated by
    the bridge); ``latency_ms`` the launch to the hello."""

    spare_id: str
    browser: str
    latency_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SparePromoted(PoolEvent):
    """The restart rung of ``connection_id`` took the warm spare ``spare_id`` instead of launching a
    browser: its page is the connection's now. ``latency_ms``: the hand-over (the models are loaded
    and the round trip verified after it, as after a launch)."""

    connection_id: str
    spare_id: str
    browser: str
    latency_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpareRetired(PoolEvent):
    """A warm spare was stopped: ``reason`` memory pressure (none is launched again until the host's
    is back to normal), the pool closing, lost (its browser or page went away while it waited), or
    a failed launch (``error_kind``)."""

    spare_id: str
    browser: str
    reason: str
    error_kind: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(PoolEvent):
    """A fault was caused on purpose (demos, tests); ``error_kind`` is the fault too."""

    connection_id: str
    browser: str
    error_kind: str
    fault: str
    incident_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PanicRouted(PoolEvent):
    """Too many breakers were open (``open_share``): a request went to a connection regardless."""

    connection_id: str
    model_id: str
    open_share: float
    incident_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PageReattached(PoolEvent):
    """A page whose socket was cut (1006) said hello again by itself, and was checked by a round
    trip against the reference: ``outcome`` verified (its connection's open breakers half-open,
    as after a verified recovery) or failed (``error_kind``; the ladder takes over).
    ``latency_ms``: from the cut to the end of the check."""

    connection_id: str
    browser: str
    outcome: str
    latency_ms: float
    error_kind: str | None = None
    incident_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceServed(PoolEvent):
    """One request served (after a retry, by a panic route, or every one with record_every_request)."""

    connection_id: str
    model_id: str
    browser: str
    latency_ms: float
    backend: str
    attempts: int
    worker_ms: float
    panic: bool
    outcome: str = "success"


@dataclass(frozen=True, slots=True, kw_only=True)
class InferencesServed(PoolEvent):
    """Requests served at their first attempt, summarised (``poolwarden.pool.tally``): ``n`` of
    them between ``first_at`` and ``last_at``, each one's latency in the payload's ``latency_ms``."""

    connection_id: str
    model_id: str
    browser: str
    n: int
    backend: str
    first_at: float
    last_at: float
    latency_ms_total: float
    latency_ms_max: float
    latencies: list[float] = field(metadata=payload("latency_ms"))
    outcome: str = "success"


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackServed(PoolEvent):
    """No connection could serve the request; the fallback did. ``error_kind``: why not."""

    model_id: str
    latency_ms: float
    error_kind: str
    reason: str
    outcome: str = "fallback"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFailed(PoolEvent):
    """One failed attempt of a request on a connection (it may still be served elsewhere)."""

    connection_id: str
    model_id: str
    browser: str
    error_kind: str
    latency_ms: float
    outcome: str = "failed"
    incident_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceFailed(PoolEvent):
    """One request that ended in a typed error (``error_kind``, its class name)."""

    connection_id: str | None
    model_id: str
    browser: str | None
    error_kind: str
    outcome: str
    latency_ms: float
    incident_id: str | None = None


REGISTRY.register(
    PoolStarted,
    PoolStopped,
    ConnectionReplaced,
    ModelLoadRefused,
    ModelLoadFailed,
    ModelPlaced,
    ModelEvicted,
    RecycleStarted,
    SpareLaunched,
    SparePromoted,
    SpareRetired,
    FaultInjected,
    PageReattached,
    PanicRouted,
    InferenceServed,
    InferencesServed,
    FallbackServed,
    AttemptFailed,
    InferenceFailed,
)
