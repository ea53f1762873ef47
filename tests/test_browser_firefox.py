"""Real headless Firefox ESR as a worker: the same smoke test on its JavaScript path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from poolwarden.bridge.server import BridgeServer
from poolwarden.browser.launcher import find_firefox
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
