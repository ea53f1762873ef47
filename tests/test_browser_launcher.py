"""The launcher's bookkeeping without a browser: finding executables, sweeping orphans by marker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from poolwarden.browser.launcher import (
    MARKER_FILE,
    _new_profile,
    find_chromium,
    find_firefox,
    launch_chromium,
    launch_firefox,
    profiles_root,
    sweep_orphans,
    tree_pss,
)
from poolwarden.errors import BrowserLaunchFailed, BrowserNotFound, ConfigurationError
from poolwarden.pool import PoolConfig, ResourcePool


def test_a_missing_executable_is_a_typed_configuration_error(tmp_path: Path) -> None:
    """A configured browser path that does not exist raises BrowserNotFound naming what was tried."""
    missing = str(tmp_path / "no-such-chrome")
    with pytest.raises(BrowserNotFound) as info:
        find_chromium(missing)
    assert info.value.tried == [missing]
    assert isinstance(info.value, ConfigurationError)
    with pytest.raises(BrowserNotFound):
        find_firefox(missing)


def _profile(root: Path, name: str, owner_pid: int, owner_created: float) -> Path:
    profile = root / name
    profile.mkdir(parents=True)
    (profile / MARKER_FILE).write_text(
        json.dumps({"owner_pid": owner_pid, "owner_create_time": owner_created})
    )
    return profile


@contextlib.asynccontextmanager
async def _fake_browsers(root: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, ...]]:
    me = psutil.Process()
    orphan_profile = _profile(root, "orphan", 2**22 + 7, 1.0)  # no such owner
    owned_profile = _profile(root, "owned", me.pid, me.create_time())
    procs = tuple(
        [
            await asyncio.create_subprocess_exec(
                # Python keeps its argv in the command line (a shell may exec `sleep` and lose it).
                sys.executable,
                "-c",
                "import time; time.sleep(60)",
                f"--user-data-dir={profile}",
                start_new_session=True,
            )
            for profile in (orphan_profile, owned_profile)
        ]
    )
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


@pytest.fixture
async def fake_browsers(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, ...]]:
    """Two stand-in 'browsers' (sleeping Pythons) whose command lines name a profile, like Chromium's."""
    async with _fake_browsers(tmp_path) as procs:
        yield procs


async def test_sweep_kills_only_browsers_whose_owner_is_gone(
    tmp_path: Path, fake_browsers: tuple[asyncio.subprocess.Process, ...]
) -> None:
    """A dead owner's browser is killed and its profile removed; a live owner's browser is kept."""
    orphan, owned = fake_browsers
    killed = await sweep_orphans(tmp_path)
    assert killed == [orphan.pid]
    assert await orphan.wait() != 0
    assert owned.returncode is None
    assert not (tmp_path / "orphan").exists()
    assert (tmp_path / "owned").exists()


async def test_a_recycled_owner_pid_does_not_protect_an_orphan(tmp_path: Path) -> None:
    """A marker naming a live pid that started at another time (a recycled pid) counts as orphaned."""
    _profile(tmp_path, "recycled", os.getpid(), 12345.0)
    assert await sweep_orphans(tmp_path) == []
    assert not (tmp_path / "recycled").exists()


def test_tree_pss_counts_a_live_process_and_is_zero_for_a_dead_one() -> None:
    """PSS of this process is positive; of a pid that does not exist it is 0, not an error."""
    assert tree_pss(os.getpid()) > 0
    assert tree_pss(2**22 + 11) == 0


