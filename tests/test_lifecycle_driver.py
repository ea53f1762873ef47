"""The lifecycle driver on a real event loop, a real SQLite store and scripted recovery actions."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poolwarden.aio.lifecycle_driver import LifecycleDriver, error_kind_of, restore_lifecycle
from poolwarden.clock import system_clock
from poolwarden.errors import ModelError, StoreClosed
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_events import stream_of
from poolwarden.lifecycle_types import (
    ConnectionState,
    LifecyclePolicy,
    ProcessExited,
    SocketClosed,
    Suspected,
)
from poolwarden.storage import EventStore, open_store
from tests.lifecycle_support import CountingIds

S = ConnectionState
# Deadlines far beyond what a scripted step takes even on a loaded machine, so only the steps a
# test makes hang ever reach them; the hung-page test shortens the ping's.
POLICY = LifecyclePolicy(
    start_timeout_s=30,
    ping_timeout_s=10,
    reconnect_timeout_s=10,
    restart_timeout_s=10,
    verify_timeout_s=10,
    recovery_timeout_s=60,
    restart_budget=2,
    restart_window_s=60,
)
HANG = "hang"
WITHIN = 30.0  # seconds any awaited outcome must arrive in; a failure, never a pause


class ScriptedActions:
    """Recovery actions whose outcomes the test scripts: ``"ok"`` (default), ``HANG``, or an exception."""

    def __init__(self, store: EventStore | None = None) -> None:
        self.script: dict[str, list[object]] = defaultdict(list)
        self.calls: list[str] = []
        self.cancelled: list[str] = []
        self.quarantined: list[str] = []
        self.store = store
        self.versions_seen: list[int] = []

    def will(self, method: str, *outcomes: object) -> None:
        """Make the next calls of ``method`` end with ``outcomes``, in order."""
        self.script[method].extend(outcomes)

    async def _act(self, method: str) -> None:
        self.calls.append(method)
        if self.store is not None:
            self.versions_seen.append(await self.store.stream_version(stream_of("conn-1")))
        outcome = self.script[method].pop(0) if self.script[method] else "ok"
        if outcome == HANG:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                self.cancelled.append(method)
                raise
        if isinstance(outcome, BaseException):
            raise outcome

    async def send_ping(self, timeout: float) -> None:  # noqa: ASYNC109 -- the interface's shape
        await self._act("send_ping")

    async def reload_page(self) -> None:
        await self._act("reload_page")

    async def crash_and_reload(self) -> None:
        await self._act("crash_and_reload")

    async def restart_browser(self) -> None:
        await self._act("restart_browser")

    async def verify_round_trip(self) -> None:
        await self._act("verify_round_trip")

    async def quarantine(self, reason: str) -> None:
        self.quarantined.append(reason)


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with open_store(":memory:") as opened:
        yield opened


async def healthy_driver(
    store: EventStore, actions: ScriptedActions, policy: LifecyclePolicy = POLICY
) -> LifecycleDriver:
    machine = ConnectionLifecycle(
        "conn-1", browser="chromium", policy=policy, clock=system_clock, ids=CountingIds()
    )
    driver = LifecycleDriver(machine, actions, store, clock=system_clock)
    driver.start()
    driver.hello()
    await driver.settle()
    return driver


async def types_in(store: EventStore) -> list[str]:
    return [e.type for e in await store.read_stream(stream_of("conn-1"))]


async def test_heartbeat_missed_recovers_by_ping() -> None:
    """A missed heartbeat whose ping and round trip succeed recovers at the ping rung, all persisted."""
    async with open_store(":memory:") as store:
        actions = ScriptedActions()
        driver = await healthy_driver(store, actions)
        async with asyncio.timeout(WITHIN):
            assert await driver.recover(Suspected()) == (True, "ping")
        assert actions.calls == ["send_ping", "verify_round_trip"]
        events = await store.read_stream(stream_of("conn-1"))
        assert [e.type for e in events][2:] == [
            "RecoveryStarted",
            "RungAttempted",
            "RungVerificationStarted",
            "RungSucceeded",
            "RecoveryCompleted",
        ]
        assert {e.incident_id for e in events[2:]} == {"inc-1"}
        await driver.stop()


async def test_hung_page_is_crashed_and_reloaded(store: EventStore) -> None:
    """A ping that hangs past its deadline is cancelled, and the page is crashed and reloaded."""
    actions = ScriptedActions()
    actions.will("send_ping", HANG)
    driver = await healthy_driver(store, actions, dataclasses.replace(POLICY, ping_timeout_s=0.1))
    async with asyncio.timeout(WITHIN):
        assert await driver.recover(Suspected()) == (True, "reconnect")
    assert actions.calls == ["send_ping", "crash_and_reload", "verify_round_trip"]
    assert actions.cancelled == ["send_ping"]
    failed = [e for e in await store.read_stream(stream_of("conn-1")) if e.type == "RungFailed"]
    assert [(e.rung, e.outcome, e.error_kind) for e in failed] == [("ping", "timed_out", "timeout")]
    await driver.stop()


async def test_renderer_gone_recovers_by_reload(store: EventStore) -> None:
    """A socket closed with 1001 starts at the reconnect rung and a plain reload recovers it."""
    actions = ScriptedActions()
    driver = await healthy_driver(store, actions)
    async with asyncio.timeout(WITHIN):
        assert await driver.recover(SocketClosed(1001)) == (True, "reconnect")
    assert actions.calls == ["reload_page", "verify_round_trip"]
    await driver.stop()


async def test_failed_steps_escalate_to_restart(store: EventStore) -> None:
    """Failed steps climb the ladder, each failure recorded with the kind of the error raised."""
    actions = ScriptedActions()
    actions.will("send_ping", ConnectionResetError("gone"))
    actions.will("reload_page", ModelError("no device", kind="device_lost"))
    driver = await healthy_driver(store, actions)
    async with asyncio.timeout(WITHIN):
        assert await driver.recover(Suspected()) == (True, "restart")
    assert actions.calls == ["send_ping", "reload_page", "restart_browser", "verify_round_trip"]
    failed = [e for e in await store.read_stream(stream_of("conn-1")) if e.type == "RungFailed"]
    assert [e.error_kind for e in failed] == ["transport", "device_lost"]
    assert failed[0].payload["detail"] == "ConnectionResetError: gone"
    await driver.stop()


async def test_budget_spent_quarantines(store: EventStore) -> None:
    """When every restart fails, the budget runs out and the connection is quarantined."""
    actions = ScriptedActions()
    actions.will("restart_browser", OSError("no browser"), OSError("no browser"))
    driver = await healthy_driver(store, actions)
    async with asyncio.timeout(WITHIN):
        assert await driver.recover(ProcessExited()) == (False, "quarantine")
        await driver.wait_for(lambda m: bool(actions.quarantined))
    assert actions.calls == ["restart_browser", "restart_browser"]
    assert actions.quarantined == ["budget_exhausted"]
    assert (await types_in(store))[-1] == "ConnectionQuarantined"
    assert await driver.recover(Suspected()) == (False, "quarantine")
    await driver.stop()


async def test_events_are_persisted_before_the_step_runs() -> None:
    """When an action starts, the event announcing its attempt is already in the store."""
    async with open_store(":memory:") as store:
        actions = ScriptedActions(store)
        driver = await healthy_driver(store, actions)
        async with asyncio.timeout(WITHIN):
            await driver.recover(ProcessExited())
        events = await store.read_stream(stream_of("conn-1"))
        attempted = next(e for e in events if e.type == "RungAttempted")
        assert actions.versions_seen[0] >= attempted.version
        await driver.stop()


async def test_cancelled_recover_lets_recovery_finish(store: EventStore) -> None:
    """Cancelling the caller of recover() cancels its wait, not the recovery."""
    actions = ScriptedActions()
    gate = asyncio.Event()
    driver = await healthy_driver(store, actions)

    async def slow_reload() -> None:
        actions.calls.append("reload_page")
        await gate.wait()

    actions.reload_page = slow_reload  # type: ignore[method-assign]
    waiter = asyncio.create_task(driver.recover(SocketClosed(1006)))
    async with asyncio.timeout(WITHIN):
        await driver.wait_for(lambda m: "reload_page" in actions.calls)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.set()
        await driver.wait_for(lambda m: m.state is S.HEALTHY)
    assert (await types_in(store))[-1] == "RecoveryCompleted"
    await driver.stop()


async def test_close_cancels_the_running_step(store: EventStore) -> None:
    """Closing a connection mid-recovery cancels its step and records ConnectionClosed."""
    actions = ScriptedActions()
    actions.will("restart_browser", HANG)
    driver = await healthy_driver(store, actions)
    waiter = asyncio.create_task(driver.recover(ProcessExited()))
    async with asyncio.timeout(WITHIN):
        await driver.wait_for(lambda m: "restart_browser" in actions.calls)
        await driver.close_connection()
        assert await waiter == (False, "closed")
        await driver.wait_for(lambda m: actions.cancelled == ["restart_browser"])
    assert (await types_in(store))[-1] == "ConnectionClosed"
    await driver.stop()


async def test_store_failure_breaks_the_driver() -> None:
    """If the store cannot append, the driver stops acting and every caller gets the store's error."""
    store = open_store(":memory:")
    await store.open()
    actions = ScriptedActions()
    driver = await healthy_driver(store, actions)
    await store.close()
    async with asyncio.timeout(WITHIN):
        with pytest.raises(StoreClosed):
            await driver.recover(Suspected())
    assert actions.calls == []
    with pytest.raises(StoreClosed):
        await driver.stop()


