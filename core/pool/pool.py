"""The resource pool: inference requests served by browser connections, through failure.

A :class:`ResourcePool` keeps ``config.connections`` workers (headless browsers, or simulated
workers that speak the same protocol) attached to one loopback :class:`BridgeServer`. Each has a
lifecycle machine (:mod:`poolwarden.lifecycle`) whose driver runs the recovery ladder, and two
levels of circuit breakers (:mod:`poolwarden.breaker_registry`) guard every call. Everything the
pool decides is an event in its store: the breakers' and the lifecycles' on their own streams,
the pool's own (placements, served and failed requests, recycling) on ``pool/main``, memory on
``pool/main/memory`` (for a pool named ``main``: :mod:`poolwarden.pool_streams`).

A pool owns its streams: :meth:`ResourcePool.start` takes the lease on the pool's name
(:mod:`poolwarden.lease`) before anything else, renews it while the pool runs and releases it
at :meth:`ResourcePool.close`; every event the pool writes carries the lease's fencing number,
and the store refuses them once another pool has taken the name over (a pool that stopped
renewing: frozen, or cut off from the log). Such a pool stops serving: its requests raise
:class:`~poolwarden.errors.LeaseLost`.

A request (:meth:`ResourcePool.run_inference`) is served by the pool's
:class:`~poolwarden.pool.serving.RequestPath`: admitted by the pool's bounded queue, then tried on
the connections that hold its model (or can load it), best first, skipping those whose breakers
refuse; a retryable failure is retried (backoff, jitter, a retry budget) on the next connection.
It ends in a result or in a typed error, never in silence: CircuitOpen, NoHealthyConnection,
QueueFull, DeadlineExceeded, ModelError, InvalidInput, UnknownModel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.aio.lifecycle_driver import restore_lifecycle
from poolwarden.aio.recorder import EventRecorder
from poolwarden.aio.recovery import Recovery
from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_registry import BreakerRegistry, model_key
from poolwarden.bridge.server import CLOSE_DECLARED_DEAD, BridgeServer
from poolwarden.bridge_events import ProtocolViolated, WorkerReported
from poolwarden.bridge_events import WorkerDisconnected as BridgeWorkerDisconnected
from poolwarden.browser.launcher import sweep_orphans
from poolwarden.clock import Clock, system_clock
from poolwarden.errors import (
    ConfigurationError,
    LeaseLost,
    NoHealthyConnection,
    PoolwardenError,
    StoreError,
    UnknownModel,
    WriteFailed,
)
from poolwarden.events import NewEvent
from poolwarden.lease import Lease, holder_id
from poolwarden.lifecycle_events import (
    ConnectionClosed,
    ConnectionQuarantined,
    LifecycleEvent,
    RecoveryCompleted,
)
from poolwarden.lifecycle_types import (
    ConnectionState,
    HeartbeatMissed,
    ProcessExited,
)
from poolwarden.memory import (
    BrowserReading,
    EvictModel,
    HostReading,
    LoadedModel,
    MemoryGovernor,
    RecycleBrowser,
)
from poolwarden.outliers import OutlierDetector
from poolwarden.pool.config import PoolConfig
from poolwarden.pool.incidents import IncidentBook
from poolwarden.pool.member import ModelSlot, PoolMember
from poolwarden.pool.placement import StatsBook
from poolwarden.pool.results import Fallback, InferenceResult, ModelInfo
from poolwarden.pool.routing import Router, blocking_breaker
from poolwarden.pool.serving import RequestPath
from poolwarden.pool.spares import SpareKeeper
from poolwarden.pool.tally import ServedTally
from poolwarden.pool_events import (
    AttemptFailed,
    ConnectionReplaced,
    FaultInjected,
    ModelEvicted,
    ModelLoadFailed,
    ModelLoadRefused,
    ModelPlaced,
    PageReattached,
    PoolStarted,
    PoolStopped,
    RecycleStarted,
)
from poolwarden.pool_streams import PoolStreams
from poolwarden.storage import open_store
from poolwarden.storage.base import EventStore
from poolwarden.storage.fenced import FencedStore
from poolwarden.telemetry.queries import browser_figures
from poolwarden.workers.browser_worker import BrowserWorker
from poolwarden.workers.handle import WorkerHandle
from poolwarden.workers.models import resolve_model

if TYPE_CHECKING:
    from poolwarden.telemetry.prometheus import PoolMetrics

__all__ = ["InferenceResult", "MemorySampler", "ResourcePool", "WorkerFactory"]

_FAILURE_SIGNALS = frozenset((BridgeWorkerDisconnected.TYPE, ProtocolViolated.TYPE, WorkerReported.TYPE))
"""Bridge events that are signs of a failure (a socket closing, a page misbehaving or reporting
an error): each opens an incident on its connection if none is open."""

CLOSE_CONNECTION_TIMEOUT = 5.0
"""Seconds the pool's close waits for a connection's closing to be decided and persisted."""

log = logging.getLogger(__name__)

MemorySampler = Callable[[], Awaitable[HostReading]]
"""Reads the host's memory (the default uses psutil in a thread); tests inject readings."""

