"""A fleet's log, pool by pool: the main figures of each pool that wrote to it.

Every event's pool is the frame's ``pool`` column (the pool whose stream the event is on, by the
rule of every ``--pool``: :func:`poolwarden.pool_streams.pool_of`). :func:`pool_summary` runs
the same analyses as the rest of the report on each pool's rows, so that a pool's row counts
exactly what ``load_events(db, pool=NAME)`` and ``poolwarden analyze --pool NAME`` count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from poolwarden.analysis.frames import empty_frame
from poolwarden.analysis.recovery import incidents
from poolwarden.analysis.select import failures, of_pool, served_latencies
from poolwarden.analysis.timeline import breaker_timeline
from poolwarden.breaker import BreakerState

__all__ = ["OPEN_STATES", "POOL_SUMMARY_COLUMNS", "pool_summary", "pools"]

_COUNT = np.dtype("int64")

POOL_SUMMARY_COLUMNS: dict[str, Any] = {
    "pool": "str",
    "connections": _COUNT,
    "requests": _COUNT,
    "served": _COUNT,
    "failed_requests": _COUNT,
    "failed_attempts": _COUNT,
    "faults": _COUNT,
    "incidents": _COUNT,
    "recovered": _COUNT,
    "breakers": _COUNT,
    "open_breakers": _COUNT,
}
"""Columns of :func:`pool_summary`."""

OPEN_STATES = frozenset({str(BreakerState.OPEN), str(BreakerState.FORCED_OPEN)})
"""The states in which a breaker counts as open at the end of the log."""


def pools(df: pd.DataFrame) -> list[str]:
    """The names of the pools whose events the frame holds, sorted."""
    return sorted(str(name) for name in df["pool"].dropna().unique())


def pool_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per pool of the frame (:func:`pools`), in name order:

    - ``connections``: its connection ids seen in its events;
    - ``requests``: its requests that ended, ``served`` (each request once, summarised ones
      too) plus ``failed_requests`` (ended in a typed error);
    - ``failed_attempts``, ``faults``: as :func:`~poolwarden.analysis.failure_counts` counts them;
    - ``incidents`` and those ``recovered`` (:func:`~poolwarden.analysis.incidents`);
    - ``breakers`` and ``open_breakers``: its connection and model breakers, and those open or
      forced open at their last recorded change (standalone named breakers are no pool's).
    """
    rows = [_summary(name, of_pool(df, name)) for name in pools(df)]
    if not rows:
        return empty_frame(POOL_SUMMARY_COLUMNS)
    return pd.DataFrame(rows, columns=list(POOL_SUMMARY_COLUMNS)).astype(POOL_SUMMARY_COLUMNS)


def _summary(name: str, part: pd.DataFrame) -> dict[str, Any]:
    went_wrong = failures(part)["what"].value_counts()
    served = len(served_latencies(part))
    failed_requests = int(went_wrong.get("request", 0))
    table = incidents(part)
    timeline = breaker_timeline(part)
    last_states = timeline.groupby(timeline["key"].astype(str), sort=False)["state"].last().astype(str)
    return {
        "pool": name,
        "connections": part["connection_id"].nunique(),
        "requests": served + failed_requests,
        "served": served,
        "failed_requests": failed_requests,
        "failed_attempts": int(went_wrong.get("attempt", 0)),
        "faults": int(went_wrong.get("fault", 0)),
        "incidents": len(table),
        "recovered": int((table["outcome"].astype(str) == "recovered").sum()),
        "breakers": len(last_states),
        "open_breakers": int(last_states.isin(list(OPEN_STATES)).sum()),
    }