async def test_restart_of_poolwarden_resumes_the_recovery(tmp_path: Path) -> None:
    """A recovery cut off by a process restart is restored from the file and finished by a browser restart."""
    db = tmp_path / "pool.db"
    ids = CountingIds()
    async with open_store(db) as store:
        actions = ScriptedActions()
        actions.will("reload_page", HANG)
        driver = await healthy_driver(store, actions)
        driver.fault(SocketClosed(1001))
        async with asyncio.timeout(WITHIN):
            await driver.wait_for(lambda m: "reload_page" in actions.calls)
        await driver.stop()  # the process goes away mid-step
    async with open_store(db) as store:
        restored = await restore_lifecycle(store, "conn-1", policy=POLICY, clock=system_clock, ids=ids)
        assert restored is not None
        machine, version = restored
        assert machine.state is S.RECONNECTING
        actions = ScriptedActions()
        async with LifecycleDriver(machine, actions, store, clock=system_clock, version=version) as driver:
            driver.resume()
            async with asyncio.timeout(WITHIN):
                await driver.wait_for(lambda m: m.state is S.HEALTHY)
        assert actions.calls == ["restart_browser", "verify_round_trip"]
        events = await store.read_stream(stream_of("conn-1"))
        assert [e.type for e in events][-5:] == [
            "RecoveryResumed",
            "RungAttempted",
            "RungVerificationStarted",
            "RungSucceeded",
            "RecoveryCompleted",
        ]
        assert {e.incident_id for e in events if e.incident_id} == {"inc-1"}


