"""SIGTERM stops a command as cleanly as Ctrl-C: the pool closes and its log records the stop.

An operator's ``kill`` (and systemd, docker stop, kubectl) sends SIGTERM. Each test runs
``poolwarden demo`` in its own process, waits until the log shows requests being served (an
event, polled with a bound), sends the signal, and checks the exit code and the log.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The child restores Python's own SIGINT handler: a test runner started as a background job of a
# shell inherits an ignored SIGINT, which Python (rightly) keeps ignoring.
_CHILD = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['poolwarden', *sys.argv[1:]]; runpy.run_module('poolwarden', run_name='__main__')"
)


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:  # not created yet, or its schema not yet written
        return 0


def _wait_until_serving(db: Path, child: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _count(db, "SELECT COUNT(*) FROM events WHERE type = 'InferencesServed'") == 0:
        if child.poll() is not None:
            raise AssertionError(f"the demo exited early ({child.returncode}): {child.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no request served within {timeout} s")
        time.sleep(0.05)


@pytest.mark.parametrize(("sent", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_demo_cleanly(tmp_path: Path, sent: signal.Signals, exit_code: int) -> None:
    db = tmp_path / "demo.db"
    argv = ["demo", "--workers", "simulated", "--duration", "120", "--db", str(db), "--json"]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_until_serving(db, child)
        child.send_signal(sent)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    stopped = _count(db, "SELECT COUNT(*) FROM events WHERE stream = 'pool/main' AND type = 'PoolStopped'")
    assert stopped == 1, "the pool did not close: its log has no PoolStopped"


# As a shell's background job starts it: SIGINT ignored, which asyncio.run then leaves alone.
_BACKGROUND_CHILD = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "sys.argv = ['poolwarden', *sys.argv[1:]]; runpy.run_module('poolwarden', run_name='__main__')"
)


@pytest.mark.parametrize("command", ["demo", "soak"])
def test_sigterm_stops_a_background_job_at_once(tmp_path: Path, command: str) -> None:
    """With SIGINT ignored, SIGTERM still cancels the command's work (not a KeyboardInterrupt
    raised mid-parse, which broke the pool's sockets) and its clients stop at once (Python
    3.11's wait_for lost such cancellations): the pool closes within seconds, log complete."""
    db = tmp_path / f"{command}.db"
    argv = [command, "--workers", "simulated", "--duration", "300", "--db", str(db), "--json"]
    child = subprocess.Popen(
        [sys.executable, "-c", _BACKGROUND_CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_serving(db, child)
        sent_at = time.monotonic()
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
        took = time.monotonic() - sent_at
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert took < 30, f"{command} took {took:.1f} s to stop after SIGTERM (its run lasts 300 s)"
    stopped = _count(db, "SELECT COUNT(*) FROM events WHERE stream = 'pool/main' AND type = 'PoolStopped'")
    assert stopped == 1, "the pool did not close: its log has no PoolStopped"
