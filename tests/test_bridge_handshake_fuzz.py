"""Hostile handshakes against a live bridge: each ends in a typed close, and the live worker serves on.

A :class:`~poolwarden.bridge.server.BridgeServer` runs on an event loop of its own (in a thread),
with a simulated worker attached as ``live-1``. Hypothesis then opens real loopback WebSockets
and sends first frames built from the page's hello with hostile fields (lone surrogates, escaped
or raw on the wire; 400-digit and infinite numbers; wrong types; a hello whose every field is
hostile), binary frames, bytes that are not UTF-8, text over the protocol's cap and frames over the
WebSocket cap, as the live worker id (right secret or not), an issued but free id, and an id the
pool never issued (with the right HMAC for it). For each:

- it ends in a typed close: 4400 / 4401 / 4409 from the bridge, or 1007 / 1009 from websockets
  (never 1011, the close of a handler that raised); only a well-formed hello with the right
  secret for the free id is welcomed, and only then;
- a request to the live worker, sent before the attempt, returns the numpy reference's numbers,
  and the live worker is never displaced (generation 1);
- the server's tables stay bounded: the worker ids are the pool's two, refusals are counted
  under a fixed set of kinds, nothing is left closing;
- nothing is logged at ERROR with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from poolwarden.bridge.server import (
    CLOSE_BAD_HELLO,
    CLOSE_BAD_TOKEN,
    CLOSE_WORKER_LIVE,
    BridgeServer,
)
from poolwarden.events import NewEvent
from poolwarden.protocol import Limits, encode_binary
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model
from poolwarden.workers.simulated import SimulatedWorker

LIVE = "live-1"
SPARE = "spare-1"
STRANGER = "stranger-1"
LIMITS = Limits(max_frame_bytes=128 * 1024, max_text_bytes=16 * 1024)
EXAMPLES = 150
"""Batches of one to five handshakes, run at once (a refusal's closing handshake takes ~40 ms)."""

BRIDGE_CLOSES = {CLOSE_BAD_HELLO, CLOSE_BAD_TOKEN, CLOSE_WORKER_LIVE}
WEBSOCKET_CLOSES = {1007, 1009}  # not UTF-8 text; a frame over max_size
INPUT = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16)

_T = TypeVar("_T")

HOSTILE_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00\ud800", "\x00", "", "\U0001f600"])
HOSTILE_NUMBERS = st.sampled_from(
    [10**400, -(10**400), 2**53 + 1, 2**64, -1, 1e308, math.inf, -math.inf, math.nan]
)
HOSTILE_SCALARS = st.one_of(
    HOSTILE_TEXT, HOSTILE_NUMBERS, st.none(), st.booleans(), st.integers(), st.text(max_size=8)
)
HOSTILE = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
RIGHT_SECRET = "<the right secret>"  # swapped for the worker id's HMAC when the frame is sent


def _hello(worker_id: str) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": 1,
        "token": RIGHT_SECRET,
        "worker_id": worker_id,
        "instance": "fuzz",
        "backend": "js",
        "browser": {"name": "chromium", "version": "1", "user_agent": "fuzz"},
        "capabilities": {"backends": ["js"], "webgpu": {"available": False, "reason": "fuzz"}},
        "hooks": False,
    }


@dataclass(frozen=True)
class Attempt:
    """One handshake: the worker id in the URL and the frames sent (text or binary)."""

    worker_id: str
    frames: tuple[tuple[str | bytes, bool], ...]  # (data, sent as a text frame)
    well_formed: bool  # an untouched hello, right secret, as the URL's worker id

    @property
    def carries_the_secret(self) -> bool:
        """Whether a frame holds the right secret (a hello whose other fields are still valid may
        be welcomed: a mutation can leave a hello the parser accepts)."""
        mark = RIGHT_SECRET.encode()
        return any(mark in (data if isinstance(data, bytes) else data.encode()) for data, _ in self.frames)


def _every_leaf(value: Any, hostile: Any) -> Any:
    if isinstance(value, dict):
        return {k: _every_leaf(v, hostile) for k, v in value.items()}
    if isinstance(value, list):
        return [_every_leaf(v, hostile) for v in value]
    return hostile


