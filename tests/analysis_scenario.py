"""A small hand-built log whose analysis is known by heart, written through the real store.

Two connections, conn-1 (chromium) and conn-2 (firefox), from T0 (a minute boundary):

* breaker ``conn-1``: calls fail at +0 and +2; it opens at +10 (consecutive_failures), half-opens
  at +40, closes at +41, opens again at +100 (failure_rate) and is still open at the log's end.
* breaker ``conn-1/toy-mlp``: calls fail at +1 (timeout, 2 s) and +200 (validation, 10 ms), the
  log's last event; it never trips.
* inc-1 on conn-1 (transport): ping times out (5 s), reconnect succeeds (2 s); healthy at +27.5.
* inc-2 on conn-2 (process_exit): restart succeeds (3 s); healthy at +54.
* inc-3 on conn-2 (device_lost): ping succeeds (1 s); healthy at +61.
* inc-4 on conn-1 (transport): ping times out, reconnect fails, restart times out; quarantined at +130.
* memory: conn-1 at +5 (400 MB) and +105 (450 MB); conn-2 at +55 (300 MiB given in bytes).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from poolwarden.clock import FakeClock
from poolwarden.events import NewEvent
from poolwarden.storage import SQLiteEventStore

__all__ = ["T0", "create_empty_store", "scenario", "write_events", "write_scenario"]

T0 = 1_800_000_000.0  # divisible by 60: one-minute buckets start here


def _call_failed(key: str, at: float, kind: str, ms: float) -> tuple[str, NewEvent]:
    connection, _, model = key.partition("/")
    return f"breaker/{key}", NewEvent(
        type="CallFailed",
        occurred_at=T0 + at,
        payload={"counted": True, "slow": False, "duration": ms / 1000},
        connection_id=connection,
        model_id=model or None,
        error_kind=kind,
        outcome="counted",
        latency_ms=ms,
    )


def _breaker(
    key: str, at: float, type: str, from_state: str, to_state: str, **payload: Any
) -> tuple[str, NewEvent]:
    return f"breaker/{key}", NewEvent(
        type=type,
        occurred_at=T0 + at,
        payload=payload,
        connection_id=key.partition("/")[0],
        from_state=from_state,
        to_state=to_state,
    )


def _lifecycle(
    connection: str, browser: str, incident: str, at: float, type: str, **fields: Any
) -> tuple[str, NewEvent]:
    payload = fields.pop("payload", {})
    return f"connection/{connection}", NewEvent(
        type=type,
        occurred_at=T0 + at,
        payload=payload,
        incident_id=incident,
        connection_id=connection,
        browser=browser,
        **fields,
    )


def _memory(connection: str, browser: str, at: float, **payload: Any) -> tuple[str, NewEvent]:
    return f"connection/{connection}", NewEvent(
        type="MemorySampled", occurred_at=T0 + at, payload=payload, connection_id=connection, browser=browser
    )


_RUNG_STATE = {"ping": "pinging", "reconnect": "reconnecting", "restart": "restarting"}


def _incident(
    connection: str, browser: str, incident: str, at: float, kind: str, steps: list[tuple[str, str, float]]
) -> list[tuple[str, NewEvent]]:
    """An incident's start and its rungs from ``at``: each step is (rung, outcome, seconds taken)."""

    def event(t: float, type: str, **fields: Any) -> tuple[str, NewEvent]:
        return _lifecycle(connection, browser, incident, t, type, **fields)

    events = [
        event(
            at,
            "RecoveryStarted",
            error_kind=kind,
            from_state="healthy",
            rung=steps[0][0],
            payload={"trigger": "heartbeat_missed", "close_code": None, "overall_deadline": T0 + at + 120},
        ),
    ]
    t = at
    for rung, outcome, seconds in steps:
        events.append(
            event(
                t,
                "RungAttempted",
                rung=rung,
                to_state=_RUNG_STATE[rung],
                payload={"method": rung, "attempt": 1, "deadline": T0 + t + 10, "charged": False},
            )
        )
        t += seconds
        if outcome == "succeeded":
            events.append(
                event(
                    t,
                    "RungSucceeded",
                    rung=rung,
                    outcome="succeeded",
                    latency_ms=seconds * 1000,
                    payload={"attempt": 1},
                )
            )
        else:
            events.append(
                event(
                    t,
                    "RungFailed",
                    rung=rung,
                    outcome=outcome,
                    error_kind=kind,
                    latency_ms=seconds * 1000,
                    payload={"attempt": 1, "phase": "acting"},
                )
            )
    return events


