"""``poolwarden breakers``: a breaker opened in one process, as a fresh process finds it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poolwarden.cli import main
from poolwarden.clock import FakeClock
from poolwarden.telemetry.breakers import breaker_statuses

OPEN_ONE = """
import asyncio, sys
import poolwarden
from poolwarden.policy import BreakerPolicy

async def main():
    policy = BreakerPolicy(consecutive_failures=2)
    async with poolwarden.open_breakers(sys.argv[1], policy=policy) as breakers:
        guard = breakers.circuit("payments-api")
        for _ in range(2):
            try:
                with guard:
                    raise ConnectionError("refused")
            except ConnectionError:
                pass
        print(breakers.breaker("payments-api").state)

asyncio.run(main())
"""


@pytest.fixture
def db_with_open_breaker(tmp_path: Path) -> Path:
    """A log in which another process opened the breaker 'payments-api' and exited."""
    db = tmp_path / "breakers.db"
    done = subprocess.run(
        [sys.executable, "-c", OPEN_ONE, str(db)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "open"
    return db


def test_fresh_process_finds_the_breaker_open(
    db_with_open_breaker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI, in this process, reads the breaker as open, with its retry time still ahead."""
    assert main(["breakers", "--db", str(db_with_open_breaker), "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status["key"] == "payments-api"
    assert status["state"] == "open"
    assert status["effective_state"] == "open"
    assert status["retry_at"] > time.time()


async def test_an_expired_wait_reads_as_half_open(db_with_open_breaker: Path) -> None:
    """Once its retry time has passed, the persisted open breaker is effectively half-open, never closed."""
    later = FakeClock(time.time() + 3600)
    (status,) = await breaker_statuses(db_with_open_breaker, clock=later)
    assert status.state == "open"
    assert status.effective_state == "half_open"
