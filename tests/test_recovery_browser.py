"""The recovery ladder on real headless Chromium, and a Firefox ESR smoke test: fault in, HEALTHY out.

One Chromium serves the whole module: every test leaves it recovered, which is what is under test.
Each fault is caused for real (SIGKILL of the process group or of the renderer, a JS busy loop,
a cut socket, ``GPUDevice.destroy()``) and detected by the Recovery's own watchers; each test waits
for the lifecycle's outcome, then checks the placed model's numbers against numpy and the incident
in the SQLite log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from poolwarden.browser.launcher import find_chromium, find_firefox
from poolwarden.events import RecordedEvent
from poolwarden.workers.handle import InjectedFault
from tests.bridge_helpers import installed
from tests.recovery_support import (
    NO_RUNG,
    BrowserRig,
    assert_incident_logged,
    browser_rig,
    check_placed_model,
    inject_and_recover,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

WITHIN = 60.0  # an outcome must come in this; a failure, never a pause
chromium_only = pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def chromium(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserRig]:
    if not installed(find_chromium):
        pytest.skip("Chromium is not installed")
    db = tmp_path_factory.mktemp("recovery") / "events.db"
    async with browser_rig("chromium", db, worker_id="chromium-rec") as rig:
        assert rig.handle.connection.backend == "webgpu"
        yield rig


async def recover(rig: BrowserRig, fault: InjectedFault, rung: str) -> list[RecordedEvent]:
    """Cause ``fault``, expect ``rung`` to recover it, check numpy; return the incident's events."""
    got = await inject_and_recover(rig, fault, WITHIN)
    assert got == rung
    assert await check_placed_model(rig) == rig.handle.connection.backend
    if rung == NO_RUNG:
        return []
    incident = rig.recovery.machine.last_incident_id
    assert incident is not None
    connection_id = rig.handle.connection.connection_id
    return await assert_incident_logged(rig.recovery.store, connection_id, incident, [rung], "recovered")


@chromium_only
async def test_browser_killed_recovers_by_restart(chromium: BrowserRig) -> None:
    """SIGKILL of the whole browser is seen as a process exit and recovered by a restart."""
    before = getattr(chromium.handle, "process", None)
    assert before is not None
    events = await recover(chromium, InjectedFault.BROWSER_KILL, "restart")
    assert events[0].payload["trigger"] == "process_exited"
    assert events[0].error_kind == "process_exit"
    after = getattr(chromium.handle, "process", None)
    assert after is not None
    assert after.pid != before.pid  # a new browser, not the old one revived
    assert chromium.handle.connection.backend == "webgpu"


@chromium_only
async def test_hung_page_misses_the_heartbeat_and_crash_and_reload_recovers(chromium: BrowserRig) -> None:
    """A busy-looping page misses the heartbeat (which was the ping) and is crashed and reloaded
    at once, with no second ping."""
    got = await inject_and_recover(chromium, InjectedFault.PAGE_HANG, WITHIN)
    assert got == "reconnect"
    await check_placed_model(chromium)
    incident = chromium.recovery.machine.last_incident_id
    assert incident is not None
    events = await assert_incident_logged(
        chromium.recovery.store, "chromium-rec", incident, ["reconnect"], "recovered"
    )
    assert events[0].payload["trigger"] == "heartbeat_missed"
    assert [e for e in events if e.type == "RungFailed"] == []
    methods = [e.payload["method"] for e in events if e.type == "RungAttempted"]
    assert methods == ["crash_and_reload"]


@chromium_only
async def test_renderer_killed_closes_1001_and_reconnect_recovers(chromium: BrowserRig) -> None:
    """SIGKILL of the renderer closes the socket with 1001; a reload (reconnect rung) recovers."""
    events = await recover(chromium, InjectedFault.RENDERER_CRASH, "reconnect")
    assert events[0].payload["close_code"] == 1001
    assert events[0].error_kind == "page_crash"
    methods = [e.payload["method"] for e in events if e.type == "RungAttempted"]
    assert methods == ["reload_page"]


@chromium_only
async def test_socket_dropped_page_reconnects_by_itself(chromium: BrowserRig) -> None:
    """A cut socket (1006, browser alive) heals by the page's own reconnect: no rung, models kept."""
    instance = chromium.handle.connection.hello.instance if chromium.handle.connection.hello else None
    version = chromium.recovery.driver.version
    await recover(chromium, InjectedFault.SOCKET_DROP, NO_RUNG)
    hello = chromium.handle.connection.hello
    assert hello is not None
    assert hello.instance == instance  # the same page, not a reload
    assert chromium.handle.connection.last_close is not None
    assert chromium.handle.connection.last_close.code == 1006
    assert chromium.recovery.driver.version == version  # nothing logged: nothing went wrong


@chromium_only
async def test_device_destroyed_page_recreates_it_and_ping_recovers(chromium: BrowserRig) -> None:
    """GPUDevice.destroy(): the page reports the loss, recreates its device, the ping proves it."""
    events = await recover(chromium, InjectedFault.DEVICE_LOST, "ping")
    assert events[0].error_kind == "device_lost"
    assert chromium.handle.connection.backend == "webgpu"
    assert await check_placed_model(chromium) == "webgpu"  # the new device computes, not the JS path


@pytest.mark.skipif(not installed(find_firefox), reason="Firefox ESR is not installed")
async def test_firefox_recovers_a_killed_browser_and_a_killed_content_process(tmp_path: Path) -> None:
    """Firefox ESR on the JS path: a killed browser is restarted, a killed content process (1001)
    is loaded again in its browsing context, and each time the numbers are right."""
    async with browser_rig("firefox", tmp_path / "events.db", worker_id="firefox-rec") as rig:
        assert rig.handle.connection.backend == "js"
        events = await recover(rig, InjectedFault.BROWSER_KILL, "restart")
        assert events[0].payload["trigger"] == "process_exited"
        events = await recover(rig, InjectedFault.RENDERER_CRASH, "reconnect")
        assert events[0].payload["close_code"] == 1001
