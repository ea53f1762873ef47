"""The post-mortem report: one HTML page with its PNG plots beside it, made from the log alone.

``write_report(db, out_dir)`` loads the log once, runs every analysis on the frame, draws each
figure (a "no data" panel where the log holds nothing of its kind) and writes
``out_dir/report.html`` with the tables behind the figures. The page has no script and no
external resource: it opens from disk in any browser. On a log several pools wrote to (a
fleet's), the page begins with a table of the pools, one row each (:func:`pool_summary`);
``pool=NAME`` makes the report of that pool's events alone. ``main_analyze`` is the body of
``poolwarden analyze --db PATH --out DIR [--pool NAME]``.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from poolwarden.analysis.fleet import pool_summary, pools
from poolwarden.analysis.health import pool_health
from poolwarden.analysis.load import load_events
from poolwarden.analysis.rates import failure_counts, latency_percentiles, memory_samples
from poolwarden.analysis.recovery import incidents, mtbf, mttr, recovery_success_rates
from poolwarden.analysis.select import load_latencies, served_latencies, typed
from poolwarden.analysis.timeline import breaker_timeline
from poolwarden.analysis.vocabulary import TYPES
from poolwarden.analysis.whatif import whatif
from poolwarden.errors import ConfigurationError
from poolwarden.policy import BreakerPolicy
from poolwarden.whatif import APPROXIMATIONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "bucket_for", "main_analyze", "read_policy", "write_report"]

FIGURES: tuple[str, ...] = (
    "breaker_states.png",
    "errors_over_time.png",
    "recovery_by_rung.png",
    "time_to_recover.png",
    "latency_by_model.png",
    "memory_by_browser.png",
)
"""The PNG files a report writes beside report.html, in page order."""

_BUCKETS = ("1s", "5s", "10s", "30s", "1min", "5min", "10min", "30min", "1h", "3h", "6h", "12h", "1D")
_MAX_TABLE_ROWS = 200
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.wide { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; overflow-wrap: break-word; }
td.list { text-align: left; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; font-size: 0.9em; }
"""


def bucket_for(span: pd.Timedelta, buckets: int = 120) -> str:
    """The smallest round bucket width that cuts ``span`` into at most about ``buckets`` buckets."""
    for freq in _BUCKETS:
        if span / pd.Timedelta(freq) <= buckets:
            return freq
    return _BUCKETS[-1]


@dataclass(frozen=True, slots=True)
class _Section:
    title: str
    figure: str | None
    tables: tuple[tuple[str, pd.DataFrame], ...]
    note: str = ""


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", facecolor="white")


def _shown(frame: pd.DataFrame) -> str:
    """A frame as an HTML table: lists joined with arrows, times to the millisecond, long ones cut."""
    view = frame.head(_MAX_TABLE_ROWS).copy()
    for name in view.columns:
        column = view[name]
        if column.dtype == object and column.map(lambda v: isinstance(v, list)).any():
            view[name] = column.map(lambda v: " → ".join(map(str, v)) if isinstance(v, list) else v)
        elif isinstance(column.dtype, pd.DatetimeTZDtype):
            view[name] = column.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str.slice(0, 23)
        elif pd.api.types.is_timedelta64_dtype(column.dtype):
            view[name] = column.dt.total_seconds().round(3)
    if "incident_id" in view.columns:  # a uuid's first 8 hex digits tell incidents apart
        view["incident_id"] = view["incident_id"].map(
            lambda v: f"{v[:8]}…" if isinstance(v, str) and len(v) > 12 else v
        )
    table = view.to_html(index=False, na_rep="—", float_format=lambda x: f"{x:,.3f}", border=0, escape=True)
    table = f'<div class="wide">{table}</div>'
    if len(frame) > _MAX_TABLE_ROWS:
        table += f'<p class="note">first {_MAX_TABLE_ROWS} of {len(frame):,} rows</p>'
    return table


