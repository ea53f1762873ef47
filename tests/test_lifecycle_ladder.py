"""The recovery ladder's rules: start rungs, deadlines, the restart budget, stale results, events."""

from __future__ import annotations

import pytest

from poolwarden.clock import FakeClock
from poolwarden.errors import ConfigurationError
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_events import (
    ConnectionQuarantined,
    RecoveryCompleted,
    RecoveryStarted,
    RungAttempted,
    RungFailed,
    stream_of,
)
from poolwarden.lifecycle_types import (
    ConnectionState,
    CrashAndReload,
    DeviceLost,
    Fault,
    HeartbeatMissed,
    LifecyclePolicy,
    OutOfMemory,
    ProcessExited,
    Quarantine,
    ReloadPage,
    RestartBrowser,
    Rung,
    SendPing,
    SocketClosed,
    Suspected,
    WakeAt,
)
from tests.lifecycle_support import CountingIds

S = ConnectionState


def healthy(policy: LifecyclePolicy | None = None) -> tuple[ConnectionLifecycle, FakeClock]:
    """A HEALTHY connection with empty outboxes."""
    clock = FakeClock()
    life = ConnectionLifecycle("conn-7", browser="chromium", policy=policy, clock=clock, ids=CountingIds())
    life.hello()
    life.drain_events()
    life.drain_commands()
    return life, clock


@pytest.mark.parametrize(
    ("fault", "rung", "method", "error_kind"),
    [
        (Suspected(), Rung.PING, "send_ping", "timeout"),
        # The heartbeat was the ping: a missed one goes straight to crashing the stuck page.
        (HeartbeatMissed(), Rung.RECONNECT, "crash_and_reload", "timeout"),
        (DeviceLost(), Rung.PING, "send_ping", "device_lost"),
        (SocketClosed(1001), Rung.RECONNECT, "reload_page", "page_crash"),
        (SocketClosed(1006), Rung.RECONNECT, "reload_page", "transport"),
        (OutOfMemory(), Rung.RECONNECT, "reload_page", "out_of_memory"),
        (ProcessExited(-9), Rung.RESTART, "restart_browser", "process_exit"),
    ],
)
def test_signal_chooses_the_first_rung(fault: Fault, rung: Rung, method: str, error_kind: str) -> None:
    """The fault that opens a recovery decides its first rung, and is recorded with its error kind."""
    life, _ = healthy()
    life.fault(fault)
    started, attempted = life.drain_events()
    assert isinstance(started, RecoveryStarted)
    assert isinstance(attempted, RungAttempted)
    assert (started.rung, started.error_kind) == (rung, error_kind)
    assert (attempted.rung, attempted.method) == (rung, method)
    assert life.state is rung.state


def test_close_code_is_recorded() -> None:
    """A socket fault records its close code in RecoveryStarted."""
    life, _ = healthy()
    life.fault(SocketClosed(1001))
    started = life.drain_events()[0]
    assert isinstance(started, RecoveryStarted)
    assert started.close_code == 1001
    assert started.to_new_event().payload["close_code"] == 1001


def test_rung_deadlines_follow_the_policy() -> None:
    """Each rung's action and its verification get their own deadline from the policy."""
    policy = LifecyclePolicy(
        ping_timeout_s=2, reconnect_timeout_s=7, restart_timeout_s=20, verify_timeout_s=3
    )
    life, clock = healthy(policy)
    t0 = clock()
    life.fault(Suspected())
    assert life.drain_commands() == [SendPing(1, 2.0), WakeAt(t0 + 2)]
    clock.advance(1)
    life.step_succeeded(1)
    assert life.drain_commands()[-1] == WakeAt(t0 + 1 + 3)
    clock.advance(0.5)
    life.step_failed(2, "validation")
    assert life.drain_commands() == [ReloadPage(3), WakeAt(t0 + 1.5 + 7)]
    clock.set(t0 + 1.5 + 7)
    life.tick()
    assert life.drain_commands()[-2:] == [RestartBrowser(4), WakeAt(t0 + 8.5 + 20)]


def test_a_ping_that_times_out_leads_to_crash_and_reload() -> None:
    """A hung page (its ping timed out) is crashed and reloaded, since a plain reload would wait for it."""
    life, clock = healthy()
    life.fault(Suspected())
    life.drain_commands()
    clock.advance(5)
    life.tick()
    commands = life.drain_commands()
    assert CrashAndReload(2) in commands
    failed = life.drain_events()[-2]
    assert isinstance(failed, RungFailed)
    assert (failed.outcome, failed.error_kind) == ("timed_out", "timeout")


def test_overall_deadline_quarantines() -> None:
    """When the whole recovery outlives its overall deadline, the connection is quarantined."""
    policy = LifecyclePolicy(
        ping_timeout_s=5, reconnect_timeout_s=5, restart_timeout_s=50, recovery_timeout_s=12, restart_budget=9
    )
    life, clock = healthy(policy)
    t0 = clock()
    life.fault(Suspected())
    clock.advance(5)
    life.tick()  # ping timed out at t0+5 -> reconnect until t0+10
    clock.advance(5)
    life.tick()  # reconnect timed out at t0+10 -> restart, its deadline capped at t0+12
    assert life.state is S.RESTARTING
    assert life.deadline == t0 + 12
    life.drain_events()
    life.drain_commands()
    clock.advance(2)
    life.tick()
    assert life.state is S.FAILED
    failed, quarantined = life.drain_events()
    assert isinstance(failed, RungFailed)
    assert isinstance(quarantined, ConnectionQuarantined)
    assert quarantined.outcome == "deadline_exceeded"
    assert quarantined.latency_ms == pytest.approx(12_000)
    assert Quarantine("deadline_exceeded") in life.drain_commands()


