"""Two real processes sharing named durable breakers on one SQLite file (tests/child_breakers.py)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.clock import system_clock
from poolwarden.storage import open_store
from tests._breaker_support import replayed_states
from tests.child_breakers import POLICY

CHILD = str(Path(__file__).with_name("child_breakers.py"))
POLL = 0.5
FLUSH = 0.25

pytestmark = pytest.mark.slow


class Child:
    """One child process, spoken to a line at a time."""

    def __init__(self, db: Path | str, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, CHILD, str(db), "--poll", str(POLL), "--flush", str(FLUSH), *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )

    async def ask(self, command: str) -> list[str]:
        """Send ``command`` and return its answer, split into words."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return await self.answer()

    async def answer(self) -> list[str]:
        """The next line the child prints, split into words (at most 60 s away)."""
        assert self.process.stdout is not None
        stdout = self.process.stdout
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 60)
        assert line, self.stderr()
        return line.split(maxsplit=2)

    def stderr(self) -> str:
        """What the child wrote to stderr, once it has exited (killed if it had not); closes its pipes."""
        process = self.process
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
        assert process.stderr is not None
        if process.stderr.closed:
            return ""
        text = process.stderr.read()
        process.stderr.close()
        return text


async def _seen_after(tripper: Child, watcher: Child, name: str) -> float:
    """Trip ``name`` in ``tripper``; seconds until ``watcher`` finds it open (waiting by polling)."""
    waiting = asyncio.create_task(watcher.ask(f"wait {name} open 10"))
    await asyncio.sleep(0.05)  # the watcher holds the breaker, closed, before the trip
    tripped = await tripper.ask(f"trip {name}")
    seen = await waiting
    assert seen[0] == "seen", seen
    return float(seen[2]) - float(tripped[2])


async def test_two_processes_share_a_named_breaker(tmp_path: Path) -> None:
    """Two processes on one breaker each persist every event they emit (no conflict raised, none
    lost, none twice), each sees the other's trip within flush + poll interval, both agree on the
    final state, and a restore after both exit gives the state a replay of the log gives."""
    db = tmp_path / "shared.db"
    async with open_store(db):  # the schema first, as an application would
        pass
    one, two = Child(db), Child(db)
    try:
        assert await one.answer() == ["ready"]
        assert await two.answer() == ["ready"]
        latencies = [
            await _seen_after(one, two, "payments"),
            await _seen_after(two, one, "search"),
        ]
        # Traffic on a shared breaker at once from both sides: their appends meet and rebase.
        busy = await asyncio.gather(one.ask("calls ledger 400 5"), two.ask("calls ledger 400 5"))
        assert [answer[0] for answer in busy] == ["called", "called"]
        # Both trip one breaker at about the same time: the first trip in the log wins.
        both = await asyncio.gather(one.ask("trip inventory"), two.ask("trip inventory"))
        assert [answer[0] for answer in both] == ["tripped", "tripped"]
        assert await one.ask("flush") == ["flushed"]
        assert await two.ask("flush") == ["flushed"]
        views = [json.loads(" ".join((await child.ask("sync"))[1:])) for child in (one, two)]
        reports = [json.loads(" ".join((await child.ask("exit"))[1:])) for child in (one, two)]
        for child in (one, two):
            child.process.wait(timeout=30)
    finally:
        errors = [child.stderr() for child in (one, two)]
    assert [child.process.returncode for child in (one, two)] == [0, 0], errors
    assert not any("ConcurrencyConflict" in text or "Traceback" in text for text in errors), errors

    # Each process's acknowledged appends are in the log, the two sets are disjoint and together
    # they are the whole log of breaker events; each acknowledged everything it emitted.
    acked: list[set[tuple[str, int]]] = []
    for report in reports:
        versions = {(s, v) for s, first, last in report["acked"] for v in range(first, last + 1)}
        assert len(versions) == report["emitted"]
        acked.append(versions)
    async with open_store(db, read_only=True) as store:
        records = [r for r in await store.read_all(limit=100_000) if r.stream.startswith("breaker/")]
    assert not acked[0] & acked[1]
    assert acked[0] | acked[1] == {(r.stream, r.version) for r in records}
    rebased = sum(r.payload.get("decided_on") is not None for r in records)
    assert rebased >= 1  # the two sides' appends did meet

    # Both see every shared breaker alike, as a replay of the whole log (no snapshot) does, and
    # a restore (snapshots and tails, as the next process would) agrees.
    expected = replayed_states(records, POLICY)
    assert views[0] == views[1] == expected
    assert expected["payments"]["state"] == expected["search"]["state"] == "open"
    assert expected["inventory"]["state"] == "open"
    registry = BreakerRegistry(named_policy=POLICY, clock=system_clock, rng=random.Random(0))
    async with open_store(db) as store:
        assert await DurableBreakers(store, registry).restore() == len(expected)
    assert {b.key: _jsonable(b.shared_state()) for b in registry} == expected
    # Up to FLUSH to reach the log, up to POLL to be read; 1 s of slack for a loaded test machine.
    assert max(latencies) < FLUSH + POLL + 1.0, latencies
    print(f"trips seen by the other process after {latencies[0]:.3f} s, {latencies[1]:.3f} s;", end=" ")
    print(f"{len(records)} events, {rebased} of them rebased")


