"""``poolwarden breakers``: a breaker opened in one process, as a fresh process finds it."""

from __future__ import annotations

import asyncio
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


async def test_breakers_of_one_pool_of_a_shared_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`breakers --pool NAME` lists that pool's connection and model breakers only, not another
    pool's nor a standalone named breaker."""
    from poolwarden.pool import PoolConfig, ResourcePool

    db = tmp_path / "fleet.db"

    def config(name: str) -> PoolConfig:
        return PoolConfig(
            name=name,
            connections=1,
            workers=("simulated",),
            db=db,
            heartbeat_interval=30.0,
            memory_interval=3600.0,
        )

    async with ResourcePool(config("main")) as main_pool, ResourcePool(config("east")) as east:
        for pool in (main_pool, east):
            await pool.load_model("toy-mlp")
            await pool.run_inference("toy-mlp", {"input": [[0.5] * 16]})
    import poolwarden

    async with poolwarden.open_breakers(db) as named:
        named.breaker("payments-api").force_open(who="ops", why="test")
    for name, prefix in (("east", "east.conn-0"), ("main", "conn-0")):
        assert await asyncio.to_thread(main, ["breakers", "--db", str(db), "--pool", name, "--json"]) == 0
        keys = {status["key"] for status in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
        assert keys, name
        assert all(key.startswith(prefix) for key in keys), keys
