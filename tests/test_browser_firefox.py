"""Real headless Firefox ESR as a worker: the same smoke test on its JavaScript path."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import numpy as np
import psutil
import pytest
import pytest_asyncio

from poolwarden.bridge.server import BridgeServer
from poolwarden.browser.bidi import BiDi
from poolwarden.browser.launcher import find_firefox
from poolwarden.browser.remote import WebSocketTransport
from poolwarden.errors import DevToolsError
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


async def test_firefox_computes_on_the_javascript_path(firefox: FirefoxWorker) -> None:
    """Firefox offers no WebGPU adapter here: the page says so, runs on js, and matches numpy."""
    hello = firefox.connection.hello
    assert hello is not None
    assert (hello.browser, hello.backend) == ("firefox", "js")
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


async def test_firefox_page_reconnects_and_reloads(firefox: FirefoxWorker) -> None:
    """A dropped socket is reconnected by the page; a BiDi reload brings a new instance that verifies."""
    conn = firefox.connection
    assert conn.hello is not None
    instance, generation = conn.hello.instance, conn.generation
    await firefox.inject(InjectedFault.SOCKET_DROP)
    assert (await conn.wait_for_hello(after=generation, timeout=20)).instance == instance
    hello = await firefox.reconnect(hung=False, timeout=20)
    assert hello.instance != instance
    await verify_round_trip(conn)


async def test_firefox_keeps_its_secret_and_its_one_bidi_session(firefox: FirefoxWorker) -> None:
    """The secret is on no command line and in no URL (a preload script hands it over BiDi, and a
    reload gets it again); a second BiDi session, anyone else's, is refused while the worker's is open."""
    assert firefox.process is not None
    secret = firefox.server.secret_for(firefox.worker_id)
    process = psutil.Process(firefox.process.pid)
    cmdlines = []
    for proc in [process, *process.children(recursive=True)]:
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
