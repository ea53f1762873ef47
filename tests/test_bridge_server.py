"""The bridge server against the simulated worker: round trips, auth, abuse, faults."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from poolwarden.bridge.server import (
    CLOSE_BAD_TOKEN,
    CLOSE_DECLARED_DEAD,
    CLOSE_WORKER_LIVE,
    BridgeServer,
)
from poolwarden.errors import DeadlineExceeded, InvalidInput, ModelError, UnknownModel, WorkerDisconnected
from poolwarden.protocol import Limits
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model
from poolwarden.workers.simulated import Fault, SimulatedWorker
from tests.bridge_recorder import SinkRecorder


@pytest.fixture
async def events() -> SinkRecorder:
    return SinkRecorder()


@pytest.fixture
async def server(events: SinkRecorder) -> AsyncIterator[BridgeServer]:
    async with BridgeServer(on_event=events, limits=Limits(max_frame_bytes=1 << 20), strike_limit=3) as srv:
        yield srv


@pytest.fixture
async def worker(server: BridgeServer) -> AsyncIterator[SimulatedWorker]:
    sim = SimulatedWorker.for_server(server, "sim-1")
    await sim.start()
    try:
        await server.worker("sim-1").wait_for_hello(after=0, timeout=5)
        yield sim
    finally:
        await sim.stop()


async def raw_client(
    server: BridgeServer, worker_id: str = "raw-1", token: str | None = None, *, issue: bool = True
) -> object:
    """A bare websockets client that has said a hello, valid unless ``token`` is given (for
    sending malformed frames); ``issue`` has the server issue ``worker_id`` first."""
    if issue:
        server.worker(worker_id)
    ws = await connect(server.ws_url(worker_id), origin=server.origin)  # type: ignore[arg-type]
    await ws.send(
        json.dumps(
            {
                "type": "hello",
                "protocol": 1,
                "token": token or server.secret_for(worker_id),
                "worker_id": worker_id,
                "instance": "raw",
                "browser": {"name": "test"},
                "backend": "js",
                "capabilities": {},
            }
        )
    )
    return ws


async def drain(ws: object) -> None:
    """Read until the socket closes (the error replies queued before the close come first)."""
    while True:
        await ws.recv()  # type: ignore[attr-defined]


async def test_simulated_round_trip_matches_numpy(server: BridgeServer, worker: SimulatedWorker) -> None:
    """toy-mlp and matmul results from the simulated worker equal the numpy reference."""
    conn = server.worker("sim-1")
    assert conn.hello is not None
    assert conn.hello.backend == "simulated"
    await conn.load_model("toy-mlp")
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    result = await conn.infer("toy-mlp", {"input": x})
    assert result.backend == "simulated"
    np.testing.assert_allclose(
        result.tensors[0].to_numpy(), reference_forward(resolve_model("toy-mlp"), x), RTOL, ATOL
    )
    await conn.load_model("mm", "matmul", {"k": 32, "n": 8})
    a = np.random.default_rng(2).standard_normal((5, 32)).astype(np.float32)
    out = (await conn.infer("mm", {"input": a.tolist()})).tensors[0]
    expected = reference_forward(resolve_model("matmul", {"k": 32, "n": 8}), a)
    np.testing.assert_allclose(out.to_numpy(), expected, RTOL, ATOL)


async def test_worker_errors_become_typed_exceptions(server: BridgeServer, worker: SimulatedWorker) -> None:
    """Unknown models, bad shapes, out-of-memory and device loss raise their own error types."""
    conn = server.worker("sim-1")
    with pytest.raises(UnknownModel):
        await conn.infer("nope", {"input": [[1.0] * 16]})
    await conn.load_model("toy-mlp")
    with pytest.raises(InvalidInput):
        await conn.infer("toy-mlp", {"input": [[1.0] * 15]})
    await worker.inject(Fault.OUT_OF_MEMORY)
    with pytest.raises(ModelError) as oom:
        await conn.infer("toy-mlp", {"input": [[1.0] * 16]})
    assert oom.value.kind == "out_of_memory"
    await worker.inject(Fault.DEVICE_LOST)
    with pytest.raises(ModelError) as lost:
        await conn.infer("toy-mlp", {"input": [[1.0] * 16]})
    assert lost.value.kind == "device_lost"
    assert (await conn.infer("toy-mlp", {"input": [[1.0] * 16]})).backend == "simulated"


async def test_wrong_token_is_refused_and_not_retried(server: BridgeServer, events: SinkRecorder) -> None:
    """A hello with a wrong token is closed with 4401, recorded, and the worker stops reconnecting."""
    sim = SimulatedWorker(server.ws_url("bad"), "wrong-token", "bad", origin=server.origin)
    await sim.start()
    try:
        refused = await events.wait_for(lambda e: e.type == "WorkerRefused")
        assert refused.error_kind == "bad_token"
        assert sim._task is not None
        await asyncio.wait_for(sim._task, 5)
        assert sim.last_close_code == 4401
        assert sim.connects == 1
        assert not server.worker("bad").connected
    finally:
        await sim.stop()


async def test_foreign_origin_is_refused_at_the_handshake(server: BridgeServer, events: SinkRecorder) -> None:
    """A WebSocket handshake from another Origin gets HTTP 403 and a WorkerRefused event."""
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws_url("evil"), origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    refused = await events.wait_for(lambda e: e.type == "WorkerRefused")
    assert refused.error_kind == "foreign_origin"
    assert refused.payload["origin"] == "http://evil.example"


async def test_unsupported_protocol_version_is_refused(server: BridgeServer) -> None:
    """A worker speaking protocol 99 is closed with 4400 and never attached."""
    sim = SimulatedWorker.for_server(server, "future", protocol=99)
    await sim.start()
    try:
        assert sim._task is not None
        await asyncio.wait_for(sim._task, 5)
        assert sim.last_close_code == 4400
        assert server.worker("future").generation == 0
    finally:
        await sim.stop()


async def test_page_is_served_with_cross_origin_isolation_headers(server: BridgeServer) -> None:
    """GET /worker/ returns the page with COOP/COEP; unknown paths 404; a foreign Host header 421."""

    async def get(path: str, host: str = f"127.0.0.1:{server.port}") -> tuple[str, str]:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = data.decode().partition("\r\n\r\n")
        return head, body

    head, body = await get("/worker/?worker=w&token=t")
    assert head.startswith("HTTP/1.1 200")
    assert "Cross-Origin-Opener-Policy: same-origin" in head
    assert "Cross-Origin-Embedder-Policy: require-corp" in head
    assert "worker.js" in body
    head, body = await get("/worker/worker.js")
    assert "text/javascript" in head
    assert "mulberry32" in body
    head, _ = await get("/etc/passwd")
    assert head.startswith("HTTP/1.1 404")
    head, _ = await get("/worker/", host="evil.example")  # DNS rebinding
    assert head.startswith("HTTP/1.1 421")


async def test_malformed_unknown_and_oversized_messages_get_error_replies(
    server: BridgeServer, events: SinkRecorder
) -> None:
    """Each breach is answered with a typed error and an event, and the connection stays open."""
    ws = await raw_client(server)
    try:
        welcome = json.loads(await ws.recv())  # type: ignore[attr-defined]
        assert welcome["type"] == "welcome"
        kinds = []
        for frame in ("{not json", '{"type": "reboot"}'):
            await ws.send(frame)  # type: ignore[attr-defined]
            reply = json.loads(await ws.recv())  # type: ignore[attr-defined]
            kinds.append(reply["kind"])
        assert kinds == ["malformed", "unknown_type"]
        assert [e.error_kind for e in events.of_type("ProtocolViolated")] == ["malformed", "unknown_type"]
        assert server.worker("raw-1").connected
        pong = await server.worker("raw-1").protocol_ping()
        assert pong >= 0
    finally:
        await ws.close()  # type: ignore[attr-defined]


async def test_repeated_abuse_closes_the_connection(server: BridgeServer) -> None:
    """After strike_limit breaches (3 here) the server closes the socket with 1008."""
    ws = await raw_client(server)
    await ws.recv()  # type: ignore[attr-defined]
    for _ in range(3):
        await ws.send(b"garbage")  # type: ignore[attr-defined]
    conn = server.worker("raw-1")
    closed = await conn.wait_closed(generation=1, timeout=5)
    assert closed.code == 1008
    with pytest.raises(ConnectionClosed):
        await drain(ws)


async def test_text_over_the_protocol_cap_costs_a_strike_not_the_connection(
    server: BridgeServer, worker: SimulatedWorker, events: SinkRecorder
) -> None:
    """A text frame above max_text_bytes (but under max_frame_bytes) is a too_large strike only."""
    await worker.inject(Fault.OVERSIZED, size=100_000)
    violation = await events.wait_for(lambda e: e.type == "ProtocolViolated")
    assert violation.error_kind == "too_large"
    conn = server.worker("sim-1")
    assert (await conn.app_ping()).backend == "simulated"


async def test_frame_over_max_size_closes_with_1009(server: BridgeServer, worker: SimulatedWorker) -> None:
    """A frame above the WebSocket max_size is refused by closing the connection (1009)."""
    conn = server.worker("sim-1")
    await worker.inject(Fault.OVERSIZED, size=(1 << 20) + 1)
    closed = await conn.wait_closed(generation=1, timeout=5)
    assert closed.code == 1009


async def test_garbage_reply_costs_a_strike_and_the_request_times_out(
    server: BridgeServer, worker: SimulatedWorker, events: SinkRecorder
) -> None:
    """An answer that is not a message is a protocol breach; the request then ends in DeadlineExceeded."""
    conn = server.worker("sim-1")
    await worker.inject(Fault.GARBAGE)
    with pytest.raises(DeadlineExceeded):
        await conn.app_ping(timeout=0.5)
    assert events.of_type("ProtocolViolated")[0].error_kind == "malformed"
    assert (await conn.app_ping()).gpu == "none"


async def test_hung_worker_fails_app_ping_but_answers_protocol_ping(
    server: BridgeServer, worker: SimulatedWorker
) -> None:
    """During a hang the application ping times out while the WebSocket ping is still answered."""
    conn = server.worker("sim-1")
    await conn.hook("hang", seconds=2.0)
    with pytest.raises(DeadlineExceeded):
        await conn.app_ping(timeout=0.3)
    assert await conn.protocol_ping(timeout=1.0) < 1.0


async def test_dropped_socket_fails_pending_requests_and_the_worker_reconnects(
    server: BridgeServer, worker: SimulatedWorker, events: SinkRecorder
) -> None:
    """Requests in flight when the socket drops get WorkerDisconnected; the worker says hello again."""
    conn = server.worker("sim-1")
    await conn.load_model("toy-mlp")
    await worker.inject(Fault.SLOW, seconds=5.0)
    pending = asyncio.create_task(conn.infer("toy-mlp", {"input": [[0.5] * 16]}))
    await asyncio.sleep(0)  # let the request be sent before the drop
    generation = conn.generation
    await conn.drop()
    with pytest.raises(WorkerDisconnected) as info:
        await pending
    assert info.value.code == 1006
    hello = await conn.wait_for_hello(after=generation, timeout=5)
    assert hello.instance == worker.instance
    assert events.of_type("WorkerDisconnected")[0].payload["code"] == 1006


async def test_crashed_worker_stays_down_until_restarted(
    server: BridgeServer, worker: SimulatedWorker
) -> None:
    """A crash closes with 1006, requests fail fast while down, and a restart brings a new instance."""
    conn = server.worker("sim-1")
    old_instance = worker.instance
    await worker.inject(Fault.CRASH)
    assert (await conn.wait_closed(generation=1, timeout=5)).code == 1006
    with pytest.raises(WorkerDisconnected):
        await conn.app_ping()
    generation = conn.generation
    await worker.restart()
    hello = await conn.wait_for_hello(after=generation, timeout=5)
    assert hello.instance != old_instance
    with pytest.raises(UnknownModel):
        await conn.infer("toy-mlp", {"input": [[0.0] * 16]})


async def test_request_deadline_is_a_typed_timeout(server: BridgeServer, worker: SimulatedWorker) -> None:
    """A slow inference past its timeout raises DeadlineExceeded, and the late answer is ignored."""
    conn = server.worker("sim-1")
    await conn.load_model("toy-mlp")
    await worker.inject(Fault.SLOW, seconds=0.5)
    with pytest.raises(DeadlineExceeded):
        await conn.infer("toy-mlp", {"input": [[0.0] * 16]}, timeout=0.1)
    result = await conn.infer("toy-mlp", {"input": [[0.0] * 16]}, timeout=5)
    assert result.tensors[0].shape == (1, 4)


async def test_waiting_for_a_hello_that_never_comes_times_out(server: BridgeServer) -> None:
    """wait_for_hello raises DeadlineExceeded when no page connects in time."""
    with pytest.raises(DeadlineExceeded):
        await server.worker("nobody").wait_for_hello(timeout=0.05)


async def test_silent_client_is_closed_after_the_hello_timeout(events: SinkRecorder) -> None:
    """A socket that never says hello is closed with 4408 and recorded as refused."""
    async with BridgeServer(on_event=events, hello_timeout=0.1) as srv:
        async with connect(srv.ws_url("mute"), origin=srv.origin) as ws:  # type: ignore[arg-type]
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4408
        refused = await events.wait_for(lambda e: e.type == "WorkerRefused")
        assert refused.error_kind == "hello_timeout"


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        ({"type": "log", "level": "info", "message": "hi"}, "not_ready"),
        ({"worker_id": "someone-else"}, "malformed"),
    ],
)
async def test_a_bad_first_message_closes_with_4400(
    server: BridgeServer, events: SinkRecorder, first: dict[str, str], kind: str
) -> None:
    """A first message that is not a hello, or a hello for another worker id, is refused with 4400."""
    hello = {
        "type": "hello",
        "protocol": 1,
        "token": server.secret_for("w"),
        "worker_id": "w",
        "instance": "i",
    }
    message = first if first.get("type") == "log" else {**hello, "backend": "js", **first}
    async with connect(server.ws_url("w"), origin=server.origin) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps(message))
        with pytest.raises(ConnectionClosed) as info:
            await drain(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4400
    assert (await events.wait_for(lambda e: e.type == "WorkerRefused")).error_kind == kind


async def closed_with(ws: object) -> tuple[int, str]:
    """Read until the socket closes; the close code and reason the server sent."""
    with pytest.raises(ConnectionClosed) as info:
        await drain(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def test_a_hello_for_a_live_worker_id_is_refused(server: BridgeServer, events: SinkRecorder) -> None:
    """A second hello for a live worker id, right secret and all, is closed with 4409; the live
    socket keeps serving."""
    old = await raw_client(server, "twin")
    try:
        assert json.loads(await old.recv())["type"] == "welcome"  # type: ignore[attr-defined]
        new = await raw_client(server, "twin")
        assert json.loads(await new.recv()) == {  # type: ignore[attr-defined]
            "type": "error",
            "id": None,
            "kind": "worker_live",
            "message": "worker id is live",
        }
        assert await closed_with(new) == (CLOSE_WORKER_LIVE, "worker id is live")
        conn = server.worker("twin")
        assert conn.connected
        assert conn.generation == 1
        assert await conn.protocol_ping() >= 0
        refused = await events.wait_for(lambda e: e.type == "WorkerRefused")
        assert (refused.connection_id, refused.error_kind) == ("twin", "worker_live")
        assert events.of_type("WorkerDisconnected") == []
    finally:
        await old.close()  # type: ignore[attr-defined]


async def test_a_refused_worker_retries_and_gets_in_once_the_id_is_free(
    server: BridgeServer, events: SinkRecorder
) -> None:
    """A simulated worker refused because its id is live (4409) keeps retrying with backoff, and
    attaches once the live one's socket has closed."""
    first = SimulatedWorker.for_server(server, "dup")
    second = SimulatedWorker.for_server(server, "dup")
    conn = server.worker("dup")
    await first.start()
    try:
        await conn.wait_for_hello(after=0, timeout=5)
        await second.start()
        first_refusal = await events.wait_for(lambda e: e.error_kind == "worker_live")
        start = events.events.index(first_refusal) + 1
        await events.wait_for(lambda e: e.error_kind == "worker_live", start=start)  # it tried again
        assert second.last_close_code == CLOSE_WORKER_LIVE
        assert second.running  # 4409 is not terminal
        assert conn.hello is not None
        assert conn.hello.instance == first.instance
        assert (await conn.app_ping()).backend == "simulated"
        await first.stop()
        hello = await conn.wait_for_hello(after=1, timeout=10)
        assert hello.instance == second.instance
    finally:
        await first.stop()
        await second.stop()


