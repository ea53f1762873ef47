"""The bridge's events (stream ``pool/<name>/bridge``): connections, refusals, protocol violations and
what pages reported.

Each is a frozen dataclass stored by :mod:`poolwarden.codec` (``connection_id``, ``browser`` and
``error_kind`` are columns, the rest payload keys). The bridge stamps their time from its clock
when it hands them to its event sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolwarden.codec import REGISTRY, DomainEvent, payload

__all__ = [
    "BridgeEvent",
    "ProtocolViolated",
    "WorkerConnected",
    "WorkerDisconnected",
    "WorkerRefused",
    "WorkerReported",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeEvent(DomainEvent):
    """The base of the bridge's events: the worker (connection) they concern, if one is known."""

    connection_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRefused(BridgeEvent):
    """A request or handshake was refused; ``error_kind`` says why, and the one payload key of
    that refusal says what was refused: the ``host`` (foreign_host), the ``path``
    (bad_worker_id), the ``origin`` (foreign_origin), a ``detail`` (a bad hello), or nothing
    (hello_timeout). A handshake refused for sending no Origin at all is written without the key.
    ``suppressed``: how many refusals of the same kind were counted but not written just before
    this one (the bridge writes a burst per kind and window, then counts); absent when none were.
    """

    error_kind: str
    host: str | None = field(default=None, metadata=payload(omit_none=True))
    path: str | None = field(default=None, metadata=payload(omit_none=True))
    origin: str | None = field(default=None, metadata=payload(omit_none=True))
    detail: str | None = field(default=None, metadata=payload(omit_none=True))
    suppressed: int | None = field(default=None, metadata=payload(omit_none=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConnected(BridgeEvent):
    """A page said a valid hello: it is the worker's ``generation``-th page."""

    connection_id: str
    browser: str
    generation: int
    instance: str
    backend: str
    user_agent: str
    fallback_adapter: bool | None
    webnn: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDisconnected(BridgeEvent):
    """The worker's page of ``generation`` went away, with this close ``code`` and ``reason``."""

    connection_id: str
    browser: str
    generation: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolated(BridgeEvent):
    """A page sent a frame the protocol refuses (``error_kind``); its ``strikes`` so far."""

    connection_id: str
    error_kind: str
    detail: str
    strikes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReported(BridgeEvent):
    """A page reported an error of its own (``error_kind``), unprompted by a request."""

    connection_id: str
    error_kind: str
    detail: str


REGISTRY.register(WorkerRefused, WorkerConnected, WorkerDisconnected, ProtocolViolated, WorkerReported)
