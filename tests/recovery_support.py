"""Support for the recovery tests: a bridge event fan-out, the checks every recovery ends with, and a
real browser worker under a Recovery with a fault caused and awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poolwarden.aio.recovery import Recovery
from poolwarden.aio.recovery_actions import PlacedModel
from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import ModelError
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.lifecycle_events import stream_of
from poolwarden.lifecycle_types import ConnectionState, LifecyclePolicy
from poolwarden.storage import EventStore, open_store
from poolwarden.workers.browser_worker import BrowserWorker
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.firefox import FirefoxWorker
from poolwarden.workers.handle import InjectedFault, verify_round_trip
from poolwarden.workers.models import ATOL, RTOL, reference_forward, resolve_model


class EventFanout:
    """A bridge ``on_event`` sink that passes each event to every listener added so far."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[NewEvent], None]] = []

    def __call__(self, event: NewEvent) -> None:
        for listener in self.listeners:
            listener(event)


async def incident_events(store: EventStore, connection_id: str, incident_id: str) -> list[RecordedEvent]:
    """The stored events of one incident on the connection's stream, oldest first."""
    events = await store.read_stream(stream_of(connection_id))
    return [event for event in events if event.incident_id == incident_id]


async def assert_incident_logged(
    store: EventStore, connection_id: str, incident_id: str, rungs: list[str], outcome: str
) -> list[RecordedEvent]:
    """The incident's attempts are ``rungs`` in order, it ended with ``outcome``, all under one id."""
    events = await incident_events(store, connection_id, incident_id)
    types = [event.type for event in events]
    assert types[0] == "RecoveryStarted", types
    assert [e.rung for e in events if e.type == "RungAttempted"] == rungs, types
    assert types[-1] == ("RecoveryCompleted" if outcome == "recovered" else "ConnectionQuarantined"), types
    assert events[-1].outcome == outcome
    # Every rung attempt has its outcome logged under the same incident (an attempt cut short by
    # a stop of poolwarden ends in the RecoveryResumed that names it).
    ends = ("RungSucceeded", "RungFailed", "ConnectionQuarantined", "RecoveryResumed")
    outcomes = [e for e in events if e.type in ends]
    assert len(outcomes) >= len(rungs), types
    return events


BROWSER_POLICY = LifecyclePolicy(
    ping_timeout_s=0.5,
    reconnect_timeout_s=15.0,
    restart_timeout_s=40.0,
    verify_timeout_s=10.0,
    recovery_timeout_s=120.0,
    restart_budget=1_000_000,
)
"""A short ping, room for a slow browser launch, and a restart budget no test of speed runs out of."""

PLACED = PlacedModel("mlp", "toy-mlp")
"""The model placed on the worker (loaded again after every reload or restart)."""

NO_RUNG = "none"
"""The rung of a fault the page heals by itself (a dropped socket)."""

_X = np.linspace(-1.0, 1.0, 48, dtype=np.float32).reshape(3, 16)


@dataclass
class BrowserRig:
    """A started browser worker and the recovery looking after it."""

    handle: BrowserWorker
    recovery: Recovery


@contextlib.asynccontextmanager
async def browser_rig(browser: str, db: Path, *, worker_id: str) -> AsyncIterator[BrowserRig]:
    """A ``chromium`` or ``firefox`` worker with test hooks, :data:`PLACED` loaded, under a running
    Recovery that hears the bridge's events; on exit the recovery stops, then the worker, then the server."""
    fanout = EventFanout()
    async with BridgeServer(on_event=fanout) as server, open_store(db) as store:
        worker = {"chromium": ChromiumWorker, "firefox": FirefoxWorker}[browser]
        handle = worker(server, worker_id, hooks=True)
        try:
            await handle.start()
            await handle.connection.load_model(PLACED.model, PLACED.kind, PLACED.options)
            recovery = Recovery(
                handle,
                store,
                policy=BROWSER_POLICY,
                models=[PLACED],
                heartbeat_interval_s=0.1,
                reconnect_grace_s=1.0,
            )
            fanout.listeners.append(recovery.on_bridge_event)
            async with recovery:
                await recovery.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY)
                yield BrowserRig(handle, recovery)
        finally:
            await handle.stop()


async def inject_and_recover(rig: BrowserRig, fault: InjectedFault, within: float) -> str:
    """Cause ``fault`` and wait until the connection is verified HEALTHY; return the rung that did it.

    A dropped socket must heal with no recovery at all: the page's new hello and a round trip.
    """
    recovery, connection = rig.recovery, rig.handle.connection
    before = recovery.machine.last_incident_id
    generation = connection.generation
    async with asyncio.timeout(within):
        await rig.handle.inject(fault)
        if fault is InjectedFault.SOCKET_DROP:
            await connection.wait_for_hello(after=generation, timeout=within)
            await verify_round_trip(connection, timeout=within)
            assert recovery.machine.last_incident_id == before, "a dropped socket opened a recovery"
            return NO_RUNG
        if fault is InjectedFault.DEVICE_LOST:
            # The page reports the loss by itself; a request's device_lost error counts too.
            try:
                await connection.infer(PLACED.model, {"input": _X}, timeout=5.0)
            except ModelError as error:
                recovery.notice_error(error)
        success, rung = await recovery.wait_outcome(before, within)
    assert success, f"{fault.value}: the connection was {rung}d instead of recovered"
    return rung


async def check_placed_model(rig: BrowserRig) -> str:
    """The placed model's numbers equal numpy's; returns the backend that computed them."""
    result = await rig.handle.connection.infer(PLACED.model, {"input": _X}, timeout=10.0)
    expected = reference_forward(resolve_model(PLACED.kind or PLACED.model), _X)
    np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, rtol=RTOL, atol=ATOL)
    return result.backend