BrowserMemory = Callable[[PoolMember], Awaitable[int | None]]
"""Reads one connection's browser memory in bytes (the default asks its handle, which samples the
PSS of the browser's process tree in a thread); tests inject readings."""

WorkerFactory = Callable[[BridgeServer, str, str], WorkerHandle]
"""Makes the handle of a connection's worker from (the pool's bridge, the worker kind, the worker
id): a worker of one's own (in another process, on a device the built-in kinds do not reach) that
speaks the protocol (docs/protocol.md) to the pool's bridge. The default makes the built-in
simulated, Chromium and Firefox workers from the pool's config."""


def _loaded(member: PoolMember, model_id: str, load: asyncio.Future[None]) -> None:
    """A shared load ended: forget it, and mark its error seen (whoever still waits for the load
    gets it through their shield; when all of them were cancelled, no one is left to)."""
    member.loading.pop(model_id, None)
    if not load.cancelled():
        load.exception()


async def _handle_pss(member: PoolMember) -> int | None:
    return await member.handle.pss_bytes()


async def _psutil_host_reading() -> HostReading:
    import psutil

    memory = await asyncio.to_thread(psutil.virtual_memory)
    return HostReading(
        percent=float(memory.percent),
        available_mb=memory.available / 2**20,
        total_mb=memory.total / 2**20,
    )


