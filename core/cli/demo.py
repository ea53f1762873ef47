"""``poolwarden demo``: a pool under load and injected faults, everything recorded in the log.

Clients send requests for two built-in models (``toy-mlp``, and a 16x16 ``matmul``) and check
every answer against numpy. Faults (a killed browser, a crashed renderer, a hung page, a dropped
socket, a lost GPU device) are injected on a schedule. The pool's breakers and recovery ladder
keep it serving; the summary says what happened, and ``requests_lost`` (requests that got
neither an answer nor a typed error) must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poolwarden.cli.latency import LatencySummary
from poolwarden.errors import ConfigurationError, PoolwardenError
from poolwarden.lifecycle_events import ConnectionQuarantined, RecoveryCompleted, RecoveryStarted
from poolwarden.pool import PoolConfig, ResourcePool
from poolwarden.storage import EventStore
from poolwarden.storage.admin import shown
from poolwarden.storage.base import Durability
from poolwarden.storage.postgres import is_postgres_url
from poolwarden.workers.choice import resolve_workers
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model

__all__ = ["FAULTS", "DemoOptions", "DemoTally", "run_demo"]

FAULTS = ("browser_kill", "renderer_crash", "page_hang", "socket_drop", "device_lost")

MODELS: dict[str, tuple[str, dict[str, int], str]] = {
    # model id: (built-in kind, load options, model type for placement)
    "toy-mlp": ("toy-mlp", {}, "text"),
    "matmul-16": ("matmul", {"k": 16, "n": 16}, "vision"),
}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``poolwarden demo`` was asked to do."""

    workers: str = "auto"
    connections: int = 3
    duration: float = 15.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 7
    durability: Durability = "buffered"
    db: str = "poolwarden.db"
    clients: int | None = None
    pool_name: str = "main"


@dataclass(slots=True)
class DemoTally:
    """What the clients saw, request by request."""

    requests: int = 0
    served: int = 0
    wrong_results: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    backends: Counter[str] = field(default_factory=Counter)
    latencies: LatencySummary = field(default_factory=LatencySummary)
    """Every served request's latency, summarised in constant memory (a long run stays flat)."""


