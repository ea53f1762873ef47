"""The connection lifecycle: a pure state machine that drives the recovery ladder.

Sans-I/O, in the manner of python-websockets' protocol objects: feed it signals (a hello, a
fault, a step's outcome, a deadline passing), then drain what it decided with
:meth:`ConnectionLifecycle.drain_events` (past-tense events to persist) and
:meth:`ConnectionLifecycle.drain_commands` (imperative commands for the driver). It reads time
from an injected clock and never awaits, sleeps, or touches a socket or the store.

.. code-block:: text

    STARTING --hello--> HEALTHY --request_drain--> DRAINING
        |                  |                          | drained / drain deadline
        | fault, or        | fault: start rung by signal (a missed heartbeat: crash and reload)
        | start deadline   v                          v
        +------------> PINGING --fail/timeout--> RECONNECTING --fail/timeout--> RESTARTING --+
                           |                          |                            |  ^      |
                           +-- verified round trip ---+---------- HEALTHY <--------+  +------+
                                                                                  retry while
        any rung: restart budget spent, or overall deadline passed --> FAILED     budget allows
        any state but CLOSED: request_close --> CLOSED

A rung is two steps: its action (``SendPing``, ``ReloadPage``/``CrashAndReload``,
``RestartBrowser``), then ``VerifyRoundTrip``. Each step carries an ``attempt`` number; the
driver reports the outcome with it, and an outcome for any other number is stale and ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from transitions import Machine, MachineError

from poolwarden.clock import Clock
from poolwarden.errors import InvalidTransition
from poolwarden.events import RecordedEvent
from poolwarden.lifecycle_events import (
    ConnectionClosed,
    ConnectionCreated,
    ConnectionQuarantined,
    ConnectionResumed,
    ConnectionStarted,
    DrainStarted,
    LifecycleEvent,
    LifecycleRecord,
    RecoveryCompleted,
    RecoveryResumed,
    RecoveryStarted,
    RungAttempted,
    RungFailed,
    RungSucceeded,
    RungVerificationStarted,
    fold,
)
from poolwarden.lifecycle_types import (
    AbortStep,
    CancelWake,
    ConnectionState,
    CrashAndReload,
    Fault,
    LifecycleCommand,
    LifecyclePolicy,
    Phase,
    Quarantine,
    ReloadPage,
    RestartBrowser,
    Rung,
    SendPing,
    StepCommand,
    VerifyRoundTrip,
    WakeAt,
)

__all__ = ["ConnectionLifecycle", "IdFactory", "uuid_ids"]

IdFactory = Callable[[], str]
"""Makes incident ids: the I/O edges pass :func:`uuid_ids`, tests a counter, so the machine stays
deterministic given its inputs."""

_S = ConnectionState
_RECOVERING: Final = frozenset({_S.PINGING, _S.RECONNECTING, _S.RESTARTING})
_ALIVE: Final = frozenset({_S.STARTING, _S.HEALTHY, _S.DRAINING}) | _RECOVERING

# The one Machine of the class. Records are passed to its events as models rather than added with
# add_model (see _emit for why, and what pins it).
_MACHINE: Final = Machine(
    model=None,
    states=ConnectionState,
    initial=_S.STARTING,
    auto_transitions=False,
    transitions=[
        {"trigger": "started", "source": _S.STARTING, "dest": _S.HEALTHY},
        {"trigger": "enter_ping", "source": [_S.HEALTHY, _S.DRAINING], "dest": _S.PINGING},
        {
            "trigger": "enter_reconnect",
            "source": [_S.HEALTHY, _S.DRAINING, _S.PINGING],
            "dest": _S.RECONNECTING,
        },
        {"trigger": "enter_restart", "source": list(_ALIVE), "dest": _S.RESTARTING},
        {"trigger": "recovered", "source": list(_RECOVERING), "dest": _S.HEALTHY},
        {"trigger": "quarantine", "source": list(_ALIVE), "dest": _S.FAILED},
        {"trigger": "drain", "source": _S.HEALTHY, "dest": _S.DRAINING},
        {"trigger": "close", "source": [*_ALIVE, _S.FAILED], "dest": _S.CLOSED},
        {"trigger": "resume", "source": [_S.STARTING, _S.HEALTHY, _S.DRAINING], "dest": _S.STARTING},
    ],
)

_ENTER_RUNG: Final = {
    Rung.PING: "enter_ping",
    Rung.RECONNECT: "enter_reconnect",
    Rung.RESTART: "enter_restart",
}
_NEXT_RUNG: Final = {Rung.PING: Rung.RECONNECT, Rung.RECONNECT: Rung.RESTART, Rung.RESTART: Rung.RESTART}


def uuid_ids() -> str:
    """A random incident id (a UUID4's hex): the id factory the I/O edges inject."""
    return uuid.uuid4().hex


class ConnectionLifecycle:
    """One connection's lifecycle. Create it when its browser is launched, or :meth:`restore` it.

    >>> from poolwarden.clock import FakeClock
    >>> from poolwarden.lifecycle_types import HeartbeatMissed, Suspected
    >>> life = ConnectionLifecycle("conn-1", browser="chromium", clock=FakeClock(), ids=lambda: "inc-1")
    >>> life.hello()
    True
    >>> life.fault(Suspected())
    True
    >>> [type(c).__name__ for c in life.drain_commands()][-2:]
    ['SendPing', 'WakeAt']
    """

    __slots__ = (
        "_clock",
        "_commands",
        "_events",
        "_ids",
        "_last_incident",
        "_policy",
        "_record",
        "_restored",
    )

    def __init__(
        self,
        connection_id: str,
        *,
        browser: str | None = None,
        policy: LifecyclePolicy | None = None,
        clock: Clock,
        ids: IdFactory,
    ) -> None:
        self._setup(LifecycleRecord(connection_id, browser=browser), policy, clock, ids)
        now = clock()
        deadline = now + self._policy.start_timeout_s
        self._emit(ConnectionCreated(**self._base(now), start_deadline=deadline))
        self._commands.append(WakeAt(deadline))

    def _setup(
        self, record: LifecycleRecord, policy: LifecyclePolicy | None, clock: Clock, ids: IdFactory
    ) -> None:
        self._record = record
        self._policy = policy if policy is not None else LifecyclePolicy()
        self._clock = clock
        self._ids = ids
        self._events: list[LifecycleEvent] = []
        self._commands: list[LifecycleCommand] = []
        self._restored = False
        self._last_incident = record.incident_id

    @classmethod
    def restore(
        cls,
        connection_id: str,
        events: Iterable[RecordedEvent | LifecycleEvent],
        *,
        snapshot: Mapping[str, Any] | None = None,
        policy: LifecyclePolicy | None = None,
        clock: Clock,
        ids: IdFactory,
    ) -> ConnectionLifecycle:
        """The machine as its log left it: ``snapshot`` (if any), then ``events`` after it.

        It emits nothing. It holds the state the previous process recorded, but that process's
        browsers are gone (swept as orphans), so it takes no signal but :meth:`resume` (or
        :meth:`request_close`) until resumed: others raise InvalidTransition.
        """
        policy = policy if policy is not None else LifecyclePolicy()
        record = fold(connection_id, events, restart_window_s=policy.restart_window_s, snapshot=snapshot)
        machine = cls.__new__(cls)
        machine._setup(record, policy, clock, ids)
        machine._restored = True
        return machine

    # --- what the driver reads -------------------------------------------------------------

    @property
    def connection_id(self) -> str:
        """The connection's id."""
        return self._record.connection_id

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._record.state

    @property
    def incident_id(self) -> str | None:
        """The open recovery's incident id, if a recovery is under way."""
        return self._record.incident_id

    @property
    def last_incident_id(self) -> str | None:
        """The id of the latest recovery this machine opened or restored, open or not."""
        return self._last_incident

    @property
    def rung(self) -> Rung | None:
        """The rung being tried, if a recovery is under way."""
        return self._record.rung

    @property
    def attempt(self) -> int:
        """The number of the latest step issued; only its outcome counts."""
        return self._record.attempt

    @property
    def deadline(self) -> float | None:
        """When the pending deadline (start, drain, or step) passes, if one is pending."""
        return self._record.deadline

    def restarts_in_window(self) -> int:
        """How many fault-driven restarts the budget's window holds now."""
        horizon = self._clock() - self._policy.restart_window_s
        return sum(1 for t in self._record.restart_times if t > horizon)

    def snapshot(self) -> dict[str, Any]:
        """The machine's state as a JSON-ready dict, for :meth:`restore`'s ``snapshot``."""
        return self._record.to_dict()

    def drain_events(self) -> list[LifecycleEvent]:
        """The events decided since the last call, oldest first; persist them in this order."""
        events, self._events = self._events, []
        return events

    def drain_commands(self) -> list[LifecycleCommand]:
        """The commands decided since the last call, oldest first; carry them out in this order."""
        commands, self._commands = self._commands, []
        return commands

    # --- signals ----------------------------------------------------------------------------

    def hello(self) -> bool:
        """A hello arrived. In STARTING it makes the connection HEALTHY; elsewhere it changes nothing.

        During a recovery a hello is part of the step under way, whose outcome the driver reports.
        """
        self._require_resumed("hello")
        r = self._record
        if r.state is not _S.STARTING:
            return False
        now = self._clock()
        self._emit(ConnectionStarted(**self._base(now), latency_ms=(now - r.since) * 1000), "started")
        self._commands.append(CancelWake())
        return True

    def fault(self, fault: Fault) -> bool:
        """A fault was seen. Opens a recovery at the rung the fault calls for, or escalates to it.

        Before the first hello any fault means the launch failed, so the browser is restarted.
        A fault no worse than the rung under way changes nothing: the rung covers it (our own
        reload closes the socket; our own restart ends the process). Ignored when FAILED or CLOSED.
        Returns whether anything changed.
        """
        self._require_resumed("fault")
        r = self._record
        if r.state not in _ALIVE:
            return False
        rung = Rung.RESTART if r.state is _S.STARTING else fault.start_rung
        close_code = getattr(fault, "code", None)
        page_hung = getattr(fault, "page_hung", False)
        if r.incident_id is None:
            self._open_incident(fault.trigger, fault.error_kind, close_code, rung, page_hung=page_hung)
            return True
        assert r.rung is not None  # an open incident is always on a rung
        if rung.level <= r.rung.level:
            return False
        self._fail_step("superseded", fault.error_kind, abort=True)
        self._attempt(rung, fault.error_kind, page_hung=page_hung)
        return True

    def step_succeeded(self, attempt: int) -> bool:
        """The step numbered ``attempt`` succeeded. Returns False (and changes nothing) if stale."""
        self._require_resumed("step_succeeded")
        r = self._record
        if not self._current(attempt):
            return False
        assert r.rung is not None
        now = self._clock()
        if r.phase is Phase.ACTING:
            deadline = self._bounded(now + self._policy.verify_timeout_s)
            attempt = r.attempt + 1
            self._emit(
                RungVerificationStarted(
                    **self._incident(now), rung=r.rung, attempt=attempt, deadline=deadline
                )
            )
            self._commands += [VerifyRoundTrip(attempt), WakeAt(deadline)]
            return True
        rung = r.rung
        assert r.step_started_at is not None
        assert r.incident_started_at is not None
        self._emit(
            RungSucceeded(
                **self._incident(now),
                rung=rung,
                attempt=attempt,
                latency_ms=(now - r.step_started_at) * 1000,
            )
        )
        self._emit(
            RecoveryCompleted(
                **self._incident(now),
                rung=rung,
                error_kind=r.incident_error_kind,
                from_state=r.state,
                latency_ms=(now - r.incident_started_at) * 1000,
            ),
            "recovered",
        )
        self._commands.append(CancelWake())
        return True

    def step_failed(self, attempt: int, error_kind: str, detail: str | None = None) -> bool:
        """The step numbered ``attempt`` failed with ``error_kind``: escalate. False if stale."""
        self._require_resumed("step_failed")
        if not self._current(attempt):
            return False
        self._fail_step("failed", error_kind, abort=False, detail=detail)
        self._escalate(error_kind)
        return True

    def tick(self) -> bool:
        """A wake-up came: act on the pending deadline if it has passed.

        Early (the timer fired before the clock reached the deadline) it asks for the same
        wake-up again. Returns whether anything changed.
        """
        self._require_resumed("tick")
        r = self._record
        if r.deadline is None or r.state not in _ALIVE:
            return False
        now = self._clock()
        if now < r.deadline:
            self._commands.append(WakeAt(r.deadline))
            return False
        if r.state is _S.STARTING:
            self._open_incident("start_timeout", "timeout", None, Rung.RESTART)
        elif r.state is _S.DRAINING:
            self._open_incident("drain_timeout", None, None, Rung.RESTART, planned=True)
        else:
            self._fail_step("timed_out", "timeout", abort=True)
            self._escalate("timeout")
        return True

    def request_drain(self, reason: str) -> None:
        """Begin proactive recycling: finish in-flight work, take none, then restart.

        Raises :class:`~poolwarden.errors.InvalidTransition` unless HEALTHY.
        """
        self._require_resumed("request_drain")
        now = self._clock()
        deadline = now + self._policy.drain_timeout_s
        self._emit(DrainStarted(**self._base(now), reason=reason, deadline=deadline), "drain")
        self._commands.append(WakeAt(deadline))

    def drained(self) -> None:
        """In-flight work has finished: restart the browser (a planned recovery).

        Raises :class:`~poolwarden.errors.InvalidTransition` unless DRAINING.
        """
        self._require_resumed("drained")
        if self._record.state is not _S.DRAINING:
            raise InvalidTransition(type(self).__name__, self._record.state.name, "drained")
        self._open_incident("drained", None, None, Rung.RESTART, planned=True)

    def request_close(self) -> bool:
        """Close the connection for good, abandoning any recovery. False if already CLOSED."""
        r = self._record
        self._restored = False  # closing needs no browser, so a restored machine may close at once
        if r.state is _S.CLOSED:
            return False
        if r.phase is not None:
            self._commands.append(AbortStep(r.attempt))
        now = self._clock()
        self._emit(ConnectionClosed(**self._incident(now), from_state=r.state), "close")
        self._commands.append(CancelWake())
        return True

    def resume(self) -> bool:
        """After :meth:`restore` in a new process: relaunch, since the old browser is gone.

        FAILED and CLOSED stay as they are (False). A connection that was recovering continues
        the same incident at the restart rung, charged to the restart budget (so a crash loop
        still ends in FAILED), with a fresh overall deadline: the time the process was down was
        not spent recovering. Any other connection starts again as STARTING.
        """
        r = self._record
        if not self._restored:
            raise InvalidTransition(type(self).__name__, r.state.name, "resume")
        self._restored = False
        if r.state not in _ALIVE:
            return False
        now = self._clock()
        downtime = max(0.0, now - r.updated_at)
        if r.incident_id is None:
            deadline = now + self._policy.start_timeout_s
            self._emit(
                ConnectionResumed(
                    **self._base(now), from_state=r.state, start_deadline=deadline, downtime_s=downtime
                ),
                "resume",
            )
            self._commands.append(WakeAt(deadline))
            return True
        self._emit(
            RecoveryResumed(
                **self._incident(now),
                from_state=r.state,
                interrupted_rung=r.rung,
                overall_deadline=now + self._policy.recovery_timeout_s,
                downtime_s=downtime,
            )
        )
        self._attempt(Rung.RESTART, r.incident_error_kind)
        return True

    def _require_resumed(self, trigger: str) -> None:
        # A restored machine holds a past process's state; its browser and timers are gone.
        if self._restored:
            raise InvalidTransition(
                type(self).__name__, f"{self._record.state.name} (restored, not resumed)", trigger
            )

    # --- the ladder -------------------------------------------------------------------------

    def _open_incident(
        self,
        trigger: str,
        error_kind: str | None,
        close_code: int | None,
        rung: Rung,
        *,
        planned: bool = False,
        page_hung: bool = False,
    ) -> None:
        r = self._record
        now = self._clock()
        self._last_incident = self._ids()
        self._emit(
            RecoveryStarted(
                **self._base(now),
                incident_id=self._last_incident,
                trigger=trigger,
                error_kind=error_kind,
                close_code=close_code,
                from_state=r.state,
                rung=rung,
                overall_deadline=now + self._policy.recovery_timeout_s,
                planned=planned,
            )
        )
        self._attempt(rung, error_kind, page_hung=page_hung)

    def _attempt(self, rung: Rung, error_kind: str | None, *, page_hung: bool = False) -> None:
        r = self._record
        now = self._clock()
        charged = rung is Rung.RESTART and not r.incident_planned
        if charged and self.restarts_in_window() >= self._policy.restart_budget:
            self._quarantine("budget_exhausted", rung)
            return
        attempt = r.attempt + 1
        deadline = self._bounded(now + self._policy.rung_timeout(rung))
        command = self._action(rung, attempt, deadline - now, page_hung)
        self._emit(
            RungAttempted(
                **self._incident(now),
                rung=rung,
                method=_METHOD_NAMES[type(command)],
                attempt=attempt,
                deadline=deadline,
                charged=charged,
                error_kind=error_kind,
                from_state=r.state,
                to_state=rung.state,
            ),
            _ENTER_RUNG[rung],
        )
        self._commands += [command, WakeAt(deadline)]

    @staticmethod
    def _action(rung: Rung, attempt: int, timeout: float, page_hung: bool) -> StepCommand:
        if rung is Rung.PING:
            return SendPing(attempt, timeout)
        if rung is Rung.RECONNECT:
            return CrashAndReload(attempt) if page_hung else ReloadPage(attempt)
        return RestartBrowser(attempt)

    def _escalate(self, error_kind: str) -> None:
        r = self._record
        assert r.rung is not None
        assert r.overall_deadline is not None
        if self._clock() >= r.overall_deadline:
            self._quarantine("deadline_exceeded", r.rung)
            return
        # A ping that timed out means the page's JS thread is stuck: a plain reload would wait for it.
        page_hung = r.rung is Rung.PING and error_kind == "timeout"
        self._attempt(_NEXT_RUNG[r.rung], error_kind, page_hung=page_hung)

    def _fail_step(self, outcome: str, error_kind: str, *, abort: bool, detail: str | None = None) -> None:
        r = self._record
        assert r.rung is not None
        assert r.phase is not None
        assert r.step_started_at is not None
        now = self._clock()
        if abort:
            self._commands.append(AbortStep(r.attempt))
        self._emit(
            RungFailed(
                **self._incident(now),
                rung=r.rung,
                attempt=r.attempt,
                phase=r.phase,
                outcome=outcome,
                error_kind=error_kind,
                latency_ms=(now - r.step_started_at) * 1000,
                detail=detail,
            )
        )

    def _quarantine(self, reason: str, rung: Rung | None) -> None:
        r = self._record
        now = self._clock()
        started = r.incident_started_at if r.incident_started_at is not None else now
        self._emit(
            ConnectionQuarantined(
                **self._incident(now),
                rung=rung,
                error_kind=r.incident_error_kind,
                from_state=r.state,
                outcome=reason,
                latency_ms=(now - started) * 1000,
            ),
            "quarantine",
        )
        self._commands += [Quarantine(reason), CancelWake()]

    # --- plumbing ---------------------------------------------------------------------------

    def _current(self, attempt: int) -> bool:
        r = self._record
        return r.phase is not None and attempt == r.attempt and r.state in _RECOVERING

    def _bounded(self, deadline: float) -> float:
        overall = self._record.overall_deadline
        return deadline if overall is None else min(deadline, overall)

    def _base(self, now: float) -> dict[str, Any]:
        return {
            "connection_id": self._record.connection_id,
            "occurred_at": now,
            "browser": self._record.browser,
        }

    def _incident(self, now: float) -> dict[str, Any]:
        return {**self._base(now), "incident_id": self._record.incident_id}

    def _emit(self, event: LifecycleEvent, trigger: str | None = None) -> None:
        if trigger is not None:
            # Off transitions' documented path, on purpose: the record was never given to add_model.
            # Event.trigger(model) is what the method add_model binds would call, so a trigger costs
            # the same; add_model itself is what we avoid. Measured (transitions 0.9.3, 2-CPU test
            # machine): 258 us and 8 kB in 29 attributes per model (this record is slotted, 620 bytes
            # a machine), which would take restoring 10,000 connections from ~0.5 s to ~3 s; and
            # Machine.models would keep every connection alive until remove_model. Hence
            # transitions>=0.9.1,<0.10 in pyproject.toml, and tests/test_state_machines.py checks
            # this trigger against the declared transitions.
            try:
                _MACHINE.events[trigger].trigger(self._record)
            except MachineError as exc:
                raise InvalidTransition(type(self).__name__, self._record.state.name, trigger) from exc
        self._record.apply(event, self._policy.restart_window_s)
        self._events.append(event)

    def __repr__(self) -> str:
        r = self._record
        return f"<ConnectionLifecycle {r.connection_id} {r.state.name} rung={r.rung} attempt={r.attempt}>"


_METHOD_NAMES: Final[dict[type[StepCommand], str]] = {
    SendPing: "send_ping",
    ReloadPage: "reload_page",
    CrashAndReload: "crash_and_reload",
    RestartBrowser: "restart_browser",
    VerifyRoundTrip: "verify_round_trip",
}
