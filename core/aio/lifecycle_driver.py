"""The asyncio edge of the connection lifecycle: persist what it decides, then carry it out.

A :class:`LifecycleDriver` owns one :class:`~poolwarden.lifecycle.ConnectionLifecycle`. Every
input (a fault, a hello, a step's outcome, a timer) is fed to the machine at once, and a single
pump task then drains the machine: it appends the events to the connection's stream and only
then carries out the commands, so the log always knows about a step (and the restart budget it
spent) before the step begins. Steps run as tasks through an injected :class:`RecoveryActions`;
``WakeAt`` becomes a loop timer.

Cancellation: cancelling :meth:`LifecycleDriver.recover` cancels only that wait; the recovery
goes on. :meth:`LifecycleDriver.stop` persists everything decided so far before it cancels the
running step, so a later process restores exactly what this one decided.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from poolwarden.classify import STEP_TRANSPORT, classify
from poolwarden.clock import Clock
from poolwarden.lifecycle import ConnectionLifecycle, IdFactory, uuid_ids
from poolwarden.lifecycle_events import (
    ConnectionClosed,
    ConnectionQuarantined,
    LifecycleEvent,
    RecoveryCompleted,
    stream_of,
)
from poolwarden.lifecycle_types import (
    AbortStep,
    CancelWake,
    ConnectionState,
    CrashAndReload,
    Fault,
    LifecycleCommand,
    LifecyclePolicy,
    Quarantine,
    ReloadPage,
    RestartBrowser,
    SendPing,
    StepCommand,
    VerifyRoundTrip,
    WakeAt,
)
from poolwarden.storage.base import Durability, EventStore

__all__ = ["LifecycleDriver", "RecoveryActions", "error_kind_of", "restore_lifecycle"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class RecoveryActions(Protocol):
    """What the driver needs from the browser side. Each method returns on success and raises on failure.

    The exception's kind is recorded (see :func:`error_kind_of`). A method may be cancelled when
    the machine moves on (a deadline passed, a worse fault came); it must then stop its work.
    """

    # The timeout travels in the ping itself: the page bounds its GPU submission by it.
    async def send_ping(self, timeout: float) -> None:  # noqa: ASYNC109
        """Send an application ping; return on its pong; raise ``TimeoutError`` after ``timeout``."""

    async def reload_page(self) -> None:
        """Reload the page (CDP ``Page.reload``) and return once its hello arrived."""

    async def crash_and_reload(self) -> None:
        """Crash the hung page (CDP ``Page.crash``), reload it, and return once its hello arrived."""

    async def restart_browser(self) -> None:
        """Kill the browser's process group, launch it, await its hello, load its models again."""

    async def verify_round_trip(self) -> None:
        """Prove the connection serves: a tiny inference whose result is checked."""

    async def quarantine(self, reason: str) -> None:
        """Take the connection out of service so the pool replaces it."""


def error_kind_of(exc: BaseException) -> str:
    """The error kind a failed step is recorded with: the kind its exception reported (any string
    ``kind`` it carries, as it is), else ``timeout``, ``transport`` (``ConnectionError``,
    ``ProtocolError``) or ``unknown`` (:func:`poolwarden.classify.classify`, ``as_reported``)."""
    return classify(exc, transport=STEP_TRANSPORT, as_reported=True)


async def restore_lifecycle(
    store: EventStore,
    connection_id: str,
    *,
    policy: LifecyclePolicy | None = None,
    clock: Clock,
    ids: IdFactory | None = None,
) -> tuple[ConnectionLifecycle, int] | None:
    """A connection's machine as the store left it, and its stream's version; ``None`` if unknown.

    Reads the latest snapshot and the events after it. Call ``resume()`` on the machine (or
    :meth:`LifecycleDriver.resume`) before driving it.
    """
    stream = stream_of(connection_id)
    snapshot = await store.load_snapshot(stream)
    start = snapshot.version + 1 if snapshot is not None else 1
    events = await store.read_stream(stream, from_version=start)
    version = events[-1].version if events else (snapshot.version if snapshot is not None else 0)
    if version == 0:
        return None
    machine = ConnectionLifecycle.restore(
        connection_id,
        events,
        snapshot=snapshot.state if snapshot is not None else None,
        policy=policy,
        clock=clock,
        ids=ids if ids is not None else uuid_ids,
    )
    return machine, version


_TERMINAL = (RecoveryCompleted, ConnectionQuarantined, ConnectionClosed)


