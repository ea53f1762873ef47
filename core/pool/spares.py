"""Warm spare browsers: launched, page loaded to hello, no models, not connections.

A :class:`SpareKeeper` keeps up to ``count`` ready spares per browser kind the pool runs
(``PoolConfig.warm_spares``). A spare is a :class:`~poolwarden.workers.browser_worker.BrowserWorker`
made exactly like a connection's (same launcher, owner-only profile, watchdog), under a worker
id the pool issued (the bridge authenticates its page's hello as any other); it takes no
request and is in no routing or connection count. A connection's restart rung takes one
(:meth:`SpareKeeper.take`, the worker's ``spare_source``) and promotes it instead of launching;
the keeper then launches another in the background.

Memory: :meth:`SpareKeeper.pss` samples the ready spares for the governor; while the pressure
is not NORMAL (``allowed`` says no) the keeper retires its spares and launches none.
Launches run as tasks of the keeper (the launcher does its process work in asyncio
subprocesses and threads), and :meth:`close` cancels them and stops every spare.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from poolwarden.pool_events import PoolEvent, SpareLaunched, SparePromoted, SpareRetired

if TYPE_CHECKING:
    from poolwarden.bridge.server import BridgeServer
    from poolwarden.workers.browser_worker import BrowserWorker

__all__ = ["SPARE_KINDS", "SpareKeeper"]

log = logging.getLogger(__name__)

SPARE_KINDS = frozenset({"chromium", "firefox"})
"""The worker kinds that get spares: a simulated worker has no browser to keep warm."""


class SpareKeeper:
    """Keeps ``count`` warm spares of each of ``kinds``; see the module docstring."""

    def __init__(
        self,
        *,
        server: BridgeServer,
        kinds: Iterable[str],
        count: int,
        make: Callable[[str, str], BrowserWorker],
        spare_id: Callable[[int], str],
        emit: Callable[[PoolEvent], None],
        allowed: Callable[[], bool],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.server = server
        self.kinds = tuple(sorted({k for k in kinds if k in SPARE_KINDS})) if count > 0 else ()
        self.count = count
        self._make = make
        self._spare_id = spare_id
        self._record = emit
        self._on_change = on_change
        self.events: list[PoolEvent] = []
        self._changed = asyncio.Event()
        """Every spare event this keeper recorded, in order (for those who watch the pool)."""
        self._allowed = allowed
        self._ids = itertools.count()
        self.ready: dict[str, list[BrowserWorker]] = {kind: [] for kind in self.kinds}
        self._launching: dict[str, set[asyncio.Task[None]]] = {kind: set() for kind in self.kinds}
        self._closed = False

    def _emit(self, event: PoolEvent) -> None:
        self.events.append(event)
        self._record(event)
        self._changed.set()
        self._on_change()

    async def wait_ready(self, kind: str, timeout: float = 60.0) -> BrowserWorker:  # noqa: ASYNC109
        """Wait until a spare of ``kind`` is ready (launching one if none is); return it."""
        async with asyncio.timeout(timeout):
            while not self.ready.get(kind):
                self._changed.clear()
                self.replenish()
                await self._changed.wait()
        return self.ready[kind][0]

    # --- keeping them ---------------------------------------------------------------------------

    def replenish(self) -> None:
        """Launch, in the background, the spares missing (none while ``allowed`` says no)."""
        if self._closed or not self._allowed():
            return
        for kind in self.kinds:
            for _ in range(self.count - len(self.ready[kind]) - len(self._launching[kind])):
                task = asyncio.ensure_future(self._launch(kind))
                task.set_name(f"spare {kind}")
                self._launching[kind].add(task)
                task.add_done_callback(self._launched)

    def _launched(self, task: asyncio.Task[None]) -> None:
        for tasks in self._launching.values():
            tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("spare launch failed: %r", task.exception())

    async def _launch(self, kind: str) -> None:
        spare_id = self._spare_id(next(self._ids))
        worker = self._make(kind, spare_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await worker.start()
        except BaseException as error:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._stop(worker))
            if isinstance(error, Exception):
                self._emit(
                    SpareRetired(
                        spare_id=spare_id,
                        browser=kind,
                        reason="launch failed",
                        error_kind=type(error).__name__,
                    )
                )
                return
            raise
        if self._closed or not self._allowed():
            # Pressure came (or the pool closed) while it launched: not kept.
            await asyncio.shield(self._retire(worker, kind, "closing" if self._closed else "memory pressure"))
            return
        self.ready[kind].append(worker)
        self._emit(SpareLaunched(spare_id=spare_id, browser=kind, latency_ms=(loop.time() - started) * 1000))

    def attach(self, worker: BrowserWorker, worker_id: str) -> None:
        """Let ``worker``'s restart rung promote this keeper's spares (and report it here)."""
        worker.spare_source = self.take
        worker.on_promoted = lambda spare, took: self.promoted(worker_id, spare, took)

    def take(self, kind: str) -> BrowserWorker | None:
        """A ready spare of ``kind`` for a restart rung to promote (it is the rung's from now on)."""
        ready = self.ready.get(kind, [])
        for index, worker in enumerate(ready):
            if _alive(worker):  # a spare that died idle is left for prune()
                return ready.pop(index)
        return None

    async def prune(self) -> None:
        """Retire the ready spares whose browser died or whose page left while they waited."""
        for kind, workers in self.ready.items():
            dead = [worker for worker in workers if not _alive(worker)]
            for worker in dead:
                workers.remove(worker)
                await self._retire(worker, kind, "lost: its browser or page went away")

    def promoted(self, connection_id: str, spare: BrowserWorker, took: float) -> None:
        """A restart rung promoted ``spare``: record it. Its replacement is launched by the next
        :meth:`replenish`, which the owner calls once the rung is over (a launch's CPU would slow
        the rung's model loads and verification on a small machine)."""
        self._emit(
            SparePromoted(
                connection_id=connection_id,
                spare_id=spare.worker_id,
                browser=spare.browser,
                latency_ms=took * 1000,
            )
        )

    async def retire_all(self, reason: str) -> None:
        """Stop every spare, the ones launching too (memory pressure, the pool closing)."""
        launching = [task for tasks in self._launching.values() for task in tasks]
        for task in launching:
            task.cancel()
        await asyncio.gather(*launching, return_exceptions=True)
        spares = [(kind, worker) for kind, workers in self.ready.items() for worker in workers]
        for workers in self.ready.values():
            workers.clear()
        await asyncio.gather(*(self._retire(worker, kind, reason) for kind, worker in spares))

    async def _retire(self, worker: BrowserWorker, kind: str, reason: str) -> None:
        await self._stop(worker)
        self._emit(SpareRetired(spare_id=worker.worker_id, browser=kind, reason=reason))

    async def _stop(self, worker: BrowserWorker) -> None:
        try:
            await worker.stop()
        finally:
            self.server.forget(worker.worker_id)  # its secret admits nothing from now on

    async def close(self) -> None:
        """Cancel the launches and stop every spare (no browser outlives the pool)."""
        self._closed = True
        await self.retire_all("closing")

    # --- their memory -----------------------------------------------------------------------------

    @property
    def spares(self) -> list[BrowserWorker]:
        """The ready spares, every kind."""
        return [worker for workers in self.ready.values() for worker in workers]

    async def pss(self) -> list[tuple[BrowserWorker, int]]:
        """PSS of each ready spare's process tree (sampled in threads by the launcher's process)."""
        found: list[tuple[BrowserWorker, int]] = []
        for worker in self.spares:
            with contextlib.suppress(Exception):
                pss = await worker.pss_bytes()
                if pss is not None:
                    found.append((worker, pss))
        return found


def _alive(worker: BrowserWorker) -> bool:
    """Whether a spare's browser runs and its page's socket is attached."""
    process = worker.process
    return process is not None and process.alive and worker.connection.connected