async def test_declaring_a_worker_dead_frees_its_id(server: BridgeServer, events: SinkRecorder) -> None:
    """declare_dead fails pending requests at once, closes the old socket with 4410, and lets the
    next hello attach."""
    old = await raw_client(server, "hung")
    conn = server.worker("hung")
    try:
        await conn.wait_for_hello(after=0, timeout=5)
        pending = asyncio.create_task(conn.app_ping(timeout=30))  # the raw peer never answers
        await events.wait_for(lambda e: e.type == "WorkerConnected")
        await asyncio.sleep(0)  # let the ping be sent
        assert conn.declare_dead("test: declared dead")
        assert not conn.connected
        assert not conn.declare_dead()  # nothing left to let go of
        with pytest.raises(WorkerDisconnected) as info:
            await pending
        assert info.value.code == CLOSE_DECLARED_DEAD
        assert conn.last_close is not None
        assert (conn.last_close.code, conn.last_close.generation) == (CLOSE_DECLARED_DEAD, 1)
        code, _ = await closed_with(old)
        assert code == CLOSE_DECLARED_DEAD
        left = events.of_type("WorkerDisconnected")
        assert [(e.payload["code"], e.payload["reason"]) for e in left] == [
            (CLOSE_DECLARED_DEAD, "test: declared dead")
        ]
        new = await raw_client(server, "hung")
        await conn.wait_for_hello(after=1, timeout=5)
        assert conn.connected
        await new.close()  # type: ignore[attr-defined]
    finally:
        await old.close()  # type: ignore[attr-defined]


