"""Recovery incidents, and how well and how fast the recovery ladder brought connections back.

An *incident* is every event sharing one ``incident_id``: the signal that opened it, the rungs
the lifecycle decided to try, their results, and the event that ended it (``to_state`` healthy,
failed or closed). An incident without an ending event was cut short (by a crash of the process
that ran it, or by the end of the log) and shows as open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from poolwarden.analysis.frames import TIME_DTYPE, empty_frame, make_category
from poolwarden.analysis.select import as_columns, attempt_rows, incident_rows, log_end
from poolwarden.analysis.timeline import connection_timeline
from poolwarden.analysis.vocabulary import (
    ATTEMPT_FAILED,
    ATTEMPT_OUTCOMES,
    ATTEMPT_SUCCEEDED,
    CONNECTION_END_STATES,
    INCIDENT_END_STATES,
    RECOVERED_STATES,
    RUNG_ORDER,
)

__all__ = [
    "INCIDENT_COLUMNS",
    "MTBF_COLUMNS",
    "MTTR_COLUMNS",
    "incidents",
    "mtbf",
    "mttr",
    "recovery_success_rates",
]

INCIDENT_COLUMNS: dict[str, Any] = {
    "incident_id": "str",
    "connection_id": "category",
    "browser": "category",
    "error_kind": "category",
    "first_signal": "category",
    "trigger": np.dtype("object"),
    "started": TIME_DTYPE,
    "ended": TIME_DTYPE,
    "duration": np.dtype("timedelta64[us]"),
    "decisions": np.dtype("object"),
    "actions": np.dtype("object"),
    "rung": "category",
    "outcome": "category",
    "open": np.dtype("bool"),
    "events": np.dtype("int64"),
}
"""Columns of :func:`incidents`."""

MTTR_COLUMNS: dict[str, Any] = {
    "connection_id": "category",
    "incidents": np.dtype("int64"),
    "recovered": np.dtype("int64"),
    "mttr_s": np.dtype("float64"),
    "median_ttr_s": np.dtype("float64"),
    "max_ttr_s": np.dtype("float64"),
}
"""Columns of :func:`mttr`."""

MTBF_COLUMNS: dict[str, Any] = {
    "connection_id": "category",
    "observed_s": np.dtype("float64"),
    "downtime_s": np.dtype("float64"),
    "failures": np.dtype("int64"),
    "mtbf_s": np.dtype("float64"),
}
"""Columns of :func:`mtbf`."""

_RATE_STATS: dict[str, Any] = {
    "attempts": np.dtype("int64"),
    "successes": np.dtype("int64"),
    "failures": np.dtype("int64"),
    "rate": np.dtype("float64"),
    "median_attempt_s": np.dtype("float64"),
    "median_recover_s": np.dtype("float64"),
    "p95_recover_s": np.dtype("float64"),
}


def _sequences(ids: pd.Series, values: pd.Series, *, collapse_repeats: bool) -> dict[Any, list[str]]:
    """Each incident's values in row order (with ``collapse_repeats``, a run of one value kept once).

    Sorted by incident (stably, so row order holds within one) and cut where the incident
    changes, in numpy: a group-by calling a Python function per group costs 50 times more.
    """
    if ids.empty:
        return {}
    codes, keys = pd.factorize(ids.to_numpy(dtype=object))
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    labels = values.to_numpy(dtype=object)[order]
    keep = np.ones(len(codes), dtype=bool)
    if collapse_repeats:
        keep[1:] = (codes[1:] != codes[:-1]) | (labels[1:] != labels[:-1])
    codes, labels = codes[keep], labels[keep]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    flat, bounds = labels.tolist(), [*starts.tolist(), len(labels)]
    return {keys[code]: flat[bounds[i] : bounds[i + 1]] for i, code in enumerate(codes[starts].tolist())}


def incidents(df: pd.DataFrame) -> pd.DataFrame:
    """One row per incident id, in the order the incidents started.

    ``first_signal`` is the type of the incident's first event and ``trigger`` its payload's
    ``trigger`` (what the lifecycle saw); ``decisions`` the rungs it chose, in order;
    ``actions`` each rung's result as ``"rung:outcome"``; ``rung`` the last rung tried;
    ``outcome`` that of the ending event (``recovered``, ``budget_exhausted``, ..., its state
    when it names no outcome), or ``open``. An open incident's ``duration`` runs to the log's end.
    """
    rows = incident_rows(df)
    end_of_log = log_end(df)
    if rows.empty or end_of_log is None:
        return empty_frame(INCIDENT_COLUMNS)
    ids = rows["incident_id"].astype(object)
    grouped = rows.groupby(ids, sort=False)
    first = grouped[["connection_id", "browser", "error_kind"]].first()  # first non-missing
    head = rows.drop_duplicates("incident_id")  # rows are in position order: each incident's first event
    head = head.set_index(head["incident_id"].astype(object))
    started = grouped["occurred_at"].min()

    enders = rows[rows["to_state"].isin(list(INCIDENT_END_STATES))].drop_duplicates("incident_id")
    enders = enders.set_index(enders["incident_id"].astype(object))
    ended = enders["occurred_at"].reindex(started.index)
    end_outcome = (
        enders["outcome"].astype(object).where(enders["outcome"].notna(), enders["to_state"].astype(object))
    )

    stepping = rows[rows["rung"].notna() & rows["outcome"].isna()]
    decisions = _sequences(ids[stepping.index], stepping["rung"].astype(object), collapse_repeats=True)
    results = rows[rows["rung"].notna() & rows["outcome"].isin(list(ATTEMPT_OUTCOMES))]
    labels = results["rung"].astype(str) + ":" + results["outcome"].astype(str)
    actions = _sequences(ids[results.index], labels, collapse_repeats=False)
    last_rung = rows[rows["rung"].notna()].groupby(ids[rows["rung"].notna()], sort=False)["rung"].last()

    is_open = ended.isna()
    finish = ended.where(~is_open, end_of_log)
    index = started.index
    frame = pd.DataFrame(
        {
            "incident_id": pd.Series(index.to_numpy(dtype=object), dtype="str"),
            "connection_id": make_category(first["connection_id"].reindex(index).astype(object)),
            "browser": make_category(first["browser"].reindex(index).astype(object)),
            "error_kind": make_category(first["error_kind"].reindex(index).astype(object)),
            "first_signal": make_category(head["type"].reindex(index).astype(object)),
            "trigger": pd.Series(
                [p.get("trigger") for p in head["payload"].reindex(index).tolist()], dtype=object
            ),
            "started": started.reset_index(drop=True).astype(TIME_DTYPE),
            "ended": ended.reset_index(drop=True).astype(TIME_DTYPE),
            "duration": (finish - started).reset_index(drop=True).astype("timedelta64[us]"),
            "decisions": pd.Series([decisions.get(i, []) for i in index.tolist()], dtype=object),
            "actions": pd.Series([actions.get(i, []) for i in index.tolist()], dtype=object),
            "rung": make_category(last_rung.reindex(index).astype(object)),
            "outcome": make_category(end_outcome.reindex(index).astype(object).where(~is_open, "open")),
            "open": pd.Series(is_open.to_numpy(dtype=bool)),
            "events": pd.Series(grouped.size().reindex(index).to_numpy(dtype=np.int64)),
        }
    )
    return frame.sort_values("started", kind="stable", ignore_index=True)


def _incident_recovery_seconds(df: pd.DataFrame) -> pd.Series:
    """Seconds from each recovered incident's first event to the event that made it healthy again."""
    rows = incident_rows(df)
    ids = rows["incident_id"].astype(object)
    started = rows["occurred_at"].groupby(ids, sort=False).min()
    healthy = rows[rows["to_state"].isin(list(RECOVERED_STATES))].drop_duplicates("incident_id")
    ended = pd.Series(healthy["occurred_at"].array, index=healthy["incident_id"].astype(object))
    return (ended - started.reindex(ended.index)).dt.total_seconds()