def _breaker_summary(timeline: pd.DataFrame) -> pd.DataFrame:
    """Per breaker: how often it opened, how long it was not closed, and its state at the end."""
    if timeline.empty:
        return pd.DataFrame(columns=["key", "opens", "not_closed_s", "last_state"])
    keys = timeline["key"].astype(str)
    states = timeline["state"].astype(str)
    grouped = timeline.groupby(keys, sort=True)
    return (
        pd.DataFrame(
            {
                "opens": (states == "open").groupby(keys).sum(),
                "not_closed_s": timeline["duration"]
                .dt.total_seconds()
                .where(states != "closed", 0.0)
                .groupby(keys)
                .sum(),
                "last_state": grouped["state"].last().astype(str),
            }
        )
        .rename_axis("key")
        .reset_index()
        .sort_values("not_closed_s", ascending=False, kind="stable")
    )


_INCIDENT_SHOWN = (
    "incident_id",
    "connection_id",
    "browser",
    "error_kind",
    "trigger",
    "started",
    "duration",
    "actions",
    "outcome",
)


def _incident_view(table: pd.DataFrame) -> pd.DataFrame:
    """The incidents table as the page shows it: the columns a reader needs to follow an incident
    (its rungs and their results are in ``actions``; when it ended is ``started`` + ``duration``),
    so that it fits the page; ``incidents(df)`` has every column."""
    return table[[c for c in _INCIDENT_SHOWN if c in table.columns]]


def _incidents_recovered(table: pd.DataFrame) -> tuple[int, int]:
    """(recovered, ended) of the incidents: those still open are not counted in either."""
    if table.empty:
        return 0, 0
    ended = table[~table["open"]]
    return int((ended["outcome"].astype(str) == "recovered").sum()), len(ended)


def _served_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of requests served (single and summarised), for the latency table."""
    return df[(df["type"] == TYPES["served"]) | (df["type"] == TYPES["served_summary"])]


def _lanes_from_pool_start(timeline: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Every breaker's first interval stretched back to the start of the pool run it belongs to
    (the last ``pool_started`` at or before its first event, else the log's first event): a
    breaker exists from its pool's start, in the state it was in before its first change, so a
    breaker closed until late shows closed from the start rather than blank."""
    if timeline.empty or df.empty:
        return timeline
    starts = list(typed(df, "pool_started")["occurred_at"].sort_values())
    log_start = df["occurred_at"].min()
    out = timeline.copy()
    first = out.groupby(out["key"].astype(str), sort=False)["start"].idxmin()
    for row in first.to_numpy():
        began = out.at[row, "start"]
        earlier = [t for t in starts if t <= began]
        since = earlier[-1] if earlier else log_start
        if since < began:
            out.at[row, "start"] = since
            out.at[row, "duration"] = out.at[row, "end"] - since
    return out


def _memory_summary(samples: pd.DataFrame) -> pd.DataFrame:
    if samples.empty:
        return pd.DataFrame(columns=["connection", "samples", "min_mb", "median_mb", "max_mb"])
    names = (
        samples["connection_id"].astype(object).fillna("(none)")
        + " ("
        + samples["browser"].astype(object).fillna("(unknown)")
        + ")"
    )
    grouped = samples.groupby(names)["pss_mb"]
    return (
        pd.DataFrame(
            {
                "samples": grouped.size(),
                "min_mb": grouped.min(),
                "median_mb": grouped.median(),
                "max_mb": grouped.max(),
            }
        )
        .rename_axis("connection")
        .reset_index()
    )


def _whatif_section(df: pd.DataFrame, policy: BreakerPolicy) -> _Section:
    table = whatif(df, policy)
    counts = table.drop(columns=["recorded_opened_at", "whatif_opened_at", "whatif_closed_at"])
    note = "Under the given policy, beside what was recorded. The replay's guesses: " + "; ".join(
        APPROXIMATIONS
    )
    return _Section("What-if", None, (("Opens and rejections per breaker", counts),), note + ".")