def _wire(message: Any, ascii_only: bool) -> tuple[str | bytes, bool]:
    text = json.dumps(message, allow_nan=True, ensure_ascii=ascii_only)
    # Lone surrogates, unescaped, go out as the bytes UTF-8 would give them: not valid UTF-8.
    return text.encode("utf-8", "surrogatepass"), True


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    worker_id = draw(st.sampled_from([LIVE, SPARE, STRANGER]))
    how = draw(
        st.sampled_from(["valid", "mutated", "mutated", "mutated", "all_hostile", "binary", "raw", "big"])
    )
    hello = _hello(worker_id)
    if how == "valid":
        return Attempt(worker_id, (_wire(hello, True),), True)
    if how == "mutated":
        message: dict[str, Any] = hello
        paths = [(k,) for k in hello] + [("browser", k) for k in hello["browser"]]
        paths += [("capabilities", k) for k in hello["capabilities"]]
        for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=4, unique=True)):
            target = message.get(path[0]) if len(path) == 2 else message
            if isinstance(target, dict):  # (unless an earlier draw replaced the object holding it)
                target[path[-1]] = draw(st.one_of(HOSTILE, st.sampled_from(["", "wrong", "w" * 200])))
        if draw(st.booleans()):
            message[draw(st.text(max_size=4))] = draw(HOSTILE)
        frames = [_wire(message, draw(st.booleans()))]
        if draw(st.integers(0, 3)) == 0:
            frames.append(_wire(draw(HOSTILE), True))  # a second frame right behind the first
        return Attempt(worker_id, tuple(frames), False)
    if how == "all_hostile":
        hostile = draw(st.one_of(HOSTILE_TEXT, HOSTILE_NUMBERS))
        message = _every_leaf(hello, hostile)
        message["type"] = "hello"
        return Attempt(worker_id, (_wire(message, draw(st.booleans())),), False)
    if how == "binary":
        header = draw(st.sampled_from([hello, {"type": "result", "id": 1}, {"type": draw(HOSTILE)}]))
        data = draw(
            st.one_of(
                st.binary(max_size=256),
                st.just(encode_binary(json.loads(json.dumps(header, allow_nan=True)), ())),
            )
        )
        return Attempt(worker_id, ((data, False),), False)
    if how == "raw":
        data = draw(st.one_of(st.binary(min_size=1, max_size=64), st.just(b"\xff\xfe\xc0\x80")))
        text = draw(st.text(max_size=64))
        return Attempt(worker_id, ((data, True), (text, True)), False)
    size = draw(st.sampled_from([LIMITS.max_text_bytes + 1, LIMITS.max_frame_bytes + 1]))
    filler = dict(hello, instance="x" * size)
    return Attempt(worker_id, ((json.dumps(filler), True),), False)


