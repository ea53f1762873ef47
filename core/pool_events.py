"""The names of the pool's events (stream ``pool/main``), which the telemetry queries count."""

from __future__ import annotations

__all__ = ["ATTEMPT_FAILED", "FAILED", "MODEL_PLACED", "SERVED", "SERVED_SUMMARY"]

SERVED = "InferenceServed"
"""One request served (after a retry, by a panic route, or every one with record_every_request)."""
SERVED_SUMMARY = "InferencesServed"
"""Requests served at their first attempt, summarised (``poolwarden.pool.tally``)."""
FAILED = "InferenceFailed"
"""One request that ended in a typed error."""
ATTEMPT_FAILED = "AttemptFailed"
"""One failed attempt of a request on a connection."""
MODEL_PLACED = "ModelPlaced"
"""A model loaded on a connection; its payload names the ``model_type``."""