def _recovered_outcomes(df: pd.DataFrame) -> list[str]:
    """The ending outcomes of incidents that ended healthy (their names may change; the state does not)."""
    ends = incident_rows(df)
    ends = ends[ends["to_state"].isin(list(RECOVERED_STATES))]
    named = ends["outcome"].astype(object).where(ends["outcome"].notna(), ends["to_state"].astype(object))
    return sorted(set(named.dropna()))


def recovery_success_rates(df: pd.DataFrame, by: str | Sequence[str] = ("rung",)) -> pd.DataFrame:
    """How often each recovery rung worked, and how long recovery took, grouped by ``by``.

    An attempt is a rung's result in an incident (``outcome`` succeeded, failed or timed_out;
    superseded attempts say nothing of the rung and are left out). ``by`` names event columns:
    ``rung``, ``browser``, ``error_kind``, ``connection_id``, ``model_id``, ...; where a result
    leaves one empty, the incident's first value is used (a successful ping carries no error
    kind, the fault that began the incident does).

    Columns: the ``by`` columns, ``attempts``, ``successes``, ``failures``, ``rate``
    (successes / attempts), ``median_attempt_s`` (how long attempts took, issued to result),
    ``median_recover_s`` and ``p95_recover_s`` (for successful attempts: the incident's time
    from its first event to healthy).
    """
    names = as_columns(df, by)
    columns = dict.fromkeys(names, "category") | _RATE_STATS
    attempts = attempt_rows(df)
    attempts = attempts[attempts["outcome"].isin(list(ATTEMPT_SUCCEEDED | ATTEMPT_FAILED))]
    if attempts.empty:
        return empty_frame(columns)
    ids = attempts["incident_id"].astype(object)
    keys: dict[str, pd.Series] = {}
    incident = incident_rows(df)
    for name in names:
        values = attempts[name].astype(object)
        if values.isna().any():
            per_incident = incident.groupby(incident["incident_id"].astype(object))[name].first()
            values = values.where(values.notna(), ids.map(per_incident.astype(object)))
        keys[name] = values.fillna("(none)")
    success = attempts["outcome"].isin(list(ATTEMPT_SUCCEEDED)).to_numpy()
    recover_s = ids.map(_incident_recovery_seconds(df)).to_numpy(dtype=np.float64)
    work = pd.DataFrame(
        {
            **{name: values.to_numpy(dtype=object) for name, values in keys.items()},
            "success": success,
            "attempt_s": attempts["latency_ms"].to_numpy(dtype=np.float64) / 1000.0,
            "recover_s": np.where(success, recover_s, np.nan),
        }
    )
    grouped = work.groupby(names, sort=True, dropna=False)
    table = pd.DataFrame(
        {
            "attempts": grouped.size(),
            "successes": grouped["success"].sum().astype(np.int64),
            "median_attempt_s": grouped["attempt_s"].median(),
            "median_recover_s": grouped["recover_s"].median(),
            "p95_recover_s": grouped["recover_s"].quantile(0.95),
        }
    ).reset_index()
    table["failures"] = table["attempts"] - table["successes"]
    table["rate"] = table["successes"] / table["attempts"]
    if "rung" in names:
        rank = {rung: i for i, rung in enumerate(RUNG_ORDER)}
        table = table.sort_values(
            by=["rung", *[n for n in names if n != "rung"]],
            key=lambda column: column.map(rank).fillna(len(rank)) if column.name == "rung" else column,
            kind="stable",
            ignore_index=True,
        )
    for name in names:
        table[name] = make_category(table[name])
    return table[list(columns)].astype(dict(_RATE_STATS.items()))


