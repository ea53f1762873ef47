"""``poolwarden bench analysis``: loading a log into pandas, against ``pandas.read_sql`` over sqlite3.

A log of N events with the mix a pool writes (calls failing on connection and model breakers,
successes summarised, breakers opening, half-opening and closing, recoveries climbing the ladder
under one incident id, memory samples) is built with plain ``sqlite3.executemany`` into a schema
the store created, as a file on disk. Then ``load_events`` and the baseline,
``pandas.read_sql("SELECT * FROM events", sqlite3_connection)``, each run in a fresh Python
process on that file, alternately, so that neither inherits the other's heap or imports;
``load_ratio`` is load_events' time over the baseline's, and each process reports its peak RSS.
A second, larger log (``rss_events``, 3,000,000 by default) is loaded the same way, for
load_events' peak RSS at that size. The first N events of the larger log are the N-event log (the
history is deterministic), so the smaller file is copied from it rather than built again.

Two analyses are timed in this process on a frame it loads itself; outside the timings, the
benchmark checks that what it loaded is a history a pool could have written (see
``_check_history``) and refuses to report figures timed on anything else.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolwarden.storage import open_store
from poolwarden.storage.rows import EVENT_ROW, INSERT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_log", "copy_log", "measure_in_child", "run"]

START = 1_800_000_000.0
CONNECTIONS = 32
MODELS = ("toy-mlp", "matmul")
ERROR_KINDS = ("transport", "timeout", "process_exit", "page_crash", "device_lost", "out_of_memory")
_ERROR_WEIGHTS = (40, 25, 5, 10, 10, 10)
# The store's own rows: position, stream, version, recorded_at, fence, then the event's (EVENT_ROW).
_INSERT = f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
_OCCURRED_AT = EVENT_ROW.index("occurred_at")

# One generated row: the columns the event gives, as EVENT_ROW lists them.
_Row = tuple[Any, ...]


# One encoder for every payload: json.dumps with options builds a new encoder on each call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _row(type: str, at: float, payload: dict[str, Any], **columns: Any) -> _Row:
    """An event's row (:data:`EVENT_ROW`); ``columns`` are ``incident_id`` and the indexed fields, by name."""
    values = {"type": type, "schema_version": 1, "occurred_at": at, "payload": _encode(payload), **columns}
    return tuple(values.get(name) for name in EVENT_ROW)


