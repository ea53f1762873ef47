"""The lifecycle driver's ladder carried out on simulated workers through HandleRecoveryActions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from poolwarden.aio.lifecycle_driver import LifecycleDriver
from poolwarden.aio.recovery_actions import HandleRecoveryActions, PlacedModel
from poolwarden.bridge.server import BridgeServer
from poolwarden.clock import system_clock
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_types import (
    DeviceLost,
    Fault,
    HeartbeatMissed,
    LifecyclePolicy,
    ProcessExited,
    SocketClosed,
    Suspected,
)
from poolwarden.storage import EventStore, open_store
from poolwarden.workers.handle import InjectedFault
from poolwarden.workers.simulated_handle import SimulatedHandle
from tests.lifecycle_support import CountingIds

POLICY = LifecyclePolicy(ping_timeout_s=0.3, reconnect_timeout_s=10, restart_timeout_s=10, verify_timeout_s=5)
WITHIN = 30.0  # a failure bound for awaited outcomes, never a pause


@dataclass
class Ladder:
    """A simulated worker, its recovery actions and a lifecycle driver over a real store."""

    handle: SimulatedHandle
    driver: LifecycleDriver
    store: EventStore
    quarantined: list[str]


@pytest.fixture
async def ladder() -> AsyncIterator[Ladder]:
    async with open_store(":memory:") as store, BridgeServer() as server:
        handle = SimulatedHandle(server, "conn-1")
        quarantined: list[str] = []

        async def on_quarantine(reason: str) -> None:
            quarantined.append(reason)

        actions = HandleRecoveryActions(
            handle,
            policy=LifecyclePolicy(),
            models=lambda: [PlacedModel("mlp", "toy-mlp")],
            on_quarantine=on_quarantine,
        )
        machine = ConnectionLifecycle(
            "conn-1", browser="simulated", policy=POLICY, clock=system_clock, ids=CountingIds()
        )
        driver = LifecycleDriver(machine, actions, store, clock=system_clock)
        driver.start()
        try:
            await handle.start()
            await handle.connection.load_model("mlp", "toy-mlp")
            driver.hello()
            await driver.settle()
            yield Ladder(handle, driver, store, quarantined)
        finally:
            await driver.stop()
            await handle.stop()


async def recover(ladder: Ladder, injected: InjectedFault, seen: Fault) -> tuple[bool, str]:
    await ladder.handle.inject(injected)
    async with asyncio.timeout(WITHIN):
        return await ladder.driver.recover(seen)


@pytest.mark.parametrize(
    ("injected", "seen", "rung"),
    [
        (InjectedFault.PAGE_HANG, HeartbeatMissed(), "reconnect"),
        (InjectedFault.RENDERER_CRASH, SocketClosed(1001), "reconnect"),
        (InjectedFault.SOCKET_DROP, SocketClosed(1006), "reconnect"),
        (InjectedFault.BROWSER_KILL, ProcessExited(), "restart"),
        (InjectedFault.DEVICE_LOST, DeviceLost(), "ping"),
    ],
)
async def test_each_fault_is_recovered_at_its_rung_and_models_come_back(
    ladder: Ladder, injected: InjectedFault, seen: Fault, rung: str
) -> None:
    """Each fault recovers at the expected rung, verified by a real round trip, with its model reloaded."""
    assert await recover(ladder, injected, seen) == (True, rung)
    result = await ladder.handle.connection.infer("mlp", {"input": [[0.25] * 16]})
    assert result.tensors[0].shape == (1, 4)
    assert "mlp" in ladder.handle.worker.models


async def test_a_hung_ping_is_recorded_as_a_timed_out_rung(ladder: Ladder) -> None:
    """The failed ping of a hung worker is in the log as a timeout before the reconnect that fixed it."""
    assert await recover(ladder, InjectedFault.PAGE_HANG, Suspected()) == (True, "reconnect")
    events = await ladder.store.read_stream("connection/conn-1")
    failed = [(e.rung, e.error_kind) for e in events if e.type == "RungFailed"]
    assert failed == [("ping", "timeout")]
    assert [e.rung for e in events if e.type == "RungSucceeded"] == ["reconnect"]
