"""Every transition of the connection lifecycle, as a table, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from poolwarden.clock import FakeClock
from poolwarden.errors import InvalidTransition
from poolwarden.lifecycle import ConnectionLifecycle
from poolwarden.lifecycle_types import (
    ConnectionState,
    DeviceLost,
    LifecyclePolicy,
    OutOfMemory,
    ProcessExited,
    SocketClosed,
    Suspected,
)
from tests.lifecycle_support import CountingIds

S = ConnectionState
POLICY = LifecyclePolicy(
    start_timeout_s=30,
    ping_timeout_s=5,
    reconnect_timeout_s=10,
    restart_timeout_s=30,
    verify_timeout_s=5,
    recovery_timeout_s=300,
    drain_timeout_s=60,
    restart_budget=3,
    restart_window_s=600,
)

Op = Callable[[ConnectionLifecycle, FakeClock], object]


def past_deadline(life: ConnectionLifecycle, clock: FakeClock) -> bool:
    """Move the clock to the pending deadline, then tick."""
    assert life.deadline is not None
    clock.set(life.deadline)
    return life.tick()


def step_ok(life: ConnectionLifecycle, clock: FakeClock) -> bool:
    """Report the current step as succeeded."""
    return life.step_succeeded(life.attempt)


# How to reach each starting point of the table from a new connection.
SETUP: dict[str, list[Op]] = {
    "starting": [],
    "healthy": [lambda m, c: m.hello()],
    "pinging": [lambda m, c: m.hello(), lambda m, c: m.fault(Suspected())],
    "pinging/verifying": [lambda m, c: m.hello(), lambda m, c: m.fault(Suspected()), step_ok],
    "reconnecting": [lambda m, c: m.hello(), lambda m, c: m.fault(SocketClosed(1001))],
    "reconnecting/verifying": [lambda m, c: m.hello(), lambda m, c: m.fault(SocketClosed(1001)), step_ok],
    "restarting": [lambda m, c: m.hello(), lambda m, c: m.fault(ProcessExited(-9))],
    "restarting/verifying": [lambda m, c: m.hello(), lambda m, c: m.fault(ProcessExited(-9)), step_ok],
    "restarting/last": [
        lambda m, c: m.hello(),
        lambda m, c: m.fault(ProcessExited()),
        lambda m, c: m.step_failed(m.attempt, "process_exit"),
        lambda m, c: m.step_failed(m.attempt, "process_exit"),
    ],
    "healthy/spent": [
        lambda m, c: m.hello(),
        *[
            op
            for _ in range(3)
            for op in (lambda m, c: m.fault(ProcessExited()), step_ok, step_ok)  # restart, verified
        ],
    ],
    "draining": [lambda m, c: m.hello(), lambda m, c: m.request_drain("jobs")],
    "failed": [
        lambda m, c: m.hello(),
        lambda m, c: m.fault(ProcessExited()),
        lambda m, c: m.step_failed(m.attempt, "process_exit"),
        lambda m, c: m.step_failed(m.attempt, "process_exit"),
        lambda m, c: m.step_failed(m.attempt, "process_exit"),
    ],
    "closed": [lambda m, c: m.request_close()],
}

SIGNALS: dict[str, Op] = {
    "hello": lambda m, c: m.hello(),
    "heartbeat_missed": lambda m, c: m.fault(Suspected()),
    "device_lost": lambda m, c: m.fault(DeviceLost()),
    "socket_closed_1001": lambda m, c: m.fault(SocketClosed(1001)),
    "socket_closed_1006": lambda m, c: m.fault(SocketClosed(1006)),
    "out_of_memory": lambda m, c: m.fault(OutOfMemory()),
    "process_exited": lambda m, c: m.fault(ProcessExited(0)),
    "step_ok": step_ok,
    "step_failed": lambda m, c: m.step_failed(m.attempt, "transport"),
    "step_failed_timeout": lambda m, c: m.step_failed(m.attempt, "timeout"),
    "stale_ok": lambda m, c: m.step_succeeded(m.attempt - 1),
    "stale_failed": lambda m, c: m.step_failed(m.attempt - 1, "transport"),
    "deadline": past_deadline,
    "early_tick": lambda m, c: m.tick(),
    "request_drain": lambda m, c: m.request_drain("age"),
    "drained": lambda m, c: m.drained(),
    "request_close": lambda m, c: m.request_close(),
}


@dataclass(frozen=True)
class Row:
    start: str
    signal: str
    end: S
    events: tuple[str, ...]
    commands: tuple[str, ...]


def row(start: str, signal: str, end: S, events: str = "", commands: str = "") -> Row:
    return Row(start, signal, end, tuple(events.split()), tuple(commands.split()))


RESTART = "RecoveryStarted RungAttempted"
ESCALATE = "RungFailed RungAttempted"
TABLE = [
    # STARTING: waits for the first hello; any fault or the start deadline means the launch failed.
    row("starting", "hello", S.HEALTHY, "ConnectionStarted", "CancelWake"),
    row("starting", "heartbeat_missed", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("starting", "process_exited", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("starting", "socket_closed_1001", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("starting", "deadline", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("starting", "early_tick", S.STARTING, "", "WakeAt"),
    row("starting", "step_ok", S.STARTING),
    row("starting", "request_close", S.CLOSED, "ConnectionClosed", "CancelWake"),
    # HEALTHY: the signal picks the first rung.
    row("healthy", "hello", S.HEALTHY),
    row("healthy", "heartbeat_missed", S.PINGING, RESTART, "SendPing WakeAt"),
    row("healthy", "device_lost", S.PINGING, RESTART, "SendPing WakeAt"),
    row("healthy", "socket_closed_1001", S.RECONNECTING, RESTART, "ReloadPage WakeAt"),
    row("healthy", "socket_closed_1006", S.RECONNECTING, RESTART, "ReloadPage WakeAt"),
    row("healthy", "out_of_memory", S.RECONNECTING, RESTART, "ReloadPage WakeAt"),
    row("healthy", "process_exited", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("healthy", "early_tick", S.HEALTHY),
    row("healthy", "stale_ok", S.HEALTHY),
    row("healthy", "request_drain", S.DRAINING, "DrainStarted", "WakeAt"),
    row("healthy", "request_close", S.CLOSED, "ConnectionClosed", "CancelWake"),
    # PINGING: success goes on to verification; failure escalates; a hung page gets crash + reload.
    row("pinging", "step_ok", S.PINGING, "RungVerificationStarted", "VerifyRoundTrip WakeAt"),
    row("pinging", "step_failed", S.RECONNECTING, ESCALATE, "ReloadPage WakeAt"),
    row("pinging", "step_failed_timeout", S.RECONNECTING, ESCALATE, "CrashAndReload WakeAt"),
    row("pinging", "deadline", S.RECONNECTING, ESCALATE, "AbortStep CrashAndReload WakeAt"),
    row("pinging", "early_tick", S.PINGING, "", "WakeAt"),
    row("pinging", "heartbeat_missed", S.PINGING),
    row("pinging", "device_lost", S.PINGING),
    row("pinging", "hello", S.PINGING),
    row("pinging", "stale_ok", S.PINGING),
    row("pinging", "stale_failed", S.PINGING),
    row("pinging", "socket_closed_1001", S.RECONNECTING, ESCALATE, "AbortStep ReloadPage WakeAt"),
    row("pinging", "process_exited", S.RESTARTING, ESCALATE, "AbortStep RestartBrowser WakeAt"),
    row("pinging", "request_close", S.CLOSED, "ConnectionClosed", "AbortStep CancelWake"),
    row("pinging/verifying", "step_ok", S.HEALTHY, "RungSucceeded RecoveryCompleted", "CancelWake"),
    row("pinging/verifying", "step_failed", S.RECONNECTING, ESCALATE, "ReloadPage WakeAt"),
    row("pinging/verifying", "stale_ok", S.PINGING),
    # RECONNECTING: our own reload closes the socket, so socket faults are covered; a dead browser is not.
    row("reconnecting", "step_ok", S.RECONNECTING, "RungVerificationStarted", "VerifyRoundTrip WakeAt"),
    row("reconnecting", "step_failed", S.RESTARTING, ESCALATE, "RestartBrowser WakeAt"),
    row("reconnecting", "deadline", S.RESTARTING, ESCALATE, "AbortStep RestartBrowser WakeAt"),
    row("reconnecting", "socket_closed_1006", S.RECONNECTING),
    row("reconnecting", "out_of_memory", S.RECONNECTING),
    row("reconnecting", "heartbeat_missed", S.RECONNECTING),
    row("reconnecting", "process_exited", S.RESTARTING, ESCALATE, "AbortStep RestartBrowser WakeAt"),
    row("reconnecting/verifying", "step_ok", S.HEALTHY, "RungSucceeded RecoveryCompleted", "CancelWake"),
    row("reconnecting/verifying", "step_failed", S.RESTARTING, ESCALATE, "RestartBrowser WakeAt"),
    # RESTARTING: retried while the budget allows; our own kill ends the process, so exits are covered.
    row("restarting", "step_ok", S.RESTARTING, "RungVerificationStarted", "VerifyRoundTrip WakeAt"),
    row("restarting", "step_failed", S.RESTARTING, ESCALATE, "RestartBrowser WakeAt"),
    row("restarting", "deadline", S.RESTARTING, ESCALATE, "AbortStep RestartBrowser WakeAt"),
    row("restarting", "process_exited", S.RESTARTING),
    row("restarting", "socket_closed_1001", S.RESTARTING),
    row("restarting", "request_close", S.CLOSED, "ConnectionClosed", "AbortStep CancelWake"),
    row("restarting/verifying", "step_ok", S.HEALTHY, "RungSucceeded RecoveryCompleted", "CancelWake"),
    # The restart budget (3 in 600 s) spent: the next restart quarantines instead.
    row(
        "restarting/last",
        "step_failed",
        S.FAILED,
        "RungFailed ConnectionQuarantined",
        "Quarantine CancelWake",
    ),
    row(
        "restarting/last",
        "deadline",
        S.FAILED,
        "RungFailed ConnectionQuarantined",
        "AbortStep Quarantine CancelWake",
    ),
    row("restarting/last", "step_ok", S.RESTARTING, "RungVerificationStarted", "VerifyRoundTrip WakeAt"),
    row(
        "healthy/spent",
        "process_exited",
        S.FAILED,
        "RecoveryStarted ConnectionQuarantined",
        "Quarantine CancelWake",
    ),
    row("healthy/spent", "heartbeat_missed", S.PINGING, RESTART, "SendPing WakeAt"),
    # DRAINING: a planned restart once in-flight work is done or the drain deadline passes.
    row("draining", "drained", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("draining", "deadline", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("draining", "early_tick", S.DRAINING, "", "WakeAt"),
    row("draining", "heartbeat_missed", S.PINGING, RESTART, "SendPing WakeAt"),
    row("draining", "process_exited", S.RESTARTING, RESTART, "RestartBrowser WakeAt"),
    row("draining", "request_close", S.CLOSED, "ConnectionClosed", "CancelWake"),
    # FAILED: quarantined; faults change nothing; it can still be closed.
    row("failed", "heartbeat_missed", S.FAILED),
    row("failed", "process_exited", S.FAILED),
    row("failed", "hello", S.FAILED),
    row("failed", "early_tick", S.FAILED),
    row("failed", "request_close", S.CLOSED, "ConnectionClosed", "CancelWake"),
    # CLOSED: final.
    row("closed", "hello", S.CLOSED),
    row("closed", "process_exited", S.CLOSED),
    row("closed", "early_tick", S.CLOSED),
    row("closed", "request_close", S.CLOSED),
]

INVALID = [
    ("starting", "request_drain"),
    ("starting", "drained"),
    ("healthy", "drained"),
    ("pinging", "request_drain"),
    ("restarting", "drained"),
    ("draining", "request_drain"),
    ("failed", "request_drain"),
    ("closed", "request_drain"),
    ("closed", "drained"),
]


def reach(start: str) -> tuple[ConnectionLifecycle, FakeClock]:
    """A connection in the table's starting point ``start``, outboxes drained, clock moved on 1 s."""
    clock = FakeClock()
    life = ConnectionLifecycle("conn-1", browser="chromium", policy=POLICY, clock=clock, ids=CountingIds())
    for op in SETUP[start]:
        op(life, clock)
    life.drain_events()
    life.drain_commands()
    clock.advance(1)
    return life, clock