async def test_a_browser_that_exits_at_start_up_is_a_launch_failure(tmp_path: Path) -> None:
    """An executable that exits at once raises BrowserLaunchFailed, and its profile is removed."""
    with pytest.raises(BrowserLaunchFailed) as info:
        await launch_chromium("about:blank", executable="/bin/false", root=tmp_path, timeout=5)
    assert "exited with 1" in str(info.value)
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def _wait_for_empty_group(pgid: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.fixture
def fake_browser(tmp_path: Path) -> Path:
    """An executable that writes to stderr and runs two processes (as a browser runs many)."""
    script = tmp_path / "fake-browser"
    script.write_text("#!/bin/sh\nsleep 600 &\necho started >&2\nexec sleep 600\n")
    script.chmod(0o755)
    return script


async def test_closing_the_lifeline_kills_the_whole_group(tmp_path: Path, fake_browser: Path) -> None:
    """A launched browser shares its process group with a watchdog; when our end of the lifeline
    closes (as it does when we die), the watchdog kills the whole group, children included, and
    the browser's stderr went to the profile's log."""
    browser = await launch_firefox("about:blank", executable=fake_browser, root=tmp_path / "p", timeout=5)
    try:
        assert browser.lifeline is not None
        members: list[int] = []
        deadline = time.monotonic() + 5
        while len(members) < 3 and time.monotonic() < deadline:  # watchdog, browser, its child
            await asyncio.sleep(0.02)
            members = await asyncio.to_thread(_group, browser.pid)
        assert len(members) >= 3, members
        assert browser.pid in members
        browser.cut_lifeline()
        assert await asyncio.wait_for(browser.process.wait(), 5) == -9
        assert await asyncio.to_thread(_wait_for_empty_group, browser.pid, 5.0) == []
        assert "started" in await browser.stderr_tail()
    finally:
        await browser.kill()


async def test_a_firefox_worker_whose_browser_dies_at_start_fails_at_once() -> None:
    """A Firefox with no port is watched by nothing but its process: one that exits before its
    page says hello fails the start with BrowserLaunchFailed at once, not at the hello timeout."""
    from poolwarden.bridge.server import BridgeServer
    from poolwarden.workers.firefox import FirefoxWorker

    async with BridgeServer() as server:
        worker = FirefoxWorker(server, "dies", executable="/bin/false")
        started = time.monotonic()
        try:
            with pytest.raises(BrowserLaunchFailed, match="exited with 1 before its page said hello"):
                await worker.start(timeout=30)
        finally:
            await worker.stop()
        assert time.monotonic() - started < 10


async def test_the_pool_sweeps_orphans_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ResourcePool.start() kills the browsers under profiles_root() whose owner is gone (and removes
    their profiles), and leaves those of a live owner alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # profiles_root() follows the temp dir
    root = profiles_root()
    assert root.parent == tmp_path
    async with _fake_browsers(root) as (orphan, owned):
        config = PoolConfig(connections=1, workers=("simulated",), db=tmp_path / "pool.db")
        async with ResourcePool(config):
            assert await asyncio.wait_for(orphan.wait(), 10) != 0
            assert owned.returncode is None
            assert not (root / "orphan").exists()
            assert (root / "owned").exists()


async def test_the_sweep_leaves_profiles_of_other_users_alone(tmp_path: Path) -> None:
    """A profile folder another user owns is never acted on, whatever its marker says."""
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    foreign = _profile(tmp_path, "foreign", 2**22 + 7, 1.0)  # a dead owner, by its marker
    os.chown(foreign, 65534, 65534)
    assert await sweep_orphans(tmp_path) == []
    assert foreign.exists()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_a_profiles_root_others_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    """A profiles root that group or others may write to (even sticky, like /tmp) is refused."""
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(BrowserLaunchFailed, match="writable by no one else"):
        _new_profile(root, "chromium")


def test_profiles_are_private_to_their_user(tmp_path: Path) -> None:
    """The root is created 0700, each profile 0700, and the marker names this process and its start."""
    root = tmp_path / "root"
    profile = _new_profile(root, "chromium")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(profile.stat().st_mode) == 0o700
    marker = json.loads((profile / MARKER_FILE).read_text())
    assert marker["owner_pid"] == os.getpid()
    assert marker["owner_create_time"] == psutil.Process().create_time()
