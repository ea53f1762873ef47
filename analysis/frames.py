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

from poolwarden.envelope import ENVELOPE, READING_ORDER, TIME_DTYPE_NAME
from poolwarden.pool_streams import pool_of

__all__ = [
    "CATEGORY_COLUMNS",
    "DERIVED_COLUMNS",
    "EVENT_COLUMNS",
    "TIME_DTYPE",
    "code_dtype",
    "empty_events",
    "empty_frame",
    "make_category",
    "pool_column",
    "string_category",
]

TIME_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
"""Every point in time: microseconds, UTC (the store keeps epoch seconds; a float holds ~0.2 us)."""

CATEGORY_COLUMNS: tuple[str, ...] = tuple(c.name for c in ENVELOPE if c.dtype == "category")
"""Text columns with few distinct values: categories, for cheap memory and fast group-bys."""


def _dtype(name: str) -> Any:
    """The dtype the envelope names: "category" and "str" stay names, as pandas takes them;
    "Int64" is pandas' integer with missing values."""
    if name == TIME_DTYPE_NAME:
        return TIME_DTYPE
    if name == "Int64":
        return pd.Int64Dtype()
    return name if name in ("category", "str") else np.dtype(name)


DERIVED_COLUMNS: dict[str, Any] = {"pool": "category"}
"""Columns of the events frame that the log does not store, each derived from a stored one:
``pool``, the name of the pool whose stream the event is on (:func:`pool_column`)."""


def _event_columns() -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for column in READING_ORDER:
        columns[column.name] = _dtype(column.dtype)
        if column.name == "stream":
            columns.update(DERIVED_COLUMNS)
    return columns


EVENT_COLUMNS: dict[str, Any] = _event_columns()
"""The columns of :func:`~poolwarden.analysis.load_events`' frame, in order, with their dtypes: the
event envelope's (:mod:`poolwarden.envelope`), the payload last, and after ``stream`` the
:data:`DERIVED_COLUMNS`."""


def string_category(values: Any = ()) -> pd.Categorical:
    """A categorical of text values (missing ones as NaN) whose categories are sorted strings."""
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    codes, uniques = pd.factorize(array, sort=True)
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype="str"))


def code_dtype(categories: int) -> type[np.signedinteger[Any]]:
    """The integer type pandas keeps the codes of a categorical with this many categories in.

    Codes made in it from the start are taken as they are; made wider, pandas narrows them with a
    copy (1 MB a column at a million events, ten columns).
    """
    for dtype in (np.int8, np.int16, np.int32):
        if categories < np.iinfo(dtype).max:
            return dtype
    return np.int64


def pool_column(streams: pd.Series) -> pd.Series:
    """The pool each event's stream belongs to (:func:`poolwarden.pool_streams.pool_of`, the rule
    of every ``--pool``), as a text category; missing for a stream of no pool (a standalone named
    breaker). Each distinct stream is read once."""
    categorical = streams.astype("category")
    owners = [pool_of(str(stream)) for stream in categorical.cat.categories]
    names = sorted({owner for owner in owners if owner is not None})
    code_of: dict[str | None, int] = {name: code for code, name in enumerate(names)}
    code_of[None] = -1
    # a stream's code indexes its pool's code; code -1 (a missing stream) the last entry, -1
    owner_codes = (code_of[owner] for owner in (*owners, None))
    table = np.fromiter(owner_codes, code_dtype(len(names)), len(owners) + 1)
    codes = table[categorical.cat.codes.to_numpy()]
    return pd.Series(
        pd.Categorical.from_codes(codes, pd.Index(names, dtype="str"), validate=False),
        index=streams.index,
        copy=False,
    )


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