def test_setup_reaches_each_starting_point() -> None:
    """Each named starting point of the table is the state its name says."""
    for start in SETUP:
        life, _ = reach(start)
        assert life.state.value == start.split("/")[0]


@pytest.mark.parametrize("case", TABLE, ids=lambda r: f"{r.start}+{r.signal}")
def test_transition(case: Row) -> None:
    """A signal in a state leads to the tabled state, events and commands."""
    life, clock = reach(case.start)
    SIGNALS[case.signal](life, clock)
    assert life.state is case.end
    assert tuple(type(e).__name__ for e in life.drain_events()) == case.events
    assert tuple(type(c).__name__ for c in life.drain_commands()) == case.commands


@pytest.mark.parametrize(("start", "signal"), INVALID, ids=lambda v: str(v))
def test_invalid_input_raises_and_changes_nothing(start: str, signal: str) -> None:
    """A request the state forbids raises InvalidTransition and leaves state and outboxes untouched."""
    life, clock = reach(start)
    before = life.snapshot()
    with pytest.raises(InvalidTransition) as caught:
        SIGNALS[signal](life, clock)
    assert caught.value.state == before["state"].upper()
    assert life.snapshot() == before
    assert life.drain_events() == []
    assert life.drain_commands() == []


def test_every_state_is_covered_by_the_table() -> None:
    """The table exercises every state as a starting point and reaches every state as an end."""
    starts = {r.start.split("/")[0] for r in TABLE}
    ends = {r.end for r in TABLE}
    assert starts == {s.value for s in S}
    assert ends == set(S)
