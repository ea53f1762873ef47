"""Serving one request: the pool's request path, from admission to a result or a typed error.

:class:`RequestPath` is the component of :class:`~poolwarden.pool.ResourcePool` that serves
:meth:`~RequestPath.run_inference`; the pool owns one and delegates to it. It lives here so that
the path a request takes reads in one place (the pool's other parts start and replace
connections, place models and watch memory), and it is built from exactly what it uses, handed
over explicitly: the pool's config and clock, its members and models (read, never changed
here), the router, the breakers (the registry admits, the durable breakers persist), the
placement figures, the recorder and the tally of successes on ``pool/main``, the placement of a
model (the pool's: placing is not serving), the jitter's random source and the fallback. What
only the request path needs is its own: the retry budget, the bounded queue's count, the
requests waiting for a slot, and the request counters. A request:

1. is checked (the model is known, the inputs fit it) and admitted by the bounded queue;
2. goes where the :class:`~poolwarden.pool.routing.Router` says, waiting for a free slot when
   every candidate is busy, loading the model where it must;
3. is admitted by both breakers and sent, under the attempt timeout or what is left of its
   deadline, whichever is less;
4. ends in a result (summarised, or recorded alone after a retry) or, after retries of
   retryable kinds within the retry budget, in a typed error; never in silence.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.aio.recorder import HIGH_WATER, EventRecorder
from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.classify import REQUEST_TRANSPORT, classify
from poolwarden.clock import Clock
from poolwarden.errors import (
    CircuitOpen,
    DeadlineExceeded,
    InvalidInput,
    MemoryPressure,
    ModelError,
    NoHealthyConnection,
    PoolwardenError,
    QueueFull,
    RequestError,
    UnknownModel,
)
from poolwarden.lifecycle_types import ConnectionState, Suspected
from poolwarden.policy import BreakerLevel, ErrorKind, counts
from poolwarden.pool.config import PoolConfig
from poolwarden.pool.incidents import IncidentBook
from poolwarden.pool.inputs import as_tensors
from poolwarden.pool.member import PoolMember
from poolwarden.pool.placement import StatsBook
from poolwarden.pool.results import Fallback, InferenceResult, ModelInfo
from poolwarden.pool.retry_budget import RetryBudget
from poolwarden.pool.routing import Router
from poolwarden.pool.tally import SUMMARY_INTERVAL, ServedTally
from poolwarden.pool_events import (
    AttemptFailed,
    FallbackServed,
    InferenceFailed,
    InferenceServed,
    PanicRouted,
)
from poolwarden.protocol import Tensor

__all__ = ["Placement", "RequestPath"]

log = logging.getLogger(__name__)


RETURN_RECHECK_S = 0.5
"""Seconds a request waiting for a connection to come back from maintenance looks again, even
unwoken (the wake-up is the rule; this only bounds a missed one)."""

Placement = Callable[[ModelInfo, PoolMember], Awaitable[str]]
"""Loads a model on a member (or joins the load under way there); returns the connection id."""


class RequestPath:
    """The request path of :class:`~poolwarden.pool.ResourcePool` (see the module docstring).

    ``members`` and ``models`` are the pool's own mappings, read live (the pool adds, replaces
    and removes entries; the request path never does). ``place`` loads a model where the router
    says it must be loaded. ``rng`` draws the backoff's jitter (seed it in tests).
    """

    def __init__(
        self,
        *,
        config: PoolConfig,
        clock: Clock,
        members: Mapping[str, PoolMember],
        models: Mapping[str, ModelInfo],
        router: Router[PoolMember],
        registry: BreakerRegistry,
        breakers: DurableBreakers,
        stats: StatsBook,
        recorder: EventRecorder,
        tally: ServedTally,
        place: Placement,
        rng: random.Random,
        fallback: Fallback | None = None,
        incidents: IncidentBook | None = None,
    ) -> None:
        self.config = config
        self.incidents = incidents
        self.clock = clock
        self.members = members
        self.registry = registry
        self.breakers = breakers
        self.router = router
        self.stats = stats
        self._models = models
        self._recorder = recorder
        self._served = tally
        self._place = place
        self._rng = rng
        self._fallback = fallback
        self._budget = RetryBudget(config.retry.budget_window)
        self._queued = 0
        self.queued_for: dict[str, int] = {}
        """Requests admitted and not yet ended, by model (memory pressure never evicts those)."""
        """Requests running or waiting (the bounded queue's count, ``config.max_queue``)."""
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        """Requests waiting for a free slot somewhere, first come first served."""
        self._return_waiters: list[asyncio.Future[None]] = []
        """Requests waiting for a connection out for maintenance to serve again."""
        self.counters: dict[str, int] = {
            "requests": 0,
            "served": 0,
            "failed": 0,
            "retries": 0,
            "fallbacks": 0,
        }
        """Requests admitted, served, failed, retries made and fallbacks served, since the start."""

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
        carries ``attempted``: the connections whose breakers recorded a failed attempt.

        The deadline is enforced without a timer of its own on the common path: an attempt's
        timeout is the attempt timeout or what is left of the deadline, whichever is less, and
        every other wait (for a free slot, a model load, a backoff, the fallback, the log)
        is bounded by the deadline where it happens.
        """
        info = self._models.get(model_id)
        try:
            if info is None:
                raise UnknownModel(f"model {model_id!r} was never loaded into this pool")
            tensors = as_tensors(model_id, info.input_width, inputs)
            if self._queued >= self.config.max_queue:
                raise QueueFull(
                    f"{self._queued} requests are queued (max_queue={self.config.max_queue})",
                    retry_after=max(0.01, self.config.default_deadline / 10),
                )
        except RequestError as error:
            self._request_failed(model_id, None, type(error).__name__, 0.0, "refused")
            raise
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeout = self.config.default_deadline if deadline is None else deadline
        deadline_at = started + timeout
        self._queued += 1
        queued_for = self.queued_for
        queued_for[model_id] = queued_for.get(model_id, 0) + 1
        self.counters["requests"] += 1
        self._budget.note_request(started)
        ran: list[str] = []
        try:
            if self._recorder.pending > HIGH_WATER:  # the log is behind: let it catch up first
                async with asyncio.timeout_at(deadline_at):
                    await self._recorder.room()
            return await self._serve(
                info, tensors, started, deadline_at, attempts or self.config.retry.attempts, ran
            )
        except RequestError as error:
            error.attempted = tuple(ran)
            member = self.members.get(ran[-1]) if ran else None
            self._request_failed(
                model_id, member, type(error).__name__, (loop.time() - started) * 1000, "failed"
            )
            raise
        except asyncio.CancelledError:  # by its caller: recorded as cancelled, and goes on
            member = self.members.get(ran[-1]) if ran else None
            self._request_failed(
                model_id, member, "CancelledError", (loop.time() - started) * 1000, "cancelled"
            )
            raise
        except TimeoutError:  # a wait bounded by the deadline (a slot, a load, a backoff, ...)
            latency_ms = (loop.time() - started) * 1000
            self._request_failed(model_id, None, "DeadlineExceeded", latency_ms, "failed")
            exceeded = DeadlineExceeded(f"request for {model_id!r} not served within {timeout:g} s")
            exceeded.attempted = tuple(ran)
            raise exceeded from None
        finally:
            self._queued -= 1
            queued_for[model_id] -= 1

    async def _serve(
        self,
        info: ModelInfo,
        tensors: Mapping[str, Tensor],
        started: float,
        deadline_at: float,
        max_attempts: int,
        ran: list[str],
    ) -> InferenceResult:
        """Try connections until one serves, a non-retryable error, or the attempts run out.

        ``ran`` gets the connections whose breakers recorded a failed attempt.
        """
        attempts = 0
        last_error: RequestError | None = None
        tried: set[str] = set()
        skip: set[str] = set()
        while True:
            outliers = self.router.outliers
            if outliers is not None:
                outliers.evaluate(len(self.members))
                for event in outliers.drain_events():
                    self._recorder.emit(event)
            route = self.router.choose(info.model_id, info.model_type, tried, skip)
            member = route.member
            if member is None:
                if route.busy:  # every candidate is busy: wait in the pool's queue for a slot
                    await self._wait_for_slot(deadline_at)
                    continue
                if route.returning:  # every candidate is out for maintenance: wait for one back
                    await self._wait_for_return(deadline_at)
                    continue
                error = (
                    route.refusal
                    or last_error
                    or NoHealthyConnection(f"no healthy connection serves {info.model_id!r}")
                )
                return await self._give_up(info, tensors, error, started, attempts, deadline_at)
            if route.must_load:
                try:
                    async with asyncio.timeout_at(deadline_at):
                        await self._place(info, member)
                except MemoryPressure as error:
                    # Pressure refuses new loads everywhere: the request gets the reason, typed,
                    # unless a connection that holds the model serves it meanwhile.
                    skip.add(member.connection_id)
                    last_error = error
                    continue
                except PoolwardenError as error:
                    log.info("could not place %s on %s: %s", info.model_id, member.connection_id, error)
                    skip.add(member.connection_id)
                    continue
                if member.busy or not member.serving:  # things moved while the model loaded
                    continue
            if route.panic:
                self._recorder.emit(
                    PanicRouted(
                        connection_id=member.connection_id,
                        model_id=info.model_id,
                        open_share=self.router.open_share(self._serving(), self.clock()),
                        incident_id=self._incident(member.connection_id, signal=False),
                    )
                )
            tried.add(member.connection_id)
            try:
                return await self._attempt(
                    info,
                    tensors,
                    member,
                    attempts + 1,
                    started,
                    deadline_at,
                    panic=route.panic,
                    breakers=None if route.must_load else route.breakers,
                )
            except CircuitOpen as error:  # refused at admission: not an attempt, try the next one
                skip.add(member.connection_id)
                last_error = error
                continue
            except RequestError as error:
                if isinstance(error, DeadlineExceeded) and asyncio.get_running_loop().time() >= deadline_at:
                    # The request's own deadline: no time is left for another attempt, and the
                    # attempt it cut short was not counted against the connection.
                    raise
                ran.append(member.connection_id)
                if isinstance(error, InvalidInput | UnknownModel):
                    raise
                if isinstance(error, ModelError) and error.kind not in self.config.retry.retryable:
                    raise  # a deterministic model error fails the same way everywhere
                last_error = error
            attempts += 1
            if attempts >= max_attempts:
                raise last_error
            budget = self.config.retry
            if not self._budget.try_spend(
                asyncio.get_running_loop().time(), budget.budget_ratio, budget.budget_min
            ):
                raise last_error
            self.counters["retries"] += 1
            cap = min(budget.backoff_cap, budget.backoff_base * 2 ** (attempts - 1))
            async with asyncio.timeout_at(deadline_at):
                await asyncio.sleep(self._rng.uniform(0, cap))  # full jitter

    async def _wait_for_slot(self, deadline_at: float) -> None:
        """Wait, first come first served, until a request on some connection ends."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline_at):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._slot_freed()  # woken, but leaving: the slot goes to the next in line
            raise

    async def _wait_for_return(self, deadline_at: float) -> None:
        """Wait until a connection's serving changes (:meth:`members_changed`), within the
        deadline; looked at again at least every ``RETURN_RECHECK_S`` in case a change went
        unsaid."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._return_waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline_at):
                await asyncio.wait((waiter,), timeout=RETURN_RECHECK_S)
        finally:
            if waiter in self._return_waiters:
                self._return_waiters.remove(waiter)

    def members_changed(self) -> None:
        """A connection started or stopped serving (the pool says so): every request waiting
        for a connection out for maintenance looks again."""
        waiters, self._return_waiters = self._return_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _slot_freed(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _serving(self) -> list[PoolMember]:
        return [m for m in self.members.values() if m.serving]

    async def _attempt(
        self,
        info: ModelInfo,
        tensors: Mapping[str, Tensor],
        member: PoolMember,
        attempts: int,
        started: float,
        deadline_at: float,
        *,
        panic: bool,
        breakers: tuple[CircuitBreaker, CircuitBreaker] | None = None,
    ) -> InferenceResult:
        """One attempt on ``member`` through its breakers (``breakers``, when the router found
        them already; not asked at all on a panic route)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        left = deadline_at - began
        if left <= 0:
            raise DeadlineExceeded(f"request for {info.model_id!r} not served within its deadline")
        if panic:
            admission = None
        else:
            admission = self.registry.admit_pair(
                *(breakers or self.registry.pair(member.connection_id, info.model_id))
            )
        if admission is not None and not admission.allowed:
            key = admission.rejected_by.key if admission.rejected_by is not None else member.connection_id
            raise CircuitOpen(key, admission.reason, admission.retry_at, now=self.clock())
        attempt_timeout = self.config.attempt_timeout
        member.begin(info.model_id)
        try:
            result = await member.connection.infer(info.model_id, tensors, timeout=min(attempt_timeout, left))
        except BaseException as error:
            duration = loop.time() - began
            # Cut short by the caller (cancelled) or by the request's own deadline rather than
            # the attempt's: no evidence against the connection, so no count against it.
            cut_short = isinstance(error, asyncio.CancelledError) or (
                isinstance(error, TimeoutError) and left < attempt_timeout
            )
            kind = ErrorKind.CANCELLED if cut_short else _kind_of(error)
            outliers = self.router.outliers
            if outliers is not None and counts(kind, BreakerLevel.CONNECTION):
                outliers.record(member.connection_id, False, duration)
            if admission is not None:
                admission.failed(kind, duration)
                # A counted failure is an event: have it persisted now. (A success in a closed
                # breaker is no event, so the hot path does not wake the flusher.)
                self.breakers.wake()
            if isinstance(error, asyncio.CancelledError):
                raise
            if cut_short:
                raise DeadlineExceeded(
                    f"request for {info.model_id!r} not served within its deadline"
                ) from error
            self._on_request_fault(member, kind)
            self._attempt_failed(info, member, kind, duration * 1000)
            raise _as_request_error(error, member.connection_id) from error
        finally:
            member.end(info.model_id)
            if self._slot_waiters:
                self._slot_freed()
        now = loop.time()
        if self.router.outliers is not None:
            self.router.outliers.record(member.connection_id, True, now - began)
        if admission is not None:
            admission.succeeded(now - began)
        latency_ms = (now - started) * 1000
        self.counters["served"] += 1
        browser = member.browser
        self.stats.record(info.model_type, browser, True, latency_ms)
        if attempts == 1 and not panic and not self.config.record_every_request:
            self._served.add(member.connection_id, info.model_id, browser, result.backend, latency_ms)
            self._recorder.wake(SUMMARY_INTERVAL)
        else:
            self._recorder.emit(
                InferenceServed(
                    connection_id=member.connection_id,
                    model_id=info.model_id,
                    browser=browser,
                    latency_ms=latency_ms,
                    backend=result.backend,
                    attempts=attempts,
                    worker_ms=result.elapsed_ms,
                    panic=panic,
                )
            )
        return InferenceResult(
            model_id=info.model_id,
            outputs=[tensor.to_numpy() for tensor in result.tensors],
            connection_id=member.connection_id,
            browser=browser,
            backend=result.backend,
            latency_ms=latency_ms,
            attempts=attempts,
        )

    async def _give_up(
        self,
        info: ModelInfo,
        tensors: Mapping[str, Tensor],
        error: RequestError,
        started: float,
        attempts: int,
        deadline_at: float,
    ) -> InferenceResult:
        if self._fallback is None:
            raise error
        inputs = {name: tensor.to_numpy() for name, tensor in tensors.items()}
        async with asyncio.timeout_at(deadline_at):
            output = await self._fallback(info.model_id, inputs, error)
        self.counters["fallbacks"] += 1
        latency_ms = (asyncio.get_running_loop().time() - started) * 1000
        self._recorder.emit(
            FallbackServed(
                model_id=info.model_id,
                latency_ms=latency_ms,
                error_kind=type(error).__name__,
                reason=str(error),
            )
        )
        return InferenceResult(
            info.model_id, [output], None, None, "fallback", latency_ms, attempts, is_fallback=True
        )

    def _on_request_fault(self, member: PoolMember, kind: ErrorKind) -> None:
        """A failed request is a signal about its connection: feed the connection's recovery."""
        recovery = member.recovery
        if recovery is None or not recovery.started or member.state is not ConnectionState.HEALTHY:
            return
        if kind is ErrorKind.TIMEOUT:
            # A page that holds requests past their timeout may be hung (or its inference long):
            # ping it now rather than at the next heartbeat.
            recovery.driver.fault(Suspected())
        else:
            recovery.notice_error(kind.value)

    def _attempt_failed(
        self, info: ModelInfo, member: PoolMember, kind: ErrorKind, latency_ms: float
    ) -> None:
        """One attempt failed on ``member`` (the request may still be served elsewhere)."""
        self.stats.record(info.model_type, member.browser, False, None)
        self._recorder.emit(
            AttemptFailed(
                connection_id=member.connection_id,
                model_id=info.model_id,
                browser=member.browser,
                error_kind=kind.value,
                latency_ms=latency_ms,
                # A failure of the connection is a signal of an incident there; a model's own
                # error (bad input, a validation failure) is not, but may fall within one.
                incident_id=self._incident(
                    member.connection_id, signal=kind not in (ErrorKind.INPUT, ErrorKind.VALIDATION)
                ),
            )
        )

    def _request_failed(
        self, model_id: str, member: PoolMember | None, error_type: str, latency_ms: float, outcome: str
    ) -> None:
        """The request ended in a typed error (``error_type``, its class name) for its caller."""
        self.counters["failed"] += 1
        self._recorder.emit(
            InferenceFailed(
                connection_id=member.connection_id if member else None,
                model_id=model_id,
                browser=member.browser if member else None,
                error_kind=error_type,
                outcome=outcome,
                latency_ms=latency_ms,
                incident_id=self._incident(member.connection_id, signal=False) if member else None,
            )
        )

    def _incident(self, connection_id: str, *, signal: bool) -> str | None:
        """The incident ``connection_id`` is in (opened now if ``signal`` and there is none)."""
        incidents = self.incidents
        if incidents is None:
            return None
        return incidents.signal(connection_id) if signal else incidents.current(connection_id)


def _kind_of(error: BaseException) -> ErrorKind:
    """How a failed attempt counts (a worker's socket closing under it is a transport fault)."""
    return classify(error, transport=REQUEST_TRANSPORT)


def _as_request_error(error: BaseException, connection_id: str) -> RequestError:
    if isinstance(error, RequestError):
        return error
    if isinstance(error, TimeoutError):
        return DeadlineExceeded(f"worker {connection_id!r}: {error}")
    return ModelError(f"worker {connection_id!r}: {type(error).__name__}: {error}", _kind_of(error).value)
