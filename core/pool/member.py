"""One connection of the pool: its worker, its lifecycle, the models it holds, its work in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poolwarden.aio.lifecycle_driver import LifecycleDriver
from poolwarden.aio.recovery import Recovery
from poolwarden.aio.recovery_actions import PlacedModel
from poolwarden.clock import Clock
from poolwarden.lifecycle_types import ConnectionState
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
    draining: bool = False
    recycling: asyncio.Future[None] | None = None
    """The recycle under way (drain, then restart), if any."""
    recovery: Recovery | None = None
    loading: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    idle: asyncio.Event = field(init=False)
    browser: str = field(init=False)
    """The browser behind the connection (``simulated`` for a simulated worker)."""
    _watchers: list[asyncio.Future[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.browser = str(getattr(self.handle, "browser", self.kind))
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def connection(self) -> WorkerConnection:
        """The bridge connection the worker's page attaches to."""
        return self.handle.connection

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
        """Whether requests may be routed here now (asked for every request: kept direct)."""
        recovery = self.recovery
        return (
            not self.draining
            and recovery is not None
            and recovery.started
            and recovery.driver.machine.state is ConnectionState.HEALTHY
        )

    @property
    def busy(self) -> bool:
        """Whether every request slot is taken."""
        return self.in_flight >= self.concurrency

    @property
    def load(self) -> int:
        """Requests in flight plus models held: what placement balances."""
        return self.in_flight + len(self.models)

    def begin(self, model_id: str) -> None:
        """A request starts on this connection (the caller has checked that it is not busy:
        :class:`~poolwarden.pool.routing.Router` only routes to members with a free slot)."""
        self.in_flight += 1
        if self.in_flight == 1:
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
        if self._watchers:  # nobody watches on the hot path: no allocation for them there
            watchers, self._watchers = self._watchers, []
            for watcher in watchers:
                if not watcher.done():
                    watcher.set_result(None)

    async def wait_until(self, predicate: Callable[[PoolMember], bool]) -> None:
        """Wait until ``predicate(self)`` holds; re-checked each time a request starts or ends."""
        while not predicate(self):
            watcher = asyncio.get_running_loop().create_future()
            self._watchers.append(watcher)
            await watcher