def test_restart_budget_spent_quarantines() -> None:
    """Once the window's restart budget is spent, the next restart quarantines instead."""
    policy = LifecyclePolicy(restart_budget=2, restart_window_s=600, recovery_timeout_s=10_000)
    life, clock = healthy(policy)
    for _ in range(2):
        life.fault(ProcessExited())
        life.step_succeeded(life.attempt)
        life.step_succeeded(life.attempt)
        assert life.state is S.HEALTHY
        clock.advance(60)
    assert life.restarts_in_window() == 2
    life.drain_events()
    life.fault(ProcessExited())
    assert life.state is S.FAILED
    started, quarantined = life.drain_events()
    assert isinstance(started, RecoveryStarted)
    assert isinstance(quarantined, ConnectionQuarantined)
    assert quarantined.outcome == "budget_exhausted"
    assert quarantined.incident_id == started.incident_id


def test_restart_budget_refills_after_the_window() -> None:
    """Restarts older than the window no longer count against the budget."""
    policy = LifecyclePolicy(restart_budget=1, restart_window_s=100)
    life, clock = healthy(policy)
    life.fault(ProcessExited())
    life.step_succeeded(life.attempt)
    life.step_succeeded(life.attempt)
    clock.advance(100.5)
    assert life.restarts_in_window() == 0
    life.fault(ProcessExited())
    assert life.state is S.RESTARTING


def test_repeated_failed_restarts_end_in_failed() -> None:
    """A browser that never comes back is restarted until the budget is spent, then quarantined."""
    policy = LifecyclePolicy(restart_budget=3, recovery_timeout_s=10_000)
    life, _ = healthy(policy)
    life.fault(ProcessExited())
    restarts = 1
    while life.state is S.RESTARTING:
        life.step_failed(life.attempt, "process_exit")
        restarts += life.state is S.RESTARTING
    assert restarts == 3
    assert life.state is S.FAILED


def test_planned_restart_does_not_spend_the_budget() -> None:
    """Recycling after a drain restarts the browser without spending the restart budget."""
    policy = LifecyclePolicy(restart_budget=1)
    life, _ = healthy(policy)
    life.request_drain("jobs")
    life.drained()
    assert life.state is S.RESTARTING
    assert life.restarts_in_window() == 0
    attempted = life.drain_events()[-1]
    assert isinstance(attempted, RungAttempted)
    assert not attempted.charged


def test_result_after_deadline_is_stale() -> None:
    """A step's result that arrives after its deadline moved the ladder on changes nothing."""
    life, clock = healthy()
    life.fault(Suspected())
    ping_attempt = life.attempt
    clock.advance(5)
    life.tick()
    life.drain_events()
    before = life.snapshot()
    assert not life.step_succeeded(ping_attempt)
    assert not life.step_failed(ping_attempt, "timeout")
    assert life.snapshot() == before
    assert life.drain_events() == []
    assert life.state is S.RECONNECTING


def test_action_result_is_not_the_verification_result() -> None:
    """The action's attempt number cannot complete the verification that follows it."""
    life, _ = healthy()
    life.fault(SocketClosed(1001))
    action = life.attempt
    life.step_succeeded(action)
    assert not life.step_succeeded(action)
    assert life.state is S.RECONNECTING
    assert life.step_succeeded(action + 1)
    assert life.state is S.HEALTHY


def test_one_incident_id_per_recovery() -> None:
    """Every event of one recovery carries the same incident id; the next recovery gets a new one."""
    life, clock = healthy()
    life.fault(Suspected())
    clock.advance(5)
    life.tick()
    life.step_succeeded(life.attempt)
    life.step_succeeded(life.attempt)
    first = life.drain_events()
    assert {e.incident_id for e in first} == {"inc-1"}
    life.fault(ProcessExited())
    assert {e.incident_id for e in life.drain_events()} == {"inc-2"}


def test_events_fill_the_indexed_columns() -> None:
    """Converted events fill connection, browser, states, rung, outcome, latency and error kind."""
    life, clock = healthy()
    life.fault(SocketClosed(1001))
    clock.advance(0.25)
    life.step_succeeded(life.attempt)
    clock.advance(0.25)
    life.step_succeeded(life.attempt)
    events = life.drain_events()
    completed = events[-1]
    assert isinstance(completed, RecoveryCompleted)
    new = completed.to_new_event()
    assert new.type == "RecoveryCompleted"
    assert (new.connection_id, new.browser, new.incident_id) == ("conn-7", "chromium", "inc-1")
    assert (new.from_state, new.to_state, new.rung, new.outcome) == (
        "reconnecting",
        "healthy",
        "reconnect",
        "recovered",
    )
    assert new.error_kind == "page_crash"
    assert new.latency_ms == pytest.approx(500)
    attempted = events[1].to_new_event()
    assert (attempted.from_state, attempted.to_state) == ("healthy", "reconnecting")
    assert attempted.payload["method"] == "reload_page"
    assert stream_of("conn-7") == "connection/conn-7"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ping_timeout_s": 0},
        {"restart_window_s": -1},
        {"restart_budget": -1},
        {"drain_timeout_s": float("nan")},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    """A policy with a non-positive duration or a negative budget is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        LifecyclePolicy(**kwargs)
