"""The report's figures, drawn with matplotlib's object API (no pyplot, no global backend).

Each function takes the frames it draws and returns a :class:`~matplotlib.figure.Figure`; a
figure with nothing to draw says so in a "no data" panel instead of failing. ``Figure.savefig``
renders with Agg, so nothing here needs a display or touches pyplot's global state.
"""

from __future__ import annotations

from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from poolwarden.analysis.vocabulary import RUNG_ORDER

__all__ = [
    "LANE_PIXELS",
    "MAX_LANES",
    "STATE_COLOURS",
    "breaker_lanes",
    "errors_over_time",
    "latency_by_model",
    "memory_by_browser",
    "no_data",
    "recovery_by_rung",
    "time_to_recover",
]

MAX_LANES = 40
"""Most breakers drawn as lanes; those that spent the longest time not closed are chosen."""

LANE_PIXELS = 2000
"""Columns of the breaker lanes' image: finer than the PNG, so no state is lost to the grid."""
_LANE_ROWS = 5  # image rows per lane: four coloured, one blank to part it from the next

STATE_COLOURS: dict[str, str] = {
    "closed": "#9ccc9c",
    "metrics_only": "#4a90d9",
    "disabled": "#9e9e9e",
    "half_open": "#ff9f1c",
    "open": "#d62728",
    "forced_open": "#7b2d8b",
}
"""Colour of each breaker state, mildest first: where states share a pixel, the last one shows."""
_OTHER_COLOUR = "#555555"
_WIDTH, _HEIGHT = 10.0, 4.0