def mttr(df: pd.DataFrame) -> pd.DataFrame:
    """Mean time to recover per connection: over its incidents that ended with it healthy again.

    ``incidents`` counts all its incidents (recovered, quarantined, closed, open); the times are
    those of the recovered ones, in seconds.
    """
    table = incidents(df)
    if table.empty:
        return empty_frame(MTTR_COLUMNS)
    table = table.assign(connection=table["connection_id"].astype(object).fillna("(none)"))
    recovered = table[~table["open"] & table["outcome"].isin(_recovered_outcomes(df))]
    seconds = recovered["duration"].dt.total_seconds().groupby(recovered["connection"])
    result = pd.DataFrame(
        {
            "incidents": table.groupby("connection").size(),
            "recovered": seconds.size(),
            "mttr_s": seconds.mean(),
            "median_ttr_s": seconds.median(),
            "max_ttr_s": seconds.max(),
        }
    )
    result["recovered"] = result["recovered"].fillna(0).astype(np.int64)
    result = result.rename_axis("connection_id").reset_index()
    result["connection_id"] = make_category(result["connection_id"])
    return result[list(MTTR_COLUMNS)].astype({k: v for k, v in MTTR_COLUMNS.items() if k != "connection_id"})


def mtbf(df: pd.DataFrame) -> pd.DataFrame:
    """Mean time between failures per connection: its time up divided by its incidents.

    ``observed_s`` runs from the connection's first event (on any stream) to the log's end, or
    to the moment it was quarantined or closed for good (its last lifecycle state); ``downtime_s``
    is the time spent in its incidents (an open one counts to the log's end); ``mtbf_s`` is
    ``(observed_s - downtime_s) / failures``, NaN when it never failed.
    """
    with_connection = df[df["connection_id"].notna()]
    end_of_log = log_end(df)
    if with_connection.empty or end_of_log is None:
        return empty_frame(MTBF_COLUMNS)
    connection = with_connection["connection_id"].astype(object)
    first_seen = with_connection["occurred_at"].groupby(connection).min()
    states = connection_timeline(df)
    final = states.groupby(states["connection_id"].astype(object), sort=False).last()
    stopped = final["start"].where(final["state"].astype(str).isin(list(CONNECTION_END_STATES)))
    until = stopped.reindex(first_seen.index).fillna(end_of_log)
    observed = (until - first_seen).dt.total_seconds()
    table = incidents(df)
    table = table[table["connection_id"].notna()]
    by_connection = table.groupby(table["connection_id"].astype(object))
    downtime = by_connection["duration"].sum().dt.total_seconds().reindex(observed.index, fill_value=0.0)
    failures = by_connection.size().reindex(observed.index, fill_value=0).astype(np.int64)
    uptime = observed - downtime
    return pd.DataFrame(
        {
            "connection_id": make_category(observed.index.to_numpy(dtype=object)),
            "observed_s": observed.to_numpy(dtype=np.float64),
            "downtime_s": downtime.to_numpy(dtype=np.float64),
            "failures": failures.to_numpy(),
            "mtbf_s": (uptime / failures.where(failures > 0)).to_numpy(dtype=np.float64),
        }
    )
