"""The shape of every frame analysis returns: column names and dtypes, and empty frames of that shape.

An analysis of an empty log (or of a log with nothing of the kind asked about) returns a frame
with no rows and the same columns and dtypes as a full one, so that code written against a
report never needs a special case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from poolwarden.events import INDEXED_FIELDS

__all__ = [
    "CATEGORY_COLUMNS",
    "EVENT_COLUMNS",
    "TIME_DTYPE",
    "empty_events",
    "empty_frame",
    "make_category",
    "string_category",
]

TIME_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
"""Every point in time: microseconds, UTC (the store keeps epoch seconds; a float holds ~0.2 us)."""

CATEGORY_COLUMNS: tuple[str, ...] = ("stream", "type", *(f for f in INDEXED_FIELDS if f != "latency_ms"))
"""Text columns with few distinct values: categories, for cheap memory and fast group-bys."""

EVENT_COLUMNS: dict[str, Any] = {
    "position": np.dtype("int64"),
    "stream": "category",
    "version": np.dtype("int64"),
    "type": "category",
    "schema_version": np.dtype("int64"),
    "occurred_at": TIME_DTYPE,
    "recorded_at": TIME_DTYPE,
    "incident_id": "str",
    "connection_id": "category",
    "model_id": "category",
    "browser": "category",
    "error_kind": "category",
    "from_state": "category",
    "to_state": "category",
    "rung": "category",
    "outcome": "category",
    "latency_ms": np.dtype("float64"),
    "payload": np.dtype("object"),
}
"""The columns of :func:`~poolwarden.analysis.load_events`' frame, in order, with their dtypes."""


def string_category(values: Any = ()) -> pd.Categorical:
    """A categorical of text values (missing ones as NaN) whose categories are sorted strings."""
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    codes, uniques = pd.factorize(array, sort=True)
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype="str"))


def make_category(values: Any) -> pd.Series:
    """``values`` as a text-category Series (used where analysis builds new label columns)."""
    return pd.Series(string_category(np.asarray(values, dtype=object)))


def empty_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """A frame with no rows and exactly ``columns`` (name -> dtype)."""
    data: dict[str, Any] = {}
    for name, dtype in columns.items():
        if dtype == "category":
            data[name] = pd.Series(string_category(np.empty(0, dtype=object)))
        else:
            data[name] = pd.Series(np.empty(0, dtype=object) if dtype == "str" else [], dtype=dtype)
    return pd.DataFrame(data)


def empty_events() -> pd.DataFrame:
    """The frame :func:`~poolwarden.analysis.load_events` returns for a log with no matching events."""
    return empty_frame(EVENT_COLUMNS)
