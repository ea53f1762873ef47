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
from matplotlib.ticker import FuncFormatter, MaxNLocator

from poolwarden.analysis.vocabulary import RUNG_ORDER

__all__ = [
    "LANE_PIXELS",
    "MAX_LANES",
    "STATE_COLOURS",
    "breaker_lanes",
    "failures_over_time",
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


def _date_axis(axes: Axes, begin: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> None:
    """Ticks as times a person reads: ``21:17:30`` within a day (the date in the label), else
    ``12-04 21:17``; the axis says UTC."""
    # matplotlib.dates ships without annotations for these: the ignores below say so, no more.
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    if begin is not None and end is not None and (end - begin) > pd.Timedelta(days=1):
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
        axes.set_xlabel(f"time (UTC), {begin:%Y-%m-%d} to {end:%Y-%m-%d}")
    else:
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
        axes.set_xlabel(f"time (UTC) on {begin:%Y-%m-%d}" if begin is not None else "time (UTC)")


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
    _date_axis(axes, shown["start"].min(), shown["end"].max())
    axes.legend(
        handles=[Patch(color=STATE_COLOURS.get(s, _OTHER_COLOUR), label=s) for s in states],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    total = len(ranking)
    axes.set_title(title if total <= MAX_LANES else f"{title} ({MAX_LANES} of {total}: longest not closed)")
    return figure


_FAILURE_PANELS = (
    ("fault", "Faults injected (by fault)"),
    ("attempt", "Failed attempts (by error kind; a retried request that was served has some)"),
    ("request", "Requests that ended in an error (by error class)"),
)


def failures_over_time(counts: pd.DataFrame, freq: str) -> Figure:
    """Faults, failed attempts and failed requests, each in its own labelled panel, per bucket
    of ``freq``, one line per kind (``failure_counts``' frame)."""
    title = f"What went wrong, over time ({freq} buckets)"
    if counts.empty:
        return no_data(title, "the log holds no faults, failed attempts or failed requests")
    figure = Figure(figsize=(_WIDTH, 7.0), dpi=100, layout="constrained")
    panels = figure.subplots(len(_FAILURE_PANELS), 1, sharex=True)
    begin, end = counts["time"].min(), counts["time"].max() + pd.Timedelta(freq)
    full = pd.date_range(begin, end, freq=freq)
    times = _naive_utc(pd.Series(full))
    for axes, (what, label) in zip(panels, _FAILURE_PANELS, strict=True):
        rows = counts[counts["what"].astype(str) == what]
        total = int(rows["count"].sum())
        axes.set_title(f"{label}: {total:,}", fontsize=10, loc="left")
        if rows.empty:
            axes.text(0.5, 0.5, "none", transform=axes.transAxes, ha="center", va="center", color="#666666")
            axes.set_yticks([])
            continue
        table = rows.pivot_table(index="time", columns="kind", values="count", aggfunc="sum", observed=True)
        table = table.reindex(full, fill_value=0).fillna(0)
        for kind in table.columns:
            axes.step(
                times, table[kind].to_numpy(), where="post", label=f"{kind} ({int(table[kind].sum()):,})"
            )
        axes.set_ylim(bottom=0)
        axes.set_ylabel(f"per {freq}")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _date_axis(panels[-1], begin, end)
    figure.suptitle(title)
    return figure


def recovery_by_rung(rates: pd.DataFrame, incidents: tuple[int, int] | None = None) -> Figure:
    """Share of recovery attempts (rung results) that succeeded, per rung, with the attempts
    counted on each bar; ``incidents`` (recovered, ended) puts the incidents' own rate in the
    title: one incident whose ping failed and whose reconnect worked is 1 of 1 recovered."""
    title = "Rung attempts that succeeded, by rung"
    if incidents is not None:
        recovered, ended = incidents
        title += f" (incidents recovered: {recovered} of {ended})"
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
        data, tick_labels=[f"{r} (n={len(d)})" for r, d in zip(order, data, strict=True)], showfliers=False
    )
    for i, values in enumerate(data, start=1):  # every incident as a point: a box of one says little
        axes.plot(np.full(len(values), float(i)), values, "o", color="#4a90d9", alpha=0.7, markersize=5)
    axes.set_ylim(bottom=0)
    axes.set_ylabel("seconds")
    axes.set_title(title)
    return figure


def latency_by_model(served: pd.DataFrame, loads: pd.DataFrame | None = None) -> Figure:
    """Latency (ms, log scale) of the requests served, per model; beside it, apart, how long
    each model's loads took. Both frames have ``model_id`` and ``latency_ms``."""
    title = "Latency of requests served, by model (ms)"
    loads = loads if loads is not None else served.iloc[0:0]
    if served.empty and loads.empty:
        return no_data(title, "the log holds no served requests and no model loads")
    figure = Figure(figsize=(_WIDTH, 3.6), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(3, 1))
    for axes, frame, what, fliers in (
        (left, served, "served requests", False),
        (right, loads, "model loads", True),
    ):
        if frame.empty:
            axes.text(
                0.5, 0.5, f"no {what}", transform=axes.transAxes, ha="center", va="center", color="#666666"
            )
            axes.set_axis_off()
            continue
        models = frame["model_id"].astype(object).fillna("(none)").astype(str)
        names = sorted(set(models))
        data = [frame["latency_ms"][models == name].to_numpy() for name in names]
        axes.boxplot(
            data,
            tick_labels=[f"{n}\n(n={len(d):,})" for n, d in zip(names, data, strict=True)],
            showfliers=fliers,
        )
        if min(float(np.min(d)) for d in data) > 0:
            axes.set_yscale("log")
            # Plain numbers (5, 20, 50), not 5 x 10^0, on the major and the labelled minor ticks.
            axes.yaxis.set_major_formatter(FuncFormatter(_plain))
            axes.yaxis.set_minor_formatter(FuncFormatter(_plain_minor))
        axes.set_ylabel("ms")
        axes.tick_params(axis="x", labelsize=8)
        axes.tick_params(axis="y", which="both", labelsize=8)
    left.set_title("Requests served (whiskers 1.5 IQR, outliers hidden)", fontsize=10)
    right.set_title("Model loads, apart", fontsize=10)
    figure.suptitle(title)
    return figure


def memory_by_browser(samples: pd.DataFrame) -> Figure:
    """PSS memory (MB) of each connection's browser over time: one colour and one legend entry
    per connection (named with its browser); line style by browser."""
    title = "Browser memory (PSS, MB) over time"
    if samples.empty:
        return no_data(title, "the log holds no memory samples (MemorySampled events)")
    figure, axes = _figure()
    browser_of = samples["browser"].astype(object).fillna("(unknown)").astype(str)
    connection_of = samples["connection_id"].astype(object).fillna("(none)").astype(str)
    styles = {b: _LINE_STYLES[i % len(_LINE_STYLES)] for i, b in enumerate(sorted(set(browser_of)))}
    palette = _palette(connection_of.nunique())
    for i, ((connection, browser), rows) in enumerate(
        samples.groupby([connection_of, browser_of], sort=True)
    ):
        axes.plot(
            _naive_utc(rows["occurred_at"]),
            rows["pss_mb"].to_numpy(),
            color=palette[i % len(palette)],
            linestyle=styles[str(browser)],
            linewidth=1.2,
            marker="." if len(rows) < 30 else None,
            label=f"{connection} ({browser})",
        )
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes.set_ylabel("MB")
    _date_axis(axes, samples["occurred_at"].min(), samples["occurred_at"].max())
    axes.set_title(f"{title}, one line per connection")
    return figure


_LINE_STYLES = ("-", "--", ":", "-.")


def _plain(value: float, _position: object = None) -> str:
    return f"{value:g}"


def _plain_minor(value: float, _position: object = None) -> str:
    # only 2x and 5x of each decade, so that the labels do not overlap
    mantissa = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(mantissa) in (2, 5) else ""


def _palette(n: int) -> list[Any]:
    """``n`` distinct colours: tab10 up to ten, tab20 up to twenty, then a continuous map."""
    from matplotlib import colormaps

    if n <= 10:
        return list(colormaps["tab10"].colors)[:n]  # type: ignore[attr-defined]
    if n <= 20:
        return list(colormaps["tab20"].colors)[:n]  # type: ignore[attr-defined]
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]
