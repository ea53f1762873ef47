"""What analysis knows of the event vocabulary, in one place.

Analyses are written on the store's indexed columns (``to_state``, ``rung``, ``outcome``,
``incident_id``, ``error_kind``, ``latency_ms``) and stream prefixes wherever they can, so that
renaming an event type breaks nothing. The few places that need a type name or a state's value
read it from here. The names follow ``poolwarden.breaker_events`` (streams ``breaker/<key>``) and
``poolwarden.lifecycle_events`` (streams ``connection/<id>``).
"""

from __future__ import annotations

from poolwarden.memory import MemorySampled
from poolwarden.pool_events import (
    AttemptFailed,
    FaultInjected,
    InferenceFailed,
    InferenceServed,
    InferencesServed,
    ModelPlaced,
    PoolStarted,
)

__all__ = [
    "ATTEMPT_FAILED",
    "ATTEMPT_OUTCOMES",
    "ATTEMPT_SUCCEEDED",
    "BREAKER_INITIAL_STATE",
    "BREAKER_STREAMS",
    "CLOSED_STATES",
    "CONNECTION_END_STATES",
    "CONNECTION_STREAMS",
    "INCIDENT_END_STATES",
    "RECOVERED_STATES",
    "RUNG_ORDER",
    "TYPES",
]

BREAKER_STREAMS = "breaker/"
"""Every circuit breaker's events are on ``breaker/<key>``."""

CONNECTION_STREAMS = "connection/"
"""Every connection's lifecycle events are on ``connection/<id>``."""

BREAKER_INITIAL_STATE = "closed"
"""The state of a breaker before its first transition."""

ATTEMPT_SUCCEEDED = frozenset({"succeeded"})
"""``outcome`` of a recovery rung whose round trip was verified."""

ATTEMPT_FAILED = frozenset({"failed", "timed_out"})
"""``outcome`` of a recovery rung that did not bring the connection back.

``superseded`` (a worse fault cut the rung short) is neither: it says nothing of the rung.
"""

ATTEMPT_OUTCOMES = ATTEMPT_SUCCEEDED | ATTEMPT_FAILED | {"superseded"}
"""Every ``outcome`` a recovery rung's result carries."""

RECOVERED_STATES = frozenset({"healthy"})
"""``to_state`` values that end an incident with the connection serving again."""

INCIDENT_END_STATES = RECOVERED_STATES | {"failed", "closed"}
"""``to_state`` values that end an incident: recovered, quarantined, or closed on request."""

CLOSED_STATES = frozenset({"closed"})
"""The lifecycle state a connection is put in on purpose: its end is no failure."""

CONNECTION_END_STATES = frozenset({"failed"}) | CLOSED_STATES
"""Lifecycle states a connection does not leave: quarantined (the pool replaces it) or closed."""

RUNG_ORDER: tuple[str, ...] = ("ping", "reconnect", "restart")
"""The recovery ladder, lowest rung first (plots and tables list rungs in this order)."""

TYPES: dict[str, str] = {
    "memory_sampled": MemorySampled.TYPE,
    "served_summary": InferencesServed.TYPE,
    "served": InferenceServed.TYPE,
    "fault_injected": FaultInjected.TYPE,
    "attempt_failed": AttemptFailed.TYPE,
    "request_failed": InferenceFailed.TYPE,
    "model_placed": ModelPlaced.TYPE,
    "pool_started": PoolStarted.TYPE,
}
"""The event types analysis looks for by name, read from their classes.

The pool's own records (stream ``pool/<name>``): ``served`` (one request served after a retry,
or every one with ``record_every_request``), ``fault_injected`` (a fault a demo or test caused;
``error_kind`` names it), ``attempt_failed`` (one failed attempt of a request on a connection,
retried or not), ``request_failed`` (a request that ended in a typed error, its class in
``error_kind``), ``model_placed`` (a model loaded; ``latency_ms`` is the load's time) and
``pool_started`` (a pool's run begins).

``served_summary``: successful requests summarised by the pool (``poolwarden.pool.tally``), one
event per connection, model and batch, with ``connection_id``, ``model_id`` and ``browser``
columns and the latency of each request in the payload's ``latency_ms`` list.

``memory_sampled``: a memory sample, as ``poolwarden.memory.MemoryGovernor`` writes it (stream
``pool/main/memory``): of a browser (payload ``scope: browser``, ``pss_mb`` for its whole process
tree, ``browser`` and ``connection_id`` columns; ``pss_bytes`` and ``js_heap_mb`` are read too)
or of the host (``scope: host``, ``percent``, ``available_mb``; no PSS).
"""