async def test_snapshots_are_taken_and_restore_the_same_state(store: EventStore) -> None:
    """With snapshots every few events, restore reads the snapshot plus tail and gets the live state."""
    actions = ScriptedActions()
    machine = ConnectionLifecycle(
        "conn-1", browser="chromium", policy=POLICY, clock=system_clock, ids=CountingIds()
    )
    async with LifecycleDriver(machine, actions, store, clock=system_clock, snapshot_every=3) as driver:
        driver.hello()
        async with asyncio.timeout(WITHIN):
            await driver.recover(Suspected())
            await driver.recover(SocketClosed(1001))
        snapshot = await store.load_snapshot(stream_of("conn-1"))
        assert snapshot is not None
        assert 3 <= snapshot.version <= driver.version
        restored = await restore_lifecycle(store, "conn-1", policy=POLICY, clock=system_clock)
        assert restored is not None
        assert restored[0].snapshot() == machine.snapshot()
        assert restored[1] == driver.version


async def test_unknown_connection_restores_to_none(store: EventStore) -> None:
    """A connection with no stream has nothing to restore."""
    assert await restore_lifecycle(store, "nobody", clock=system_clock) is None


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), "timeout"),
        (ModelError("x", kind="out_of_memory"), "out_of_memory"),
        (ConnectionRefusedError(), "transport"),
        (ValueError(), "unknown"),
    ],
)
def test_error_kind_of(exc: BaseException, kind: str) -> None:
    """A failed step's exception maps to the error kind it is recorded with."""
    assert error_kind_of(exc) == kind


class ControlledActions(ScriptedActions):
    """Actions that wait until the test settles each call with success or an error."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[None]] = []

    async def _act(self, method: str) -> None:
        self.calls.append(method)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        await future


@pytest.mark.parametrize("seed", range(5))
async def test_random_run_restores_to_the_live_state(store: EventStore, seed: int) -> None:
    """Through random faults and step outcomes, one step runs at a time, and the store restores the state."""
    rng = random.Random(seed)
    faults = [Suspected(), SocketClosed(1001), SocketClosed(1006), ProcessExited()]
    actions = ControlledActions()
    driver = await healthy_driver(store, actions, dataclasses.replace(POLICY, restart_budget=8))
    async with asyncio.timeout(WITHIN):
        for _ in range(60):
            running = [f for f in actions.pending if not f.done()]
            assert len(running) <= 1, "two steps ran on one browser at once"
            if running and rng.random() < 0.7:
                before = (driver.machine.attempt, driver.machine.state, driver.machine.incident_id)
                if rng.random() < 0.75:
                    running[0].set_result(None)
                else:
                    running[0].set_exception(ConnectionResetError("dropped"))
                # Every current step's outcome moves the machine: a new step, HEALTHY, or FAILED.
                await driver.wait_for(lambda m, b=before: (m.attempt, m.state, m.incident_id) != b)
            elif driver.machine.state in (S.HEALTHY, S.PINGING, S.RECONNECTING):
                driver.fault(rng.choice(faults))
            await driver.settle()
    await driver.stop()  # a settled step result may still be on its way to the machine until then
    restored = await restore_lifecycle(store, "conn-1", policy=POLICY, clock=system_clock)
    assert restored is not None
    assert restored[0].snapshot() == driver.machine.snapshot()
    assert restored[1] == driver.version
    assert len(actions.calls) > 5
