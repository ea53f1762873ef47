"""Leaving a pool by an exception, a cancellation or no close at all never hangs nor leaves a task behind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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
    for sign in LEFT_BEHIND:
        assert sign not in done.stderr, done.stderr
    assert "PoolStarted" in _types(db)
