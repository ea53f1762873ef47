"""One failure followed from its first signal to its outcome: the events of one incident id.

The pool stamps every event of one failure with the incident id of the recovery it belongs to
(:mod:`poolwarden.pool.incidents`): the fault injected, the failed attempts, the bridge's close,
the breaker decisions, the panic routes, the lifecycle's rungs, the outcome (recovered,
quarantined, re-attached by the page itself) and the breakers' trials after it.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["CHAIN_COLUMNS", "incident_chain"]

CHAIN_COLUMNS = (
    "occurred_at",
    "since_first_ms",
    "stream",
    "type",
    "connection_id",
    "model_id",
    "error_kind",
    "from_state",
    "to_state",
    "rung",
    "outcome",
    "latency_ms",
)
"""The columns of :func:`incident_chain`, in order."""


def incident_chain(df: pd.DataFrame, incident_id: str) -> pd.DataFrame:
    """The events of ``incident_id`` in ``df`` (a :func:`~poolwarden.analysis.load_events` frame),
    in the order they occurred (ties by position), with ``since_first_ms``: milliseconds since the
    chain's first event. Empty (same columns) when no event carries that id."""
    rows = df[df["incident_id"] == incident_id]
    rows = rows.sort_values(["occurred_at", "position"], kind="stable").reset_index(drop=True)
    chain = pd.DataFrame({column: rows[column] for column in CHAIN_COLUMNS if column in rows.columns})
    first = rows["occurred_at"].min() if not rows.empty else None
    since = (rows["occurred_at"] - first).dt.total_seconds() * 1000 if first is not None else []
    chain.insert(1, "since_first_ms", pd.Series(since, index=rows.index, dtype="float64"))
    return chain[[c for c in CHAIN_COLUMNS if c in chain.columns]]
