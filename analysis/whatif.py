"""What-if as a frame: the log's breakers replayed through another policy by :mod:`poolwarden.whatif`.

A thin adapter: the events frame is turned back into the store's :class:`RecordedEvent` objects,
:func:`poolwarden.whatif.what_if` replays them, and its report becomes one row per breaker,
recorded beside hypothetical. The replay's approximations (successes are summarised in the log,
so their times are spread) are listed in ``poolwarden.whatif.APPROXIMATIONS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from poolwarden.analysis.frames import empty_frame, make_category
from poolwarden.analysis.select import on_streams
from poolwarden.analysis.vocabulary import BREAKER_STREAMS
from poolwarden.events import INDEXED_FIELDS, RecordedEvent
from poolwarden.policy import BreakerLevel, BreakerPolicy
from poolwarden.whatif import what_if

__all__ = ["WHATIF_COLUMNS", "recorded_events", "whatif"]

WHATIF_COLUMNS: dict[str, Any] = {
    "key": "category",
    "recorded_opens": np.dtype("int64"),
    "whatif_opens": np.dtype("int64"),
    "recorded_rejected": np.dtype("int64"),
    "whatif_rejected": np.dtype("int64"),
    "calls": np.dtype("int64"),
    "unknown_outcome": np.dtype("int64"),
    "final_state": "category",
    "recorded_opened_at": np.dtype("object"),
    "whatif_opened_at": np.dtype("object"),
    "whatif_closed_at": np.dtype("object"),
}
"""Columns of :func:`whatif`; the ``*_at`` columns hold lists of UTC Timestamps."""

_EPOCH = pd.Timestamp(0, tz="UTC")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _seconds(times: pd.Series) -> list[float]:
    return ((times - _EPOCH) / pd.Timedelta(seconds=1)).tolist()


def _values(column: pd.Series) -> list[Any]:
    """The column's values with every missing one as None, as the store gives them."""
    return [None if pd.isna(value) else value for value in column.astype(object).tolist()]


def recorded_events(df: pd.DataFrame) -> list[RecordedEvent]:
    """The frame's rows as the store's :class:`~poolwarden.events.RecordedEvent` objects, in order.

    For folds and replays written against the store's events. Times come back to the
    microsecond the frame keeps.
    """
    if df.empty:
        return []
    columns = {
        "position": df["position"].tolist(),
        "stream": df["stream"].astype(str).tolist(),
        "version": df["version"].tolist(),
        "type": df["type"].astype(str).tolist(),
        "schema_version": df["schema_version"].tolist(),
        "occurred_at": _seconds(df["occurred_at"]),
        "recorded_at": _seconds(df["recorded_at"]),
        "payload_json": [_encode(payload) for payload in df["payload"].tolist()],
        "incident_id": _values(df["incident_id"]),
        **{name: _values(df[name]) for name in INDEXED_FIELDS},
    }
    return [
        RecordedEvent(**dict(zip(columns, row, strict=True))) for row in zip(*columns.values(), strict=True)
    ]


def _times(seconds: tuple[float, ...]) -> list[pd.Timestamp]:
    return [pd.Timestamp(at, unit="s", tz="UTC") for at in seconds]


def whatif(
    df: pd.DataFrame,
    policy: BreakerPolicy | Callable[[str, BreakerLevel], BreakerPolicy],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Per breaker of the log: its opens and rejections as recorded, and as ``policy`` would have had them.

    ``policy`` is one :class:`~poolwarden.policy.BreakerPolicy` for every breaker, or a function
    of the breaker's key and level. ``seed`` seeds the backoff jitter (same inputs, same
    answer). ``unknown_outcome`` counts calls the recorded breaker rejected that ``policy`` would
    have let through: the log cannot say how they would have ended.
    """
    rows = on_streams(df, BREAKER_STREAMS)
    if rows.empty:
        return empty_frame(WHATIF_COLUMNS)
    report = what_if(recorded_events(rows), policy, seed=seed)
    results = [report.breakers[key] for key in sorted(report.breakers)]
    return pd.DataFrame(
        {
            "key": make_category([r.key for r in results]),
            "recorded_opens": pd.Series([len(r.recorded_opened) for r in results], dtype=np.int64),
            "whatif_opens": pd.Series([len(r.opened) for r in results], dtype=np.int64),
            "recorded_rejected": pd.Series([r.recorded_rejected for r in results], dtype=np.int64),
            "whatif_rejected": pd.Series([r.rejected for r in results], dtype=np.int64),
            "calls": pd.Series([r.calls for r in results], dtype=np.int64),
            "unknown_outcome": pd.Series([r.unknown_outcome for r in results], dtype=np.int64),
            "final_state": make_category([r.final_state.value for r in results]),
            "recorded_opened_at": pd.Series([_times(r.recorded_opened) for r in results], dtype=object),
            "whatif_opened_at": pd.Series([_times(r.opened) for r in results], dtype=object),
            "whatif_closed_at": pd.Series([_times(r.closed) for r in results], dtype=object),
        }
    )
