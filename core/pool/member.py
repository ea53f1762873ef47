"""One connection of the pool: its worker, its lifecycle, the models it holds, its work in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poolwarden.clock import Clock
from poolwarden.lifecycle_driver import LifecycleDriver
from poolwarden.lifecycle_types import ConnectionState
from poolwarden.recovery import Recovery
from poolwarden.recovery_actions import PlacedModel
from poolwarden.workers.handle import WorkerHandle

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
    last_answer_at: float = 0.0  # monotonic time of the last answer (a result or a pong)
    draining: bool = False
    recovery: Recovery | None = None
    loading: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(init=False)
    idle: asyncio.Event = field(init=False)
    _changed: asyncio.Event = field(init=False)

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
    def driver(self) -> LifecycleDriver | None:
        """The lifecycle driver of this connection's recovery (None before it started)."""
        recovery = self.recovery
        return recovery.driver if recovery is not None and recovery.started else None

    @property
    def state(self) -> ConnectionState:
        """The lifecycle state (STARTING before the machine exists)."""
        driver = self.driver
        return driver.machine.state if driver is not None else ConnectionState.STARTING

    def placed_models(self) -> list[PlacedModel]:
        """The models to load again after a reload or a restart."""
        return [PlacedModel(slot.model_id, slot.kind, slot.options) for slot in self.models.values()]

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
