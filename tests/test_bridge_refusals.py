"""A flood of refused sockets costs the log a burst per kind, then a count."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from poolwarden.bridge.refusals import RefusalLimiter
from poolwarden.bridge.server import BridgeServer
from poolwarden.clock import FakeClock
from tests.bridge_recorder import SinkRecorder


def test_a_burst_per_kind_is_written_then_refusals_are_only_counted() -> None:
    limiter = RefusalLimiter(burst=3, window_s=10.0)
    written = [limiter.admit("bad_token", 100.0 + i * 0.1) for i in range(10)]
    assert written == [0, 0, 0, None, None, None, None, None, None, None]
    assert limiter.admit("hello_timeout", 101.0) == 0  # another kind has its own burst
    assert limiter.admit("bad_token", 110.0) == 7  # a new window: written, with what was held back
    assert limiter.admit("bad_token", 110.5) == 0
    assert limiter.totals == {"bad_token": 12, "hello_timeout": 1}


def test_a_limiter_needs_a_burst_and_a_window() -> None:
    with pytest.raises(ValueError, match="burst"):
        RefusalLimiter(burst=0)
    with pytest.raises(ValueError, match="window"):
        RefusalLimiter(window_s=0)


async def _wrong_hello(server: BridgeServer, worker_id: str) -> int | None:
    """Connect as ``worker_id`` with a wrong secret; the close code the server answers with."""
    ws = await connect(server.ws_url(worker_id), origin=server.origin)
    await ws.send(
        json.dumps(
            {
                "type": "hello",
                "protocol": 1,
                "token": "not-the-secret",
                "worker_id": worker_id,
                "instance": "impostor",
                "browser": {"name": "test"},
                "backend": "js",
                "capabilities": {},
            }
        )
    )
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_fifty_wrong_hellos_write_five_events_and_count_fifty() -> None:
    """Every wrong hello is refused (4401) and counted; the log gets the burst, and the first
    refusal after the window carries how many were held back."""
    events = SinkRecorder()
    clock = FakeClock(1_800_000_000.0)
    async with BridgeServer(on_event=events, clock=clock, refusals=RefusalLimiter(burst=5)) as server:
        codes = [await _wrong_hello(server, f"w{i}") for i in range(50)]
        assert set(codes) == {4401}
        assert server.refusals.totals["bad_token"] == 50  # each counted before its close
        refused = events.of_type("WorkerRefused")
        assert len(refused) == 5
        clock.advance(10.0)
        assert await _wrong_hello(server, "late") == 4401
        last = events.of_type("WorkerRefused")[-1]
        assert last.connection_id == "late"
        assert last.payload["suppressed"] == 45


def test_the_limiter_tables_are_bounded_whatever_kinds_it_is_given() -> None:
    """Past max_kinds distinct kinds, refusals are counted under "other": no table outgrows the cap."""
    limiter = RefusalLimiter(burst=1, max_kinds=4)
    for i in range(1000):
        limiter.admit(f"kind-{i}", 100.0 + i)
    assert len(limiter.totals) == 4
    assert len(limiter._windows) == 4
    assert limiter.totals[RefusalLimiter.OTHER] == 997
    assert sum(limiter.totals.values()) == 1000
    with pytest.raises(ValueError, match="max_kinds"):
        RefusalLimiter(max_kinds=0)
