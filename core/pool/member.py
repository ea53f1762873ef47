"""One connection of the pool: its worker, its lifecycle, the models it holds, its work in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poolwarden.clock import Clock
from poolwarden.lifecycle_driver import LifecycleDriver
from poolwarden.lifecycle_types import ConnectionState, ProcessExited, SocketClosed
from poolwarden.workers.handle import WorkerHandle, verify_round_trip

if TYPE_CHECKING:
    from poolwarden.bridge.server import WorkerConnection

__all__ = ["ModelSlot", "PoolMember"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelSlot:
    """A model placed on a connection."""

    model_id: str
    kind: str
    options: dict[str, Any]
    last_used_at: float
    in_flight: int = 0


@dataclass(slots=True)
class PoolMember:
    """A connection of the pool and everything the pool tracks about it."""

    connection_id: str
    kind: str
    handle: WorkerHandle
    concurrency: int
    clock: Clock
    models: dict[str, ModelSlot] = field(default_factory=dict)
    in_flight: int = 0
    jobs: int = 0
    started_at: float = 0.0
    draining: bool = False
    driver: LifecycleDriver | None = None
    loading: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(init=False)
    idle: asyncio.Event = field(init=False)
    _changed: asyncio.Event = field(init=False)
    _watcher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.concurrency)
        self.idle = asyncio.Event()
        self.idle.set()
        self._changed = asyncio.Event()

    @property
    def connection(self) -> WorkerConnection:
        """The bridge connection the worker's page attaches to."""
        return self.handle.connection

    @property
    def browser(self) -> str:
        """The browser behind the connection (``simulated`` for a simulated worker)."""
        return str(getattr(self.handle, "browser", self.kind))

    @property
    def state(self) -> ConnectionState:
        """The lifecycle state (STARTING before the machine exists)."""
        return self.driver.machine.state if self.driver is not None else ConnectionState.STARTING

    @property
    def serving(self) -> bool:
        """Whether requests may be routed here now."""
        return self.state is ConnectionState.HEALTHY and not self.draining

    @property
    def busy(self) -> bool:
        """Whether every request slot is taken."""
        return self.in_flight >= self.concurrency

    @property
    def load(self) -> int:
        """Requests in flight plus models held: what placement balances."""
        return self.in_flight + len(self.models)

    def begin(self, model_id: str) -> None:
        """A request starts on this connection."""
        self.in_flight += 1
        self.idle.clear()
        slot = self.models.get(model_id)
        if slot is not None:
            slot.in_flight += 1
            slot.last_used_at = self.clock()
        self._notify()

    def end(self, model_id: str) -> None:
        """A request on this connection ended (whatever its outcome)."""
        self.in_flight -= 1
        self.jobs += 1
        slot = self.models.get(model_id)
        if slot is not None:
            slot.in_flight = max(0, slot.in_flight - 1)
        if self.in_flight == 0:
            self.idle.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[PoolMember], bool]) -> None:
        """Wait until ``predicate(self)`` holds; re-checked each time a request starts or ends."""
        while not predicate(self):
            await self._changed.wait()

    def watch(self, on_fault: Callable[[PoolMember, object], None]) -> None:
        """Turn the socket's closes into lifecycle faults, in a background task."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(on_fault), name=f"watch {self.connection_id}")

    async def _watch(self, on_fault: Callable[[PoolMember, object], None]) -> None:
        connection = self.connection
        while True:
            generation = connection.generation
            with contextlib.suppress(TimeoutError):
                close = await connection.wait_closed(generation, timeout=3600.0)
                if self.state is not ConnectionState.HEALTHY:
                    # A recovery step (our own reload or restart) closed it, or it is not up yet.
                    await connection.wait_for_hello(after=close.generation, timeout=3600.0)
                    continue
                if not self._process_alive():
                    on_fault(self, ProcessExited())
                else:
                    on_fault(self, SocketClosed(close.code))
                with contextlib.suppress(TimeoutError):
                    await connection.wait_for_hello(after=close.generation, timeout=3600.0)

    def _process_alive(self) -> bool:
        process = getattr(self.handle, "process", None)
        if process is not None:
            return bool(process.alive)
        worker = getattr(self.handle, "worker", None)
        running = getattr(worker, "running", None)
        return True if running is None else bool(running)

    async def stop_watching(self) -> None:
        """Stop the close watcher."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class MemberActions:
    """The recovery ladder's steps carried out on a pool member's worker handle."""

    def __init__(
        self,
        member: PoolMember,
        *,
        rung_timeout: float,
        on_quarantine: Callable[[PoolMember, str], None],
    ) -> None:
        self.member = member
        self.rung_timeout = rung_timeout
        self.on_quarantine = on_quarantine

    async def send_ping(self, timeout: float) -> None:  # noqa: ASYNC109 - the ping carries its deadline
        """An application ping; a pong that reports a lost or hung GPU is a failure too."""
        pong = await self.member.connection.app_ping(timeout)
        if pong.gpu in ("lost", "timeout"):
            raise DeviceFault(f"the page answered but its GPU is {pong.gpu}")

    async def reload_page(self) -> None:
        """Reload the page and wait for its hello; its models must be loaded again."""
        await self.member.handle.reconnect(hung=False, timeout=self.rung_timeout)
        await self._reload_models()

    async def crash_and_reload(self) -> None:
        """Crash the hung page, reload it, wait for its hello, load its models again."""
        await self.member.handle.reconnect(hung=True, timeout=self.rung_timeout)
        await self._reload_models()

    async def restart_browser(self) -> None:
        """Kill the browser and launch it afresh; load its models again."""
        await self.member.handle.restart(timeout=self.rung_timeout)
        self.member.started_at = self.member.clock()
        self.member.jobs = 0
        await self._reload_models()

    async def verify_round_trip(self) -> None:
        """A tiny inference checked against numpy."""
        await verify_round_trip(self.member.connection, timeout=self.rung_timeout)

    async def quarantine(self, reason: str) -> None:
        """Stop the worker; the pool stops routing to it and starts a replacement."""
        with contextlib.suppress(Exception):  # a dead browser need not die twice
            await self.member.handle.stop()
        self.on_quarantine(self.member, reason)

    async def _reload_models(self) -> None:
        for slot in list(self.member.models.values()):
            await self.member.connection.load_model(
                slot.model_id, slot.kind, slot.options, timeout=self.rung_timeout
            )


class DeviceFault(Exception):
    """The page answered a ping but reported its GPU device lost or hung."""

    kind = "device_lost"