async def test_a_declared_dead_simulated_worker_waits_for_its_rung(server: BridgeServer) -> None:
    """A simulated worker closed with 4410 stops reconnecting by itself (the rung reloads it)."""
    sim = SimulatedWorker.for_server(server, "dead")
    conn = server.worker("dead")
    await sim.start()
    try:
        await conn.wait_for_hello(after=0, timeout=5)
        conn.declare_dead()
        await sim.wait_stopped()
        assert sim.last_close_code == CLOSE_DECLARED_DEAD
        assert sim.connects == 1
        await sim.restart()
        await conn.wait_for_hello(after=1, timeout=5)
    finally:
        await sim.stop()


async def test_a_worker_id_the_pool_never_issued_is_refused(
    server: BridgeServer, events: SinkRecorder
) -> None:
    """A hello for an id the server never issued a secret for is refused (4401) even with the
    right HMAC, and leaves no entry in the server's tables."""
    before = dict(server.workers)
    for i in range(20):
        worker_id = f"stranger-{i}"
        forged = hmac.new(server.token.encode(), worker_id.encode(), hashlib.sha256).hexdigest()
        ws = await raw_client(server, worker_id, token=forged, issue=False)
        assert json.loads(await ws.recv())["kind"] == "bad_token"  # type: ignore[attr-defined]
        assert (await closed_with(ws))[0] == CLOSE_BAD_TOKEN
    assert server.workers.keys() == before.keys()
    assert server.refusals.totals == {"bad_token": 20}
    assert len(events.of_type("WorkerRefused")) == server.refusals.burst  # the rest counted only


