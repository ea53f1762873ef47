"""Leaving a pool by an exception, a cancellation or no close at all never hangs nor leaves a task behind."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from poolwarden.pool import ResourcePool
from tests.shutdown_child import Escaped, _config, _serve_then

CHILD = str(Path(__file__).with_name("shutdown_child.py"))

# What asyncio says (in debug mode) when a task or coroutine was left behind by a shutdown.
LEFT_BEHIND = (
    "Task was destroyed but it is pending",
    "was never awaited",
    "exception was never retrieved",
    "Traceback",
)


def _run(db: Path, mode: str, seed: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "dev", CHILD, str(db), mode, str(seed)],
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails here, long before pytest's own timeout
        check=False,
    )


# asyncio (in debug mode) logs an incoming connection whose accept was cancelled by asyncio.run's
# final cancellation, with the CancelledError's traceback: a worker was reconnecting at that very
# moment. That is the cancellation doing its work, not a task left behind: cut it out.
_ACCEPT_CANCELLED = re.compile(
    r"Error on transport creation for incoming connection\n.*?asyncio\.exceptions\.CancelledError\n", re.S
)


def _left_behind(stderr: str) -> str:
    return _ACCEPT_CANCELLED.sub("", stderr)


def _types(db: Path) -> list[str]:
    with sqlite3.connect(db) as raw:
        return [row[0] for row in raw.execute("SELECT type FROM events ORDER BY position")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", ["raise", "cancel"])
def test_leaving_the_block_stops_every_task_and_closes_once(tmp_path: Path, mode: str, seed: int) -> None:
    """An exception (or a cancellation) leaving ``async with ResourcePool`` while breakers are
    writing reaches the caller, leaves no task or socket behind, and the log ends in one PoolStopped."""
    db = tmp_path / "pool.db"
    done = _run(db, mode, seed)
    assert (done.returncode, done.stdout) == (0, "escaped\n"), done.stderr
    for sign in (*LEFT_BEHIND, "ResourceWarning"):
        assert sign not in done.stderr, done.stderr
    types = _types(db)
    assert types.count("PoolStopped") == 1
    assert any(t.startswith("Breaker") or t == "CallFailed" for t in types)  # breakers were writing
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_pool_never_closed_does_not_hang_asyncio_run(tmp_path: Path, seed: int) -> None:
    """``asyncio.run`` ending under a started pool (no close) returns promptly: every task the pool
    started takes its cancellation, and none is born afterwards to be destroyed pending."""
    db = tmp_path / "pool.db"
    done = _run(db, "noclose", seed)
    assert (done.returncode, done.stdout) == (0, "escaped\n"), done.stderr
    stderr = _left_behind(done.stderr)
    for sign in LEFT_BEHIND:
        assert sign not in stderr, done.stderr
    assert "PoolStarted" in _types(db)


async def test_close_leaves_no_task_of_the_pool_running(tmp_path: Path) -> None:
    """After an exception leaves the block of a pool that was serving, with faults tripping its
    breakers, every task it started (monitor, recorders, breaker flusher, writer, lifecycles,
    workers, bridge handlers) has ended."""
    # A monitor that sleeps through the test: it must be stopped, not die of a closed store.
    config = dataclasses.replace(_config(tmp_path / "pool.db"), memory_interval=3600.0)
    loads: list[asyncio.Task[None]] = []

    async def serve_and_escape() -> None:
        async with ResourcePool(config) as pool:
            loads.append(await _serve_then(pool, random.Random(4), 0.5))
            raise Escaped("left the block")

    before = asyncio.all_tasks()
    with pytest.raises(Escaped):
        await serve_and_escape()
    (load,) = loads
    ours = [task for task in asyncio.all_tasks() - before if not task.done()]
    load.cancel()  # the test's callers, not the pool's: they only get refusals now
    await asyncio.gather(load, return_exceptions=True)
    pools = [task for task in ours if task is not load and not _in_load(task)]
    assert pools == []


def _in_load(task: asyncio.Task[object]) -> bool:
    """Whether ``task`` is one of the test load's own callers."""
    return getattr(task.get_coro(), "__qualname__", "").startswith("_load.")
