"""The recovery ladder on simulated workers: each fault, detected by the watchers, recovered and verified.

Real bridge server, real simulated worker speaking the page's protocol, real SQLite store; only
the browser is simulated. Every wait is for a lifecycle outcome or a hello, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from poolwarden.aio.recovery import Recovery
from poolwarden.aio.recovery_actions import PlacedModel
from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import ModelError
from poolwarden.lifecycle_types import ConnectionState, LifecyclePolicy, ProcessExited, Suspected
from poolwarden.storage import EventStore, open_store
from poolwarden.workers.handle import InjectedFault
from poolwarden.workers.models import reference_forward, resolve_model
from poolwarden.workers.simulated import Fault
from poolwarden.workers.simulated_handle import SimulatedHandle
from tests.lifecycle_support import CountingIds
from tests.recovery_support import EventFanout, assert_incident_logged

WORKER = "sim-1"
WITHIN = 30.0  # any awaited outcome must arrive in this; a failure, never a pause
POLICY = LifecyclePolicy(
    ping_timeout_s=0.3,
    reconnect_timeout_s=10,
    restart_timeout_s=10,
    verify_timeout_s=10,
    recovery_timeout_s=60,
    restart_budget=1,
    restart_window_s=600,
)
MODELS = [PlacedModel("mlp", "toy-mlp")]
X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)


@dataclass
class Rig:
    """A started simulated worker, its bridge, a SQLite store and the recovery looking after it."""

    server: BridgeServer
    handle: SimulatedHandle
    store: EventStore
    recovery: Recovery
    quarantined: list[str]
    told: asyncio.Event


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fanout = EventFanout()
    quarantined: list[str] = []
    told = asyncio.Event()

    async def on_quarantine(reason: str) -> None:
        quarantined.append(reason)
        told.set()

    async with (
        BridgeServer(on_event=fanout) as server,
        open_store(tmp_path / "recovery.db") as store,
    ):
        handle = SimulatedHandle(server, WORKER)
        await handle.start()
        await handle.connection.load_model("mlp", "toy-mlp")
        recovery = Recovery(
            handle,
            store,
            policy=POLICY,
            models=lambda: MODELS,
            on_quarantine=on_quarantine,
            heartbeat_interval_s=0.05,
            reconnect_grace_s=0.5,
            ids=CountingIds(),
        )
        fanout.listeners.append(recovery.on_bridge_event)
        try:
            async with recovery:
                await recovery.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY)
                yield Rig(server, handle, store, recovery, quarantined, told)
        finally:
            await handle.stop()


async def assert_serves(rig: Rig) -> None:
    """The placed model answers, and its numbers equal the numpy reference."""
    result = await rig.handle.connection.infer("mlp", {"input": X}, timeout=WITHIN)
    expected = reference_forward(resolve_model("toy-mlp"), X)
    np.testing.assert_allclose(result.tensors[0].to_numpy(), expected, rtol=1e-5, atol=1e-5)


async def test_closed_1001_recovers_by_reconnect(rig: Rig) -> None:
    """A socket closed with 1001 (renderer gone) is reloaded at the reconnect rung and serves again."""
    before = rig.recovery.machine.last_incident_id
    await rig.handle.worker.stop()  # closes 1001 and stays down, as a page whose renderer died
    assert await rig.recovery.wait_outcome(before, WITHIN) == (True, "reconnect")
    await assert_serves(rig)
    events = await assert_incident_logged(rig.store, WORKER, "inc-1", ["reconnect"], "recovered")
    assert events[0].error_kind == "page_crash"


async def test_crash_without_new_hello_recovers_by_reconnect(rig: Rig) -> None:
    """A socket cut (1006) that the page does not heal within the grace becomes a reconnect."""
    before = rig.recovery.machine.last_incident_id
    await rig.handle.inject(InjectedFault.RENDERER_CRASH)  # simulated: cut, and stay down
    assert await rig.recovery.wait_outcome(before, WITHIN) == (True, "reconnect")
    await assert_serves(rig)
    events = await assert_incident_logged(rig.store, WORKER, "inc-1", ["reconnect"], "recovered")
    assert events[0].error_kind == "transport"


async def test_socket_drop_heals_without_a_rung(rig: Rig) -> None:
    """A dropped socket the page reconnects by itself opens no incident, and its models survive."""
    connection = rig.handle.connection
    generation = connection.generation
    instance = connection.hello.instance if connection.hello else None
    await rig.handle.inject(InjectedFault.SOCKET_DROP)
    await connection.wait_for_hello(after=generation, timeout=WITHIN)
    # The watcher saw the close before this hello; a fault fed then would show as an incident.
    await asyncio.wait_for(rig.recovery.driver.settle(), WITHIN)
    assert connection.hello is not None
    assert connection.hello.instance == instance
    await assert_serves(rig)  # "mlp" was not loaded again: the same page kept it
    assert rig.recovery.machine.last_incident_id is None
    assert rig.recovery.state is ConnectionState.HEALTHY


async def test_hung_page_misses_a_heartbeat_and_is_crashed_and_reloaded_at_once(rig: Rig) -> None:
    """A hung page misses a heartbeat (which was the ping): the ladder goes straight to crash and
    reload, with no second ping."""
    before = rig.recovery.machine.last_incident_id
    await rig.handle.inject(InjectedFault.PAGE_HANG)
    assert await rig.recovery.wait_outcome(before, WITHIN) == (True, "reconnect")
    await assert_serves(rig)
    events = await assert_incident_logged(rig.store, WORKER, "inc-1", ["reconnect"], "recovered")
    started = [e for e in events if e.type == "RecoveryStarted"]
    assert (started[0].payload["trigger"], started[0].error_kind) == ("heartbeat_missed", "timeout")
    assert [e for e in events if e.type == "RungFailed"] == []
    reconnect = [e for e in events if e.type == "RungAttempted" and e.rung == "reconnect"]
    assert reconnect[0].payload["method"] == "crash_and_reload"


async def test_a_suspect_connection_whose_ping_times_out_is_crashed_and_reloaded(rig: Rig) -> None:
    """A connection only suspected (a request timed out) gets a ping first; a hung page fails it
    by timeout and is crashed and reloaded."""
    await rig.handle.inject(InjectedFault.PAGE_HANG)
    assert await rig.recovery.recover_connection(Suspected()) == (True, "reconnect")
    events = await rig.store.read_stream(f"connection/{WORKER}")
    failed = [e for e in events if e.type == "RungFailed"]
    assert [e.rung for e in failed] == ["ping"]
    assert failed[0].outcome == "timed_out" or failed[0].error_kind == "timeout"
    reconnect = [e for e in events if e.type == "RungAttempted" and e.rung == "reconnect"]
    assert reconnect[-1].payload["method"] == "crash_and_reload"


@pytest.mark.parametrize(
    ("fault", "rung", "handed_over"),
    [
        # The page reports a device loss by itself (a WorkerReported the bridge routes to us).
        (Fault.DEVICE_LOST, "ping", False),
        # An out-of-memory reply reaches the recovery only through the owner's notice_error.
        (Fault.OUT_OF_MEMORY, "reconnect", True),
    ],
)
async def test_page_error_kinds_start_their_rung(
    rig: Rig, fault: Fault, rung: str, handed_over: bool
) -> None:
    """device_lost recovers by a ping (the page recreated its device), out_of_memory by a reload."""
    before = rig.recovery.machine.last_incident_id
    await rig.handle.worker.inject(fault)
    with pytest.raises(ModelError) as failure:
        await rig.handle.connection.infer("mlp", {"input": X}, timeout=WITHIN)
    assert failure.value.kind == fault.value
    if handed_over:
        assert rig.recovery.notice_error(failure.value)
    assert await rig.recovery.wait_outcome(before, WITHIN) == (True, rung)
    assert "mlp" in rig.handle.worker.models
    await assert_serves(rig)
    events = await assert_incident_logged(rig.store, WORKER, "inc-1", [rung], "recovered")
    assert events[0].error_kind == fault.value


async def test_other_error_kinds_start_no_recovery(rig: Rig) -> None:
    """A validation error is the breakers' business: notice_error starts no recovery."""
    assert not rig.recovery.notice_error(ModelError("bad shape", "validation"))
    assert rig.recovery.machine.incident_id is None


