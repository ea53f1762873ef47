"""Real headless Chromium as a worker: WebGPU results, faults, and the recovery primitives.

One browser is shared by the tests that leave it alive (module scope); the tests that kill a
browser, or need other flags, launch their own. Every wait is for an event (a hello, a close),
never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import psutil
import pytest
import pytest_asyncio

from poolwarden.aio.lifecycle_driver import LifecycleDriver
from poolwarden.aio.recovery_actions import HandleRecoveryActions, PlacedModel
from poolwarden.bridge import server as server_module
from poolwarden.bridge.server import BridgeServer, WorkerConnection
from poolwarden.browser.cdp import DevTools
from poolwarden.browser.launcher import BrowserProcess, find_chromium, launch_chromium
from poolwarden.clock import system_clock
from poolwarden.errors import DeadlineExceeded, InvalidInput, ModelError
from poolwarden.lifecycle import ConnectionLifecycle, uuid_ids
from poolwarden.lifecycle_types import HeartbeatMissed, LifecyclePolicy, ProcessExited, SocketClosed
from poolwarden.protocol import Limits, PageMessage
from poolwarden.storage import open_store
from poolwarden.workers.browser_worker import secret_script
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.handle import InjectedFault, verify_round_trip
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model
from tests.bridge_helpers import installed
from tests.bridge_recorder import SinkRecorder

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed"),
]

WORKER = "chromium-1"
HELLO_TIMEOUT = 20.0


@dataclass
class Rig:
    """The shared browser with its bridge, connection and attached DevTools session."""

    server: BridgeServer
    events: SinkRecorder
    browser: BrowserProcess
    cdp: DevTools
    conn: WorkerConnection


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig() -> AsyncIterator[Rig]:
    events = SinkRecorder()
    async with BridgeServer(on_event=events) as server:
        browser = await launch_chromium()
        try:
            conn = server.worker(WORKER)
            cdp = browser.devtools
            assert cdp is not None  # the pipe's client, connected at launch
            script = secret_script(server.origin, server.secret_for(WORKER))
            await cdp.open_page(server.page_url(WORKER, hooks=True), init_script=script)
            await conn.wait_for_hello(after=0, timeout=HELLO_TIMEOUT)
            yield Rig(server, events, browser, cdp, conn)
        finally:
            await browser.kill()


@pytest_asyncio.fixture(loop_scope="module")
async def healthy(rig: Rig) -> Rig:
    """The shared rig with its page connected and toy-mlp loaded (restored if a test broke it)."""
    if not rig.conn.connected:
        generation = rig.conn.generation
        await rig.cdp.crash_and_reload()
        await rig.conn.wait_for_hello(after=generation, timeout=HELLO_TIMEOUT)
    await rig.conn.load_model("toy-mlp")
    return rig


async def check_toy_mlp(conn: WorkerConnection, backend: str, batch: int = 3) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    result = await conn.infer("toy-mlp", {"input": x})
    assert result.backend == backend
    np.testing.assert_allclose(
        result.tensors[0].to_numpy(), reference_forward(resolve_model("toy-mlp"), x), RTOL, ATOL
    )


async def test_hello_reports_a_webgpu_fallback_adapter(healthy: Rig) -> None:
    """Chromium with --enable-unsafe-webgpu says hello on WebGPU with SwiftShader's fallback adapter."""
    hello = healthy.conn.hello
    assert hello is not None
    assert hello.browser == "chromium"
    assert "HeadlessChrome" in hello.user_agent
    assert hello.backend == "webgpu"
    assert hello.is_fallback_adapter is True
    assert hello.webgpu is not None
    assert hello.webgpu["limits"]["maxBufferSize"] >= 1 << 28
    assert hello.webnn_available is False
    assert hello.capabilities["cross_origin_isolated"] is True


async def test_toy_mlp_on_webgpu_matches_numpy(healthy: Rig) -> None:
    """toy-mlp computed by WGSL on WebGPU equals the numpy reference."""
    await check_toy_mlp(healthy.conn, "webgpu", batch=5)


