"""Picking the rows an analysis is about, from the indexed columns rather than from type names.

Each selector states its rule in its docstring; every analysis that needs "the call errors" or
"the recovery attempts" asks here, so that the rule lives in one place.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from poolwarden.analysis.vocabulary import ATTEMPT_OUTCOMES, TYPES
from poolwarden.errors import ConfigurationError
from poolwarden.pool_streams import PoolStreams

__all__ = [
    "as_columns",
    "attempt_rows",
    "call_errors",
    "call_latencies",
    "failures",
    "incident_rows",
    "load_latencies",
    "log_end",
    "of_pool",
    "on_streams",
    "served_latencies",
    "typed",
]


def log_end(df: pd.DataFrame) -> pd.Timestamp | None:
    """The time of the frame's last event: where open-ended intervals and open incidents stop."""
    return None if df.empty else pd.Timestamp(df["occurred_at"].max())


def on_streams(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The rows whose stream starts with ``prefix`` (``breaker/``, ``connection/``)."""
    streams = df["stream"]
    if isinstance(streams.dtype, pd.CategoricalDtype):
        # Test the few distinct names, not every row.
        wanted = [name for name in streams.cat.categories if str(name).startswith(prefix)]
        return df[streams.isin(wanted)]
    return df[streams.astype(str).str.startswith(prefix)]


def of_pool(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of the pool called ``name``: those whose ``pool`` column (the pool whose stream the
    event is on, by the rule of every ``--pool``) is ``name``; a name no pool can have is a
    :class:`ConfigurationError`."""
    PoolStreams(name)
    return df[df["pool"] == name]


def typed(df: pd.DataFrame, role: str) -> pd.DataFrame:
    """The rows of the event type that plays ``role`` in :data:`~poolwarden.analysis.vocabulary.TYPES`."""
    return df[df["type"] == TYPES[role]]


def incident_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that belong to a recovery incident (``incident_id`` set)."""
    return df[df["incident_id"].notna()]


def attempt_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The results of recovery rungs: an incident's rows with a ``rung`` and a rung ``outcome``."""
    return df[df["incident_id"].notna() & df["rung"].notna() & df["outcome"].isin(list(ATTEMPT_OUTCOMES))]


def call_errors(df: pd.DataFrame) -> pd.DataFrame:
    """Errors seen by calls: rows with an ``error_kind`` that are neither a transition nor part of a recovery.

    A recovery's events repeat the error kind of the fault that started it, and a transition's
    cause is not itself a new error; neither is counted again here.
    """
    return df[df["error_kind"].notna() & df["incident_id"].isna() & df["to_state"].isna()]


def call_latencies(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that time a call: ``latency_ms`` set, and not a recovery's or a transition's duration;
    plus one row per request a summary of successes counts (``served_summary``), a copy of the
    summary's row with that request's ``latency_ms``. In position order."""
    timed = df["latency_ms"].notna() & df["incident_id"].isna() & df["to_state"].isna() & df["rung"].isna()
    calls = df[timed]
    summaries = typed(df, "served_summary")
    if summaries.empty:
        return calls
    latencies = [payload.get("latency_ms") or [] for payload in summaries["payload"]]
    expanded = summaries.loc[summaries.index.repeat([len(values) for values in latencies])].copy()
    expanded["latency_ms"] = np.fromiter(itertools.chain.from_iterable(latencies), dtype=np.float64)
    return pd.concat([calls, expanded]).sort_values("position", kind="stable")


def served_latencies(df: pd.DataFrame) -> pd.DataFrame:
    """The latency of each request served, and of nothing else: the pool's ``served`` rows and
    one row per request its summaries count (as :func:`call_latencies` expands them). Failed
    attempts and model loads are left out. In position order."""
    served = df[(df["type"] == TYPES["served"]) | (df["type"] == TYPES["served_summary"])]
    return call_latencies(served)


def load_latencies(df: pd.DataFrame) -> pd.DataFrame:
    """The time each model load took: the pool's ``model_placed`` rows with a ``latency_ms``."""
    placed = typed(df, "model_placed")
    return placed[placed["latency_ms"].notna()]


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """What went wrong, each thing once, with a ``what`` column saying which thing it is:

    - ``fault``: a fault injected on purpose (its kind in ``error_kind``);
    - ``attempt``: one failed attempt of a request on a connection (the pool's record; a request
      retried twice and then served has two). A log without the pool's records (breakers used on
      their own) counts its breakers' failed calls instead, once per call: the connection's
      breaker's record, not also its model breaker's (a key with ``/``);
    - ``request``: a request that ended in a typed error (its class in ``error_kind``).

    Columns: those of the frame, plus ``what``.
    """
    faults = typed(df, "fault_injected")
    attempts = typed(df, "attempt_failed")
    if attempts.empty:
        breakers = call_errors(on_streams(df, "breaker/"))
        attempts = breakers[~breakers["stream"].astype(str).str.removeprefix("breaker/").str.contains("/")]
    requests = typed(df, "request_failed")
    parts = [
        frame.assign(what=what)
        for what, frame in (("fault", faults), ("attempt", attempts), ("request", requests))
    ]
    return pd.concat(parts).sort_values("position", kind="stable")


def as_columns(df: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
    """``by`` as a list of the frame's column names; an unknown name is a :class:`ConfigurationError`."""
    if by is None:
        return []
    names = [by] if isinstance(by, str) else list(by)
    unknown = [name for name in names if name not in df.columns]
    if unknown:
        raise ConfigurationError(f"cannot group by {unknown}: the events frame has no such column")
    return names
