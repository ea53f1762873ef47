"""Real headless Firefox ESR as a worker: the same smoke test on its JavaScript path, with no
remote-control port (the default) and with its opt-in WebDriver BiDi port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import pytest_asyncio

from poolwarden.bridge.server import BridgeServer
from poolwarden.browser.bidi import BiDi
from poolwarden.browser.launcher import find_firefox
from poolwarden.browser.remote import WebSocketTransport
from poolwarden.errors import DevToolsError
from poolwarden.pool import ResourcePool
from poolwarden.pool.config import PoolConfig
from poolwarden.workers.firefox import FirefoxWorker
from poolwarden.workers.handle import InjectedFault, verify_round_trip
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model
from tests.bridge_helpers import installed

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not installed(find_firefox), reason="Firefox is not installed"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def firefox() -> AsyncIterator[FirefoxWorker]:
    async with BridgeServer() as server:
        worker = FirefoxWorker(server, "firefox-1", hooks=True)
        try:
            await worker.start(timeout=60)
            yield worker
        finally:
            await worker.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def firefox_bidi() -> AsyncIterator[FirefoxWorker]:
    async with BridgeServer() as server:
        worker = FirefoxWorker(server, "firefox-bidi", hooks=True, remote_port=True)
        try:
            await worker.start(timeout=60)
            yield worker
        finally:
            await worker.stop()


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _listening(pid: int) -> list[str]:
    found = []
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            found += [f"{proc.pid} {c.laddr}" for c in proc.net_connections("inet") if c.status == "LISTEN"]
    return found


async def test_firefox_computes_on_the_javascript_path(firefox: FirefoxWorker) -> None:
    """Firefox offers no WebGPU adapter here: the page says so, runs on js, and matches numpy (its
    tensor frames in protocol version 2, fixed binary headers)."""
    hello = firefox.connection.hello
    assert hello is not None
    assert (hello.browser, hello.backend) == ("firefox", "js")
    assert (hello.protocol, firefox.connection.protocol) == (2, 2)
    assert hello.webgpu is None
    assert hello.capabilities["webgpu"]["reason"]
    conn = firefox.connection
    await conn.load_model("mm", "matmul", {"k": 16, "n": 8})
    a = np.random.default_rng(3).standard_normal((6, 16)).astype(np.float32)
    result = await conn.infer("mm", {"input": a})
    assert result.backend == "js"
    expected = reference_forward(resolve_model("matmul", {"k": 16, "n": 8}), a)
    np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, RTOL, ATOL)
    report = await conn.memory()
    assert report.js_heap_used is None  # Firefox has no performance.memory


async def test_firefox_without_a_port_hides_its_secret_and_restarts(firefox: FirefoxWorker) -> None:
    """By default no process of the Firefox listens on any port and no command line holds the
    secret (the page is the start page, set in the private profile); a dropped socket is
    reconnected by the page, and reconnect() restarts the browser into a page that verifies."""
    assert firefox.process is not None
    assert firefox.remote is None
    assert _listening(firefox.process.pid) == []
    secret = firefox.server.secret_for(firefox.worker_id)
    cmdlines = []
    for proc in _tree(firefox.process.pid):
        with contextlib.suppress(psutil.Error):
            cmdlines.append(" ".join(proc.cmdline()))
    assert len(cmdlines) > 1
    assert not any(secret in line or "token=" in line or "remote-debugging" in line for line in cmdlines)
    conn = firefox.connection
    assert conn.hello is not None
    instance, generation = conn.hello.instance, conn.generation
    await firefox.inject(InjectedFault.SOCKET_DROP)
    assert (await conn.wait_for_hello(after=generation, timeout=20)).instance == instance
    old_pid = firefox.process.pid
    hello = await firefox.reconnect(hung=False, timeout=20)
    assert hello.instance != instance
    assert firefox.process.pid != old_pid
    assert _listening(firefox.process.pid) == []
    await verify_round_trip(conn)


async def test_firefox_page_reconnects_and_reloads_over_bidi(firefox_bidi: FirefoxWorker) -> None:
    """With its BiDi port: a dropped socket is reconnected by the page; a BiDi reload (same
    browser) brings a new instance that verifies."""
    conn = firefox_bidi.connection
    assert conn.hello is not None
    assert firefox_bidi.process is not None
    pid = firefox_bidi.process.pid
    instance, generation = conn.hello.instance, conn.generation
    await firefox_bidi.inject(InjectedFault.SOCKET_DROP)
    assert (await conn.wait_for_hello(after=generation, timeout=20)).instance == instance
    hello = await firefox_bidi.reconnect(hung=False, timeout=20)
    assert hello.instance != instance
    assert firefox_bidi.process.pid == pid
    await verify_round_trip(conn)


async def test_firefox_keeps_its_secret_and_its_one_bidi_session(firefox_bidi: FirefoxWorker) -> None:
    """With its BiDi port: the secret is on no command line and in no URL (a preload script hands
    it over BiDi, and a reload gets it again); a second BiDi session, anyone else's, is refused
    while the worker's is open."""
    firefox = firefox_bidi
    assert firefox.process is not None
    assert len(_listening(firefox.process.pid)) == 1  # the BiDi port, and nothing else
    secret = firefox.server.secret_for(firefox.worker_id)
    cmdlines = []
    for proc in _tree(firefox.process.pid):
        with contextlib.suppress(psutil.Error):
            cmdlines.append(" ".join(proc.cmdline()))
    assert len(cmdlines) > 1
    assert not any(secret in line or "token=" in line for line in cmdlines)
    assert isinstance(firefox.remote, BiDi)
    tree = await firefox.remote.send("browsingContext.getTree", {"maxDepth": 0})
    urls = [context["url"] for context in tree["contexts"]]
    assert any(f"worker={firefox.worker_id}" in url for url in urls)
    assert not any(secret in url or "token=" in url for url in urls)
    async with BiDi(WebSocketTransport(firefox.process.devtools_url)) as intruder:
        with pytest.raises(DevToolsError, match="session not created"):
            await intruder.start_session()
    await verify_round_trip(firefox.connection)


@pytest.mark.parametrize("exposed", [False, True])
async def test_a_pools_firefox_opens_a_port_only_when_allowed(tmp_path: Path, exposed: bool) -> None:
    """A pool's Firefox worker listens on no port unless ``allow_exposed_firefox_port`` says so,
    and then on exactly one (its BiDi port); either way it serves."""
    config = PoolConfig(
        connections=1,
        workers=("firefox",),
        db=tmp_path / "pool.db",
        heartbeat_interval=60,
        allow_exposed_firefox_port=exposed,
    )
    async with ResourcePool(config) as pool:
        (member,) = pool.members.values()
        assert isinstance(member.handle, FirefoxWorker)
        assert member.handle.process is not None
        listening = await asyncio.to_thread(_listening, member.handle.process.pid)
        assert len(listening) == (1 if exposed else 0), listening
        await pool.load_model("toy-mlp")
        result = await pool.run_inference("toy-mlp", {"input": [[0.5] * 16]}, deadline=20.0)
        assert result.backend == "js"
