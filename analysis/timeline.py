"""State timelines: one row per interval a breaker (or a connection) spent in one state.

A state changes only with an event whose ``to_state`` is set; the interval it starts ends with
the stream's next such event, or, for the last one, at the log's end (``open_ended``). Before
its first transition a breaker is closed: from its stream's first event to that transition is a
closed interval too, so that a breaker that never tripped still has its lane.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from poolwarden.analysis.frames import TIME_DTYPE, empty_frame, make_category
from poolwarden.analysis.select import log_end, on_streams
from poolwarden.analysis.vocabulary import BREAKER_INITIAL_STATE, BREAKER_STREAMS, CONNECTION_STREAMS

__all__ = ["TIMELINE_COLUMNS", "breaker_timeline", "connection_timeline"]

TIMELINE_COLUMNS: dict[str, Any] = {
    "stream": "category",
    "key": "category",
    "connection_id": "category",
    "model_id": "category",
    "state": "category",
    "start": TIME_DTYPE,
    "end": TIME_DTYPE,
    "duration": np.dtype("timedelta64[us]"),
    "open_ended": np.dtype("bool"),
    "reason": np.dtype("object"),
}
"""Columns of :func:`breaker_timeline` and :func:`connection_timeline`."""


def breaker_timeline(df: pd.DataFrame) -> pd.DataFrame:
    """Every interval each circuit breaker spent in one state, ordered by breaker and time.

    ``key`` is the breaker's key (its stream without ``breaker/``); ``reason`` is the payload's
    ``reason`` of the event that began the interval (why a breaker opened), else None.
    """
    return _timeline(df, BREAKER_STREAMS, BREAKER_INITIAL_STATE)


def connection_timeline(df: pd.DataFrame) -> pd.DataFrame:
    """Every interval each connection spent in one lifecycle state (healthy, pinging, ...).

    A connection's state before its first recorded transition is unknown and left out.
    """
    return _timeline(df, CONNECTION_STREAMS, None)


def _timeline(df: pd.DataFrame, prefix: str, initial_state: str | None) -> pd.DataFrame:
    rows = on_streams(df, prefix)
    end_of_log = log_end(df)
    if rows.empty or end_of_log is None:
        return empty_frame(TIMELINE_COLUMNS)
    stream = rows["stream"].astype(object)
    by_stream = rows.groupby(stream, sort=False)
    first_seen = by_stream["occurred_at"].first()
    ids = by_stream[["connection_id", "model_id"]].first()  # first non-missing of each

    changes = rows[rows["to_state"].notna()]
    change_stream = stream[changes.index]
    first_from = changes.groupby(change_stream, sort=False)["from_state"].first()
    before = first_from.reindex(first_seen.index).astype(object)
    if initial_state is not None:
        before = before.where(before.notna(), initial_state)
    known = before.notna()

    reasons = [payload.get("reason") for payload in changes["payload"]]
    intervals = pd.DataFrame(
        {
            "stream": np.concatenate(
                [first_seen.index[known].to_numpy(dtype=object), change_stream.to_numpy()]
            ),
            "order": np.concatenate(
                [np.zeros(int(known.sum()), dtype=np.int64), changes["position"].to_numpy(dtype=np.int64)]
            ),
            "start": pd.concat([first_seen[known], changes["occurred_at"]], ignore_index=True),
            "state": np.concatenate(
                [before[known].to_numpy(dtype=object), changes["to_state"].astype(object).to_numpy()]
            ),
            "reason": pd.Series([None] * int(known.sum()) + reasons, dtype=object),
        }
    )
    intervals = intervals.sort_values(["stream", "order"], kind="stable", ignore_index=True)
    end = intervals.groupby("stream", sort=False)["start"].shift(-1)
    intervals["open_ended"] = end.isna().to_numpy()
    intervals["end"] = end.fillna(end_of_log)
    intervals["duration"] = (intervals["end"] - intervals["start"]).astype("timedelta64[us]")
    # The assumed initial interval vanishes when the stream's first event is its first transition.
    intervals = intervals[(intervals["order"] != 0) | (intervals["duration"] > pd.Timedelta(0))]
    intervals = intervals.reset_index(drop=True)
    keys = intervals["stream"].str.slice(len(prefix))
    return pd.DataFrame(
        {
            "stream": make_category(intervals["stream"]),
            "key": make_category(keys),
            "connection_id": make_category(intervals["stream"].map(ids["connection_id"].astype(object))),
            "model_id": make_category(intervals["stream"].map(ids["model_id"].astype(object))),
            "state": make_category(intervals["state"]),
            "start": intervals["start"].astype(TIME_DTYPE),
            "end": intervals["end"].astype(TIME_DTYPE),
            "duration": intervals["duration"],
            "open_ended": intervals["open_ended"].astype(bool),
            "reason": intervals["reason"].astype(object),
        }
    )
