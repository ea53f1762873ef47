"""Measure how long a breaker trip on host A takes to be honoured on host B (issue #12).

Two test hosts (Linux network namespaces with a veth pair each, tests/netns.py; needs root) and
a throwaway PostgreSQL cluster listening on their links (tests/pg_cluster.py). For each poll
interval, a process on each host opens the same durable breakers (``open_breakers`` on the
cluster, reached at the host's link: tests/child_breakers.py); N times, B calls through a new
breaker every millisecond or so while A trips it by hand (``Breakers.trip``, durable when it
returns), and the delay is B's first rejection minus the trip's ``recorded_at`` in the log (its
append; the acknowledgement to A comes a commit later, and is reported too).

Two phases: ``locked``, each trip sent as soon as the last was honoured, which is just after one
of B's polls, so the trip waits nearly a whole poll interval (close to the worst case); and
``random``, A pausing a random fraction of the poll interval before each trip, so that trips
land anywhere in B's poll cycle (the typical case).

Usage: .venv/bin/python scripts/measure_fleet_trip.py [--trips N] [--polls 0.5,0.1] [--fsync];
the last line printed is one JSON object: {poll: {phase: {"from_append": {...}, "from_ack":
{...}}}}, each with the median, p90 and max in seconds and the raw delays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from poolwarden.storage import open_store
from tests import netns
from tests.fleet_support import BREAKER_CHILD, Child, trip_delay
from tests.pg_cluster import Cluster, find_bin


def _summary(delays: list[float]) -> dict[str, Any]:
    ordered = sorted(delays)
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]
    return {
        "median": round(statistics.median(ordered), 4),
        "p90": round(p90, 4),
        "max": round(ordered[-1], 4),
        "n": len(ordered),
        "seconds": [round(d, 4) for d in delays],
    }


async def measure(cluster: Cluster, a: netns.Host, b: netns.Host, poll: float, trips: int) -> dict[str, Any]:
    database = f"trip_{str(poll).replace('.', '_')}"
    admin = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    local = cluster.url_for(database)
    async with open_store(local):
        pass
    logs = Path(tempfile.mkdtemp(prefix="poolwarden-trip-"))
    children = [
        Child(
            host,
            [BREAKER_CHILD, cluster.url_for(database, host=host.gateway), "--poll", str(poll)],
            logs / f"{label}.err",
        )
        for label, host in (("a", a), ("b", b))
    ]
    tripper, watcher = children
    try:
        for child in children:
            assert await child.answer() == ["ready"], child.stderr()
        results: dict[str, Any] = {}
        for phase in ("locked", "random"):
            from_append: list[float] = []
            from_ack: list[float] = []
            for i in range(trips):
                pause = random.uniform(0.0, poll) if phase == "random" else 0.0
                appended, acked = await trip_delay(tripper, watcher, local, f"{phase}-{i}", pause)
                from_append.append(appended)
                from_ack.append(acked)
            results[phase] = {"from_append": _summary(from_append), "from_ack": _summary(from_ack)}
        for child in children:
            assert (await child.ask("exit"))[0] == "report", child.stderr()
            assert child.process.wait(timeout=60) == 0, child.stderr()
    finally:
        for child in children:
            child.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=30, help="trips per poll interval (default 30)")
    parser.add_argument("--polls", default="0.5,0.1", help="poll intervals, comma-separated")
    parser.add_argument("--fsync", action="store_true", help="run the cluster with fsync on")
    args = parser.parse_args()
    # SIGTERM (a timeout's) as Ctrl-C: the namespaces and the cluster are removed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    reason = netns.unavailable()
    bin_dir = find_bin()
    if reason is not None or bin_dir is None:
        sys.exit(reason or "PostgreSQL is not installed (apt-get install postgresql)")
    results: dict[str, Any] = {}
    with netns.hosts(2) as (a, b):
        cluster = Cluster(
            bin_dir,
            fsync=args.fsync,
            listen_addresses=(a.gateway, b.gateway),
            clients=(f"{a.address}/32", f"{b.address}/32"),
        )
        try:
            cluster.start()
            for poll in (float(p) for p in args.polls.split(",")):
                result = await measure(cluster, a, b, poll, args.trips)
                results[str(poll)] = result
                for phase, figures_of in result.items():
                    for what, figures in figures_of.items():
                        print(
                            f"poll {poll:.3f} s, {phase} phase, trip {what.replace('_', ' ')} -> rejected "
                            f"on B: median {figures['median']:.3f} s, p90 {figures['p90']:.3f} s, "
                            f"max {figures['max']:.3f} s (n={figures['n']})",
                            flush=True,
                        )
        finally:
            cluster.remove()
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