class LifecycleDriver:
    """Runs one connection's lifecycle machine against real time, a store and recovery actions.

    ``version`` is the stream version already persisted (0 for a new connection, or what
    :func:`restore_lifecycle` returned). Use as ``async with LifecycleDriver(...) as driver``.
    """

    def __init__(
        self,
        machine: ConnectionLifecycle,
        actions: RecoveryActions,
        store: EventStore,
        *,
        clock: Clock,
        version: int = 0,
        snapshot_every: int = 100,
        durability: Durability | None = None,
        on_event: Callable[[LifecycleEvent], None] | None = None,
    ) -> None:
        self.machine = machine
        self.on_event = on_event
        self.actions = actions
        self.store = store
        self.stream = stream_of(machine.connection_id)
        self.version = version
        self._clock = clock
        self._snapshot_every = snapshot_every
        self._snapshot_version = version
        self._durability = durability
        self._wake = asyncio.Event()
        self._settled = asyncio.Condition()
        self._pumping = False
        self._pump_task: asyncio.Task[None] | None = None
        self._step: tuple[int, asyncio.Task[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._outcomes: dict[str, asyncio.Future[tuple[bool, str]]] = {}
        self._failure: BaseException | None = None

    # --- running ------------------------------------------------------------------------------

    async def __aenter__(self) -> LifecycleDriver:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the pump; whatever the machine has already decided is persisted and carried out."""
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump_loop(), name=f"lifecycle {self.stream}")
            self._wake.set()

    async def stop(self) -> None:
        """Persist everything decided so far, then stop the step, the timer and the pump.

        The connection is not closed: a later process restores it and resumes. Raises the
        error that broke the driver, if one did.
        """
        settling: asyncio.Future[None] | None = None
        try:
            if self._pump_task is not None and self._failure is None:
                settling = asyncio.ensure_future(self.settle())
                await asyncio.shield(settling)
        finally:
            # Also when settling failed or was cancelled: no timer or task may outlive the driver
            # (a settle left waiting once the pump is gone would wait for ever).
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            tasks: list[asyncio.Future[None]] = list(self._tasks)
            if settling is not None:
                tasks.append(settling)
            self._step = None
            if self._pump_task is not None:
                tasks.append(self._pump_task)
                self._pump_task = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._raise_failure()

    async def settle(self) -> None:
        """Wait until everything the machine has decided is persisted and its commands issued."""
        await self.wait_for(lambda machine: True)

    async def wait_for(self, predicate: Callable[[ConnectionLifecycle], bool]) -> None:
        """Wait until ``predicate(machine)`` holds with everything decided so far persisted."""
        async with self._settled:
            await self._settled.wait_for(
                lambda: self._raise_failure() or (self._idle() and predicate(self.machine))
            )

    # --- inputs -------------------------------------------------------------------------------

    def hello(self) -> bool:
        """A hello arrived on the connection's socket."""
        return self._feed(self.machine.hello)

    def fault(self, fault: Fault) -> bool:
        """A fault was seen; recovery starts or escalates without waiting for it."""
        return self._feed(lambda: self.machine.fault(fault))

    def request_drain(self, reason: str) -> None:
        """Begin proactive recycling (see :meth:`ConnectionLifecycle.request_drain`)."""
        self._feed(lambda: self.machine.request_drain(reason))

    def drained(self) -> None:
        """In-flight work has finished: restart the browser."""
        self._feed(self.machine.drained)

    def resume(self) -> bool:
        """Resume a restored machine (see :meth:`ConnectionLifecycle.resume`)."""
        return self._feed(self.machine.resume)

    async def close_connection(self) -> None:
        """Close the connection for good and wait until that is persisted."""
        self._feed(self.machine.request_close)
        await self.settle()

    async def recover(self, fault: Fault) -> tuple[bool, str]:
        """Feed ``fault`` and wait for the recovery it starts (or joins) to end, as the seed's
        ``recover_connection`` does: ``(True, rung)`` with the rung that recovered (``"ping"``,
        ``"reconnect"``, ``"restart"``), or ``(False, "quarantine")`` / ``(False, "closed")``.
        """
        self._raise_failure()
        state = self.machine.state
        if state is ConnectionState.FAILED:
            return False, "quarantine"
        if state is ConnectionState.CLOSED:
            return False, "closed"
        self.fault(fault)
        incident = self.machine.last_incident_id
        assert incident is not None, "a fault in a live state always opens or joins a recovery"
        future = self._outcomes.get(incident)
        if future is None:
            future = self._outcomes[incident] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(future)

    # --- the pump -----------------------------------------------------------------------------

    def _feed(self, signal: Callable[[], T]) -> T:
        """Feed the machine one input, unless the driver is broken, and wake the pump."""
        self._raise_failure()
        result = signal()
        self._wake.set()
        return result

    def _idle(self) -> bool:
        return not self._wake.is_set() and not self._pumping

    async def _pump_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._pumping = True
                await self._pump_once()
                self._pumping = False
                async with self._settled:
                    self._settled.notify_all()
        except Exception as exc:
            await self._break(exc)

    async def _pump_once(self) -> None:
        events = self.machine.drain_events()
        commands = self.machine.drain_commands()
        # Taken now, while it matches exactly the events drained so far.
        snapshot = self.machine.snapshot() if events else None
        if events:
            receipt = await self.store.append(
                self.stream,
                [event.to_new_event() for event in events],
                expected_version=self.version,
                durability=self._durability,
            )
            self.version = (await receipt).last_version
            if snapshot is not None and self.version - self._snapshot_version >= self._snapshot_every:
                await self.store.save_snapshot(self.stream, self.version, snapshot)
                self._snapshot_version = self.version
        for command in commands:
            self._execute(command)
        for event in events:
            self._settle_outcome(event)
            if self.on_event is not None:
                self.on_event(event)  # once persisted: what the owner acts on is in the log

    def _settle_outcome(self, event: LifecycleEvent) -> None:
        if not isinstance(event, _TERMINAL) or event.incident_id is None:
            return
        future = self._outcomes.pop(event.incident_id, None)
        if future is None or future.done():
            return
        if isinstance(event, RecoveryCompleted):
            future.set_result((True, event.rung.value))
        elif isinstance(event, ConnectionQuarantined):
            future.set_result((False, "quarantine"))
        else:
            future.set_result((False, "closed"))

    def _execute(self, command: LifecycleCommand) -> None:
        match command:
            case WakeAt(at=at):
                if self._timer is not None:
                    self._timer.cancel()
                delay = max(0.0, at - self._clock())
                self._timer = asyncio.get_running_loop().call_later(delay, self._on_wake)
            case CancelWake():
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            case AbortStep(attempt=attempt):
                if self._step is not None and self._step[0] == attempt:
                    self._step[1].cancel()
                    self._step = None
            case Quarantine(reason=reason):
                self._spawn(self.actions.quarantine(reason))
            case _:
                if self._step is not None and not self._step[1].done():
                    self._step[1].cancel()  # the machine moved on; never two steps on one browser
                self._step = (command.attempt, self._spawn(self._run_step(command)))

    async def _run_step(self, command: StepCommand) -> None:
        try:
            await self._perform(command)
        except Exception as exc:
            log.info("%s: step %r failed: %r", self.stream, command, exc)
            self.machine.step_failed(
                command.attempt, error_kind_of(exc), detail=f"{type(exc).__name__}: {exc}"
            )
        else:
            self.machine.step_succeeded(command.attempt)
        self._wake.set()

    def _perform(self, command: StepCommand) -> Coroutine[Any, Any, None]:
        match command:
            case SendPing(timeout=timeout):
                return self.actions.send_ping(timeout)
            case ReloadPage():
                return self.actions.reload_page()
            case CrashAndReload():
                return self.actions.crash_and_reload()
            case RestartBrowser():
                return self.actions.restart_browser()
            case VerifyRoundTrip():
                return self.actions.verify_round_trip()

    def _on_wake(self) -> None:
        self._timer = None
        if self._failure is None:
            self.machine.tick()
            self._wake.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task the driver tracks; an error escaping it breaks the driver."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:
                await self._break(exc)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            work.close()  # a task cancelled before it ran never awaited ``work``: close it unrun

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(done)
        return task

    async def _break(self, exc: BaseException) -> None:
        """The driver cannot go on (the store or an action failed): fail every waiter with ``exc``."""
        log.error("%s: lifecycle driver stopped: %r", self.stream, exc)
        self._failure = exc
        for future in self._outcomes.values():
            if not future.done():
                future.set_exception(exc)
        self._outcomes.clear()
        async with self._settled:
            self._settled.notify_all()

    def _raise_failure(self) -> bool:
        if self._failure is not None:
            raise self._failure
        return False
