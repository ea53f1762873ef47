"""How long the pool was degraded: its healthy connections over time, from the log.

:func:`pool_health` turns every connection's lifecycle intervals
(:func:`~poolwarden.analysis.timeline.connection_timeline`) into one timeline of the pool: each
row an interval in which the number of healthy (serving) connections did not change.

The pool is ``degraded`` while fewer connections serve than it has shown it can serve: the most
that were ever serving or deliberately closed at once, less those closed since. Starting up is
therefore not degraded (the count only rises), nor is closing connections on purpose (CLOSED),
but a connection recovering, draining or quarantined is, until it, or its replacement, serves
again. Summing the degraded rows' ``duration`` answers "how long was the pool degraded".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from poolwarden.analysis.frames import TIME_DTYPE, empty_frame
from poolwarden.analysis.timeline import connection_timeline
from poolwarden.analysis.vocabulary import CLOSED_STATES, RECOVERED_STATES

__all__ = ["HEALTH_COLUMNS", "pool_health"]

HEALTH_COLUMNS: dict[str, Any] = {
    "start": TIME_DTYPE,
    "end": TIME_DTYPE,
    "duration": np.dtype("timedelta64[us]"),
    "healthy": np.dtype("int64"),
    "expected": np.dtype("int64"),
    "degraded": np.dtype("bool"),
}
"""Columns of :func:`pool_health`."""


def pool_health(df: pd.DataFrame) -> pd.DataFrame:
    """The pool's serving connections over time, one row per interval in which that number held.

    ``healthy`` counts connections in HEALTHY; ``expected`` is the most that were healthy or
    closed at once so far, less those closed now; ``degraded`` is ``healthy < expected``.
    Intervals of no length are left out.
    """
    timeline = connection_timeline(df)
    if timeline.empty:
        return empty_frame(HEALTH_COLUMNS)
    state = timeline["state"].astype(object)
    healthy: np.ndarray[Any, np.dtype[np.int64]] = (
        state.isin(list(RECOVERED_STATES)).to_numpy().astype(np.int64)
    )
    closed: np.ndarray[Any, np.dtype[np.int64]] = state.isin(list(CLOSED_STATES)).to_numpy().astype(np.int64)
    # A sweep over the intervals' edges: each interval adds its counts where it begins and takes
    # them away where it ends.
    times = np.concatenate([timeline["start"].to_numpy(), timeline["end"].to_numpy()])
    steps = pd.DataFrame(
        {"healthy": np.concatenate([healthy, -healthy]), "closed": np.concatenate([closed, -closed])},
        index=times,
    )
    counts = steps.groupby(level=0, sort=True).sum().cumsum()
    if len(counts) < 2:
        return empty_frame(HEALTH_COLUMNS)
    serving = counts["healthy"].to_numpy()[:-1].astype(np.int64)
    gone = counts["closed"].to_numpy()[:-1].astype(np.int64)
    peak = np.maximum.accumulate(serving + gone)
    edges = counts.index.to_numpy()
    frame = pd.DataFrame(
        {
            "start": pd.Series(edges[:-1]).astype(TIME_DTYPE),
            "end": pd.Series(edges[1:]).astype(TIME_DTYPE),
            "healthy": serving,
            "expected": peak - gone,
        }
    )
    # Neighbours with the same counts (another figure changed between them) are one interval.
    same = (frame["healthy"] == frame["healthy"].shift()) & (frame["expected"] == frame["expected"].shift())
    group = (~same).cumsum()
    frame = frame.groupby(group, sort=False).agg(
        start=("start", "first"),
        end=("end", "last"),
        healthy=("healthy", "first"),
        expected=("expected", "first"),
    )
    frame["duration"] = (frame["end"] - frame["start"]).astype("timedelta64[us]")
    frame["degraded"] = frame["healthy"] < frame["expected"]
    frame = frame[frame["duration"] > pd.Timedelta(0)].reset_index(drop=True)
    return frame[list(HEALTH_COLUMNS)].astype(HEALTH_COLUMNS)
