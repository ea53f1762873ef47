"""``poolwarden bench breaker``: what a circuit breaker costs a call, and what restoring many costs.

In one process:

* ``bare_ns``: a call to a trivial function; ``protected_ns``: the same call between ``allow()``
  and ``record_success()`` of a closed breaker; ``overhead_ns`` is the difference (target <= 500).
* ``idle_cpu_pct``: the share of a core a durable driver takes with ``idle_breakers`` breakers
  alive and nothing happening (its loop flushing and polling), measured in its own process
  (:mod:`poolwarden.bench.idle`); target < 1 %.
* ``guard_ns``: the same call through the ``circuit(name)`` decorator (no slow-call rule, so
  untimed: the fast path), and ``guard_overhead_ns`` over the bare call (target <= 150 ns);
  ``guard_timed_ns`` / ``guard_timed_overhead_ns`` with ``time_calls=True`` (two clock reads a
  call, what a slow-call rule needs). ``bare_again_ns`` times the bare call again afterwards:
  far from ``bare_ns``, the machine's load changed during the run.
* ``create_10k_s``: creating 10,000 breakers (target <= 1.0); ``bytes_per_breaker`` by tracemalloc.
* ``restore_*``: a synthetic log of ``restore_events`` events over ``restore_breakers`` breakers
  (random traffic, snapshots every ``snapshot_every`` events per stream as the driver takes them),
  folded back in memory three ways: from the whole log (``restore_full_s``, and its ratio to
  ``restore_json_baseline_s``, the time to merely decode every payload once), from the snapshots
  plus their tails (``restore_from_snapshots_s``: a start after a crash), and from snapshots
  at every stream's head (``restore_after_clean_shutdown_s``: the driver snapshots all at exit).
  ``restore_exact`` says all three equal the live breakers.
* ``restore_file_*``: the same log written to an SQLite file, then restored through the real path
  (``DurableBreakers.restore`` on ``open_store``, a fresh process, the file on disk:
  ``restore_file_s``) against raw sqlite3 making the same reads in a fresh process
  (``raw_same_reads_s``), and their ratio (:mod:`poolwarden.bench.restore_file`).
"""

from __future__ import annotations

import gc
import json as jsonlib
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any

from poolwarden.aio.guard import Breakers
from poolwarden.bench import restore_file
from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import BreakerEvent, stream_of
from poolwarden.clock import FakeClock
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.policy import BreakerLevel, BreakerPolicy, ErrorKind, OpenBackoff, SlidingWindow
from poolwarden.replay import restore_all

__all__ = ["run"]

CALLS = 1_000_000
REPEATS = 5


class _MemoryLog:
    """Breaker events recorded in memory as a store numbers them (per-stream versions, global positions);
    the snapshots the durable driver would have taken, by stream."""

    def __init__(self) -> None:
        self.records: list[RecordedEvent] = []
        self.versions: dict[str, int] = {}
        self.snapshots: dict[str, Snapshot] = {}

    def add(self, events: Iterable[BreakerEvent]) -> None:
        """Record ``events`` as appended, in order."""
        for event in events:
            version = self.versions.get(event.stream, 0) + 1
            self.versions[event.stream] = version
            self.records.append(
                RecordedEvent.of(
                    event.to_new_event(),
                    position=len(self.records) + 1,
                    stream=event.stream,
                    version=version,
                    recorded_at=event.at,
                )
            )