async def test_process_exit_recovers_by_restart_and_reloads_models(rig: Rig) -> None:
    """recover_connection(ProcessExited) restarts the worker, loads its models again, and serves."""
    await rig.handle.inject(InjectedFault.BROWSER_KILL)
    success, method = await asyncio.wait_for(rig.recovery.recover_connection(ProcessExited(-9)), WITHIN)
    assert (success, method) == (True, "restart")
    assert set(rig.handle.worker.models) == {"mlp", "_probe"}
    await assert_serves(rig)
    await assert_incident_logged(rig.store, WORKER, "inc-1", ["restart"], "recovered")


async def test_recover_connection_on_a_healthy_worker_is_a_ping(rig: Rig) -> None:
    """A merely suspect connection (the seed's call, no fault given) is proven healthy by a ping."""
    assert await asyncio.wait_for(rig.recovery.recover_connection(), WITHIN) == (True, "ping")
    await assert_incident_logged(rig.store, WORKER, "inc-1", ["ping"], "recovered")


async def test_spent_budget_quarantines_and_tells_the_owner(rig: Rig) -> None:
    """With the restart budget spent, the next restart quarantines: worker stopped, owner called."""
    assert await asyncio.wait_for(rig.recovery.recover_connection(ProcessExited(-9)), WITHIN) == (
        True,
        "restart",
    )
    assert await asyncio.wait_for(rig.recovery.recover_connection(ProcessExited(-9)), WITHIN) == (
        False,
        "quarantine",
    )
    await asyncio.wait_for(rig.told.wait(), WITHIN)
    assert rig.quarantined == ["budget_exhausted"]
    assert not rig.handle.worker.running
    assert rig.recovery.state is ConnectionState.FAILED
    await assert_incident_logged(rig.store, WORKER, "inc-2", [], "budget_exhausted")


