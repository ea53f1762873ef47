"""``poolwarden soak``: a long run under load and a fault every few seconds, checked to stay flat.

Clients send the demo's requests (each answer checked against numpy) for ``duration`` seconds
while a fault (the demo's five, in turn) is injected on a serving connection every
``fault_every`` seconds. After a warm-up (a tenth of the run: the log's file and SQLite's page
caches, the allocator's arenas fill over minutes, not seconds), and again at the end, it reads
this process's RSS and the browsers' PSS (the median of a few readings, as browsers restarted by
faults come and go), and every twelfth of the run it samples RSS (``rss_series_mb``, to tell a
leak's line from a curve that levels off); after
the pool closes it counts this process's child processes left alive (leaked). The run holds when
``lost`` and ``wrong_results`` are 0, no process leaked, and RSS grew by at most 5 % after the
warm-up (the browsers' PSS growth is reported beside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from poolwarden.cli.demo import FAULTS, MODELS, DemoTally, _client
from poolwarden.errors import PoolwardenError
from poolwarden.lifecycle_events import ConnectionQuarantined, RecoveryCompleted
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.workers.choice import resolve_workers

__all__ = ["MAX_RSS_GROWTH", "run_soak"]

MAX_RSS_GROWTH = 0.05
"""The most this process's RSS may grow from the end of the warm-up to the end of the run."""

_READINGS = 3
"""Readings whose median makes one memory figure."""


async def _memory(pool: ResourcePool) -> tuple[float, float]:
    """This process's RSS and the browsers' total PSS, in MB (read in threads)."""
    rss = await asyncio.to_thread(lambda: psutil.Process(os.getpid()).memory_info().rss)
    pss = 0
    for member in list(pool.members.values()):
        with contextlib.suppress(Exception):  # a browser restarting has none
            pss += await member.handle.pss_bytes() or 0
    return rss / 2**20, pss / 2**20


async def _sample_rss(series: list[tuple[float, float]], every: float, until: float, began: float) -> None:
    """Append ``(seconds since start, RSS in MB)`` to ``series`` every ``every`` seconds until ``until``."""
    process = psutil.Process(os.getpid())
    while time.monotonic() < until:
        rss = await asyncio.to_thread(lambda: process.memory_info().rss)
        series.append((time.monotonic() - began, rss / 2**20))
        await asyncio.sleep(every)


async def _median_memory(pool: ResourcePool, gap: float) -> tuple[float, float]:
    readings = []
    for index in range(_READINGS):
        if index:
            await asyncio.sleep(gap)
        readings.append(await _memory(pool))
    return statistics.median(r[0] for r in readings), statistics.median(r[1] for r in readings)


async def _faults(
    pool: ResourcePool, every: float, until: float, rng: random.Random, injected: Counter[str]
) -> None:
    for fault in _cycle(FAULTS):
        await asyncio.sleep(every)
        if time.monotonic() >= until:
            return
        targets = sorted(pool.healthy_connections)
        if not targets:
            injected["skipped"] += 1
            continue
        try:
            await pool.inject_fault(rng.choice(targets), fault)
            injected[fault] += 1
        except PoolwardenError:
            injected["failed_to_inject"] += 1


def _cycle(items: tuple[str, ...]) -> Any:
    while True:
        yield from items


