"""The vocabulary of the connection lifecycle: its states, rungs, policy and commands.

The lifecycle machine (:mod:`poolwarden.lifecycle`) reads signals and emits two things: events
(what happened, past tense, persisted) and *commands* (what the driver must do now, imperative,
never persisted). This module holds the commands and the small enums both sides share.

Every command that starts a recovery step carries the step's ``attempt`` number. The driver
reports the step's outcome with the same number, and the machine ignores an outcome whose number
is not the current one: a result that arrives after a deadline or a worse fault moved the ladder
on is stale and changes nothing.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import ClassVar

from poolwarden.errors import ConfigurationError

__all__ = [
    "RENDERER_GONE",
    "AbortStep",
    "BrowserStopped",
    "CancelWake",
    "ConnectionState",
    "CrashAndReload",
    "DeviceLost",
    "Fault",
    "HeartbeatMissed",
    "LifecycleCommand",
    "LifecyclePolicy",
    "OutOfMemory",
    "Phase",
    "ProcessExited",
    "Quarantine",
    "ReloadPage",
    "RestartBrowser",
    "Rung",
    "SendPing",
    "SocketClosed",
    "StepCommand",
    "VerifyRoundTrip",
    "WakeAt",
]


class ConnectionState(enum.Enum):
    """Where a connection is in its life. The values are what the store's state columns hold."""

    STARTING = "starting"
    """Its browser was launched; no hello yet."""
    HEALTHY = "healthy"
    """Serving."""
    DRAINING = "draining"
    """Finishing in-flight work, accepting none, before a planned restart (proactive recycling)."""
    PINGING = "pinging"
    """Recovery rung 1: an application ping proves the JS thread and the GPU device alive."""
    RECONNECTING = "reconnecting"
    """Recovery rung 2: the page is reloaded (or crashed and reloaded, if hung) and must say hello."""
    RESTARTING = "restarting"
    """Recovery rung 3: the whole browser is killed and launched again."""
    FAILED = "failed"
    """Quarantined: recovery gave up; the pool replaces the connection."""
    CLOSED = "closed"
    """Closed on request; final."""


class Rung(enum.Enum):
    """A step of the recovery ladder, in escalation order."""

    PING = "ping"
    RECONNECT = "reconnect"
    RESTART = "restart"

    @property
    def state(self) -> ConnectionState:
        """The connection state while this rung is being tried."""
        return _RUNG_STATE[self]

    @property
    def level(self) -> int:
        """The rung's height on the ladder (ping 0, reconnect 1, restart 2)."""
        return _RUNG_LEVEL[self]


_RUNG_STATE = {
    Rung.PING: ConnectionState.PINGING,
    Rung.RECONNECT: ConnectionState.RECONNECTING,
    Rung.RESTART: ConnectionState.RESTARTING,
}
_RUNG_LEVEL = {rung: level for level, rung in enumerate(Rung)}


class Phase(enum.Enum):
    """The two halves of a rung: carry out its action, then verify a round trip."""

    ACTING = "acting"
    VERIFYING = "verifying"


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecyclePolicy:
    """Deadlines and the restart budget. All durations are seconds.

    A rung's deadline is ``now + <rung>_timeout_s`` when its action is issued, and
    ``now + verify_timeout_s`` when its round trip is; neither goes past the recovery's overall
    deadline, ``recovery_timeout_s`` after the fault. At most ``restart_budget`` fault-driven
    browser restarts may start within any ``restart_window_s``; the next one quarantines instead.
    """

    start_timeout_s: float = 30.0
    ping_timeout_s: float = 5.0
    reconnect_timeout_s: float = 10.0
    restart_timeout_s: float = 30.0
    verify_timeout_s: float = 5.0
    recovery_timeout_s: float = 120.0
    drain_timeout_s: float = 60.0
    restart_budget: int = 3
    restart_window_s: float = 600.0

    def __post_init__(self) -> None:
        for name in (
            "start_timeout_s",
            "ping_timeout_s",
            "reconnect_timeout_s",
            "restart_timeout_s",
            "verify_timeout_s",
            "recovery_timeout_s",
            "drain_timeout_s",
            "restart_window_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"LifecyclePolicy.{name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.restart_budget, int) or self.restart_budget < 0:
            raise ConfigurationError(
                f"LifecyclePolicy.restart_budget must be an int >= 0, got {self.restart_budget!r}"
            )

    def rung_timeout(self, rung: Rung) -> float:
        """How long the action of ``rung`` may take."""
        if rung is Rung.PING:
            return self.ping_timeout_s
        if rung is Rung.RECONNECT:
            return self.reconnect_timeout_s
        return self.restart_timeout_s


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send an application ping and await its pong within ``timeout`` seconds.

    The pong proves the page's JS thread runs and its GPU device answers (the protocol's ping is
    a tiny GPU submission): the WebSocket's own ping cannot see a hung page.
    """

    attempt: int
    timeout: float


@dataclass(frozen=True, slots=True)
class ReloadPage:
    """Reload the worker page (CDP ``Page.reload``) and wait for its hello."""

    attempt: int


@dataclass(frozen=True, slots=True)
class CrashAndReload:
    """Crash the page's renderer (CDP ``Page.crash``), reload it and wait for its hello.

    Used when the page is hung: a plain reload waits for the hung script to finish.
    """

    attempt: int


@dataclass(frozen=True, slots=True)
class RestartBrowser:
    """Kill the browser's process group, launch it again, wait for hello, load its models again."""

    attempt: int