async def test_a_new_recovery_resumes_the_logged_budget(rig: Rig) -> None:
    """A Recovery started afresh on the same store restores the lifecycle, restart budget included."""
    assert await asyncio.wait_for(rig.recovery.recover_connection(ProcessExited(-9)), WITHIN) == (
        True,
        "restart",
    )
    await rig.recovery.stop()
    again = Recovery(rig.handle, rig.store, policy=POLICY, ids=CountingIds())
    async with again:
        await again.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY)
        assert again.machine.restarts_in_window() == 1
        assert await asyncio.wait_for(again.recover_connection(ProcessExited(-9)), WITHIN) == (
            False,
            "quarantine",
        )
    await rig.recovery.start()  # the fixture stops what it started


async def test_stop_leaves_no_watcher_and_the_worker_running(rig: Rig) -> None:
    """After stop, no watcher task is left, the worker still serves, and a close opens no incident."""
    await rig.recovery.stop()
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert not any(name.startswith("recovery ") for name in names)
    await assert_serves(rig)
    version = await rig.store.stream_version(f"connection/{WORKER}")
    generation = rig.handle.connection.generation
    await rig.handle.inject(InjectedFault.SOCKET_DROP)
    await rig.handle.connection.wait_for_hello(after=generation, timeout=WITHIN)
    assert await rig.store.stream_version(f"connection/{WORKER}") == version
    await rig.recovery.start()


async def test_a_recovery_started_before_the_hello_waits_for_it(tmp_path: Path) -> None:
    """A Recovery started before its worker leaves STARTING on the first hello, logged with its latency."""
    async with BridgeServer() as server, open_store(tmp_path / "start.db") as store:
        handle = SimulatedHandle(server, "late-1")
        try:
            async with Recovery(handle, store, policy=POLICY) as recovery:
                assert recovery.state is ConnectionState.STARTING
                await handle.start()
                await asyncio.wait_for(
                    recovery.driver.wait_for(lambda m: m.state is ConnectionState.HEALTHY), WITHIN
                )
        finally:
            await handle.stop()  # after the Recovery: a worker stopping under it is a fault
        types = [event.type for event in await store.read_stream("connection/late-1")]
        assert types == ["ConnectionCreated", "ConnectionStarted"]


async def test_a_recovery_interrupted_by_a_stop_resumes_with_a_restart(rig: Rig) -> None:
    """A recovery still open when its Recovery stopped is resumed by the next one at the restart rung."""
    slow_ping = dataclasses.replace(POLICY, ping_timeout_s=WITHIN, restart_budget=3)
    first = Recovery(rig.handle, rig.store, policy=slow_ping, models=MODELS, ids=CountingIds())
    await rig.recovery.stop()
    await rig.handle.inject(InjectedFault.PAGE_HANG)
    async with first:
        first.driver.fault(Suspected())
        await first.driver.wait_for(lambda m: m.state is ConnectionState.PINGING)
    second = Recovery(rig.handle, rig.store, policy=slow_ping, models=MODELS, ids=CountingIds())
    async with second:
        incident = second.machine.last_incident_id
        assert incident is not None
        # A fault no worse than the resumed restart joins it: recover_connection reports its end.
        assert await asyncio.wait_for(second.recover_connection(ProcessExited()), WITHIN) == (
            True,
            "restart",
        )
        assert second.machine.last_incident_id == incident
    await assert_serves(rig)
    events = await assert_incident_logged(rig.store, WORKER, incident, ["ping", "restart"], "recovered")
    assert "RecoveryResumed" in [event.type for event in events]
    await rig.recovery.start()