def _degraded_summary(health: pd.DataFrame) -> pd.DataFrame:
    """One row: the time the log covers, the time the pool was degraded, its share, and the
    fewest connections serving while it was."""
    seconds = health["duration"].dt.total_seconds()
    observed = float(seconds.sum())
    degraded = health["degraded"].to_numpy(dtype=bool)
    spent = float(seconds[degraded].sum())
    return pd.DataFrame(
        {
            "observed_s": [round(observed, 3)],
            "degraded_s": [round(spent, 3)],
            "degraded_share": [round(spent / observed, 4) if observed > 0 else 0.0],
            "degraded_periods": [int(degraded.sum())],
            "fewest_serving": [int(health.loc[degraded, "healthy"].min()) if degraded.any() else None],
        }
    )


def write_report(
    db: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    policy: BreakerPolicy | None = None,
    pool: str | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and its PNG plots for the log at ``db``; returns the page's path.

    ``out_dir`` is created if needed; files of an earlier report there are replaced. With a
    ``policy``, the page ends with what that breaker policy would have done on this log
    (:func:`~poolwarden.analysis.whatif`). With ``pool``, the report is of the events of the pool
    of that name only; without, a log that holds more than one pool's events starts with a
    section of one row per pool (:func:`~poolwarden.analysis.pool_summary`). Errors of a missing
    or unreadable log are those of :func:`~poolwarden.analysis.load_events`.
    """
    # Here, not at the top: matplotlib loads only when a report is drawn, not for load_events.
    from poolwarden.analysis import plots

    df = load_events(db, pool=pool)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    span = (df["occurred_at"].max() - df["occurred_at"].min()) if not df.empty else pd.Timedelta(0)
    freq = bucket_for(span)

    timeline = _lanes_from_pool_start(breaker_timeline(df), df)
    failed = failure_counts(df, freq=freq)
    by_rung = recovery_success_rates(df, by=("rung",))
    incident_table = incidents(df)
    samples = memory_samples(df)
    figures = {
        "breaker_states.png": plots.breaker_lanes(timeline),
        "errors_over_time.png": plots.failures_over_time(failed, freq),
        "recovery_by_rung.png": plots.recovery_by_rung(by_rung, _incidents_recovered(incident_table)),
        "time_to_recover.png": plots.time_to_recover(incident_table),
        "latency_by_model.png": plots.latency_by_model(served_latencies(df), load_latencies(df)),
        "memory_by_browser.png": plots.memory_by_browser(samples),
    }
    for name in FIGURES:
        _save(figures[name], out / name)

    failure_totals = (
        failed.groupby(["what", "kind"], observed=True)["count"].sum().reset_index()
        if not failed.empty
        else failed[["what", "kind", "count"]]
    )
    sections: tuple[_Section, ...] = (
        _Section(
            "Circuit breakers",
            "breaker_states.png",
            (("Breakers, longest not closed first", _breaker_summary(timeline)),),
        ),
        _Section(
            "What went wrong",
            "errors_over_time.png",
            tuple(
                (caption, failure_totals[failure_totals["what"].astype(str) == what][["kind", "count"]])
                for what, caption in (
                    ("fault", "Faults injected"),
                    ("attempt", "Failed attempts, by error kind"),
                    ("request", "Requests that ended in an error, by error class"),
                )
            ),
            "Each thing is counted once, apart: a fault injected on purpose; a failed attempt of a "
            "request on a connection (a request retried and then served has some); a request that "
            "ended in a typed error. The breakers' own records of the failed attempts are not "
            "counted again.",
        ),
        _Section(
            "Recovery",
            "recovery_by_rung.png",
            (
                ("Success by rung", by_rung),
                ("Success by rung and browser", recovery_success_rates(df, by=("rung", "browser"))),
                ("Success by error kind", recovery_success_rates(df, by=("error_kind",))),
            ),
            "Attempts are rung results (succeeded, failed, timed out); an incident whose ping failed "
            "and whose reconnect worked is one incident recovered and two attempts, one of them "
            "successful. Recover times run from an incident's first event to healthy.",
        ),
        _Section(
            "Incidents and time to recover",
            "time_to_recover.png",
            (
                ("The pool: how long it was degraded", _degraded_summary(pool_health(df))),
                ("Per connection: MTTR", mttr(df)),
                ("Per connection: MTBF", mtbf(df)),
                ("Incidents", _incident_view(incident_table)),
            ),
            "An incident with no ending event (cut short by a crash, or still running) is open. "
            "The pool is degraded while fewer connections serve than it has shown it can.",
        ),
        _Section(
            "Latency",
            "latency_by_model.png",
            (
                ("Requests served, per model (ms)", latency_percentiles(_served_rows(df))),
                ("Model loads, per model (ms)", latency_percentiles(load_latencies(df))),
            ),
            "Served requests only: failed attempts and model loads are left out of the first; "
            "model loads are shown apart.",
        ),
        _Section("Memory", "memory_by_browser.png", (("PSS per connection (MB)", _memory_summary(samples)),)),
    )
    if pool is None and len(pools(df)) > 1:
        sections = (_pools_section(df), *sections)
    if policy is not None:
        sections += (_whatif_section(df, policy),)
    page = out / "report.html"
    page.write_text(_page(db, df, sections, pool), encoding="utf-8")
    return page


def _pools_section(df: pd.DataFrame) -> _Section:
    return _Section(
        "Pools",
        None,
        (("One row per pool", pool_summary(df)),),
        "The log holds several pools' events (a fleet's shared log); the sections below count them "
        "all. Requests are those that ended (served or failed with a typed error); open breakers are "
        "those open or forced open at their last change. `poolwarden analyze --pool NAME` makes the "
        "report of one pool.",
    )


def _page(
    db: str | os.PathLike[str], df: pd.DataFrame, sections: tuple[_Section, ...], pool: str | None = None
) -> str:
    if df.empty:
        summary = "The log holds no events."
    else:
        first, last = df["occurred_at"].min(), df["occurred_at"].max()
        seconds = (last - first).total_seconds()
        summary = (
            f"{len(df):,} events on {df['stream'].nunique():,} streams, "
            f"from {first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC ({seconds:,.0f} s)."
        )
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    of = f" of pool {pool}" if pool is not None else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>poolwarden post-mortem{html.escape(of)}: {html.escape(os.fspath(db))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>poolwarden post-mortem{html.escape(of)}</h1>",
        f'<p class="note">{html.escape(os.fspath(db))} · made {made}</p>',
        f"<p>{html.escape(summary)}</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        if section.figure:
            alt = html.escape(section.title)
            parts.append(f'<p><img src="{section.figure}" alt="{alt}"></p>')
        for caption, table in section.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(_shown(table) if not table.empty else '<p class="note">no data</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def read_policy(path: str | os.PathLike[str]) -> BreakerPolicy:
    """The breaker policy in the JSON file at ``path`` (``BreakerPolicy.to_dict()``'s shape)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the policy file {os.fspath(path)}: {error.strerror}"
        ) from error
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"the policy file {os.fspath(path)} is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise ConfigurationError(f"the policy file {os.fspath(path)} must hold a JSON object")
    return BreakerPolicy.from_dict(data)


def main_analyze(
    db: str | os.PathLike[str],
    out: str | os.PathLike[str],
    policy_file: str | os.PathLike[str] | None = None,
    pool: str | None = None,
) -> int:
    """``poolwarden analyze --db PATH --out DIR [--policy FILE] [--pool NAME]``: write the report,
    print where; returns 0.

    ``policy_file`` is a breaker policy as JSON, for the report's what-if section; ``pool`` the
    pool whose events alone are reported. Errors of the one tree (a missing file, a newer schema,
    a bad policy, a name no pool can have) propagate for the CLI to print.
    """
    policy = None if policy_file is None else read_policy(policy_file)
    page = write_report(db, out, policy=policy, pool=pool)
    print(f"report written to {page}")
    return 0