async def _client(pool: ResourcePool, tally: DemoTally, rng: random.Random, until: float) -> None:
    models = list(MODELS)
    while time.monotonic() < until:
        model_id = rng.choice(models)
        kind, options, _ = MODELS[model_id]
        spec = resolve_model(kind, options)
        x = np.asarray([[rng.uniform(-1, 1) for _ in range(spec.input_width)]], dtype=np.float32)
        tally.requests += 1
        try:
            # A watchdog beyond the pool's own deadline: if it fires, the pool left a request hanging.
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result of a request
            # that finished just as the client was cancelled, losing the cancellation (the loop
            # then ran on to its end: a SIGTERMed soak did not stop).
            async with asyncio.timeout(pool.config.default_deadline + 5.0):
                result = await pool.run_inference(model_id, {"input": x})
        except PoolwardenError as error:
            tally.errors_by_kind[type(error).__name__] += 1
            await asyncio.sleep(0.05)  # a refused client backs off a little, as a real one would
            continue
        except TimeoutError:
            tally.lost += 1
            continue
        except Exception as error:  # an untyped error is a bug: counted as lost, and shown
            tally.lost += 1
            print(f"untyped error: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        expected = reference_forward(spec, x)
        if not np.allclose(result.outputs[0], expected, rtol=RTOL, atol=ATOL):
            tally.wrong_results += 1
            tally.errors_by_kind["WrongResult"] += 1
            continue
        tally.served += 1
        tally.backends[result.backend] += 1
        tally.latencies.add(result.latency_ms)


async def _inject_faults(
    pool: ResourcePool, faults: tuple[str, ...], tally: DemoTally, rng: random.Random, duration: float
) -> None:
    if not faults:
        return
    gap = duration / (len(faults) + 1)
    for fault in faults:
        await asyncio.sleep(gap)
        targets = pool.healthy_connections
        if not targets:
            tally.faults.append({"fault": fault, "connection_id": None, "injected": False})
            continue
        target = rng.choice(sorted(targets))
        try:
            at = pool.clock()
            await pool.inject_fault(target, fault)
            tally.faults.append({"fault": fault, "connection_id": target, "injected": True, "at": at})
        except PoolwardenError as error:
            tally.faults.append(
                {"fault": fault, "connection_id": target, "injected": False, "why": str(error)}
            )


async def _recoveries(store: EventStore, since: float) -> dict[str, int]:
    rows = await store.fetch(
        "SELECT rung, COUNT(*) FROM events WHERE type = ? AND occurred_at >= ? GROUP BY rung",
        (RecoveryCompleted.TYPE, since),
    )
    result = {str(rung): int(count) for rung, count in rows}
    quarantined = await store.fetch(
        "SELECT COUNT(*) FROM events WHERE type = ? AND occurred_at >= ?", (ConnectionQuarantined.TYPE, since)
    )
    if quarantined[0][0]:
        result["quarantined"] = int(quarantined[0][0])
    return result


_FAULT_KINDS: dict[str, tuple[str, ...]] = {
    # the error kinds an incident caused by each fault starts with
    "browser_kill": ("process_exit",),
    "renderer_crash": ("page_crash",),
    "page_hang": ("timeout",),
    "socket_drop": ("transport",),
    "device_lost": ("device_lost",),
}
_HEALED_ALONE = {
    "socket_drop": "healed without recovery: the page reconnected its socket by itself",
}


async def _fault_outcomes(store: EventStore, faults: list[dict[str, Any]], since: float) -> None:
    """Say, for each injected fault, what became of it: the incident it started and how that
    ended, or that none was needed (a dropped socket the page reconnects by itself)."""
    started = await store.fetch(
        "SELECT connection_id, occurred_at, incident_id, error_kind FROM events"
        " WHERE type = ? AND occurred_at >= ?"
        " ORDER BY occurred_at",
        (RecoveryStarted.TYPE, since),
    )
    ended = {
        str(incident): (str(type_), rung)
        for type_, incident, rung in await store.fetch(
            "SELECT type, incident_id, rung FROM events WHERE type IN (?, ?) AND occurred_at >= ?",
            (RecoveryCompleted.TYPE, ConnectionQuarantined.TYPE, since),
        )
    }
    injected = [f for f in faults if f["injected"]]
    incident_of: dict[int, str] = {}
    for connection_id, at, incident, kind in started:
        # An incident belongs to a fault injected on its connection before it, still unclaimed:
        # the one whose kind it names if any (a hung page is noticed late, maybe after the next
        # fault), else the latest.
        candidates = [
            i
            for i, f in enumerate(injected)
            if f["connection_id"] == connection_id and f["at"] - 0.5 <= at and i not in incident_of
        ]
        if not candidates:
            continue
        matching = [i for i in candidates if kind in _FAULT_KINDS.get(injected[i]["fault"], ())]
        incident_of[(matching or candidates)[-1]] = str(incident)
    for i, fault in enumerate(injected):
        incident_id = incident_of.get(i)
        shared = ""
        if incident_id is None:
            if fault["fault"] in _HEALED_ALONE:  # its usual end: no incident was needed
                fault["outcome"] = _HEALED_ALONE[fault["fault"]]
                continue
            # A fault noticed no sooner than the next one on its connection (a hung page answers
            # no heartbeat for a while) is recovered by that one's incident.
            on_it = fault["connection_id"]
            later = [j for j in incident_of if j > i and injected[j]["connection_id"] == on_it]
            if not later:
                fault["outcome"] = "no recovery was needed"
                continue
            incident_id = incident_of[min(later)]
            shared = f" (no incident of its own: the {injected[min(later)]['fault']}'s after it)"
        type_, rung = ended.get(incident_id, ("", None))
        if type_ == RecoveryCompleted.TYPE:
            fault["outcome"] = f"recovered by {rung}{shared}"
        elif type_ == ConnectionQuarantined.TYPE:
            fault["outcome"] = f"quarantined{shared}"
        else:
            fault["outcome"] = f"recovery still under way{shared}"


@contextlib.contextmanager
def demo_logging(console: Any | None) -> Iterator[None]:
    """While the demo runs, poolwarden's log records (the pages' console among them, on
    ``poolwarden.worker``) go through one handler: the live display's rich ``console``, which
    prints them above the table it redraws, or plain lines on stderr when there is none. Without
    it, Python's last-resort handler wrote them into the middle of the live table."""
    import logging

    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("poolwarden")
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _progress(pool: ResourcePool, tally: DemoTally, recoveries: dict[str, int], elapsed: float) -> Any:
    from rich.table import Table

    table = Table(title=f"poolwarden demo - {elapsed:5.1f} s", show_header=False, expand=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("requests", f"{tally.requests:,} ({tally.served:,} served, checked against numpy)")
    table.add_row("errors", ", ".join(f"{k} {v}" for k, v in tally.errors_by_kind.most_common()) or "none")
    table.add_row(
        "faults",
        ", ".join(
            f"{f['fault']}->{f['connection_id']}" if f["injected"] else f"{f['fault']} (not injected)"
            for f in tally.faults
        )
        or "none yet",
    )
    table.add_row("recoveries", ", ".join(f"{k} {v}" for k, v in recoveries.items()) or "none yet")
    states = Counter(str(pool.registry.connection(c).state) for c in pool.members)
    table.add_row(
        "connections", ", ".join(f"{m.connection_id} {m.state.value}" for m in pool.members.values())
    )
    table.add_row("breakers", ", ".join(f"{k} {v}" for k, v in states.items()))
    return table


async def run_demo(options: DemoOptions, *, live: bool = True) -> dict[str, Any]:
    """Run the demo and return its summary (the JSON ``poolwarden demo --json`` prints)."""
    unknown = set(options.faults) - set(FAULTS)
    if unknown:
        raise PoolwardenError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    # Refused before anything is printed or started.
    if options.connections < 1:
        raise ConfigurationError(f"a demo needs at least 1 connection, not {options.connections}")
    if not options.duration > 0 or options.duration == float("inf"):
        raise ConfigurationError(f"a demo runs for a number of seconds above 0, not {options.duration}")
    kind, why = resolve_workers(options.workers)
    if is_postgres_url(options.db):
        db_path = shown(options.db)  # a URL stays one, printed without its password
    else:
        db_path = await asyncio.to_thread(lambda: str(Path(options.db).resolve()))
    print(f"poolwarden demo: {why}; log in {db_path}", file=sys.stderr)
    config = PoolConfig(
        name=options.pool_name,
        connections=options.connections,
        workers=(kind,),
        db=options.db,
        durability=options.durability,
        default_deadline=10.0,
        hooks=kind != "simulated",
        heartbeat_interval=1.0,
    )
    rng = random.Random(options.seed)
    tally = DemoTally()
    started_at = time.time()
    console = None
    if live and sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True)
    with demo_logging(console):
        async with ResourcePool(config) as pool:
            for model_id, (model_kind, load_options, model_type) in MODELS.items():
                await pool.load_model(model_id, kind=model_kind, options=load_options, model_type=model_type)
            until = time.monotonic() + options.duration
            clients = options.clients or 4 * options.connections
            work = [
                asyncio.create_task(_client(pool, tally, random.Random(rng.random()), until))
                for _ in range(clients)
            ]
            work.append(
                asyncio.create_task(_inject_faults(pool, options.faults, tally, rng, options.duration))
            )
            store = pool.store
            recoveries: dict[str, int] = {}
            display = None
            if console is not None:
                from rich.live import Live

                display = Live(console=console, refresh_per_second=4)
                display.start()
            try:
                while not all(task.done() for task in work):
                    await asyncio.wait(work, timeout=0.5)
                    await pool.flush()
                    recoveries = await _recoveries(store, started_at)
                    elapsed = options.duration - max(0.0, until - time.monotonic())
                    if display is not None:
                        display.update(_progress(pool, tally, recoveries, elapsed))
                for task in work:
                    task.result()
                # Let recoveries still under way finish, so the summary shows how they ended.
                for member in list(pool.members.values()):
                    if member.driver is not None:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(30):
                                await member.driver.wait_for(lambda m: m.incident_id is None)
                await pool.flush()
                recoveries = await _recoveries(store, started_at)
                await _fault_outcomes(store, tally.faults, started_at)
            finally:
                if display is not None:
                    display.stop()
            breakers = sorted(
                ({"key": b.key, "state": str(b.state)} for b in pool.registry), key=lambda b: b["key"]
            )
            connections = [
                {"connection_id": m.connection_id, "browser": m.browser, "state": m.state.value}
                for m in pool.members.values()
            ]
    latencies = tally.latencies
    return {
        "workers": kind,
        "connections": options.connections,
        "duration_s": options.duration,
        "db": db_path,
        "requests": tally.requests,
        "served": tally.served,
        "requests_lost": tally.requests - tally.served - sum(tally.errors_by_kind.values()),
        "wrong_results": tally.wrong_results,
        "errors_by_kind": dict(tally.errors_by_kind),
        "faults": tally.faults,
        "recoveries": recoveries,
        "breakers": breakers,
        "final_connections": connections,
        "backends": dict(tally.backends),
        "latency_ms": {
            "p50": _round(latencies.percentile(50)),
            "p99": _round(latencies.percentile(99)),
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run summary table, on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="poolwarden demo: summary")
    table.add_column("what", style="bold")
    table.add_column("figure")
    table.add_row("workers", f"{summary['connections']} x {summary['workers']}")
    table.add_row("requests", f"{summary['requests']:,}")
    table.add_row("served (checked against numpy)", f"{summary['served']:,}")
    table.add_row("requests lost", str(summary["requests_lost"]))
    table.add_row(
        "errors by kind", ", ".join(f"{k}: {v}" for k, v in summary["errors_by_kind"].items()) or "none"
    )
    injected = [f for f in summary["faults"] if f["injected"]]
    missed = [f for f in summary["faults"] if not f["injected"]]
    table.add_row(
        "faults injected",
        "\n".join(
            f"{f['fault']} on {f['connection_id']}" + (f": {f['outcome']}" if f.get("outcome") else "")
            for f in injected
        )
        or "none",
    )
    if missed:
        table.add_row(
            "faults not injected",
            "\n".join(
                f"{f['fault']}: {f.get('why', 'no serving connection to inject it in')}" for f in missed
            ),
        )
    table.add_row(
        "recoveries by rung", ", ".join(f"{k}: {v}" for k, v in summary["recoveries"].items()) or "none"
    )
    table.add_row("backends that ran", ", ".join(f"{k}: {v}" for k, v in summary["backends"].items()))
    table.add_row("latency p50 / p99 ms", f"{summary['latency_ms']['p50']} / {summary['latency_ms']['p99']}")
    table.add_row(
        "breakers not closed",
        ", ".join(f"{b['key']}: {b['state']}" for b in summary["breakers"] if b["state"] != "closed")
        or "none",
    )
    table.add_row("event log", summary["db"])
    Console().print(table)