class _Pool:
    """A deterministic stand-in for a pool's history, event by event (stream, row)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.now = START
        self.connections = [f"conn-{i:02d}" for i in range(CONNECTIONS)]
        self.browser = {c: ("chromium" if i % 4 else "firefox") for i, c in enumerate(self.connections)}
        self.breakers = list(self.connections) + [f"{c}/{m}" for c in self.connections for m in MODELS]
        self.breaker_state = dict.fromkeys(self.breakers, "closed")
        self.incidents = 0

    def _tick(self) -> float:
        self.now += self.random.expovariate(100.0)  # about 100 events a second
        return round(self.now, 6)

    def _ids(self, key: str) -> tuple[str, str | None]:
        connection, _, model = key.partition("/")
        return connection, model or None

    def events(self) -> Iterator[tuple[str, _Row]]:
        """An endless history; the caller takes as many events as it wants."""
        r = self.random
        while True:
            roll = r.random()
            if roll < 0.55:
                yield self._call_failed(r.choice(self.breakers))
            elif roll < 0.75:
                key = r.choice(self.breakers)
                connection, model = self._ids(key)
                ok = {"ok": {"n": r.randint(1, 500), "slow": r.randint(0, 3)}}
                yield (
                    f"breaker/{key}",
                    _row("CallsSummarised", self._tick(), ok, connection_id=connection, model_id=model),
                )
            elif roll < 0.87:
                yield self._breaker_transition(r.choice(self.breakers))
            elif roll < 0.95:
                yield from self._incident(r.choice(self.connections))
            else:
                connection = r.choice(self.connections)
                pss = round(380.0 + r.gauss(0, 25), 1)
                yield (
                    f"connection/{connection}",
                    _row(
                        "MemorySampled",
                        self._tick(),
                        {"pss_mb": pss, "js_heap_mb": round(pss / 8, 1)},
                        connection_id=connection,
                        browser=self.browser[connection],
                    ),
                )

    def _call_failed(self, key: str) -> tuple[str, _Row]:
        r = self.random
        connection, model = self._ids(key)
        duration = round(r.lognormvariate(-3.5, 0.8), 6)
        kind = r.choices(ERROR_KINDS, _ERROR_WEIGHTS)[0]
        payload = {"counted": True, "slow": duration > 0.25, "duration": duration}
        return f"breaker/{key}", _row(
            "CallFailed",
            self._tick(),
            payload,
            connection_id=connection,
            model_id=model,
            error_kind=kind,
            outcome="counted",
            latency_ms=duration * 1000.0,
        )

    def _breaker_transition(self, key: str) -> tuple[str, _Row]:
        r = self.random
        connection, model = self._ids(key)
        state, at = self.breaker_state[key], self._tick()
        if state == "closed" or (state == "half_open" and r.random() < 0.3):
            streak = 1 if state == "closed" else 2
            payload = {"reason": "consecutive_failures", "retry_at": at + 30.0 * streak, "streak": streak}
            kind, to_state = "BreakerOpened", "open"
        elif state == "open":
            payload, kind, to_state = {}, "BreakerHalfOpened", "half_open"
        else:
            payload, kind, to_state = {"ok": {"n": 1}}, "BreakerClosed", "closed"
        self.breaker_state[key] = to_state
        return f"breaker/{key}", _row(
            kind, at, payload, connection_id=connection, model_id=model, from_state=state, to_state=to_state
        )

    def _incident(self, connection: str) -> Iterator[tuple[str, _Row]]:
        r = self.random
        self.incidents += 1
        incident = f"inc-{self.incidents:07d}"
        kind = r.choices(ERROR_KINDS, _ERROR_WEIGHTS)[0]
        ids: dict[str, Any] = {
            "connection_id": connection,
            "browser": self.browser[connection],
            "incident_id": incident,
        }
        stream = f"connection/{connection}"
        fault_at = self._tick()
        start = "restart" if kind == "process_exit" else "ping"
        payload = {"trigger": "heartbeat_missed", "close_code": None, "overall_deadline": fault_at + 120}
        yield (
            stream,
            _row(
                "RecoveryStarted", fault_at, payload, error_kind=kind, from_state="healthy", rung=start, **ids
            ),
        )
        ladder = ("ping", "reconnect", "restart")[("ping", "reconnect", "restart").index(start) :]
        for attempt, rung in enumerate(ladder, 1):
            tried_at = self._tick()
            payload = {"method": rung, "attempt": attempt, "deadline": tried_at + 10, "charged": False}
            yield stream, _row("RungAttempted", tried_at, payload, rung=rung, to_state=f"{rung}ing", **ids)
            took = round(r.lognormvariate(-1.5, 0.6) * 1000.0, 3)
            if r.random() < 0.6:
                yield (
                    stream,
                    _row(
                        "RungSucceeded",
                        self._tick(),
                        {"attempt": attempt},
                        rung=rung,
                        outcome="succeeded",
                        latency_ms=took,
                        **ids,
                    ),
                )
                done = self._tick()
                yield (
                    stream,
                    _row(
                        "RecoveryCompleted",
                        done,
                        {},
                        rung=rung,
                        error_kind=kind,
                        to_state="healthy",
                        outcome="recovered",
                        latency_ms=round((done - fault_at) * 1000.0, 3),
                        **ids,
                    ),
                )
                return
            yield (
                stream,
                _row(
                    "RungFailed",
                    self._tick(),
                    {"attempt": attempt, "phase": "acting", "detail": None},
                    rung=rung,
                    outcome="timed_out",
                    error_kind=kind,
                    latency_ms=took,
                    **ids,
                ),
            )
        gave_up = self._tick()
        yield (
            stream,
            _row(
                "ConnectionQuarantined",
                gave_up,
                {},
                rung="restart",
                error_kind=kind,
                to_state="failed",
                outcome="budget_exhausted",
                latency_ms=round((gave_up - fault_at) * 1000.0, 3),
                **ids,
            ),
        )


async def _create_schema(path: Path) -> None:
    async with open_store(path):
        pass


def build_log(path: Path, events: int, *, seed: int = 6) -> None:
    """Write a log of ``events`` events at ``path`` (a new file): the store's schema, raw inserts."""
    asyncio.run(_create_schema(path))
    versions: dict[str, int] = {}
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        batch: list[tuple[Any, ...]] = []
        history = _Pool(seed).events()
        for position in range(1, events + 1):
            stream, row = next(history)
            version = versions[stream] = versions.get(stream, 0) + 1
            batch.append((position, stream, version, row[_OCCURRED_AT] + 0.001, None, *row))
            if len(batch) == 20_000 or position == events:
                conn.execute("BEGIN")
                conn.executemany(_INSERT, batch)
                conn.execute("COMMIT")
                batch = []
    finally:
        conn.close()