def scenario() -> list[tuple[str, NewEvent]]:
    """The scenario's events, as (stream, event), in the order they are appended."""
    inc1 = _incident(
        "conn-1",
        "chromium",
        "inc-1",
        20,
        "transport",
        [("ping", "timed_out", 5), ("reconnect", "succeeded", 2)],
    )
    inc2 = _incident("conn-2", "firefox", "inc-2", 50, "process_exit", [("restart", "succeeded", 3)])
    inc3 = _incident("conn-2", "firefox", "inc-3", 60, "device_lost", [("ping", "succeeded", 1)])
    inc4 = _incident(
        "conn-1",
        "chromium",
        "inc-4",
        110,
        "transport",
        [("ping", "timed_out", 5), ("reconnect", "failed", 10), ("restart", "timed_out", 5)],
    )

    def recovered(
        connection: str, browser: str, incident: str, at: float, rung: str, kind: str, since: float
    ) -> tuple[str, NewEvent]:
        return _lifecycle(
            connection,
            browser,
            incident,
            at,
            "RecoveryCompleted",
            rung=rung,
            error_kind=kind,
            from_state=_RUNG_STATE[rung],
            to_state="healthy",
            outcome="recovered",
            latency_ms=(at - since) * 1000,
        )

    return [
        _call_failed("conn-1", 0, "transport", 100),
        _call_failed("conn-1/toy-mlp", 1, "timeout", 2000),
        _call_failed("conn-1", 2, "transport", 50),
        _memory("conn-1", "chromium", 5, pss_mb=400.0, js_heap_mb=40.0),
        _breaker(
            "conn-1",
            10,
            "BreakerOpened",
            "closed",
            "open",
            reason="consecutive_failures",
            retry_at=T0 + 40,
            streak=1,
        ),
        *inc1,
        recovered("conn-1", "chromium", "inc-1", 27.5, "reconnect", "transport", 20),
        _breaker("conn-1", 40, "BreakerHalfOpened", "open", "half_open"),
        _breaker("conn-1", 41, "BreakerClosed", "half_open", "closed"),
        *inc2,
        recovered("conn-2", "firefox", "inc-2", 54, "restart", "process_exit", 50),
        _memory("conn-2", "firefox", 55, pss_bytes=300 * 2**20),
        *inc3,
        recovered("conn-2", "firefox", "inc-3", 61, "ping", "device_lost", 60),
        _breaker(
            "conn-1",
            100,
            "BreakerOpened",
            "closed",
            "open",
            reason="failure_rate",
            retry_at=T0 + 160,
            streak=1,
        ),
        _memory("conn-1", "chromium", 105, pss_mb=450.0, js_heap_mb=45.0),
        *inc4,
        _lifecycle(
            "conn-1",
            "chromium",
            "inc-4",
            130,
            "ConnectionQuarantined",
            rung="restart",
            error_kind="transport",
            from_state="restarting",
            to_state="failed",
            outcome="budget_exhausted",
            latency_ms=20_000,
        ),
        _call_failed("conn-1/toy-mlp", 200, "validation", 10),
    ]


async def write_events(path: Path, events: list[tuple[str, NewEvent]]) -> None:
    """Append ``events`` one by one through the real store, its clock fixed at T0."""
    async with SQLiteEventStore(path, clock=FakeClock(T0)) as store:
        for stream, event in events:
            await store.append(stream, [event])


async def write_scenario(path: Path) -> None:
    """Write :func:`scenario` to a new store at ``path``."""
    await write_events(path, scenario())


def create_empty_store(path: Path) -> Path:
    """A store at ``path`` with its schema and no events; returns ``path``."""

    async def create() -> None:
        async with SQLiteEventStore(path):
            pass

    asyncio.run(create())
    return path