def _synthetic_traffic(
    n_breakers: int, n_events: int, *, seed: int, snapshot_every: int
) -> tuple[dict[str, CircuitBreaker], _MemoryLog, FakeClock]:
    """Drive ``n_breakers`` connection breakers with random calls until their log holds ``n_events``.

    About 45% of calls fail (transport, timeout, page crash, or an input error that never
    counts). Streams are snapshotted every ``snapshot_every`` events, as the durable driver does it.
    Returns the live breakers (checkpointed, nothing pending), the log and the clock.
    """
    rng = random.Random(seed)
    clock = FakeClock(1_700_000_000.0)
    policy = BreakerPolicy(  # both rules, as before a policy had only the rules it names
        consecutive_failures=5,
        failure_rate=0.5,
        window=SlidingWindow(size=20, min_calls=10),
        backoff=OpenBackoff(base=5.0, cap=60.0),
    )
    breakers = {
        f"conn-{i}": CircuitBreaker(
            f"conn-{i}",
            policy,
            clock=clock,
            rng=rng,
            level=BreakerLevel.CONNECTION,
            connection_id=f"conn-{i}",
        )
        for i in range(n_breakers)
    }
    keys = list(breakers)
    log = _MemoryLog()
    kinds = (ErrorKind.TRANSPORT, ErrorKind.TIMEOUT, ErrorKind.INPUT, ErrorKind.PAGE_CRASH)

    def persist(breaker: CircuitBreaker) -> None:
        stream = stream_of(breaker.key)
        due = (
            log.versions.get(stream, 0) + breaker.pending_events
            >= (log.snapshots[stream].version if stream in log.snapshots else 0) + snapshot_every
        )
        if due:
            breaker.checkpoint()
        log.add(breaker.drain_events())
        if due:
            log.snapshots[stream] = Snapshot(stream, log.versions[stream], breaker.snapshot(), clock())

    while len(log.records) < n_events:
        clock.advance(rng.random() * 0.01)
        breaker = breakers[keys[rng.randrange(n_breakers)]]
        decision = breaker.allow()
        if decision:
            if rng.random() < 0.55:
                breaker.record_success(decision.permit, rng.random())
            else:
                breaker.record_failure(kinds[rng.randrange(4)], rng.random(), decision.permit)
        if rng.random() < 0.001:
            breaker.checkpoint()
        if breaker.has_events:
            persist(breaker)
    for breaker in breakers.values():
        breaker.checkpoint()
        log.add(breaker.drain_events())
    return breakers, log, clock


def _best_ns(loop: Callable[[int], float], calls: int) -> float:
    return min(loop(calls) for _ in range(REPEATS)) / calls


def _work() -> int:
    return 1


def _bare(calls: int) -> float:
    work = _work
    started = time.perf_counter_ns()
    for _ in range(calls):
        work()
    return time.perf_counter_ns() - started


def _protected_loop(breaker: CircuitBreaker) -> Callable[[int], float]:
    def loop(calls: int) -> float:
        work = _work
        allow = breaker.allow
        record = breaker.record_success
        started = time.perf_counter_ns()
        for _ in range(calls):
            decision = allow()
            work()
            record(decision.permit)
        return time.perf_counter_ns() - started

    return loop


def _guard_loop(guarded: Callable[[], int]) -> Callable[[int], float]:
    def loop(calls: int) -> float:
        started = time.perf_counter_ns()
        for _ in range(calls):
            guarded()
        return time.perf_counter_ns() - started

    return loop


def _create(count: int) -> float:
    clock = FakeClock()
    rng = random.Random(0)
    keys = [f"conn-{i}/model-{i % 7}" for i in range(count)]
    started = time.perf_counter()
    made = [CircuitBreaker(key, clock=clock, rng=rng) for key in keys]
    elapsed = time.perf_counter() - started
    del made
    return elapsed


