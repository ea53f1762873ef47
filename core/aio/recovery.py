"""One connection's recovery: bridge signals in, the lifecycle ladder out, on a real worker.

A :class:`Recovery` owns a :class:`~poolwarden.aio.lifecycle_driver.LifecycleDriver` whose actions are
:class:`~poolwarden.aio.recovery_actions.HandleRecoveryActions` over the connection's handle, and
background watchers that turn what the bridge and the browser show into lifecycle faults:

| seen | fault | first rung |
|---|---|---|
| the socket closed with 1001 (renderer gone, browser alive) | ``SocketClosed(1001)`` | reconnect |
| the browser's main process exited (its socket closes 1006) | ``ProcessExited`` | restart |
| the socket closed 1006, browser alive, no hello within the grace | ``SocketClosed(1006)`` | reconnect |
| the socket closed 1006 and the page said hello again within the grace | none: it healed (verified below) | |
| a heartbeat (application ping) unanswered | ``HeartbeatMissed`` | reconnect (crash and reload) |
| a heartbeat unanswered, the browser's processes stopped | ``BrowserStopped`` | restart |
| a request past its attempt timeout, or a recovery asked for | ``Suspected`` | ping |
| the page reported ``device_lost`` (unprompted, or as a request's error) | ``DeviceLost`` | ping |
| the page reported ``out_of_memory`` | ``OutOfMemory`` | reconnect |

A page that re-attached by itself is not trusted on its word: a round trip checked against the
reference verifies it (``on_reattached(verified, seconds, error)`` tells the owner, who
half-opens its breakers once verified); a failed check is a ``HeartbeatMissed``, and the ladder
takes over (a crash and reload first).

Closes of a socket a newer page has already replaced, and closes our own rungs cause (a rung
first declares the old socket dead, 4410; a reload closes with 1001, a restart ends the process),
change nothing: the lifecycle ignores a fault no worse than the rung under way.

The watchers only wait (on the connection's state changes, on the process, on a heartbeat
timer) and feed the driver synchronously, so cancelling them at any await leaves nothing half
done. Stop a :class:`Recovery` before the bridge server closes: a server shutting down closes
every socket with 1001, which would otherwise read as a crashed renderer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from poolwarden.aio.lifecycle_driver import LifecycleDriver, restore_lifecycle
from poolwarden.aio.recovery_actions import HandleRecoveryActions, ModelSource, QuarantineCallback
from poolwarden.bridge.server import CLOSE_DECLARED_DEAD, WorkerConnection
from poolwarden.bridge_events import WorkerReported
from poolwarden.browser.launcher import BrowserProcess
from poolwarden.clock import Clock, system_clock
from poolwarden.errors import DeadlineExceeded, PoolwardenError, WorkerDisconnected
from poolwarden.events import NewEvent
from poolwarden.lifecycle import ConnectionLifecycle, IdFactory, uuid_ids
from poolwarden.lifecycle_events import LifecycleEvent, RecoveryCompleted
from poolwarden.lifecycle_types import (
    BrowserStopped,
    ConnectionState,
    DeviceLost,
    Fault,
    HeartbeatMissed,
    LifecyclePolicy,
    OutOfMemory,
    ProcessExited,
    SocketClosed,
    Suspected,
)
from poolwarden.storage.base import EventStore
from poolwarden.workers.handle import WorkerHandle, verify_round_trip

__all__ = ["Recovery"]

log = logging.getLogger(__name__)

ABNORMAL_CLOSE = 1006
"""Close code when no close frame came: the browser died, or the socket was cut."""

_FOREVER = 3600.0  # a watcher's wait is re-armed when it times out; it ends only by cancellation

ReattachCallback = Callable[[bool, float, BaseException | None], None]
"""Told of a page that re-attached by itself: whether the round trip verified it, the seconds
from the cut to the end of the check, and the check's error if it failed."""

_FAULT_OF_KIND: dict[str, Callable[[], Fault]] = {
    "device_lost": DeviceLost,
    "out_of_memory": OutOfMemory,
}