async def run_soak(
    *,
    workers: str = "auto",
    connections: int = 2,
    duration: float = 3600.0,
    fault_every: float = 10.0,
    warmup: float | None = None,
    db: str = "soak.db",
    seed: int = 7,
) -> dict[str, Any]:
    """Run the soak and return its report (the JSON ``poolwarden soak --json`` prints)."""
    kind, why = resolve_workers(workers)
    warmup = duration / 10 if warmup is None else warmup
    db_path = await asyncio.to_thread(lambda: str(Path(db).resolve()))
    print(
        f"poolwarden soak: {why}; {duration:g} s, a fault every {fault_every:g} s; log in {db_path}",
        file=sys.stderr,
    )
    config = PoolConfig(
        connections=connections, workers=(kind,), db=db, hooks=kind != "simulated", heartbeat_interval=1.0
    )
    rng = random.Random(seed)
    tally = DemoTally()
    injected: Counter[str] = Counter()
    started_at = time.time()
    began = time.monotonic()
    async with ResourcePool(config) as pool:
        for model_id, (model_kind, options, model_type) in MODELS.items():
            await pool.load_model(model_id, kind=model_kind, options=options, model_type=model_type)
        until = time.monotonic() + duration
        work = [
            asyncio.create_task(_client(pool, tally, random.Random(rng.random()), until))
            for _ in range(4 * connections)
        ]
        faults = asyncio.create_task(_faults(pool, fault_every, until, rng, injected))
        series: list[tuple[float, float]] = []
        sampling = asyncio.create_task(_sample_rss(series, duration / 12, until, began))
        try:
            await asyncio.sleep(warmup)
            rss_start, pss_start = await _median_memory(pool, 1.0)
            # The end readings are taken while the load still runs, as the start ones were.
            await asyncio.sleep(max(0.0, until - time.monotonic() - 2 * _READINGS))
            rss_end, pss_end = await _median_memory(pool, 1.0)
            await asyncio.gather(*work)
        finally:
            faults.cancel()
            sampling.cancel()
            for task in work:
                task.cancel()
            await asyncio.gather(faults, sampling, *work, return_exceptions=True)
        for member in list(pool.members.values()):  # let recoveries under way end
            if member.driver is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        await member.driver.wait_for(lambda m: m.incident_id is None)
        await pool.flush()
        rows = await pool.store.fetch(
            "SELECT rung, COUNT(*) FROM events WHERE type = ? AND occurred_at >= ? GROUP BY rung",
            (RecoveryCompleted.TYPE, started_at),
        )
        quarantined = await pool.store.fetch(
            "SELECT COUNT(*) FROM events WHERE type = ? AND occurred_at >= ?",
            (ConnectionQuarantined.TYPE, started_at),
        )
        live = set(pool.members)
        not_closed = sorted(b.key for b in pool.registry if str(b.state) != "closed")
        # A quarantined connection is replaced by a new one; its breakers stay as they ended.
        breakers_open = [key for key in not_closed if key.split("/", 1)[0] in live]
        retired_open = len(not_closed) - len(breakers_open)
    children = await asyncio.to_thread(lambda: psutil.Process(os.getpid()).children(recursive=True))
    leaked = [child.pid for child in children if child.is_running()]
    lost = tally.requests - tally.served - sum(tally.errors_by_kind.values())
    rss_growth = (rss_end - rss_start) / rss_start if rss_start else 0.0
    pss_growth = (pss_end - pss_start) / pss_start if pss_start else None
    latencies = tally.latencies
    report: dict[str, Any] = {
        "workers": kind,
        "connections": connections,
        "duration_s": round(time.monotonic() - began, 1),
        "db": db_path,
        "requests": tally.requests,
        "served": tally.served,
        "lost": lost,
        "wrong_results": tally.wrong_results,
        "errors_by_kind": dict(tally.errors_by_kind),
        "faults": dict(injected),
        "recoveries": {str(rung): int(n) for rung, n in rows}
        | ({"quarantined": int(quarantined[0][0])} if quarantined[0][0] else {}),
        "breakers_not_closed": breakers_open,
        "retired_breakers_not_closed": retired_open,
        "rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1), "growth": round(rss_growth, 4)},
        "rss_series_mb": [[round(at, 1), round(mb, 1)] for at, mb in series],
        "browser_pss_mb": {
            "start": round(pss_start, 1),
            "end": round(pss_end, 1),
            "growth": None if pss_growth is None else round(pss_growth, 4),
        },
        "leaked_processes": leaked,
        "latency_ms": {
            "p50": _round(latencies.percentile(50)),
            "p99": _round(latencies.percentile(99)),
            "max": _round(latencies.max if latencies.count else None),
        },
    }
    report["ok"] = lost == 0 and tally.wrong_results == 0 and not leaked and rss_growth <= MAX_RSS_GROWTH
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