class LiveBridge:
    """A bridge with a live simulated worker, served by an event loop in a thread of its own."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bridge-loop", daemon=True)
        self.server = BridgeServer(on_event=self.events.append, limits=LIMITS, hello_timeout=5.0)
        self.worker: SimulatedWorker | None = None
        self.outcomes: Counter[str] = Counter()

    def run(self, work: Coroutine[Any, Any, _T], timeout: float = 20.0) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def __enter__(self) -> LiveBridge:
        self.thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def _start(self) -> None:
        await self.server.start()
        self.server.worker(SPARE)  # issued: its page has not come yet
        self.worker = SimulatedWorker.for_server(self.server, LIVE)  # once the port is known
        await self.worker.start()
        conn = self.server.worker(LIVE)
        await conn.wait_for_hello(after=0, timeout=5)
        await conn.load_model("toy-mlp")

    async def _stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await self.server.close()

    def secret(self, worker_id: str) -> str:
        # The right HMAC for any id, the stranger's too (as if the key had leaked).
        return hmac.new(self.server.token.encode(), worker_id.encode(), hashlib.sha256).hexdigest()

    async def attempt(self, batch: list[Attempt]) -> list[str]:
        """Run handshakes at once while a request to the live worker is in flight; their outcomes."""
        live = self.server.worker(LIVE)
        request = asyncio.create_task(live.infer("toy-mlp", {"input": INPUT}, timeout=10))
        try:
            outcomes = await asyncio.gather(*(self._handshake(attempt) for attempt in batch))
        finally:
            result = await request
        expected = reference_forward(resolve_model("toy-mlp"), INPUT)
        np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, RTOL, ATOL)
        return outcomes

    async def _handshake(self, attempt: Attempt) -> str:
        secret = self.secret(attempt.worker_id)
        spare = self.server.worker(SPARE)
        generation = 0
        async with asyncio.timeout(10):
            async with connect(
                self.server.ws_url(attempt.worker_id),
                origin=self.server.origin,  # type: ignore[arg-type]
                max_size=None,
                compression=None,
                close_timeout=5,
            ) as ws:
                with contextlib.suppress(ConnectionClosed):  # closed after an earlier frame
                    for data, text in attempt.frames:
                        if isinstance(data, bytes) and text:
                            data = data.replace(RIGHT_SECRET.encode(), secret.encode())
                        elif isinstance(data, str):
                            data = data.replace(RIGHT_SECRET, secret)
                        await ws.send(data, text=text)
                welcomed = False
                with contextlib.suppress(ConnectionClosed):
                    async for frame in ws:
                        if isinstance(frame, str) and json.loads(frame).get("type") == "welcome":
                            welcomed, generation = True, spare.generation  # ours, until it closes
                            break
            if welcomed:
                # Left by the client: wait until the server has freed the id again.
                await spare.wait_closed(generation, timeout=5)
                return f"welcome {attempt.worker_id}"
        rcvd = ws.protocol.close_rcvd
        return f"closed {rcvd.code if rcvd is not None else None}"


@pytest.fixture(scope="module")
def live() -> Iterator[LiveBridge]:
    with LiveBridge() as bridge:
        yield bridge


def test_hostile_handshakes_end_in_typed_closes_and_the_live_worker_serves_on(
    live: LiveBridge, caplog: pytest.LogCaptureFixture
) -> None:
    """Every fuzzed handshake ends in a typed close (a welcome only for a well-formed hello of the
    free id), the live worker answers correctly throughout, the tables stay bounded, and no
    traceback is logged."""
    caplog.set_level(logging.WARNING)
    started = time.perf_counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(attempts(), min_size=1, max_size=5))
    def one(batch: list[Attempt]) -> None:
        outcomes = live.run(live.attempt(batch))
        welcomes = 0
        for attempt, outcome in zip(batch, outcomes, strict=True):
            live.outcomes[outcome] += 1
            kind, _, value = outcome.partition(" ")
            if kind == "welcome":
                assert attempt.worker_id == SPARE, (attempt, outcome)  # the free id, never the live one
                assert attempt.carries_the_secret, (attempt, outcome)
                welcomes += 1
            else:
                assert value.isdigit(), (attempt, outcome)  # a close frame came: never an abort (1006)
                assert int(value) in BRIDGE_CLOSES | WEBSOCKET_CLOSES, (attempt, outcome)
            if attempt.well_formed and attempt.worker_id != SPARE:
                assert outcome == {LIVE: "closed 4409", STRANGER: "closed 4401"}[attempt.worker_id]
        spares = [o for a, o in zip(batch, outcomes, strict=True) if a.well_formed and a.worker_id == SPARE]
        if spares:
            # Sent at once, well-formed hellos for the free id: one gets in, the others find it
            # live (or, if the first has already left, get in after it).
            assert welcomes >= 1, spares
            assert set(spares) <= {"welcome spare-1", "closed 4409"}, spares
        server = live.server
        conn = server.worker(LIVE)
        assert (conn.generation, conn.connected) == (1, True)  # never displaced
        assert set(server.workers) == {LIVE, SPARE}  # the pool's ids, never a peer's
        assert len(server.refusals.totals) <= 8
        assert len(server._closing) == 0

    one()
    elapsed = time.perf_counter() - started

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
    assert not [r for r in caplog.records if r.name.startswith("poolwarden.workers")]  # live one unshaken
    total = sum(live.outcomes.values())
    assert total >= EXAMPLES
    assert live.outcomes["welcome spare-1"] > 0
    assert live.outcomes["closed 4409"] > 0
    # The refusals were counted, and the log got only a burst of each kind.
    assert sum(live.server.refusals.totals.values()) == sum(
        n for outcome, n in live.outcomes.items() if outcome.startswith("closed 44")
    )
    print(f"\n{total} fuzzed handshakes in {elapsed:.1f} s: {dict(sorted(live.outcomes.items()))}")
    print(f"refusals counted by kind: {dict(live.server.refusals.totals)}")
