"""``poolwarden bench crash``: SIGKILL writers at random points; nothing they acknowledged is lost.

One SQLite file, and one child process at a time writing to it, killed with SIGKILL at a random
moment after it is ready (mid-append, mid-commit, between two appends: wherever it happens to be).
Children alternate between two kinds:

- an **appender**: ``append(durability="sync")`` of one event at a time to four streams of its
  own, with expected versions; after each append returns it writes ``A stream version id`` to its
  stdout (a pipe to this process);
- a **breaker process**: :func:`~poolwarden.aio.guard.open_breakers` on the file, four named
  breakers shared by every breaker process in turn; it first writes the state each breaker was
  restored to (``R``), then in a loop changes one breaker (calls through its guard that trip it,
  or a durable override: ``force_open``, ``disable``, ``metrics_only``, ``reset``), writes the
  state it is about to make durable (``P``), makes it durable (``flush()``, or the override, which
  returns once it is in the log) and acknowledges (``A``).

After each kill this process checks:

- ``lost``: acknowledged appends whose event is not in the log (stream, version and id);
- ``integrity_failures``: ``PRAGMA integrity_check`` answering anything but ``ok``;
- ``restore_mismatches``: breakers that the next breaker process (a fresh interpreter) restored to
  a state other than the one the killed process last acknowledged, or the one it was making
  durable when it was killed (an unacknowledged flush may have committed). A last process, not
  killed, restores after the final kill.

The state compared is what the log decides: the breaker's state, epoch, manual override, when it
opened, when it may retry and its re-open streak (counts of unsummarised successes are not events,
by design). Breakers open for an hour, so that no wait passes during the run.

A child is run as ``python -m poolwarden.bench.crash child KIND DB NAME SEED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from poolwarden.errors import CircuitOpen, PoolwardenError

__all__ = ["run"]

NAMES = ("svc-0", "svc-1", "svc-2", "svc-3")
"""The breakers every breaker process shares."""

OVERRIDES = ("force_open", "disable", "metrics_only", "reset")

PROJECTION = ("state", "epoch", "override", "opened_at", "retry_at", "streak")
"""The parts of a breaker's snapshot that its events decide, compared after a restore."""

READY_TIMEOUT = 60.0
"""Seconds a child may take to open the file and say it is ready."""

MAX_DELAY = 0.25
"""A child is killed at a time drawn uniformly from 0 to this many seconds after it is ready."""


# --- the children ----------------------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")  # one short write: a pipe takes it whole, or not at all
    sys.stdout.flush()


async def _appender(db: str, name: str) -> None:
    from poolwarden.events import NewEvent
    from poolwarden.storage import open_store

    async with open_store(db, durability="sync") as store:
        streams = [f"crash/{name}/{i}" for i in range(4)]
        versions = {stream: await store.stream_version(stream) for stream in streams}
        _say("ready")
        n = 0
        while True:
            stream = streams[n % 4]
            event_id = f"{name}-{n}"
            event = NewEvent(type="CrashProbe", occurred_at=time.time(), payload={"id": event_id})
            receipt = await store.append(
                stream, [event], expected_version=versions[stream], durability="sync"
            )
            result = await receipt
            versions[stream] = result.last_version
            _say(f"A {stream} {result.last_version} {event_id}")
            n += 1


def _projection(snapshot: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(snapshot))
    return {key: data[key] for key in PROJECTION}


class _Refused(Exception):
    """The call a guarded function made failed (as the bench decided)."""


async def _breaker_process(db: str, name: str, seed: int, *, restore_only: bool) -> None:
    from poolwarden.aio.guard import open_breakers
    from poolwarden.breaker import CircuitBreaker
    from poolwarden.clock import system_clock
    from poolwarden.policy import BreakerPolicy, OpenBackoff

    rng = random.Random(seed)
    policy = BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=3600.0, cap=7200.0))
    async with open_breakers(db, policy=policy, rng=random.Random(seed), flush_interval=0.05) as breakers:
        restored = {key: _projection(breakers.breaker(key).snapshot()) for key in NAMES}
        _say("R " + json.dumps(restored))
        if restore_only:
            return
        _say("ready")
        seq = 0
        while True:
            seq += 1
            key = rng.choice(NAMES)
            breaker = breakers.breaker(key)
            if rng.random() < 0.6:

                def call(fail: bool) -> None:
                    if fail:
                        raise _Refused("the bench failed this call")

                guarded = breakers.circuit(key)(call)
                for _ in range(rng.randint(1, 4)):
                    with contextlib.suppress(_Refused, CircuitOpen):  # a failure, or a refusal
                        guarded(rng.random() < 0.7)
                _say(f"P {seq} {key} " + json.dumps(_projection(breaker.snapshot())))
                await breakers.flush()
            else:
                override = rng.choice(OVERRIDES)
                twin = CircuitBreaker.from_snapshot(
                    breaker.snapshot(), breaker.policy, clock=system_clock, rng=random.Random(0)
                )
                getattr(twin, override)("bench", f"crash {seq}")
                predicted = _projection(twin.snapshot())
                _say(f"P {seq} {key} " + json.dumps(predicted))
                await getattr(breakers, override)(key, "bench", f"crash {seq}")
                if _projection(breaker.snapshot()) != predicted:
                    raise SystemExit(f"{override} on {key} did not give the predicted state")
            _say(f"A {seq}")


