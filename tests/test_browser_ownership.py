"""Browsers die with their owner: a killed Python process leaves no Chromium behind.

Chromium runs in its own session, so signals to its parent's group never reach it. What ends it is
its DevTools pipe: when the process that launched it dies, the kernel closes that process's end,
Chromium reads end-of-file on its fd 3 and closes itself. Each test runs the owner as a child
process, kills it, and polls (bounded, never a fixed sleep) until no process whose command line
names the owner's profiles folder is left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from poolwarden.browser.launcher import find_chromium
from tests.bridge_helpers import installed

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed"),
]

READY_TIMEOUT = 30.0

# A worker with its page up (optionally hung), then waiting forever.
_WORKER_OWNER = """
import asyncio, sys
from poolwarden.bridge.server import BridgeServer
from poolwarden.workers.chromium import ChromiumWorker

async def main():
    async with BridgeServer() as server:
        worker = ChromiumWorker(server, "owned-1", hooks=True)
        await worker.start()
        if sys.argv[1] == "hung":
            await worker.connection.hook("hang", seconds=600)
        print("ready", worker.process.pid, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

# A pool with two Chromium connections, then waiting forever.
_POOL_OWNER = """
import asyncio, sys
from poolwarden.pool import ResourcePool
from poolwarden.pool.config import PoolConfig

async def main():
    config = PoolConfig(connections=2, workers=("chromium",), db=sys.argv[2], heartbeat_interval=60)
    async with ResourcePool(config) as pool:
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _browsers_under(root: Path) -> list[psutil.Process]:
    # Every process of a browser launched there names its profile (--user-data-dir=<root>/...) or
    # is a child of one that does (Chromium's zygotes and renderers carry the flag too).
    found = []
    for proc in psutil.process_iter():
        try:
            if any(str(root) in arg for arg in proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _wait_until_none_under(root: Path, timeout: float) -> tuple[float, list[str]]:
    """Poll until no process of a browser under ``root`` is left; (seconds waited, what is left)."""
    started = time.monotonic()
    while True:
        left = _browsers_under(root)
        if not left or time.monotonic() - started > timeout:
            return time.monotonic() - started, [f"{p.pid} {p.name()}" for p in left]
        time.sleep(0.05)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (Chromium's singleton socket path must fit in 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _run_owner(script: str, tmp: Path, *args: str) -> asyncio.subprocess.Process:
    """Start an owner process whose browsers' profiles all go under ``tmp``; wait for its 'ready'."""
    env = {**os.environ, "TMPDIR": str(tmp)}  # profiles_root() follows the temp dir
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=subprocess.PIPE, env=env
    )
    assert owner.stdout is not None
    try:
        line = await asyncio.wait_for(owner.stdout.readline(), READY_TIMEOUT)
    except BaseException:
        owner.kill()
        await owner.wait()
        raise
    assert line.startswith(b"ready"), line
    return owner


@pytest.mark.parametrize("page", ["idle", "hung"])
async def test_chromium_dies_when_the_process_that_launched_it_is_killed(short_tmp: Path, page: str) -> None:
    """SIGKILL of the owner (no cleanup runs in it) leaves no Chromium process within 10 s, even with
    its page's JavaScript stuck in a busy loop."""
    tmp = short_tmp
    owner = await _run_owner(_WORKER_OWNER, tmp, page)
    try:
        browsers = await asyncio.to_thread(_browsers_under, tmp)
        assert len(browsers) >= 3  # the browser, its zygotes, a renderer, the GPU process...
    finally:
        owner.send_signal(signal.SIGKILL)
        await owner.wait()
    waited, left = await asyncio.to_thread(_wait_until_none_under, tmp, 10.0)
    assert left == [], f"left after {waited:.1f} s"


async def test_a_pools_browsers_are_gone_within_5_s_of_a_sigterm(short_tmp: Path, tmp_path: Path) -> None:
    """SIGTERM of a process running a pool of two Chromium workers: no browser process is left 5 s later."""
    tmp = short_tmp
    owner = await _run_owner(_POOL_OWNER, tmp, "pool", str(tmp_path / "pool.db"))
    try:
        assert len(await asyncio.to_thread(_browsers_under, tmp)) >= 6
    finally:
        owner.send_signal(signal.SIGTERM)
        assert await owner.wait() == -signal.SIGTERM
    waited, left = await asyncio.to_thread(_wait_until_none_under, tmp, 5.0)
    assert left == [], f"left after {waited:.1f} s"
