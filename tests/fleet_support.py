"""What the fleet tests (tests/test_fleet_netns.py) and scripts/measure_fleet_trip.py share:
a child process on a test host spoken to a line at a time, SQL on the log, one trip's delay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import asyncpg

from tests import netns

__all__ = ["BREAKER_CHILD", "LOCK_HOLDER", "POOL_CHILD", "ROOT", "Child", "rows", "trip_delay"]

ROOT = Path(__file__).resolve().parent.parent
POOL_CHILD = str(Path(__file__).with_name("fleet_pool_child.py"))
BREAKER_CHILD = str(Path(__file__).with_name("child_breakers.py"))
LOCK_HOLDER = str(Path(__file__).with_name("fleet_lock_holder.py"))


class Child:
    """A process on a test host, spoken to a line at a time; stderr goes to a file."""

    def __init__(self, host: netns.Host, argv: list[str], stderr: Path) -> None:
        self.stderr_path = stderr
        self._stderr: IO[str] = stderr.open("w")
        self.process = subprocess.Popen(
            host.command(sys.executable, *argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=ROOT,
        )

    async def answer(self, within: float = 60.0) -> list[str]:
        """The child's next line split into words (a child that says nothing in time has failed)."""
        assert self.process.stdout is not None
        stdout = self.process.stdout
        async with asyncio.timeout(within):
            line = await asyncio.to_thread(stdout.readline)
        assert line, f"the child ended ({self.process.wait()}): {self.stderr()}"
        return line.strip().split(maxsplit=2)

    async def ask(self, command: str, within: float = 60.0) -> list[str]:
        self.send(command)
        return await self.answer(within)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Kill the child if it still runs; wait for it and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)
        self._stderr.close()


async def rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def trip_delay(
    tripper: Child, watcher: Child, url: str, name: str, pause: float = 0.0
) -> tuple[float, float]:
    """Trip ``name`` by hand on ``tripper`` while ``watcher`` calls through it; seconds from the
    trip's append (its ``recorded_at``) and from its acknowledgement to the watcher's first
    rejection. ``pause``: seconds to let pass between the watcher's first call and the trip (a
    measurement's way to land trips anywhere in the watcher's poll cycle)."""
    assert await watcher.ask(f"until-rejected {name} 30") == ["watching", name]
    if pause:
        await asyncio.sleep(pause)
    tripped = await tripper.ask(f"trip-now {name}")
    assert tripped[:2] == ["tripped", name], tripped
    rejected = await watcher.answer()
    assert rejected[:2] == ["rejected", name], rejected
    (row,) = await rows(
        url,
        "SELECT recorded_at FROM events WHERE stream = $1 AND to_state = 'open' ORDER BY version",
        f"breaker/{name}",
    )
    return float(rejected[2]) - row["recorded_at"], float(rejected[2]) - float(tripped[2])