def _bytes_per_breaker(count: int) -> int:
    clock = FakeClock()
    rng = random.Random(0)
    keys = [f"conn-{i}/model-{i % 7}" for i in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    made = [CircuitBreaker(key, clock=clock, rng=rng) for key in keys]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del made
    return round((after - before) / count)


def _restore(n_breakers: int, n_events: int, snapshot_every: int) -> dict[str, Any]:
    breakers, log, clock = _synthetic_traffic(n_breakers, n_events, seed=1, snapshot_every=snapshot_every)
    figures = _restore_in_memory(breakers, log, clock, n_breakers, snapshot_every)
    figures.update(restore_file.measure(log.records, log.snapshots))
    return figures


def _restore_in_memory(
    breakers: dict[str, CircuitBreaker],
    log: _MemoryLog,
    clock: FakeClock,
    n_breakers: int,
    snapshot_every: int,
) -> dict[str, Any]:
    policy = next(iter(breakers.values())).policy
    # The million-record log is held in memory only to feed the fold; freezing it keeps the
    # cyclic GC from re-scanning it on every collection (that alone doubles the per-event time).
    gc.collect()
    gc.freeze()
    try:
        return _timed_restores(breakers, log, clock, policy, n_breakers, snapshot_every)
    finally:
        gc.unfreeze()


def _timed_restores(
    breakers: dict[str, CircuitBreaker],
    log: _MemoryLog,
    clock: FakeClock,
    policy: BreakerPolicy,
    n_breakers: int,
    snapshot_every: int,
) -> dict[str, Any]:
    def policy_for(key: str, level: BreakerLevel) -> BreakerPolicy:
        return policy

    rng = random.Random(0)  # restored breakers draw nothing here; the fold never does

    # The baseline: decoding every payload once, which any fold of this log must do at least.
    loads = jsonlib.loads
    started = time.perf_counter()
    for record in log.records:
        loads(record.payload_json)
    json_s = time.perf_counter() - started
    started = time.perf_counter()
    full = restore_all(log.records, policy_for=policy_for, clock=clock, rng=rng, catch_up=False)
    full_s = time.perf_counter() - started
    tail = [
        r for r in log.records if r.stream not in log.snapshots or r.version > log.snapshots[r.stream].version
    ]
    started = time.perf_counter()
    quick = restore_all(
        tail, policy_for=policy_for, snapshots=log.snapshots, clock=clock, rng=rng, catch_up=False
    )
    quick_s = time.perf_counter() - started
    # A clean shutdown snapshots every breaker at its head: the next start reads no tail at all.
    heads = {
        stream_of(key): Snapshot(
            stream_of(key), log.versions.get(stream_of(key), 0), live.snapshot(), clock()
        )
        for key, live in breakers.items()
    }
    started = time.perf_counter()
    clean = restore_all([], policy_for=policy_for, snapshots=heads, clock=clock, rng=rng, catch_up=False)
    clean_s = time.perf_counter() - started
    exact = all(
        full[key].snapshot() == live.snapshot() == quick[key].snapshot() == clean[key].snapshot()
        for key, live in breakers.items()
    )
    return {
        "restore_events": len(log.records),
        "restore_breakers": n_breakers,
        "restore_full_s": round(full_s, 3),
        "restore_json_baseline_s": round(json_s, 3),
        "restore_full_ratio": round(full_s / json_s, 2),
        "restore_snapshot_every": snapshot_every,
        "restore_tail_events": len(tail),
        "restore_from_snapshots_s": round(quick_s, 3),
        "restore_after_clean_shutdown_s": round(clean_s, 3),
        "restore_exact": exact,
    }


def run(
    json: bool = False,
    *,
    calls: int = CALLS,
    restore_events: int = 1_000_000,
    restore_breakers: int = 10_000,
    snapshot_every: int = 10,
    idle_breakers: int = 100_000,
) -> dict[str, Any]:
    """Run the breaker benchmark and return its figures (progress goes to stderr unless ``json``)."""

    def say(message: str) -> None:
        if not json:
            print(message, file=sys.stderr)

    say(f"timing {calls:,} bare and protected calls, best of {REPEATS} ...")
    breaker = CircuitBreaker("bench", clock=FakeClock(), rng=random.Random(0))
    bare_ns = _best_ns(_bare, calls)
    protected_ns = _best_ns(_protected_loop(breaker), calls)
    guarded = Breakers(clock=FakeClock()).circuit("bench")(_work)
    guard_ns = _best_ns(_guard_loop(guarded), calls // 4)
    timed = Breakers(clock=FakeClock(), time_calls=True).circuit("bench")(_work)
    guard_timed_ns = _best_ns(_guard_loop(timed), calls // 4)
    bare_again_ns = _best_ns(_bare, calls)  # the baseline again after: a machine that got busier shows
    say("creating 10,000 breakers ...")
    create_10k_s = min(_create(10_000) for _ in range(3))
    result: dict[str, Any] = {
        "bare_ns": round(bare_ns, 1),
        "protected_ns": round(protected_ns, 1),
        "overhead_ns": round(protected_ns - bare_ns, 1),
        "protected_ratio": round(protected_ns / bare_ns, 2),
        "guard_ns": round(guard_ns, 1),
        "guard_overhead_ns": round(guard_ns - min(bare_ns, bare_again_ns), 1),
        "guard_timed_ns": round(guard_timed_ns, 1),
        "guard_timed_overhead_ns": round(guard_timed_ns - min(bare_ns, bare_again_ns), 1),
        "bare_again_ns": round(bare_again_ns, 1),
        "create_10k_s": round(create_10k_s, 4),
        "bytes_per_breaker": _bytes_per_breaker(10_000),
    }
    if idle_breakers:
        say(f"idling a durable driver with {idle_breakers:,} breakers for 10 s, in its own process ...")
        measured = subprocess.run(
            [sys.executable, "-m", "poolwarden.bench.idle", str(idle_breakers), "10"],
            capture_output=True,
            text=True,
            check=True,
        )
        result.update(jsonlib.loads(measured.stdout.splitlines()[-1]))
    if restore_events:
        say(f"generating {restore_events:,} events over {restore_breakers:,} breakers, then restoring ...")
        result.update(_restore(restore_breakers, restore_events, snapshot_every))
    return result