async def test_the_page_speaks_protocol_2_with_fixed_binary_headers(
    healthy: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page announces version 2, is welcomed with it, and sends its results as PWT2 frames."""
    assert healthy.conn.hello is not None
    assert healthy.conn.hello.protocol == 2
    assert healthy.conn.protocol == 2
    frames: list[bytes] = []
    parse = server_module.parse_page_message

    def spy(frame: str | bytes, limits: Limits) -> PageMessage:
        if isinstance(frame, bytes):
            frames.append(frame)
        return parse(frame, limits)

    monkeypatch.setattr(server_module, "parse_page_message", spy)
    await check_toy_mlp(healthy.conn, "webgpu", batch=2)
    assert [frame[:4] for frame in frames] == [b"PWT2"]


async def test_matmul_on_webgpu_matches_numpy(healthy: Rig) -> None:
    """matmul of a configured size (k=64, n=48, 33 rows) on WebGPU equals the numpy reference."""
    await healthy.conn.load_model("mm", "matmul", {"k": 64, "n": 48})
    a = np.random.default_rng(7).standard_normal((33, 64)).astype(np.float32)
    result = await healthy.conn.infer("mm", {"input": a})
    assert result.backend == "webgpu"
    assert result.tensors[0].shape == (33, 48)
    expected = reference_forward(resolve_model("matmul", {"k": 64, "n": 48}), a)
    np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, RTOL, ATOL)


async def test_bad_input_is_an_input_error(healthy: Rig) -> None:
    """An input of the wrong width is refused by the page as an input error."""
    with pytest.raises(InvalidInput):
        await healthy.conn.infer("toy-mlp", {"input": [[1.0] * 15]})


async def test_gpu_validation_error_is_reported_as_its_kind(healthy: Rig) -> None:
    """A dispatch past WebGPU's limits fails in the page's error scope as a validation ModelError."""
    await healthy.conn.load_model("wide", "matmul", {"k": 1, "n": 1024})
    with pytest.raises(ModelError) as info:
        # 40000 x 1024 outputs: more workgroups than one dispatch dimension allows, and an output
        # binding larger than maxStorageBufferBindingSize.
        await healthy.conn.infer("wide", {"input": np.ones((40000, 1), np.float32)})
    assert info.value.kind == "validation"
    await healthy.conn.unload_model("wide")
    await check_toy_mlp(healthy.conn, "webgpu")


async def test_app_ping_proves_the_gpu_queue_and_memory_is_reported(healthy: Rig) -> None:
    """The pong says the GPU submission completed; the memory report and the browser's PSS are real."""
    pong = await healthy.conn.app_ping(timeout=2.0)
    assert (pong.backend, pong.gpu) == ("webgpu", "ok")
    await healthy.conn.hook("allocate", mb=8)
    report = await healthy.conn.memory()
    assert report.test_allocated_bytes >= 8 * 1024 * 1024
    assert report.gpu_buffer_bytes > 0
    assert "toy-mlp" in report.models
    assert await healthy.browser.pss_bytes() > 50 * 1024 * 1024


async def test_destroyed_device_is_recreated_and_serves_again(healthy: Rig) -> None:
    """After the GPU device is destroyed the page reports device_lost, recreates it, and infers on WebGPU."""
    start = len(healthy.events.events)
    await healthy.conn.hook("destroy_device")
    lost = await healthy.events.wait_for(lambda e: e.type == "WorkerReported", start=start)
    assert lost.error_kind == "device_lost"
    await check_toy_mlp(healthy.conn, "webgpu")


async def test_dropped_socket_is_reconnected_by_the_page(healthy: Rig) -> None:
    """When the socket is cut (1006), the same page reconnects by itself and serves again."""
    conn = healthy.conn
    instance, generation = conn.hello.instance if conn.hello else "", conn.generation
    await conn.drop()
    hello = await conn.wait_for_hello(after=generation, timeout=HELLO_TIMEOUT)
    assert hello.instance == instance  # the same page, not a reload
    await check_toy_mlp(conn, "webgpu")


async def test_hung_page_fails_app_ping_and_crash_reload_recovers(healthy: Rig) -> None:
    """A hung page answers protocol pings but not app pings; Page.crash + reload brings a fresh hello."""
    conn = healthy.conn
    old_instance, generation = conn.hello.instance if conn.hello else "", conn.generation
    await conn.hook("hang", seconds=60)
    with pytest.raises(DeadlineExceeded):
        await conn.app_ping(timeout=0.5)
    assert await conn.protocol_ping(timeout=1.0) < 1.0
    await healthy.cdp.crash_and_reload()
    hello = await conn.wait_for_hello(after=generation, timeout=HELLO_TIMEOUT)
    assert hello.instance != old_instance
    await conn.load_model("toy-mlp")
    await check_toy_mlp(conn, "webgpu")


async def test_killed_renderer_closes_with_1001_and_reload_recovers(healthy: Rig) -> None:
    """SIGKILL of the renderer shows as close 1001; CDP Page.reload brings the page back."""
    conn = healthy.conn
    generation = conn.generation
    renderers = await healthy.browser.renderer_pids()
    assert renderers
    for pid in renderers:
        os.kill(pid, signal.SIGKILL)
    closed = await conn.wait_closed(generation, timeout=10)
    assert closed.code == 1001
    assert healthy.browser.alive
    await healthy.cdp.reload()
    await conn.wait_for_hello(after=generation, timeout=HELLO_TIMEOUT)
    await conn.load_model("toy-mlp")
    await check_toy_mlp(conn, "webgpu")


async def test_killed_browser_closes_with_1006_and_restart_recovers(rig: Rig) -> None:
    """Killing a browser's process group shows as close 1006; ChromiumWorker.restart relaunches it,
    the page says hello on the same worker id, and a verified round trip succeeds."""
    worker = ChromiumWorker(rig.server, "chromium-2")
    try:
        await worker.start(timeout=HELLO_TIMEOUT)
        assert worker.process is not None
        profile = worker.process.user_data_dir
        generation = worker.connection.generation
        await worker.inject(InjectedFault.BROWSER_KILL)
        assert (await worker.connection.wait_closed(generation, timeout=10)).code == 1006
        await worker.restart(timeout=HELLO_TIMEOUT)
        assert not profile.exists()
        assert worker.connection.generation == generation + 1
        assert (await worker.pss_bytes() or 0) > 50 * 1024 * 1024
        assert await verify_round_trip(worker.connection) < 5.0
    finally:
        await worker.stop()


async def test_without_unsafe_webgpu_the_page_computes_in_javascript(rig: Rig) -> None:
    """Without --enable-unsafe-webgpu there is no adapter; the page says so and computes on the JS path."""
    worker = ChromiumWorker(rig.server, "chromium-js", webgpu=False)
    conn = worker.connection
    try:
        hello = await worker.start(timeout=HELLO_TIMEOUT)
        assert hello.backend == "js"
        assert hello.webgpu is None
        assert "null" in hello.capabilities["webgpu"]["reason"]
        await conn.load_model("toy-mlp")
        await check_toy_mlp(conn, "js")
        pong = await conn.app_ping()
        assert (pong.backend, pong.gpu) == ("js", "none")
        with pytest.raises(ModelError) as info:  # loaded without the hooks flag
            await conn.hook("hang", seconds=60)
        assert info.value.kind == "unsupported"
    finally:
        await worker.stop()


async def test_the_secret_reaches_every_document_and_never_a_url(rig: Rig) -> None:
    """The page gets its worker's secret over the pipe: after a reload and a crash+reload it still
    says a welcome hello (no refusal), and no page URL the browser lists holds the secret."""
    worker = ChromiumWorker(rig.server, "chromium-secret", hooks=True)
    secret = rig.server.secret_for("chromium-secret")
    try:
        await worker.start(timeout=HELLO_TIMEOUT)
        for hung in (False, True, False):
            await worker.reconnect(hung=hung, timeout=HELLO_TIMEOUT)
        assert worker.connection.generation == 4
        await verify_round_trip(worker.connection)
        process = worker.process
        assert process is not None
        assert process.devtools is not None
        targets = await process.devtools.send("Target.getTargets")
        urls = [info["url"] for info in targets["targetInfos"]]
        assert any("worker=chromium-secret" in url for url in urls)
        assert not any(secret in url or "token=" in url for url in urls)
        cmdline = await asyncio.to_thread(lambda: " ".join(psutil.Process(process.pid).cmdline()))
        assert secret not in cmdline
        assert rig.server.token not in cmdline
    finally:
        await worker.stop()
    assert [e for e in rig.events.of_type("WorkerRefused") if e.connection_id == "chromium-secret"] == []


async def test_the_lifecycle_ladder_recovers_real_chromium(rig: Rig) -> None:
    """The lifecycle driver, acting through HandleRecoveryActions, recovers a hung page by
    crash+reload, a killed renderer by reload and a killed browser by restart, each verified."""
    worker = ChromiumWorker(rig.server, "chromium-ladder", hooks=True)
    actions = HandleRecoveryActions(
        worker, policy=LifecyclePolicy(), models=lambda: [PlacedModel("toy-mlp", "toy-mlp")]
    )
    policy = LifecyclePolicy(ping_timeout_s=0.5, reconnect_timeout_s=10, restart_timeout_s=20)
    machine = ConnectionLifecycle(
        "chromium-ladder", browser="chromium", policy=policy, clock=system_clock, ids=uuid_ids
    )
    async with open_store(":memory:") as store:
        driver = LifecycleDriver(machine, actions, store, clock=system_clock)
        driver.start()
        try:
            await worker.start(timeout=HELLO_TIMEOUT)
            await worker.connection.load_model("toy-mlp")
            driver.hello()
            for injected, seen, rung in [
                (InjectedFault.PAGE_HANG, HeartbeatMissed(), "reconnect"),
                (InjectedFault.RENDERER_CRASH, SocketClosed(1001), "reconnect"),
                (InjectedFault.BROWSER_KILL, ProcessExited(), "restart"),
            ]:
                await worker.inject(injected)
                async with asyncio.timeout(60):
                    assert await driver.recover(seen) == (True, rung)
                await check_toy_mlp(worker.connection, "webgpu")
        finally:
            await driver.stop()
            await worker.stop()