def _child(argv: list[str]) -> None:
    kind, db, name, seed = argv
    if kind == "append":
        asyncio.run(_appender(db, name))
    elif kind in ("breakers", "restore"):
        asyncio.run(_breaker_process(db, name, int(seed), restore_only=kind == "restore"))
    else:
        raise SystemExit(f"unknown child kind {kind!r}")


# --- the parent ----------------------------------------------------------------------------------


class _Child:
    """A child process whose stdout lines are collected by a thread as they come."""

    def __init__(self, kind: str, db: Path, name: str, seed: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poolwarden.bench.crash", "child", kind, str(db), name, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if not raw.endswith(b"\n"):
                break  # cut short by the kill: never acknowledged
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line == "ready":
                self._ready.set()
        self._ready.set()  # EOF: whoever waits must look at the process

    def wait_ready(self) -> None:
        if not self._ready.wait(READY_TIMEOUT) or "ready" not in self.lines:
            self.process.kill()
            raise PoolwardenError(f"a crash-bench child did not start: {self.stderr()}")

    def kill(self) -> None:
        if self.process.poll() is not None:
            raise PoolwardenError(f"a crash-bench child ended before its kill: {self.stderr()}")
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join()

    def finish(self) -> None:
        self.process.wait(READY_TIMEOUT)
        self._reader.join()
        if self.process.returncode != 0:
            raise PoolwardenError(f"a crash-bench child failed: {self.stderr()}")

    def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read().decode(errors="replace")[-2000:]


def _integrity_ok(db: Path) -> bool:
    with sqlite3.connect(db) as raw:
        return [row[0] for row in raw.execute("PRAGMA integrity_check")] == ["ok"]


def _lost(db: Path, acks: list[str]) -> int:
    """Acknowledged appends (``A stream version id``) that the log does not hold."""
    lost = 0
    with sqlite3.connect(db) as raw:
        for ack in acks:
            _, stream, version, event_id = ack.split(" ")
            row = raw.execute(
                "SELECT json_extract(payload, '$.id') FROM events WHERE stream = ? AND version = ?",
                (stream, int(version)),
            ).fetchone()
            lost += row is None or row[0] != event_id
    return lost


class _BreakerBook:
    """What the breaker processes acknowledged, and what the next one must restore."""

    def __init__(self) -> None:
        self.acked: dict[str, dict[str, Any]] | None = None  # by breaker, once a process restored
        self.pending: dict[str, dict[str, Any]] = {}  # being made durable when the kill came
        self.acknowledged = 0
        self.checked = 0
        self.mismatches: list[dict[str, Any]] = []

    def restored(self, lines: list[str]) -> None:
        """Compare a fresh process's restored states (its ``R`` line) with the last acknowledged."""
        restored: dict[str, dict[str, Any]] = json.loads(lines[0].removeprefix("R "))
        if self.acked is not None:
            for key in NAMES:
                allowed = [self.acked[key]]
                if key in self.pending:
                    allowed.append(self.pending[key])
                self.checked += 1
                if restored[key] not in allowed:
                    self.mismatches.append({"breaker": key, "restored": restored[key], "expected": allowed})
        self.acked = restored
        self.pending = {}

    def killed(self, lines: list[str]) -> None:
        """Take a killed process's acknowledgements: the states the next restore must give."""
        assert self.acked is not None
        proposed: tuple[str, dict[str, Any]] | None = None
        for line in lines:
            if line.startswith("P "):
                _, _, key, state = line.split(" ", 3)
                proposed = (key, json.loads(state))
            elif line.startswith("A ") and proposed is not None:
                self.acked[proposed[0]] = proposed[1]
                self.acknowledged += 1
                proposed = None
        self.pending = dict([proposed]) if proposed is not None else {}


def run(kills: int = 100, *, seed: int = 0, folder: Path | None = None) -> dict[str, Any]:
    """Kill ``kills`` children (alternately appenders and breaker processes); the figures."""
    rng = random.Random(seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="poolwarden-crash-") as scratch:
        db = (folder or Path(scratch)) / "crash.db"
        acknowledged_appends = lost = integrity_failures = 0
        book = _BreakerBook()
        for index in range(kills):
            kind = "append" if index % 2 == 0 else "breakers"
            child = _Child(kind, db, f"c{index}", rng.randrange(2**32))
            child.wait_ready()
            if kind == "breakers":
                book.restored(child.lines)
            time.sleep(rng.uniform(0.0, MAX_DELAY))
            child.kill()
            if kind == "append":
                acks = [line for line in child.lines if line.startswith("A ")]
                acknowledged_appends += len(acks)
                lost += _lost(db, acks)
            else:
                book.killed(child.lines)
            integrity_failures += not _integrity_ok(db)
        last = _Child("restore", db, "last", 0)
        last.finish()
        book.restored(last.lines)
    return {
        "kills": kills,
        "acknowledged": acknowledged_appends + book.acknowledged,
        "acknowledged_appends": acknowledged_appends,
        "acknowledged_breaker_writes": book.acknowledged,
        "lost": lost,
        "integrity_failures": integrity_failures,
        "restores_checked": book.checked,
        "restore_mismatches": len(book.mismatches),
        "mismatch_examples": book.mismatches[:3],
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 10)))