def _jsonable(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` as it reads back from JSON (a tuple becomes a list)."""
    loaded: dict[str, Any] = json.loads(json.dumps(state))
    return loaded


async def test_three_processes_run_one_trial_per_half_open_round(tmp_path: Path) -> None:
    """Three processes call a shared breaker every 5 ms through its open wait (3 s): each
    half-opens it and claims the round, the first claim in the log wins, and the fleet runs ONE
    trial call (the policy's ``trials``), not one per process; its success closes the breaker
    everywhere."""
    await _one_trial_per_round(tmp_path / "shared.db")


async def test_three_processes_on_postgresql_run_one_trial_per_half_open_round(postgres_db: str) -> None:
    """The same on a PostgreSQL log."""
    await _one_trial_per_round(postgres_db)


async def _one_trial_per_round(db: Path | str) -> None:
    async with open_store(db):
        pass
    # Open for 3 s: long enough for the others to see it open (flush + poll, slower on a busy
    # machine) before its wait ends; they look at once, not one after the other.
    children = [Child(db, "--open-for", "3.0") for _ in range(3)]
    try:
        for child in children:
            assert await child.answer() == ["ready"]
        assert (await children[0].ask("trip api"))[0] == "tripped"
        seen = await asyncio.gather(*(child.ask("wait api open 10") for child in children[1:]))
        assert [answer[0] for answer in seen] == ["seen", "seen"], seen
        ran = await asyncio.gather(*(child.ask("hammer api 4.5") for child in children))
        for child in children:
            assert (await child.ask("wait api closed 10"))[0] == "seen"
        for child in children:
            assert (await child.ask("exit"))[0] == "report"
            child.process.wait(timeout=30)
    finally:
        errors = [child.stderr() for child in children]
    assert [child.process.returncode for child in children] == [0, 0, 0], errors
    async with open_store(db, read_only=True) as store:
        records = await store.read_stream("breaker/api")
    types = [r.type for r in records]
    assert types.count("BreakerTrialAdmitted") == 1, types
    assert types.count("BreakerClosed") == 1, types
    claims = [r for r in records if r.type == "BreakerHalfOpened"]
    assert len(claims) >= 1
    assert all(r.payload.get("decided_on") is not None for r in claims[1:])  # later claims lost
    assert all(int(answer[2]) >= 1 for answer in ran)  # after the close, every process's calls ran
    print(f"{len(claims)} claims for one round, {types.count('BreakerTrialAdmitted')} trial run")