async def test_test_hooks_need_the_hooks_flag(server: BridgeServer) -> None:
    """A worker started without hooks refuses hook commands with kind unsupported."""
    sim = SimulatedWorker.for_server(server, "no-hooks", hooks=False)
    await sim.start()
    try:
        conn = server.worker("no-hooks")
        await conn.wait_for_hello(after=0, timeout=5)
        with pytest.raises(ModelError) as info:
            await conn.hook("hang", seconds=10)
        assert info.value.kind == "unsupported"
        assert (await conn.app_ping()).backend == "simulated"
    finally:
        await sim.stop()


async def test_allocate_hook_shows_in_the_memory_report(
    server: BridgeServer, worker: SimulatedWorker
) -> None:
    """Memory allocated through the test hook is reported by the worker."""
    conn = server.worker("sim-1")
    assert (await conn.memory()).test_allocated_bytes == 0
    await conn.hook("allocate", mb=2)
    assert (await conn.memory()).test_allocated_bytes == 2 * 1024 * 1024


async def test_event_recorder_wait_ends_in_a_typed_timeout(events: SinkRecorder) -> None:
    """Waiting for an event that never comes raises DeadlineExceeded; one already seen returns at once."""
    with pytest.raises(DeadlineExceeded):
        await events.wait_for(lambda e: e.type == "Never", timeout=0.05)
    async with BridgeServer(on_event=events) as srv:
        sim = SimulatedWorker.for_server(srv, "seen")
        await sim.start()
        try:
            await srv.worker("seen").wait_for_hello(after=0, timeout=5)
            connected = await events.wait_for(lambda e: e.type == "WorkerConnected", timeout=0.05)
            assert connected.connection_id == "seen"
        finally:
            await sim.stop()


async def test_a_forgotten_worker_id_admits_nobody(server: BridgeServer, events: SinkRecorder) -> None:
    """forget() declares the worker dead (4410) and withdraws its id: its own secret is refused
    (4401) from then on, and the id leaves the server's table."""
    old = await raw_client(server, "gone")
    try:
        assert json.loads(await old.recv())["type"] == "welcome"  # type: ignore[attr-defined]
        secret = server.secret_for("gone")
        server.forget("gone")
        assert (await closed_with(old))[0] == CLOSE_DECLARED_DEAD
        assert "gone" not in server.workers
        again = await raw_client(server, "gone", token=secret, issue=False)
        assert (await closed_with(again))[0] == CLOSE_BAD_TOKEN
        assert "gone" not in server.workers
        server.forget("never-issued")  # nothing to do
    finally:
        await old.close()  # type: ignore[attr-defined]