class ResourcePool:
    """A pool of browser connections serving inference; see the module docstring.

    Use as ``async with ResourcePool(PoolConfig(...)) as pool``. ``store`` may be given to share
    one event store; otherwise the pool opens ``config.db`` and closes it with itself. Requests
    are served by the pool's :class:`~poolwarden.pool.serving.RequestPath`, built from the
    pool's parts it needs; :meth:`run_inference` hands each one to it. ``worker_factory`` makes
    each connection's worker handle (:data:`WorkerFactory`; default: the built-in kinds).
    """

    def __init__(
        self,
        config: PoolConfig | None = None,
        *,
        store: EventStore | None = None,
        clock: Clock = system_clock,
        memory_sampler: MemorySampler | None = None,
        browser_memory: BrowserMemory | None = None,
        fallback: Fallback | None = None,
        rng: random.Random | None = None,
        worker_factory: WorkerFactory | None = None,
    ) -> None:
        self.config = config or PoolConfig()
        self._worker_factory = worker_factory
        self.clock = clock
        self.streams = PoolStreams(self.config.name)
        self._own_store = store is None
        self._log: EventStore = (
            store if store is not None else open_store(self.config.db, durability=self.config.durability)
        )
        # Everything the pool writes goes through this view, under the lease start() takes.
        self._fenced = FencedStore(self._log, lease=None)
        self.store: EventStore = self._fenced
        self.lease_lost: LeaseLost | None = None
        """Why the pool stopped serving, if another pool took its name over."""
        self._lease_task: asyncio.Task[None] | None = None
        self.server = BridgeServer(clock=clock, on_event=self._on_bridge_event)
        self.registry = BreakerRegistry(
            connection_policy=self.config.connection_breaker,
            model_policy=self.config.model_breaker,
            clock=clock,
            # Breaker jitter from its own source, seeded from the pool's when one is given: a
            # seeded pool is deterministic (the seed is one draw from the pool's source).
            rng=random.Random(rng.random()) if rng is not None else random.Random(),
        )
        # The pool's breakers are its own (its lease fences them): none other writes them, so
        # there is nothing to follow; and only they are restored, not other pools' on the log.
        self.incidents = IncidentBook(clock)
        """One incident id per failure, from its first signal to its outcome, per connection."""
        self.breakers = DurableBreakers(
            self.store,
            self.registry,
            poll_interval=None,
            scope=self.streams.connection_prefix,
            incident_of=self.incidents.at,
        )
        self.governor = MemoryGovernor(self.config.memory, clock=clock)
        self.spares = SpareKeeper(
            server=self.server,
            kinds=self.config.workers,
            count=self.config.warm_spares,
            make=self._new_browser,
            spare_id=self.streams.spare_id,
            emit=lambda event: self._recorder.emit(event),
            allowed=lambda: not self._closing and self.governor.spares_allowed,
            on_change=lambda: self._wake_changes(),
        )
        """The warm spare browsers (``config.warm_spares``): not connections, never routed to."""
        self.stats = StatsBook()
        self.members: dict[str, PoolMember] = {}
        self.model_connections: dict[str, str] = {}
        self._models: dict[str, ModelInfo] = {}
        self._memory_sampler = memory_sampler or _psutil_host_reading
        self._browser_memory = browser_memory or _handle_pss
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._change_waiters: list[asyncio.Future[None]] = []
        self.reattachments: dict[str, tuple[bool, float]] = {}
        """The last page that re-attached by itself, by connection: whether a round trip
        verified it, and the seconds from the cut to the end of that check."""
        self._monitor: asyncio.Task[None] | None = None
        self._closing = False
        self._started = False
        self.outliers: OutlierDetector | None = None
        """Ejects connections far worse than their peers (``config.outliers``); None when off."""
        if self.config.outliers is not None:
            self.outliers = OutlierDetector(
                self.config.outliers, clock=clock, max_share=self.config.max_ejection_share
            )
        self.router: Router[PoolMember] = Router(
            self.members,
            self.registry,
            self.stats,
            self.config.max_ejection_share,
            clock=clock,
            outliers=self.outliers,
        )
        self._served = ServedTally(clock=clock)
        self._recorder = EventRecorder(
            self.store, self.streams.pool, clock, gather=self._served.drain, preview=self._served.peek
        )
        self._bridge_recorder = EventRecorder(self.store, self.streams.bridge, clock)
        self.metrics: PoolMetrics | None = None
        """The Prometheus metrics the pool serves (``config.metrics_port``), once started."""
        self._requests = RequestPath(
            config=self.config,
            clock=clock,
            members=self.members,
            models=self._models,
            router=self.router,
            registry=self.registry,
            breakers=self.breakers,
            stats=self.stats,
            recorder=self._recorder,
            tally=self._served,
            place=self._place,
            rng=rng or random.Random(),
            fallback=fallback,
            incidents=self.incidents,
        )

    # --- requests -----------------------------------------------------------------------------

    async def run_inference(
        self,
        model_id: str,
        inputs: Mapping[str, Any],
        *,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> InferenceResult:
        """Serve one request within ``deadline`` seconds (the config's default if None).

        ``attempts`` caps the tries on connections (the retry policy's if None). A typed error
        carries ``attempted``: the connections whose breakers recorded a failed attempt. See
        :meth:`poolwarden.pool.serving.RequestPath.run_inference`. Once the pool lost its name
        to another pool, :class:`~poolwarden.errors.LeaseLost`.
        """
        if self.lease_lost is not None:
            raise self.lease_lost
        return await self._requests.run_inference(model_id, inputs, deadline=deadline, attempts=attempts)

    @property
    def counters(self) -> dict[str, int]:
        """Requests admitted, served, failed, retries made and fallbacks served, since the start."""
        return self._requests.counters

    def blocking_breaker(
        self, breakers: Iterable[CircuitBreaker], now: float | None = None
    ) -> CircuitBreaker | None:
        """The first of ``breakers`` that would refuse a call now, found without asking them
        (asking a half-open breaker would take its trial)."""
        return blocking_breaker(breakers, self.clock() if now is None else now)

    # --- starting and stopping ----------------------------------------------------------------

    async def __aenter__(self) -> ResourcePool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Sweep the browsers dead pools left, open the store, take the lease on the pool's name,
        restore the breakers, start the bridge and every connection.

        Raises :class:`~poolwarden.errors.LeaseHeld` while another live pool of the same name
        writes to the same log. If starting fails part way, what was started is stopped again.
        """
        if self._started:
            raise ConfigurationError("the pool was already started")
        self._started = True
        # Browsers die with the process that launched them (their watchdog's lifeline closes), so
        # this finds something only if that failed (a browser of an older poolwarden, a watchdog
        # killed by hand). Kill what an earlier pool of this user left behind: only browsers whose
        # owning process (pid and start time, from the profile's marker) is gone. It reads /proc:
        # in a thread.
        orphans = await sweep_orphans()
        if orphans:
            log.warning("killed %d browser processes left by a pool that died: %s", len(orphans), orphans)
        if self._own_store:
            await self._log.open()
        try:
            lease = await self._log.take_lease(self.config.name, holder_id(), self.config.lease_ttl)
        except BaseException:
            self._closing = True  # nothing of the pool ran: close() has nothing to do
            if self._own_store:
                await self._log.close()
            raise
        self._fenced.lease = lease
        self._lease_task = asyncio.create_task(self._keep_lease(), name=f"poolwarden lease {lease.name}")
        try:
            await self._start_serving(lease)
        except BaseException:
            with contextlib.suppress(Exception):  # the start's own error is the one to report
                await self.close()
            raise

    async def _start_serving(self, lease: Lease) -> None:
        self._recorder.start()  # their tasks live from now until close: none is born at teardown
        self._bridge_recorder.start()
        await self.breakers.__aenter__()
        await self._read_placement_history()
        await self.server.start()
        known = await self.store.streams("connection/" + self.streams.connection_prefix)
        used = {stream.removeprefix("connection/") for stream in known}
        starts = []
        for index in range(self.config.connections):
            starts.append(self._add_member(self.config.worker_kind(index), used))
        await asyncio.gather(*starts)
        self._recorder.emit(
            PoolStarted(
                connections=self.config.connections,
                workers=list(self.config.workers),
                port=self.server.port,
                name=lease.name,
                holder=lease.holder,
                took_over_from=lease.took_over_from,
            )
        )
        self.spares.replenish()  # in the background: serving does not wait for them
        self._monitor = asyncio.create_task(self._monitor_loop(), name="poolwarden monitor")
        if self.config.metrics_port is not None:
            from poolwarden.telemetry.prometheus import PoolMetrics

            self.metrics = await PoolMetrics(self, clock=self.clock).start(self.config.metrics_interval)
            self.metrics.serve(self.config.metrics_port, self.config.metrics_addr)

    async def _read_placement_history(self) -> None:
        """Seed placement's figures with what the log recorded of (model type, browser) within
        ``config.placement_history_s``."""
        history = self.config.placement_history_s
        if history is None:
            return
        for figures in await browser_figures(
            self.store, since=self.clock() - history, stream=self.streams.pool
        ):
            self.stats.add(
                figures.model_type,
                figures.browser,
                figures.successes,
                figures.failed_attempts,
                figures.latency_ms_total,
            )

    async def close(self) -> None:
        """Stop every connection and the monitor, persist everything, close the store."""
        if self._closing:
            return
        self._closing = True
        if self.metrics is not None:
            await self.metrics.stop()  # before the store closes: its refreshes read the log
        # Stopped, then awaited through gather: a cancellation of close() itself is not swallowed.
        tasks = [*self._tasks, *(f for m in self.members.values() for f in m.loading.values())]
        if self._monitor is not None:
            tasks.append(self._monitor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(
            self.spares.close(),
            *(self._stop_member(m, closing=True) for m in list(self.members.values())),
            return_exceptions=True,
        )
        await self.server.close()
        try:
            try:
                self._recorder.emit(PoolStopped(**self.counters))
                await self._recorder.close()
                await self._bridge_recorder.close()
                await self.breakers.__aexit__(None, None, None)
            except StoreError as error:
                refused = isinstance(error, LeaseLost) or (
                    isinstance(error, WriteFailed) and self._refused_for_the_lease(error)
                )
                if not refused and self.lease_lost is None:
                    raise
                if isinstance(error, LeaseLost):
                    self._lose_lease(error)
                # Refused, as they must be: another pool owns the name now. Said once, below.
        finally:
            try:
                await self._give_up_lease()  # the heartbeat stops whatever happened above
            finally:
                if self._own_store:
                    try:
                        await self._log.close()
                    except WriteFailed as failed:
                        if not self._refused_for_the_lease(failed):
                            raise
        if self.lease_lost is not None:
            raise self.lease_lost

    def _refused_for_the_lease(self, failed: WriteFailed) -> bool:
        """Whether every write ``failed`` lists was refused because the lease was lost (which
        close() reports once, as LeaseLost)."""
        if not all(isinstance(error, LeaseLost) for _, error in failed.failures):
            return False
        first = failed.failures[0][1]
        assert isinstance(first, LeaseLost)
        self._lose_lease(first)
        return True

    # --- the lease on the pool's name -----------------------------------------------------------

    async def _keep_lease(self) -> None:
        """Renew the lease every third of its time to live; on losing it, stop serving.

        A renewal that fails for another reason (the log locked or unreachable for a moment) is
        tried again at the next beat; two missed beats still leave a third of the lease.
        """
        ttl = self.config.lease_ttl
        while True:
            await asyncio.sleep(ttl / 3)
            lease = self._fenced.lease
            assert lease is not None
            try:
                self._fenced.lease = await self._log.renew_lease(lease, ttl)
            except LeaseLost as lost:
                self._lose_lease(lost)
                return
            except StoreError as error:
                log.warning("pool %r could not renew its lease (will retry): %s", lease.name, error)

    def _lose_lease(self, lost: LeaseLost) -> None:
        if self.lease_lost is None:
            self.lease_lost = lost
            log.error("pool %r stops serving: %s", self.config.name, lost)

    async def _give_up_lease(self) -> None:
        task, self._lease_task = self._lease_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lease = self._fenced.lease
        if lease is not None and self.lease_lost is None:
            await self._log.release_lease(lease)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pool task %s failed: %r", task.get_name(), task.exception())

    def _new_handle(self, kind: str, connection_id: str) -> WorkerHandle:
        if self._worker_factory is not None:
            return self._worker_factory(self.server, kind, connection_id)
        if kind == "simulated":
            from poolwarden.workers.simulated_handle import SimulatedHandle

            return SimulatedHandle(self.server, connection_id)
        if kind == "chromium":
            from poolwarden.workers.chromium import ChromiumWorker

            return ChromiumWorker(
                self.server,
                connection_id,
                executable=self.config.browser_path,
                hooks=self.config.hooks,
                extra_args=self.config.browser_args,
            )
        from poolwarden.workers.firefox import FirefoxWorker

        return FirefoxWorker(
            self.server,
            connection_id,
            hooks=self.config.hooks,
            remote_port=self.config.allow_exposed_firefox_port,
            extra_args=self.config.browser_args,
        )

    def _new_browser(self, kind: str, worker_id: str) -> BrowserWorker:
        """A browser worker made as a connection's is, for a warm spare."""
        handle = self._new_handle(kind, worker_id)
        if not isinstance(handle, BrowserWorker):
            # Only a worker_factory of the embedder's can get here: the built-in kinds are browsers.
            raise ConfigurationError(
                f"warm_spares needs {kind} workers that are browsers (a BrowserWorker); the worker "
                f"factory made a {type(handle).__name__}: set warm_spares=0 for such workers"
            )
        return handle

    def _take_spare(self, kind: str) -> BrowserWorker | None:
        """The restart rung's warm spare of ``kind``, if one is ready (and spares are allowed)."""
        if self._closing or not self.governor.spares_allowed:
            return None
        return self.spares.take(kind)

    async def _add_member(self, kind: str, used: set[str]) -> PoolMember:
        """Create (or restore from the log) one connection and start its worker."""
        while True:
            connection_id = self.streams.connection_id(next(self._ids))
            restored = (
                await restore_lifecycle(
                    self.store, connection_id, policy=self.config.lifecycle, clock=self.clock
                )
                if connection_id in used
                else None
            )
            if restored is None or restored[0].state not in (ConnectionState.FAILED, ConnectionState.CLOSED):
                break
        member = PoolMember(
            connection_id=connection_id,
            kind=kind,
            handle=self._new_handle(kind, connection_id),
            concurrency=self.config.per_connection_concurrency,
            clock=self.clock,
            started_at=self.clock(),
        )
        if self.spares.kinds and isinstance(member.handle, BrowserWorker):
            self.spares.attach(member.handle, connection_id)
            member.handle.spare_source = self._take_spare  # none under memory pressure
        member.recovery = Recovery(
            member.handle,
            self.store,
            policy=self.config.lifecycle,
            clock=self.clock,
            models=member.placed_models,
            on_quarantine=lambda reason: self._on_quarantine(member, reason),
            heartbeat_interval_s=self.config.heartbeat_interval,
            on_event=lambda event: self._on_lifecycle_event(member, event),
            on_reattached=lambda verified, took, error: self._on_reattached(member, verified, took, error),
            ids=lambda: self.incidents.adopt(connection_id),
        )
        self.members[connection_id] = member
        # The recovery restores the connection's history (a restart budget spent before survives)
        # and, for a recovery a crash interrupted, resumes it at the restart rung.
        await member.recovery.start()
        if member.state is ConnectionState.STARTING:
            try:
                await member.handle.start()  # its hello ends STARTING (the socket watcher sees it)
            except Exception as error:  # the lifecycle decides what a failed launch means
                log.warning("connection %s failed to start: %s", connection_id, error)
                member.recovery.driver.fault(ProcessExited())
        await member.recovery.driver.wait_for(
            lambda m: m.state not in (ConnectionState.STARTING, ConnectionState.RESTARTING)
        )
        return member

    async def _stop_member(self, member: PoolMember, *, closing: bool = False) -> None:
        """Stop a member's recovery and its worker; when the pool is ``closing``, first record
        the connection's closing in its lifecycle (``ConnectionClosed``, an open recovery
        abandoned), so that the log says the connection ended on purpose rather than leaving
        it, as last recorded, serving or recovering."""
        driver = member.driver
        if closing and driver is not None and driver.machine.state is not ConnectionState.CLOSED:
            try:
                async with asyncio.timeout(CLOSE_CONNECTION_TIMEOUT):
                    await driver.close_connection()
            except Exception as error:  # stopping must go on: the worker is stopped below regardless
                log.error("closing connection %s failed: %r", member.connection_id, error)
        if member.recovery is not None:
            with contextlib.suppress(Exception):  # stopping must go on; the driver logged its error
                await member.recovery.stop()
        with contextlib.suppress(Exception):
            await member.handle.stop()

    def _on_lifecycle_event(self, member: PoolMember, event: LifecycleEvent) -> None:
        """A recovery that verified a round trip half-opens the connection's open breakers.

        They opened while the connection was failing; the ladder has since proved it serves
        again (and a reload or restart loaded its models afresh). Waiting out the breakers'
        backoff would keep a working connection idle; a half-open breaker lets its trial calls
        decide, and reopens, with a longer backoff, if they fail.
        """
        self._requests.members_changed()
        self._wake_changes()
        if isinstance(event, RecoveryCompleted | ConnectionQuarantined | ConnectionClosed):
            self.incidents.end(member.connection_id, event.incident_id)
            self.spares.replenish()  # a spare promoted by the rung is replaced now, not during it
        if not isinstance(event, RecoveryCompleted):
            return
        self._half_open(
            member, f"recovery {event.incident_id} verified a round trip at the {event.rung.value} rung"
        )

    def _half_open(self, member: PoolMember, why: str) -> None:
        """Move the connection's open breaker, and its open model breakers, to half-open."""
        connection_id = member.connection_id
        breakers = [self.registry.connection(connection_id)]
        breakers += [
            breaker
            for model_id in member.models
            if (breaker := self.registry.get(model_key(connection_id, model_id))) is not None
        ]
        moved = [breaker for breaker in breakers if breaker.half_open_now(why)]  # each one asked
        if moved:
            self.breakers.wake()

    def _on_reattached(
        self, member: PoolMember, verified: bool, took: float, error: BaseException | None
    ) -> None:
        """A page re-attached by itself after its socket was cut; once a round trip verified it,
        its breakers half-open, as after a verified recovery (a failed check is the ladder's)."""
        self.reattachments[member.connection_id] = (verified, took)
        incident = self.incidents.signal(member.connection_id)  # the cut's, if it was seen
        self._recorder.emit(
            PageReattached(
                connection_id=member.connection_id,
                browser=member.browser,
                outcome="verified" if verified else "failed",
                latency_ms=took * 1000,
                error_kind=None if error is None else type(error).__name__,
                incident_id=incident,
            )
        )
        if verified:
            self._half_open(
                member, f"incident {incident}: the page re-attached by itself and verified a round trip"
            )
            self.incidents.end(member.connection_id, incident)
        self._wake_changes()

    def _on_quarantine(self, member: PoolMember, reason: str) -> None:
        """A connection was quarantined: stop routing to it and start a replacement."""
        for model_id, connection_id in list(self.model_connections.items()):
            if connection_id == member.connection_id:
                del self.model_connections[model_id]
        if self._closing:
            return
        self._spawn(self._replace(member, reason), f"replace {member.connection_id}")

    async def _replace(self, member: PoolMember, reason: str) -> None:
        await self._stop_member(member)
        self.server.forget(member.connection_id)  # its secret admits nothing from now on
        self.members.pop(member.connection_id, None)
        self.governor.forget_browser(member.connection_id)
        replacement = await self._add_member(member.kind, set())
        self._recorder.emit(
            ConnectionReplaced(
                connection_id=replacement.connection_id,
                browser=replacement.browser,
                replaced=member.connection_id,
                reason=reason,
            )
        )
        for slot in member.models.values():
            with contextlib.suppress(PoolwardenError):
                await self._place(self._models[slot.model_id], replacement)

    # --- models -------------------------------------------------------------------------------

    async def load_model(
        self,
        model_id: str,
        *,
        kind: str | None = None,
        model_type: str = "text",
        options: Mapping[str, Any] | None = None,
        connection_id: str | None = None,
    ) -> str:
        """Place ``model_id`` (a built-in ``kind``, by default its own name) on the best connection.

        Returns the connection it was placed on. Raises UnknownModel for a kind no worker has,
        NoHealthyConnection when no connection can take it, and MemoryPressure (with the reading
        and the threshold) when memory pressure refuses new loads.
        """
        try:
            spec = resolve_model(kind or model_id, options)
        except (KeyError, ValueError) as error:
            unknown = UnknownModel(f"no built-in model {kind or model_id!r}: {error}")
            self._load_failed(model_id, None, unknown, 0.0)
            raise unknown from error
        info = ModelInfo(model_id, kind or model_id, model_type, dict(options or {}), spec.input_width)
        self._models[model_id] = info
        if connection_id is not None:
            member = self.members.get(connection_id)
            if member is None:
                missing = NoHealthyConnection(f"no connection {connection_id!r} in the pool")
                self._load_failed(model_id, None, missing, 0.0)
                raise missing
            return await self._place(info, member)
        candidates = self.router.ranked(info.model_type, self._serving())
        if not candidates:
            none = NoHealthyConnection(f"no healthy connection can take {model_id!r}")
            self._load_failed(model_id, None, none, 0.0)
            raise none
        return await self._place(info, candidates[0])

    def _load_failed(
        self, model_id: str, member: PoolMember | None, error: BaseException, latency_ms: float
    ) -> None:
        self._recorder.emit(
            ModelLoadFailed(
                connection_id=member.connection_id if member is not None else None,
                model_id=model_id,
                browser=member.browser if member is not None else None,
                error_kind=type(error).__name__,
                reason=str(error),
                latency_ms=latency_ms,
            )
        )

    def _serving(self) -> list[PoolMember]:
        return [m for m in self.members.values() if m.serving]

    async def _place(self, info: ModelInfo, member: PoolMember) -> str:
        """Load ``info``'s model on ``member`` (concurrent loads of it there share one)."""
        if info.model_id not in member.models:
            refusal = self.governor.load_refusal()
            if refusal is not None:
                _, reason = self.governor.may_load_model()
                self._recorder.emit(ModelLoadRefused(model_id=info.model_id, reason=reason))
                raise refusal
            loading = member.loading.get(info.model_id)
            if loading is None:
                # Concurrent requests that all want the model here share one load.
                loading = member.loading[info.model_id] = asyncio.ensure_future(self._load(info, member))
                loading.add_done_callback(lambda done: _loaded(member, info.model_id, done))
            await asyncio.shield(loading)
        self.model_connections.setdefault(info.model_id, member.connection_id)
        return member.connection_id

    async def _load(self, info: ModelInfo, member: PoolMember) -> None:
        began = self.clock()
        try:
            loaded = await member.connection.load_model(
                info.model_id, info.kind, info.options, timeout=self.config.load_timeout
            )
        except BaseException as error:
            self._load_failed(info.model_id, member, error, (self.clock() - began) * 1000)
            recovery = member.recovery
            if (
                isinstance(error, TimeoutError)
                and recovery is not None
                and recovery.started
                and member.state is ConnectionState.HEALTHY
            ):
                recovery.driver.fault(HeartbeatMissed())  # a page that never answers may be hung
            raise
        member.models[info.model_id] = ModelSlot(info.model_id, info.kind, info.options, self.clock())
        self._recorder.emit(
            ModelPlaced(
                connection_id=member.connection_id,
                model_id=info.model_id,
                browser=member.browser,
                latency_ms=loaded.elapsed_ms,
                backend=loaded.backend,
                model_type=info.model_type,
                kind=info.kind,
            )
        )

    async def unload_model(self, model_id: str, connection_id: str, reason: str = "requested") -> None:
        """Unload ``model_id`` from ``connection_id``."""
        member = self.members.get(connection_id)
        if member is None or model_id not in member.models:
            return
        del member.models[model_id]
        if self.model_connections.get(model_id) == connection_id:
            others = [m.connection_id for m in self.members.values() if model_id in m.models]
            if others:
                self.model_connections[model_id] = others[0]
            else:
                self.model_connections.pop(model_id, None)
        with contextlib.suppress(PoolwardenError):
            await member.connection.unload_model(model_id)
        self._recorder.emit(
            ModelEvicted(
                connection_id=connection_id, model_id=model_id, browser=member.browser, reason=reason
            )
        )

    def _on_bridge_event(self, event: NewEvent) -> None:
        """The bridge's events go to the log, and to the recovery of the connection they concern."""
        member = self.members.get(event.connection_id or "")
        if member is not None and event.incident_id is None:
            connection_id = member.connection_id
            signal = (
                not self._closing
                and event.type in _FAILURE_SIGNALS
                and event.payload.get("code") != CLOSE_DECLARED_DEAD
            )
            incident = (
                self.incidents.signal(connection_id) if signal else self.incidents.current(connection_id)
            )
            if incident is not None:
                event = dataclasses.replace(event, incident_id=incident)
        if member is not None and member.recovery is not None and member.recovery.started:
            member.recovery.on_bridge_event(event)
        if not self._closing:
            self._bridge_recorder.record_event(event)

    # --- the monitor --------------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        """Memory readings and decisions, proactive recycling, idle breaker eviction.

        Heartbeats are each connection's :class:`~poolwarden.aio.recovery.Recovery`'s own.
        """
        while True:
            await asyncio.sleep(self.config.memory_interval)
            for member in list(self.members.values()):
                self._check_recycling(member)
            await self.check_memory()
            self.breakers.evict_idle()

    def _check_recycling(self, member: PoolMember) -> None:
        cfg = self.config
        if not member.serving:
            return
        if cfg.recycle_after_jobs is not None and member.jobs >= cfg.recycle_after_jobs:
            self.recycle(member.connection_id, f"served {member.jobs} jobs")
        elif cfg.recycle_after_s is not None and self.clock() - member.started_at >= cfg.recycle_after_s:
            self.recycle(member.connection_id, f"older than {cfg.recycle_after_s:g} s")

    @property
    def out_of_service(self) -> int:
        """Connections not serving now (draining, restarting, recovering)."""
        return sum(1 for m in self.members.values() if not m.serving)

    def recycle(self, connection_id: str, reason: str) -> bool:
        """Drain ``connection_id`` (finish in flight, accept nothing new), then restart its browser.

        Returns whether the recycle started: not when the connection is not serving, nor while
        ``config.max_out_for_maintenance`` connections are already out of service (the caller
        asks again later: the monitor does at its next round).
        """
        member = self.members.get(connection_id)
        if member is None or not member.serving or member.driver is None:
            return False
        if self.out_of_service >= self.config.max_out_for_maintenance:
            return False
        member.draining = True
        member.driver.request_drain(reason)
        task = asyncio.ensure_future(self._drain_then_restart(member, reason))
        member.recycling = task
        self._spawn(task, f"recycle {connection_id}")
        return True

    async def _drain_then_restart(self, member: PoolMember, reason: str) -> None:
        assert member.driver is not None
        self._recorder.emit(
            RecycleStarted(
                connection_id=member.connection_id,
                browser=member.browser,
                reason=reason,
                in_flight=member.in_flight,
            )
        )
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.drain_timeout):
                    await member.idle.wait()
            if member.driver.machine.state is ConnectionState.DRAINING:
                member.driver.drained()
            await member.driver.wait_for(
                lambda m: m.state not in (ConnectionState.RESTARTING, ConnectionState.DRAINING)
            )
        finally:
            member.draining = False
            member.recycling = None
            self._requests.members_changed()
        self.governor.forget_browser(member.connection_id)
        member.jobs = 0
        member.started_at = self.clock()

    async def rolling_restart(self, reason: str = "rolling restart") -> list[str]:
        """Restart every connection's browser, one at a time (at most
        ``config.max_out_for_maintenance`` out at once), while the pool keeps serving.

        Each connection is drained first, so no request fails for it; requests that find every
        candidate out wait for one to come back. Returns the connections restarted, in order.
        """
        done: list[str] = []
        for connection_id in list(self.members):
            member = self.members.get(connection_id)
            if member is None:
                continue  # replaced meanwhile: its replacement is new
            while not self.recycle(connection_id, reason):
                if self._closing or self.members.get(connection_id) is not member:
                    break
                # Not its turn yet (another connection is out), or it is recovering: wait for a
                # change of any connection's state.
                await self.wait_changed()
            else:
                task = member.recycling
                if task is not None:
                    await asyncio.shield(task)
                done.append(connection_id)
        return done

    async def wait_changed(self, timeout: float = 1.0) -> None:  # noqa: ASYNC109 -- a bounded look
        """Wait until a connection's lifecycle moves or a page re-attaches (at most ``timeout``
        seconds): for those who watch the pool, without polling it."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._change_waiters.append(waiter)
        await asyncio.wait((waiter,), timeout=timeout)

    def _wake_changes(self) -> None:
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def check_memory(self) -> list[EvictModel | RecycleBrowser]:
        """Take memory readings now, decide, and carry the decisions out. Returns them."""
        self.governor.observe_host(await self._memory_sampler())
        if self.spares.kinds:
            await self.spares.prune()
            if self.governor.spares_allowed:
                self.spares.replenish()
            else:
                await self.spares.retire_all(f"memory pressure {self.governor.level.value}")
            spares = await self.spares.pss()
            self.governor.observe_spares(
                BrowserReading(spare.worker_id, spare.browser, pss / 2**20) for spare, pss in spares
            )
        for member in list(self.members.values()):
            if member.state is ConnectionState.HEALTHY:
                with contextlib.suppress(Exception):
                    pss = await self._browser_memory(member)
                    if pss is not None:
                        self.governor.observe_browser(
                            BrowserReading(member.connection_id, member.browser, pss / 2**20)
                        )
        models = [
            LoadedModel(
                m.connection_id,
                slot.model_id,
                slot.last_used_at,
                slot.in_flight,
                self._requests.queued_for.get(slot.model_id, 0),
            )
            for m in self.members.values()
            for slot in m.models.values()
        ]
        actions = self.governor.decide(models)
        events = self.governor.drain_events()
        if events:
            await self.store.append(self.streams.memory, events, durability="buffered")
        for action in actions:
            if isinstance(action, EvictModel):
                await self.unload_model(action.model_id, action.connection_id, action.reason)
            elif not self.recycle(action.connection_id, action.reason):
                self.governor.recycle_deferred(action.connection_id)  # decided again next round
        return actions

    def record_attempt_failed(self, connection_id: str, model_id: str | None, kind: str) -> None:
        """Record a failed call on a connection that the pool did not make (the seed's
        ``update_circuit_breaker(success=False, error=...)``): every error is an event, even one
        its breakers do not count (an input error)."""
        member = self.members.get(connection_id)
        self._recorder.emit(
            AttemptFailed(
                connection_id=connection_id,
                model_id=model_id or "",
                browser=member.browser if member is not None else "",
                error_kind=kind,
                latency_ms=0.0,
                incident_id=self.incidents.current(connection_id),
            )
        )

    # --- a person's decisions ---------------------------------------------------------------

    def isolate(self, connection_id: str, who: str, why: str) -> None:
        """Take ``connection_id`` out of rotation by hand: its connection breaker is forced open
        (an event, ``BreakerOverridden``), and no routing, panic routing included, sends it a
        request until :meth:`release` (a verified recovery does not move it either)."""
        if connection_id not in self.members:
            raise ConfigurationError(f"no connection {connection_id!r} in the pool")
        self.registry.connection(connection_id).force_open(who, why)
        self.breakers.wake()

    def release(self, connection_id: str, who: str, why: str) -> None:
        """Undo :meth:`isolate`: the connection breaker is reset (closed)."""
        if connection_id not in self.members:
            raise ConfigurationError(f"no connection {connection_id!r} in the pool")
        self.registry.connection(connection_id).reset(who, why)
        self.breakers.wake()

    # --- faults and events --------------------------------------------------------------------

    async def inject_fault(self, connection_id: str, fault: str) -> None:
        """Cause ``fault`` on a connection (browser_kill, renderer_crash, page_hang, socket_drop,
        device_lost) and record that it was injected: for demos and tests."""
        member = self.members[connection_id]
        self._recorder.emit(
            FaultInjected(
                connection_id=connection_id,
                browser=member.browser,
                error_kind=fault,
                fault=fault,
                incident_id=self.incidents.signal(connection_id),  # the failure's first signal
            )
        )
        await member.handle.inject(fault)

    def unrecorded(self, version_in_log: int) -> list[NewEvent]:
        """The pool's events (on ``streams.pool``) not in a log whose pool stream stands at
        ``version_in_log``: for synchronous readers, who cannot wait for :meth:`flush`."""
        return self._recorder.not_in_log(version_in_log)

    async def flush(self) -> None:
        """Wait until everything the pool and its breakers decided so far is committed to the log."""
        await self.breakers.flush()
        await self._recorder.flush()
        await self._bridge_recorder.flush()
        await self.store.flush()

    @property
    def healthy_connections(self) -> list[str]:
        """The connections requests are routed to now."""
        return [m.connection_id for m in self.members.values() if m.serving]