@dataclass(frozen=True, slots=True)
class VerifyRoundTrip:
    """Prove the connection serves: a hello has been seen and a tiny inference comes back right.

    A rung counts as successful only once this succeeds.
    """

    attempt: int


@dataclass(frozen=True, slots=True)
class AbortStep:
    """Stop the step of ``attempt`` if it still runs: the machine has moved on from it.

    Its outcome would be ignored anyway; stopping it keeps two actions (a reload and a restart,
    say) from working on the same browser at once.
    """

    attempt: int


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Take the connection out of service for good; ``reason`` says why recovery gave up."""

    reason: str


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call the machine's ``tick()`` at ``at`` (epoch seconds); replaces any earlier wake-up."""

    at: float


@dataclass(frozen=True, slots=True)
class CancelWake:
    """No deadline is pending any more: drop the scheduled wake-up."""


StepCommand = SendPing | ReloadPage | CrashAndReload | RestartBrowser | VerifyRoundTrip
"""A command whose outcome the driver reports back with ``step_succeeded``/``step_failed``."""

LifecycleCommand = StepCommand | AbortStep | Quarantine | WakeAt | CancelWake
"""Everything the lifecycle machine may ask its driver to do."""


# --- faults: the signals that open (or escalate) a recovery ----------------------------------

RENDERER_GONE = 1001
"""WebSocket close code Chromium sends when the page's renderer dies while the browser lives."""


# Each fault says, as class attributes, the trigger it is recorded under, its error kind, and the
# rung recovery from it begins at.


@dataclass(frozen=True, slots=True)
class HeartbeatMissed:
    """An application heartbeat (a ping, given ``ping_timeout_s``) went unanswered: the page's
    script is stuck. The heartbeat was the ping, so the ladder starts at the reconnect rung with
    a crash and reload (a plain reload would wait for the stuck script)."""

    trigger: ClassVar[str] = "heartbeat_missed"
    error_kind: ClassVar[str] = "timeout"
    start_rung: ClassVar[Rung] = Rung.RECONNECT
    page_hung: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Suspected:
    """The connection is suspect without proof that its page is stuck: a request outlived its
    attempt timeout (a long inference may), or someone asked for a recovery (the seed's
    ``recover_connection``). Starts at the ping rung: a ping that answers ends the recovery, one
    that times out escalates to a crash and reload."""

    trigger: ClassVar[str] = "suspected"
    error_kind: ClassVar[str] = "timeout"
    start_rung: ClassVar[Rung] = Rung.PING


@dataclass(frozen=True, slots=True)
class SocketClosed:
    """The worker's WebSocket closed with ``code``. Starts at the reconnect rung.

    1001 means the renderer is gone but the browser lives; any other code (1006 on a dropped
    socket, say) is a transport fault whose page may come back by a reload too. A dead browser
    shows up as :class:`ProcessExited`, which escalates to a restart.
    """

    code: int
    trigger: ClassVar[str] = "socket_closed"
    start_rung: ClassVar[Rung] = Rung.RECONNECT

    @property
    def error_kind(self) -> str:
        """``page_crash`` for 1001, else ``transport``."""
        return "page_crash" if self.code == RENDERER_GONE else "transport"


@dataclass(frozen=True, slots=True)
class ProcessExited:
    """The browser's main process exited. Only a restart can help."""

    returncode: int | None = None
    trigger: ClassVar[str] = "process_exited"
    error_kind: ClassVar[str] = "process_exit"
    start_rung: ClassVar[Rung] = Rung.RESTART


@dataclass(frozen=True, slots=True)
class BrowserStopped:
    """The browser's processes are stopped (SIGSTOP, a frozen cgroup): nothing in them answers,
    DevTools included, so neither a ping nor a reload can help. Only a restart can, and it kills
    the process group first (a stopped process dies of SIGKILL all the same)."""

    trigger: ClassVar[str] = "browser_stopped"
    error_kind: ClassVar[str] = "timeout"
    start_rung: ClassVar[Rung] = Rung.RESTART


@dataclass(frozen=True, slots=True)
class DeviceLost:
    """The page reported its GPU device lost. The page recreates it; a ping proves it did."""

    trigger: ClassVar[str] = "device_lost"
    error_kind: ClassVar[str] = "device_lost"
    start_rung: ClassVar[Rung] = Rung.PING


@dataclass(frozen=True, slots=True)
class OutOfMemory:
    """The page ran out of memory. A reload frees the renderer's heap and GPU buffers."""

    trigger: ClassVar[str] = "out_of_memory"
    error_kind: ClassVar[str] = "out_of_memory"
    start_rung: ClassVar[Rung] = Rung.RECONNECT


Fault = HeartbeatMissed | Suspected | SocketClosed | ProcessExited | BrowserStopped | DeviceLost | OutOfMemory
"""A signal that the connection is not serving."""