def _check_history(frame: pd.DataFrame, table: pd.DataFrame, timeline: pd.DataFrame) -> None:
    """Raise ``AssertionError`` unless the loaded log is one a pool could have written.

    Positions run 1, 2, ...; each breaker transition starts where the stream's last one left it;
    at most one incident is open (one the log's end cut); every other ended recovered or with
    the budget exhausted. A log of 1,000 events or more has over ten incidents and some breaker
    transitions, so that the analyses timed on it have work to do.
    """
    if frame["position"].tolist() != list(range(1, len(frame) + 1)):
        raise AssertionError("the log's positions are not 1, 2, ...")
    changes = frame[frame["stream"].astype(str).str.startswith("breaker/") & frame["to_state"].notna()]
    for stream, rows in changes.groupby(changes["stream"].astype(str)):
        states = ["closed", *rows["to_state"].astype(str)]
        if rows["from_state"].astype(str).tolist() != states[:-1]:
            raise AssertionError(f"{stream}: a breaker transition does not start where the last one ended")
    if table["open"].sum() > 1:
        raise AssertionError("more than one incident is open at the log's end")
    outcomes = set(table["outcome"].astype(str))
    if not outcomes <= {"recovered", "budget_exhausted", "open"}:
        raise AssertionError(f"incidents ended as {sorted(outcomes)}")
    if len(frame) >= 1000 and (len(table) <= 10 or len(timeline) == 0):
        raise AssertionError("the log has too few incidents or breaker transitions to analyse")


def copy_log(source: Path, path: Path, events: int) -> None:
    """Write at ``path`` (a new file) the store's schema and the first ``events`` events of ``source``."""
    asyncio.run(_create_schema(path))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH DATABASE ? AS source", (f"file:{source}?mode=ro",))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO main.events SELECT * FROM source.events WHERE position <= ?", (events,))
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE source")
    finally:
        conn.close()


def _timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds of ``work()``, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


_CHILD = """
import contextlib, json, resource, sqlite3, sys, time
which, path = sys.argv[1], sys.argv[2]
import pandas as pd
from poolwarden.analysis import load_events
wall, cpu = time.perf_counter(), time.process_time()
if which == "load_events":
    frame = load_events(path)
else:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        frame = pd.read_sql("SELECT * FROM events", connection)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"rows": len(frame), "wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak}))
"""
"""The timed process: imports first (not timed, but in its peak RSS), then one load of the file."""


