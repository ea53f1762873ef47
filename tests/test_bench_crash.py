"""``poolwarden bench crash``: writers killed with SIGKILL lose nothing they acknowledged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_crash_loses_nothing_acknowledged() -> None:
    """Six kills (three sync appenders, three durable-breaker processes), through the CLI: no
    acknowledged event lost, the file sound after each kill, every breaker restored by a fresh
    process to the state last acknowledged; exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "poolwarden", "bench", "crash", "--kills", "6", "--seed", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kills"] == 6
    assert (result["lost"], result["integrity_failures"], result["restore_mismatches"]) == (0, 0, 0), result
    assert result["acknowledged_appends"] > 0
    assert result["acknowledged_breaker_writes"] > 0
    assert result["restores_checked"] == 3 * 4  # each breaker process's four breakers, after its kill
    assert result["elapsed_s"] > 0