class Recovery:
    """Recovery of one worker connection by the lifecycle ladder (see the module docstring).

    ``models`` are the models the owner placed on the connection (loaded again after a reload or
    restart); ``on_quarantine(reason)`` is called once the ladder gave up and the worker is
    stopped; ``on_event(event)`` with each lifecycle event once it is persisted.
    ``heartbeat_interval_s`` (None: no heartbeat) paces the application pings that find a hung
    page, each allowed ``policy.ping_timeout_s``. Use as ``async with Recovery(...)``,
    after the handle has started (or before: its first hello then ends STARTING).
    """

    def __init__(
        self,
        handle: WorkerHandle,
        store: EventStore,
        *,
        policy: LifecyclePolicy | None = None,
        clock: Clock = system_clock,
        models: ModelSource = (),
        on_quarantine: QuarantineCallback | None = None,
        heartbeat_interval_s: float | None = None,
        reconnect_grace_s: float = 2.0,
        ids: IdFactory | None = None,
        snapshot_every: int = 100,
        on_event: Callable[[LifecycleEvent], None] | None = None,
        on_reattached: ReattachCallback | None = None,
    ) -> None:
        self.handle = handle
        self.on_reattached = on_reattached
        self.on_event = on_event
        self.store = store
        self.policy = policy if policy is not None else LifecyclePolicy()
        self.actions = HandleRecoveryActions(
            handle, policy=self.policy, models=models, on_quarantine=on_quarantine
        )
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reconnect_grace_s = reconnect_grace_s
        self._clock = clock
        self._ids = ids
        self._snapshot_every = snapshot_every
        self._driver: LifecycleDriver | None = None
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def connection(self) -> WorkerConnection:
        """The logical connection this recovery looks after."""
        return self.handle.connection

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`stop` not yet)."""
        return self._driver is not None

    @property
    def driver(self) -> LifecycleDriver:
        """The lifecycle driver (only once started)."""
        if self._driver is None:
            raise RuntimeError("Recovery.start() has not been called")
        return self._driver

    @property
    def machine(self) -> ConnectionLifecycle:
        """The connection's lifecycle machine (only once started)."""
        return self.driver.machine

    @property
    def state(self) -> ConnectionState:
        """The connection's lifecycle state."""
        return self.machine.state

    # --- running ------------------------------------------------------------------------------

    async def __aenter__(self) -> Recovery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Restore (or create) the connection's lifecycle, start its driver and the watchers."""
        if self._driver is not None:
            return
        connection_id = self.connection.connection_id
        ids = self._ids if self._ids is not None else uuid_ids
        restored = await restore_lifecycle(
            self.store, connection_id, policy=self.policy, clock=self._clock, ids=ids
        )
        if restored is None:
            machine = ConnectionLifecycle(
                connection_id, browser=self.handle.browser, policy=self.policy, clock=self._clock, ids=ids
            )
            version = 0
        else:
            machine, version = restored
        self._driver = LifecycleDriver(
            machine,
            self.actions,
            self.store,
            clock=self._clock,
            version=version,
            snapshot_every=self._snapshot_every,
            on_event=self.on_event,
        )
        self._driver.start()
        if restored is not None:
            self._driver.resume()
        if self.connection.connected:
            self._driver.hello()
        self._spawn(self._watch_socket(), "socket")
        self._spawn(self._watch_process(), "process")
        if self.heartbeat_interval_s is not None:
            self._spawn(self._heartbeat(self.heartbeat_interval_s), "heartbeat")

    async def stop(self) -> None:
        """Stop the watchers, then the driver (which persists all it decided). The worker runs on.

        Raises the error that broke a watcher or the driver, if one did.
        """
        watchers, self._watchers = self._watchers, []
        for task in watchers:
            task.cancel()
        results = await asyncio.gather(*watchers, return_exceptions=True)
        driver, self._driver = self._driver, None
        if driver is not None:
            await driver.stop()
        for result in results:
            if isinstance(result, Exception):
                raise result

    # --- signals from the owner ---------------------------------------------------------------

    def notice_error(self, error: BaseException | str | None) -> bool:
        """A request failed with ``error`` (or its error kind): start a recovery if it calls for one.

        ``device_lost`` and ``out_of_memory`` do; other kinds are the breakers' business. Returns
        whether the lifecycle changed.
        """
        kind = error if isinstance(error, str) or error is None else getattr(error, "kind", None)
        make = _FAULT_OF_KIND.get(kind) if isinstance(kind, str) else None
        return self.driver.fault(make()) if make is not None else False

    def on_bridge_event(self, event: NewEvent) -> None:
        """Feed a bridge event (route the server's ``on_event`` here): unprompted page errors count."""
        if event.type == WorkerReported.TYPE and event.connection_id == self.connection.connection_id:
            self.notice_error(event.error_kind)

    async def recover_connection(self, fault: Fault | None = None) -> tuple[bool, str]:
        """Recover the connection, as the seed's ``recover_connection`` did: ``(success, method)``.

        ``fault`` is what was seen (default: :class:`~poolwarden.lifecycle_types.Suspected`, the
        connection is merely suspect, so the ladder starts with a ping). Joins a recovery
        already under way. Returns ``(True, "ping" | "reconnect" | "restart")`` or
        ``(False, "quarantine" | "closed")``.
        """
        return await self.driver.recover(fault if fault is not None else Suspected())

    async def wait_outcome(
        self,
        after_incident: str | None,
        timeout: float,  # noqa: ASYNC109 -- a benchmark's wait must end, never hang
    ) -> tuple[bool, str]:
        """Wait for a recovery newer than ``after_incident`` to end; return it as ``recover_connection`` does.

        For a fault the watchers detect by themselves: read ``machine.last_incident_id`` before
        causing it, then wait here. Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        start_version = self.driver.version

        def ended(machine: ConnectionLifecycle) -> bool:
            return machine.last_incident_id != after_incident and machine.incident_id is None

        async with asyncio.timeout(timeout):
            await self.driver.wait_for(ended)
        machine = self.machine
        if machine.state is ConnectionState.FAILED:
            return False, "quarantine"
        if machine.state is ConnectionState.CLOSED:
            return False, "closed"
        incident = machine.last_incident_id
        events = await self.store.read_stream(self.driver.stream, from_version=start_version + 1)
        for event in reversed(events):
            if event.type == RecoveryCompleted.TYPE and event.incident_id == incident:
                assert event.rung is not None
                return True, event.rung
        raise AssertionError(f"incident {incident!r} ended HEALTHY without a RecoveryCompleted event")

    # --- watchers -----------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"recovery {name} {self.connection.connection_id}")
        task.add_done_callback(_report_watcher_failure)
        self._watchers.append(task)

    async def _watch_socket(self) -> None:
        """Each close of the attached socket becomes a fault, unless the page heals by itself."""
        connection = self.connection
        while True:
            generation = connection.generation
            if not connection.connected:
                if await _wait_hello(connection, generation, _FOREVER):
                    self.driver.hello()
                continue
            try:
                close = await connection.wait_closed(generation, timeout=_FOREVER)
            except DeadlineExceeded:
                continue
            if close.code == CLOSE_DECLARED_DEAD:
                # A rung under way let go of the socket itself (declare_dead, before its reload or
                # restart): nothing new to recover.
                continue
            cut_at = asyncio.get_running_loop().time()
            back = connection.generation != close.generation
            if not back and close.code != ABNORMAL_CLOSE:
                self.driver.fault(SocketClosed(close.code))
                continue
            # A cut socket (1006) heals itself: the page reconnects with backoff, its models
            # intact. A dead browser does not, and the process watcher has reported it meanwhile.
            if not back:
                back = await _wait_hello(connection, close.generation, self.reconnect_grace_s)
            if not back:
                self.driver.fault(SocketClosed(close.code))
                continue
            if close.code == ABNORMAL_CLOSE and self.machine.state is ConnectionState.HEALTHY:
                # Re-attached by itself, outside any recovery (a rung's own page is the rung's).
                self.driver.hello()
                await self._verify_reattached(cut_at)

    async def _browser_stopped(self) -> bool:
        try:
            return await _stopped_of(self.handle)
        except Exception:  # a failed look is no evidence either way
            return False

    async def _verify_reattached(self, cut_at: float) -> None:
        """Check a page that re-attached by itself with a round trip against the reference."""
        connection = self.connection
        generation = connection.generation
        error: BaseException | None = None
        try:
            await verify_round_trip(connection, timeout=self.policy.verify_timeout_s)
        except (PoolwardenError, OSError) as failed:
            error = failed
        took = asyncio.get_running_loop().time() - cut_at
        if self.on_reattached is not None:
            self.on_reattached(error is None, took, error)
        if error is not None and connection.generation == generation:
            self.driver.fault(HeartbeatMissed())  # not proved: the ladder decides, from a ping

    async def _watch_process(self) -> None:
        """The exit of the worker's browser process (if it has one) becomes ``ProcessExited``."""
        connection = self.connection
        while True:
            process = getattr(self.handle, "process", None)
            if not isinstance(process, BrowserProcess):
                # No process now (simulated, or stopped for a restart): look again after a hello.
                await _wait_hello(connection, connection.generation, _FOREVER)
                continue
            returncode = await process.process.wait()
            if getattr(self.handle, "process", None) is process:
                # Not our own restart or stop, which drop the process before killing it.
                self.driver.fault(ProcessExited(returncode))
                await _wait_hello(connection, connection.generation, _FOREVER)

    async def _heartbeat(self, interval: float) -> None:
        """Application pings while HEALTHY: only they find a page whose JS thread is stuck."""
        connection = self.connection
        while True:
            await asyncio.sleep(interval)
            if self.machine.state is not ConnectionState.HEALTHY or not connection.connected:
                continue
            generation = connection.generation
            try:
                pong = await connection.app_ping(self.policy.ping_timeout_s)
            except DeadlineExceeded:
                if connection.generation == generation:
                    # A stopped browser would fail the ping and the reload rungs by timeout
                    # (~11 s): straight to the restart, as for a killed one.
                    stopped = await self._browser_stopped()
                    self.driver.fault(BrowserStopped() if stopped else HeartbeatMissed())
            except WorkerDisconnected:
                pass  # the socket watcher reports the close
            else:
                if pong.gpu == "lost":
                    self.driver.fault(DeviceLost())
                elif pong.gpu == "timeout":
                    self.driver.fault(HeartbeatMissed())


async def _stopped_of(handle: WorkerHandle) -> bool:
    process = getattr(handle, "process", None)
    return isinstance(process, BrowserProcess) and await process.stopped()


def _report_watcher_failure(task: asyncio.Task[None]) -> None:
    # At once, not only at stop(): a dead watcher means faults go unnoticed until then.
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r (stop() raises it)", task.get_name(), task.exception())


async def _wait_hello(connection: WorkerConnection, after: int, within: float) -> bool:
    """Whether a hello newer than generation ``after`` came within ``within`` seconds."""
    with contextlib.suppress(DeadlineExceeded):
        await connection.wait_for_hello(after=after, timeout=within)
        return True
    return False