def measure_in_child(which: str, path: Path) -> dict[str, Any]:
    """Wall and CPU seconds and peak RSS of ``load_events`` (or ``read_sql``) of ``path``, in a new process.

    The peak RSS is the whole process's (``ru_maxrss``): the interpreter, pandas and poolwarden
    imported (about 110 MB), and the load.
    """
    if which not in ("load_events", "read_sql"):
        raise ValueError(f"nothing to measure called {which!r}")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, which, str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {which} process failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def run(events: int = 1_000_000, repeat: int = 3, rss_events: int = 3_000_000) -> dict[str, Any]:
    """Run the analysis benchmark and return its figures.

    ``load_events`` and the baseline run ``repeat`` times each, alternately, each in a fresh
    process, and the best of each counts, so that a busy moment of the machine weighs on both
    alike. ``load_cpu_ratio`` is the same ratio in CPU seconds (of the timed process, both its
    threads), steadier on a shared machine. ``rss_events`` (0 for none) is the size of the log
    whose load gives ``rss_peak_mb``, the peak RSS of a fresh process that loads it.
    """
    # Imported here: the benchmark module is importable without pandas, the CLI lists it anyway.
    from poolwarden.analysis import breaker_timeline, incidents, load_events, recovery_success_rates

    if events < 1 or rss_events < 0 or repeat < 1:
        raise ValueError("events and repeat must be at least 1, rss_events at least 0")
    with tempfile.TemporaryDirectory(prefix="poolwarden-bench-") as folder:
        path, large = Path(folder) / "analysis.db", Path(folder) / "analysis-rss.db"
        build_s, _, _ = _timed(
            lambda: build_log(large if rss_events > events else path, max(events, rss_events))
        )
        if rss_events > events:
            copy_log(large, path, events)
        elif rss_events:
            copy_log(path, large, rss_events)
        loads: list[dict[str, Any]] = []
        baselines: list[dict[str, Any]] = []
        for _ in range(repeat):
            baselines.append(measure_in_child("read_sql", path))
            loads.append(measure_in_child("load_events", path))
        for measured in (*loads, *baselines):
            if measured["rows"] != events:
                raise AssertionError(f"a timed load returned {measured['rows']} events of {events}")
        rss = measure_in_child("load_events", large) if rss_events else None
        if rss is not None and rss["rows"] != rss_events:
            raise AssertionError(f"load_events returned {rss['rows']} events of {rss_events}")
        frame = load_events(path)
        rates_s, _, _ = _timed(lambda: recovery_success_rates(frame))
        timeline_s, _, timeline = _timed(lambda: breaker_timeline(frame))
        incidents_s, _, table = _timed(lambda: incidents(frame))
        size = path.stat().st_size
    _check_history(frame, table, timeline)
    load_s, load_cpu = min(m["wall_s"] for m in loads), min(m["cpu_s"] for m in loads)
    read_sql_s, read_sql_cpu = min(m["wall_s"] for m in baselines), min(m["cpu_s"] for m in baselines)
    result: dict[str, Any] = {
        "events": events,
        "db_bytes": size,
        "build_s": round(build_s, 2),
        "measured": "each load in a fresh process, on a file on disk; best of the runs",
        "runs": repeat,
        "load_events_s": round(load_s, 3),
        "read_sql_s": round(read_sql_s, 3),
        "load_ratio": round(load_s / read_sql_s, 3),
        "load_cpu_s": round(load_cpu, 3),
        "read_sql_cpu_s": round(read_sql_cpu, 3),
        "load_cpu_ratio": round(load_cpu / read_sql_cpu, 3),
        "load_events_runs_s": [round(m["wall_s"], 3) for m in loads],
        "read_sql_runs_s": [round(m["wall_s"], 3) for m in baselines],
        "load_peak_rss_mb": _mb(max(m["peak_rss_bytes"] for m in loads)),
        "read_sql_peak_rss_mb": _mb(max(m["peak_rss_bytes"] for m in baselines)),
        "recovery_success_rates_s": round(rates_s, 3),
        "breaker_timeline_s": round(timeline_s, 3),
        "incidents_s": round(incidents_s, 3),
    }
    if rss is not None:
        result.update(
            rss_events=rss_events,
            rss_load_events_s=round(rss["wall_s"], 3),
            rss_peak_mb=_mb(rss["peak_rss_bytes"]),
        )
    return result
