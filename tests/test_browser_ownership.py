"""Browsers die with their owner: a killed Python process leaves no Chromium or Firefox behind.

Each browser runs in its own session, so signals to its parent's group never reach it. What ends
it is its watchdog: a ``/bin/sh`` in the browser's process group, blocked reading a pipe whose
only write end the owner holds. When the owner dies, however, the kernel closes that end; the
watchdog reads end-of-file and SIGKILLs the group. Chromium also reads end-of-file on its DevTools
pipe and closes itself. Each test runs the owner as a child process, kills it, and polls (bounded,
never a fixed sleep) until no process whose command line names the owner's profiles folder is
left; no other pool is started meanwhile, so nothing is swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from poolwarden.browser.launcher import find_chromium, find_firefox, sweep_orphans
from tests.bridge_helpers import installed

pytestmark = [pytest.mark.browser]

READY_TIMEOUT = 60.0
BROWSERS = [
    pytest.param(
        "chromium", marks=pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed")
    ),
    pytest.param(
        "firefox", marks=pytest.mark.skipif(not installed(find_firefox), reason="Firefox is not installed")
    ),
]

# A worker with its page up (optionally hung), then waiting forever.
_WORKER_OWNER = """
import asyncio, sys
from poolwarden.bridge.server import BridgeServer
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.firefox import FirefoxWorker

async def main():
    async with BridgeServer() as server:
        kind = {"chromium": ChromiumWorker, "firefox": FirefoxWorker}[sys.argv[1]]
        worker = kind(server, "owned-1", hooks=True)
        await worker.start(timeout=50)
        if sys.argv[2] == "hung":
            await worker.connection.hook("hang", seconds=600)
        print("ready", worker.process.pid, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

# A pool with two connections of one browser kind, then waiting forever.
_POOL_OWNER = """
import asyncio, sys
from poolwarden.pool import ResourcePool
from poolwarden.pool.config import PoolConfig

async def main():
    config = PoolConfig(connections=2, workers=(sys.argv[1],), db=sys.argv[2], heartbeat_interval=60)
    async with ResourcePool(config) as pool:
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _browsers_under(root: Path) -> list[psutil.Process]:
    # Every process of a browser launched there names its profile (--user-data-dir=<root>/... or
    # --profile <root>/...), and so does its watchdog; Chromium's zygotes and renderers carry the
    # flag too. Firefox's content processes do not: they are found as the children of one that does.
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if any(str(root) in arg for arg in proc.cmdline()):
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        except psutil.Error:
            continue
    alive = []
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def _naming(root: Path) -> set[int]:
    """The processes whose command line names ``root``: each browser's main process and watchdog
    (Firefox's content processes come and go on their own, so they are left out of comparisons)."""
    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(str(root) in arg for arg in proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
    return found


def _names(procs: list[psutil.Process]) -> list[str]:
    names = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid} {proc.name()}")
    return names


def _wait_until_none_under(root: Path, timeout: float) -> tuple[float, list[str]]:
    """Poll until no process of a browser under ``root`` is left; (seconds waited, what is left)."""
    started = time.monotonic()
    while True:
        left = _browsers_under(root)
        if not left or time.monotonic() - started > timeout:
            return time.monotonic() - started, _names(left)
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


@contextlib.asynccontextmanager
async def _killed_at_exit(owner: asyncio.subprocess.Process, tmp: Path) -> AsyncIterator[None]:
    """Whatever the test does, the owner and every browser under ``tmp`` are gone after it."""
    try:
        yield
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()
        for proc in await asyncio.to_thread(_browsers_under, tmp):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.mark.parametrize("page", ["idle", "hung"])
@pytest.mark.parametrize("browser", BROWSERS)
async def test_a_browser_dies_when_the_process_that_launched_it_is_killed(
    short_tmp: Path, browser: str, page: str
) -> None:
    """SIGKILL of the owner (no cleanup runs in it) leaves no process of its browser within 5 s, even
    with its page's JavaScript stuck in a busy loop."""
    tmp = short_tmp
    owner = await _run_owner(_WORKER_OWNER, tmp, browser, page)
    async with _killed_at_exit(owner, tmp):
        try:
            browsers = await asyncio.to_thread(_browsers_under, tmp)
            assert len(browsers) >= 4  # the watchdog, the browser, its zygotes or content processes...
        finally:
            owner.send_signal(signal.SIGKILL)
            await owner.wait()
        waited, left = await asyncio.to_thread(_wait_until_none_under, tmp, 5.0)
        assert left == [], f"left after {waited:.1f} s"


@pytest.mark.parametrize("browser", BROWSERS)
async def test_the_watchdog_kills_a_browser_that_cannot_notice_its_owner_died(
    short_tmp: Path, browser: str
) -> None:
    """With the browser's main process stopped (SIGSTOP: it reads no pipe, handles nothing), SIGKILL
    of the owner still leaves no process of it within 5 s: the watchdog kills the whole group."""
    tmp = short_tmp
    owner = await _run_owner(_WORKER_OWNER, tmp, browser, "idle")
    assert owner.stdout is not None
    async with _killed_at_exit(owner, tmp):
        browser_pid = next(
            p.pid
            for p in await asyncio.to_thread(_browsers_under, tmp)
            if p.ppid() == owner.pid  # the exec'd browser, child of the owner
        )
        os.kill(browser_pid, signal.SIGSTOP)
        owner.send_signal(signal.SIGKILL)
        await owner.wait()
        waited, left = await asyncio.to_thread(_wait_until_none_under, tmp, 5.0)
        assert left == [], f"left after {waited:.1f} s"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("browser", BROWSERS)
async def test_a_pools_browsers_are_gone_within_5_s_of_its_death(
    short_tmp: Path, tmp_path: Path, browser: str, signum: signal.Signals
) -> None:
    """SIGTERM or SIGKILL of a process running a pool of two browser workers: no process of its
    browsers is left 5 s later, with no other pool started to sweep them."""
    tmp = short_tmp
    owner = await _run_owner(_POOL_OWNER, tmp, browser, str(tmp_path / "pool.db"))
    async with _killed_at_exit(owner, tmp):
        try:
            assert len(await asyncio.to_thread(_browsers_under, tmp)) >= 8
        finally:
            owner.send_signal(signum)
            assert await owner.wait() == -signum
        waited, left = await asyncio.to_thread(_wait_until_none_under, tmp, 5.0)
        assert left == [], f"left after {waited:.1f} s"


@pytest.mark.parametrize("browser", BROWSERS)
async def test_a_later_pools_sweep_never_touches_a_live_pools_browsers(
    short_tmp: Path, tmp_path: Path, browser: str
) -> None:
    """A second pool started by another process of the same user (its start-up sweep runs over the
    same profiles folder) kills nothing of a first pool that is alive, and a sweep run here finds
    nothing either: the first pool's browsers all keep running, their profiles stay."""
    tmp = short_tmp
    first = await _run_owner(_POOL_OWNER, tmp, browser, str(tmp_path / "first.db"))
    async with _killed_at_exit(first, tmp):
        before = await asyncio.to_thread(_naming, tmp)
        assert len(before) >= 4  # two browsers, two watchdogs
        second = await _run_owner(_POOL_OWNER, tmp, "simulated", str(tmp_path / "second.db"))
        second.send_signal(signal.SIGTERM)
        await second.wait()
        root = tmp / f"poolwarden-browsers-{os.geteuid()}"
        assert await sweep_orphans(root) == []
        assert await asyncio.to_thread(_naming, tmp) == before
        assert len(list(root.iterdir())) == 2  # both profiles are still there