def _figure(height: float = _HEIGHT) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(_WIDTH, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def no_data(title: str, reason: str) -> Figure:
    """A panel that says there was nothing to draw, and why."""
    figure, axes = _figure(2.0)
    axes.set_title(title)
    axes.text(0.5, 0.5, f"no data: {reason}", ha="center", va="center", fontsize=13, color="#666666")
    axes.set_axis_off()
    return figure


def _naive_utc(times: pd.Series) -> np.ndarray[Any, Any]:
    """Times as naive UTC datetime64 values, which matplotlib's date axis takes as they are."""
    return np.asarray(times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())


def _date_axis(axes: Axes) -> None:
    # matplotlib.dates ships without annotations for these three: the ignores below say so, no more.
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.set_xlabel("time (UTC)")


def _lane_grid(shown: pd.DataFrame, lanes: dict[str, int], states: list[str]) -> np.ndarray[Any, Any]:
    """A ``(lanes * _LANE_ROWS, LANE_PIXELS)`` grid of state indices (-1: no data, or the gap between lanes).

    Each pixel column holds the worst state (latest in ``states``) of its stretch of time, so
    that a one-second half-open in a day-long log still shows.
    """
    begin, finish = shown["start"].min(), shown["end"].max()
    span = max((finish - begin).total_seconds(), 1e-6)
    scale = LANE_PIXELS / span
    first = np.floor((shown["start"] - begin).dt.total_seconds().to_numpy() * scale).astype(np.int64)
    last = np.ceil((shown["end"] - begin).dt.total_seconds().to_numpy() * scale).astype(np.int64)
    first = first.clip(0, LANE_PIXELS - 1)
    last = np.maximum(last, first + 1).clip(1, LANE_PIXELS)
    rank = {state: i for i, state in enumerate(states)}
    ranks = shown["state"].astype(str).map(rank).to_numpy(dtype=np.int64)
    rows = shown["key"].astype(str).map(lanes).to_numpy(dtype=np.int64) * _LANE_ROWS
    grid = np.full((len(lanes) * _LANE_ROWS, LANE_PIXELS), -1, dtype=np.int64)
    for i in np.argsort(ranks, kind="stable"):  # worse states are painted last, over milder ones
        grid[rows[i] : rows[i] + _LANE_ROWS - 1, first[i] : last[i]] = ranks[i]
    return grid


def breaker_lanes(timeline: pd.DataFrame) -> Figure:
    """One lane per breaker, coloured by state over time (``breaker_timeline``'s frame).

    Drawn as an image of :data:`LANE_PIXELS` columns, each showing the worst state of its moment:
    a log of a hundred thousand intervals draws as fast as one of ten.
    """
    title = "Circuit breaker states"
    if timeline.empty:
        return no_data(title, "the log holds no breaker events")
    keys = timeline["key"].astype(str)
    not_closed = timeline["duration"].where(timeline["state"].astype(str) != "closed", pd.Timedelta(0))
    ranking = not_closed.groupby(keys).sum().sort_values(ascending=False, kind="stable")
    chosen = sorted(ranking.index[:MAX_LANES])
    shown = timeline[keys.isin(chosen)]
    present = set(shown["state"].astype(str))
    states = [s for s in STATE_COLOURS if s in present] + sorted(present - set(STATE_COLOURS))
    grid = _lane_grid(shown, {key: i for i, key in enumerate(chosen)}, states)
    colours = ListedColormap([STATE_COLOURS.get(s, _OTHER_COLOUR) for s in states]).with_extremes(bad="white")
    begin, finish = mdates.date2num(  # type: ignore[no-untyped-call]
        _naive_utc(pd.Series([shown["start"].min(), shown["end"].max()]))
    )
    figure, axes = _figure(max(2.5, 0.9 + 0.28 * len(chosen)))
    axes.imshow(
        np.ma.masked_less(grid, 0),
        aspect="auto",
        interpolation="nearest",
        cmap=colours,
        vmin=-0.5,
        vmax=len(states) - 0.5,
        extent=(begin, finish, len(chosen) - 0.5, -0.5),
    )
    band = (_LANE_ROWS - 1) / _LANE_ROWS  # each lane's coloured share; the rest is the gap below it
    axes.set_yticks([i - 0.5 + band / 2 for i in range(len(chosen))], chosen, fontsize=8)
    axes.xaxis_date()
    _date_axis(axes)
    axes.legend(
        handles=[Patch(color=STATE_COLOURS.get(s, _OTHER_COLOUR), label=s) for s in states],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    total = len(ranking)
    axes.set_title(title if total <= MAX_LANES else f"{title} ({MAX_LANES} of {total}: longest not closed)")
    return figure


def errors_over_time(rates: pd.DataFrame, freq: str) -> Figure:
    """Call errors per second over time, one line per error kind (``error_rates(by="error_kind")``)."""
    title = f"Errors over time by kind (per second, {freq} buckets)"
    if rates.empty:
        return no_data(title, "the log holds no call errors")
    table = rates.pivot_table(
        index="time", columns="error_kind", values="per_s", aggfunc="sum", observed=True
    )
    full = pd.date_range(table.index.min(), table.index.max(), freq=freq)
    table = table.reindex(full, fill_value=0.0).fillna(0.0)
    figure, axes = _figure()
    times = _naive_utc(pd.Series(table.index))
    for kind in table.columns:
        axes.plot(
            times,
            table[kind].to_numpy(),
            label=str(kind),
            linewidth=1.2,
            marker="." if len(table) < 30 else None,
        )
    axes.set_ylabel("errors / s")
    axes.set_ylim(bottom=0)
    _date_axis(axes)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes.set_title(title)
    return figure


def recovery_by_rung(rates: pd.DataFrame) -> Figure:
    """Share of recovery attempts that succeeded, per rung, with the attempts counted on each bar."""
    title = "Recovery success by rung"
    if rates.empty:
        return no_data(title, "the log holds no recovery attempts")
    figure, axes = _figure(3.2)
    rungs = rates["rung"].astype(str).tolist()
    bars = axes.bar(rungs, rates["rate"].to_numpy() * 100.0, color="#4a90d9")
    labels = [f"{s}/{a}" for s, a in zip(rates["successes"], rates["attempts"], strict=True)]
    axes.bar_label(bars, labels=labels, padding=2, fontsize=9)
    axes.set_ylim(0, 110)
    axes.set_ylabel("succeeded (%)")
    axes.set_title(title)
    return figure


def time_to_recover(incidents: pd.DataFrame) -> Figure:
    """Seconds from fault to healthy of the recovered incidents, per rung that recovered them."""
    title = "Time to recover (s), by the rung that recovered"
    recovered = incidents[~incidents["open"] & incidents["rung"].notna() & incidents["ended"].notna()]
    recovered = (
        recovered[recovered["outcome"].astype(str) == "recovered"] if not recovered.empty else recovered
    )
    if recovered.empty:
        return no_data(title, "no incident of the log ended recovered")
    seconds = recovered["duration"].dt.total_seconds()
    rungs = recovered["rung"].astype(str)
    order = [r for r in RUNG_ORDER if r in set(rungs)] + sorted(set(rungs) - set(RUNG_ORDER))
    figure, axes = _figure(3.2)
    data = [seconds[rungs == rung].to_numpy() for rung in order]
    axes.boxplot(
        data, tick_labels=[f"{r} (n={len(d)})" for r, d in zip(order, data, strict=True)], showfliers=True
    )
    axes.set_ylabel("seconds")
    axes.set_title(title)
    return figure


def latency_by_model(latencies: pd.DataFrame) -> Figure:
    """Distribution of call latency (ms, log scale) per model; ``latencies`` has model_id and latency_ms."""
    title = "Call latency by model (ms)"
    if latencies.empty:
        return no_data(title, "the log holds no call latencies")
    models = latencies["model_id"].astype(object).fillna("(none)").astype(str)
    names = sorted(set(models))
    data = [latencies["latency_ms"][models == name].to_numpy() for name in names]
    figure, axes = _figure(3.2)
    axes.boxplot(
        data, tick_labels=[f"{n} (n={len(d)})" for n, d in zip(names, data, strict=True)], showfliers=False
    )
    if min(float(np.min(d)) for d in data) > 0:
        axes.set_yscale("log")
    axes.set_ylabel("ms")
    axes.set_title(f"{title}; whiskers 1.5 IQR, outliers hidden")
    return figure


def memory_by_browser(samples: pd.DataFrame) -> Figure:
    """PSS memory (MB) of each connection's browser over time, coloured by browser."""
    title = "Browser memory (PSS, MB) over time"
    if samples.empty:
        return no_data(title, "the log holds no memory samples (MemorySampled events)")
    figure, axes = _figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    browsers = sorted(set(samples["browser"].astype(object).fillna("(unknown)").astype(str)))
    colour = {b: palette[i % len(palette)] for i, b in enumerate(browsers)}
    browser_of = samples["browser"].astype(object).fillna("(unknown)").astype(str)
    connection_of = samples["connection_id"].astype(object).fillna("(none)").astype(str)
    for (browser, _connection), rows in samples.groupby([browser_of, connection_of], sort=True):
        axes.plot(
            _naive_utc(rows["occurred_at"]),
            rows["pss_mb"].to_numpy(),
            color=colour[str(browser)],
            linewidth=0.9,
            alpha=0.8,
            marker="." if len(rows) < 30 else None,
        )
    axes.legend(handles=[Patch(color=colour[b], label=b) for b in browsers], loc="upper left", fontsize=8)
    axes.set_ylabel("MB")
    _date_axis(axes)
    axes.set_title(f"{title}, one line per connection")
    return figure
