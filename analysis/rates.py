"""Errors over time, call latency percentiles, and memory samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from poolwarden.analysis.frames import TIME_DTYPE, empty_frame, make_category
from poolwarden.analysis.select import as_columns, call_errors, call_latencies, failures, typed
from poolwarden.errors import ConfigurationError

__all__ = ["MEMORY_COLUMNS", "error_rates", "failure_counts", "latency_percentiles", "memory_samples"]

MEMORY_COLUMNS: dict[str, Any] = {
    "occurred_at": TIME_DTYPE,
    "connection_id": "category",
    "browser": "category",
    "pss_mb": np.dtype("float64"),
    "js_heap_mb": np.dtype("float64"),
}
"""Columns of :func:`memory_samples`."""

DEFAULT_PERCENTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
"""The percentiles :func:`latency_percentiles` reports unless told otherwise."""


def _bucket_seconds(freq: str) -> float:
    try:
        width = pd.Timedelta(freq)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"{freq!r} is not a fixed time bucket such as '10s' or '1min'") from error
    if width <= pd.Timedelta(0):
        raise ConfigurationError(f"{freq!r} must be a positive time span")
    return float(width.total_seconds())


def error_rates(
    df: pd.DataFrame, by: str | Sequence[str] | None = "model_id", freq: str = "1min"
) -> pd.DataFrame:
    """Call errors per time bucket of width ``freq``, per value of ``by``.

    The errors are those of :func:`~poolwarden.analysis.select.call_errors`. A call that failed
    is recorded by each breaker it passed (its connection's and its model's); grouped by
    ``model_id`` the connection breakers' records fall under ``(none)``. Buckets without errors
    are not listed. Columns: ``time`` (bucket start), the ``by`` columns, ``errors``, ``per_s``.
    """
    names = as_columns(df, by)
    seconds = _bucket_seconds(freq)
    columns = (
        {"time": TIME_DTYPE}
        | dict.fromkeys(names, "category")
        | {
            "errors": np.dtype("int64"),
            "per_s": np.dtype("float64"),
        }
    )
    errors = call_errors(df)
    if errors.empty:
        return empty_frame(columns)
    work = pd.DataFrame({"time": errors["occurred_at"].dt.floor(freq).reset_index(drop=True)})
    for name in names:
        work[name] = errors[name].astype(object).fillna("(none)").to_numpy()
    counts = work.groupby(["time", *names], sort=True).size().rename("errors").reset_index()
    counts["per_s"] = counts["errors"] / seconds
    counts["time"] = counts["time"].astype(TIME_DTYPE)
    for name in names:
        counts[name] = make_category(counts[name])
    return counts[list(columns)].astype({"errors": np.int64})


FAILURE_KINDS: tuple[str, ...] = ("fault", "attempt", "request")
"""The values of :func:`failure_counts`' ``what`` column, in the order they are shown."""


def failure_counts(df: pd.DataFrame, freq: str = "1min") -> pd.DataFrame:
    """Faults injected, failed attempts and failed requests, apart, per time bucket and kind.

    The rows are those of :func:`~poolwarden.analysis.select.failures`, each counted once.
    Columns: ``time`` (bucket start), ``what`` (``fault``, ``attempt``, ``request``), ``kind``
    (the ``error_kind``: a fault's name, an attempt's error kind, a request's error class),
    ``count``, ``per_s``. Buckets without any are not listed.
    """
    seconds = _bucket_seconds(freq)
    columns = {
        "time": TIME_DTYPE,
        "what": "category",
        "kind": "category",
        "count": np.dtype("int64"),
        "per_s": np.dtype("float64"),
    }
    rows = failures(df)
    if rows.empty:
        return empty_frame(columns)
    work = pd.DataFrame(
        {
            "time": rows["occurred_at"].dt.floor(freq).to_numpy(),
            "what": rows["what"].to_numpy(),
            "kind": rows["error_kind"].astype(object).fillna("(unknown)").to_numpy(),
        }
    )
    counts = work.groupby(["time", "what", "kind"], sort=True).size().rename("count").reset_index()
    counts["per_s"] = counts["count"] / seconds
    counts["time"] = counts["time"].astype(TIME_DTYPE)
    counts["what"] = pd.Categorical(counts["what"], categories=list(FAILURE_KINDS))
    counts["kind"] = make_category(counts["kind"])
    return counts[list(columns)].astype({"count": np.int64})


def latency_percentiles(
    df: pd.DataFrame,
    by: str | Sequence[str] | None = "model_id",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> pd.DataFrame:
    """Call latency (ms) per value of ``by``: count, mean, the ``percentiles``, max.

    The latencies are those of :func:`~poolwarden.analysis.select.call_latencies` (calls, not
    recoveries). Columns: the ``by`` columns, ``count``, ``mean_ms``, ``p50_ms``, ...,
    ``max_ms``.
    """
    names = as_columns(df, by)
    if any(not 0.0 <= q <= 1.0 for q in percentiles):
        raise ConfigurationError(f"percentiles must lie in [0, 1], not {list(percentiles)}")
    labels = [f"p{q * 100:g}_ms" for q in percentiles]
    columns = dict.fromkeys(names, "category") | {"count": np.dtype("int64"), "mean_ms": np.dtype("float64")}
    columns |= dict.fromkeys(labels, np.dtype("float64")) | {"max_ms": np.dtype("float64")}
    rows = call_latencies(df)
    if rows.empty:
        return empty_frame(columns)
    work = pd.DataFrame({"latency_ms": rows["latency_ms"].to_numpy(dtype=np.float64)})
    for name in names:
        work[name] = rows[name].astype(object).fillna("(none)").to_numpy()
    if not names:
        work["_all"] = "all"
    grouped = work.groupby(names or ["_all"], sort=True)["latency_ms"]
    table = pd.DataFrame({"count": grouped.size(), "mean_ms": grouped.mean()})
    for q, label in zip(percentiles, labels, strict=True):
        table[label] = grouped.quantile(q)
    table["max_ms"] = grouped.max()
    table = table.reset_index()
    for name in names:
        table[name] = make_category(table[name])
    return table[list(columns)].astype({"count": np.int64})


def memory_samples(df: pd.DataFrame) -> pd.DataFrame:
    """The memory samples of the browsers, one row each, in time order.

    ``pss_mb`` is the payload's ``pss_mb``, or its ``pss_bytes`` in MiB; ``js_heap_mb`` the
    payload's ``js_heap_mb`` where the browser reports it (Firefox does not), else NaN. Samples
    of the host (the memory governor's ``scope: host``, which carry no PSS) are left out.
    """
    rows = typed(df, "memory_sampled")
    pss = np.array([_pss_mb(payload) for payload in rows["payload"]], dtype=np.float64)
    rows = rows[~np.isnan(pss)]
    if rows.empty:
        return empty_frame(MEMORY_COLUMNS)
    pss = pss[~np.isnan(pss)]
    heap = [payload.get("js_heap_mb") for payload in rows["payload"]]
    return pd.DataFrame(
        {
            "occurred_at": rows["occurred_at"].astype(TIME_DTYPE).reset_index(drop=True),
            "connection_id": make_category(rows["connection_id"].astype(object)),
            "browser": make_category(rows["browser"].astype(object)),
            "pss_mb": pd.Series(pss),
            "js_heap_mb": pd.Series(np.array(heap, dtype=np.float64)),
        }
    )


def _pss_mb(payload: dict[str, Any]) -> float:
    if payload.get("pss_mb") is not None:
        return float(payload["pss_mb"])
    if payload.get("pss_bytes") is not None:
        return float(payload["pss_bytes"]) / 2**20
    return float("nan")
