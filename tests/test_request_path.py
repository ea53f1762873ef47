"""The request path on its own: a RequestPath built from its collaborators, without a pool.

The members' connections are scripted (each ``infer`` returns or raises what the test says), the
breakers, the router and the recorder are the real ones over an in-memory log, and placing a
model is a recorded callable: what the path decides, records and raises is seen directly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from poolwarden.aio.durable_breakers import DurableBreakers
from poolwarden.aio.recorder import EventRecorder
from poolwarden.breaker_registry import BreakerRegistry
from poolwarden.clock import system_clock
from poolwarden.errors import (
    DeadlineExceeded,
    ModelError,
    NoHealthyConnection,
    RequestError,
    UnknownModel,
    WorkerDisconnected,
)
from poolwarden.events import RecordedEvent
from poolwarden.lifecycle_types import ConnectionState, Suspected
from poolwarden.pool.config import PoolConfig
from poolwarden.pool.member import ModelSlot, PoolMember
from poolwarden.pool.placement import StatsBook
from poolwarden.pool.results import ModelInfo
from poolwarden.pool.routing import Router
from poolwarden.pool.serving import RequestPath
from poolwarden.pool.tally import ServedTally
from poolwarden.storage import open_store
from poolwarden.storage.base import EventStore

MODEL = ModelInfo("toy", "toy-mlp", "text", {}, input_width=4)
INPUTS = {"input": [[0.0, 1.0, 2.0, 3.0]]}
STREAM = "pool/main"


@dataclass
class ScriptedConnection:
    """A worker connection whose answers the test writes: an exception is raised, "hang" answers
    nothing until ``timeout`` (then raises as the bridge does), anything else is a result."""

    script: list[Any] = field(default_factory=list)
    calls: int = 0

    async def infer(self, model: str, inputs: Mapping[str, Any], timeout: float = 30.0) -> Any:  # noqa: ASYNC109
        self.calls += 1
        outcome = self.script.pop(0) if self.script else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":  # as the bridge does: its own timer ends the wait
            await asyncio.sleep(timeout)
            raise DeadlineExceeded(f"worker: no answer within {timeout} s")
        return SimpleNamespace(backend="wasm", tensors=[], elapsed_ms=0.1)


@dataclass
class SeenRecovery:
    """What the path tells a member's recovery about its failures."""

    started: bool = True
    errors: list[str] = field(default_factory=list)
    faults: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        machine = SimpleNamespace(state=ConnectionState.HEALTHY)
        self.driver = SimpleNamespace(machine=machine, fault=self.faults.append)

    def notice_error(self, kind: str) -> None:
        self.errors.append(kind)


def member(connection_id: str, *script: Any, holds: bool = True) -> PoolMember:
    handle = SimpleNamespace(browser="chromium", connection=ScriptedConnection(list(script)))
    m = PoolMember(connection_id, "chromium", handle, concurrency=2, clock=system_clock)  # type: ignore[arg-type]
    m.recovery = SeenRecovery()  # type: ignore[assignment]
    if holds:
        m.models[MODEL.model_id] = ModelSlot(MODEL.model_id, MODEL.kind, {}, last_used_at=0.0)
    return m


def busier(m: PoolMember) -> PoolMember:
    """``m`` with a second model held: the router, all else equal, tries it after the others."""
    m.models["other"] = ModelSlot("other", "toy-mlp", {}, last_used_at=0.0)
    return m


def connection(m: PoolMember) -> ScriptedConnection:
    conn = m.handle.connection
    assert isinstance(conn, ScriptedConnection)
    return conn


@dataclass
class Rig:
    """A RequestPath and what it was built from."""

    store: EventStore
    members: dict[str, PoolMember]
    recorder: EventRecorder
    placed: list[tuple[str, str]]
    fallback_answers: list[RequestError]
    path: RequestPath = field(init=False)

    def build(self, config: PoolConfig, *, fallback: bool = False) -> RequestPath:
        registry = BreakerRegistry(
            connection_policy=config.connection_breaker,
            model_policy=config.model_breaker,
            clock=system_clock,
            rng=random.Random(0),
        )
        stats = StatsBook()
        tally = ServedTally(clock=system_clock)
        self.recorder = EventRecorder(self.store, STREAM, system_clock, gather=tally.drain)

        async def place(info: ModelInfo, m: PoolMember) -> str:
            self.placed.append((info.model_id, m.connection_id))
            m.models[info.model_id] = ModelSlot(info.model_id, info.kind, {}, last_used_at=0.0)
            return m.connection_id

        async def answer(model_id: str, inputs: Mapping[str, Any], error: RequestError) -> Any:
            self.fallback_answers.append(error)
            return "from the fallback"

        self.path = RequestPath(
            config=config,
            clock=system_clock,
            members=self.members,
            models={MODEL.model_id: MODEL},
            router=Router(self.members, registry, stats, config.max_ejection_share, clock=system_clock),
            registry=registry,
            breakers=DurableBreakers(self.store, registry),
            stats=stats,
            recorder=self.recorder,
            tally=tally,
            place=place,
            rng=random.Random(7),
            fallback=answer if fallback else None,
        )
        return self.path

    async def events(self) -> list[RecordedEvent]:
        await self.recorder.flush()
        await self.store.flush()
        return list(await self.store.read_stream(STREAM))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with open_store(":memory:") as store:
        rig = Rig(store, {}, EventRecorder(store, STREAM, system_clock), [], [])
        yield rig
        await rig.recorder.close()


def add(rig: Rig, *members: PoolMember) -> None:
    for m in members:
        rig.members[m.connection_id] = m


async def test_a_request_served_at_once_is_summarised(rig: Rig) -> None:
    """Served by the holder at the first attempt: a result, counted, and summarised in the log."""
    add(rig, member("a"))
    path = rig.build(PoolConfig())
    result = await path.run_inference("toy", INPUTS, deadline=5.0)
    assert (result.connection_id, result.attempts, result.backend, result.is_fallback) == (
        "a",
        1,
        "wasm",
        False,
    )
    assert path.counters == {"requests": 1, "served": 1, "failed": 0, "retries": 0, "fallbacks": 0}
    assert rig.placed == []
    events = await rig.events()
    assert [e.type for e in events] == ["InferencesServed"]
    assert events[0].payload["n"] == 1


async def test_a_transport_failure_is_retried_on_the_next_connection(rig: Rig) -> None:
    """A closed socket fails the attempt as a transport fault, tells the member's recovery, and
    the request is served by the other connection and recorded alone."""
    a, b = member("a", WorkerDisconnected("a", 1006)), busier(member("b"))
    add(rig, a, b)
    path = rig.build(PoolConfig())
    result = await path.run_inference("toy", INPUTS, deadline=5.0)
    assert (result.connection_id, result.attempts) == ("b", 2)
    assert (connection(a).calls, connection(b).calls) == (1, 1)
    assert path.counters["retries"] == 1
    assert a.recovery.errors == ["transport"]  # type: ignore[union-attr]
    assert b.recovery.errors == []  # type: ignore[union-attr]
    events = await rig.events()
    assert [(e.type, e.connection_id, e.error_kind) for e in events] == [
        ("AttemptFailed", "a", "transport"),
        ("InferenceServed", "b", None),
    ]
    assert events[1].payload["attempts"] == 2


async def test_a_deterministic_model_error_is_not_retried(rig: Rig) -> None:
    """A validation error would fail the same way everywhere: raised at once, with ``attempted``."""
    add(rig, member("a", ModelError("bad weights", "validation")), busier(member("b")))
    path = rig.build(PoolConfig())
    with pytest.raises(ModelError) as caught:
        await path.run_inference("toy", INPUTS, deadline=5.0)
    assert caught.value.attempted == ("a",)
    assert sum(connection(m).calls for m in rig.members.values()) == 1
    assert path.counters["failed"] == 1
    assert path.counters["retries"] == 0
    events = await rig.events()
    assert [(e.type, e.error_kind) for e in events] == [
        ("AttemptFailed", "validation"),
        ("InferenceFailed", "ModelError"),
    ]


async def test_a_timeout_pings_the_connection(rig: Rig) -> None:
    """An attempt that outlives ``attempt_timeout`` makes its connection suspect: a ping decides."""
    a = member("a", "hang")
    add(rig, a)
    path = rig.build(PoolConfig(attempt_timeout=0.05))
    with pytest.raises(RequestError):
        await path.run_inference("toy", INPUTS, deadline=5.0, attempts=1)
    assert [type(f) for f in a.recovery.faults] == [Suspected]  # type: ignore[union-attr]


async def test_a_request_cut_by_its_own_deadline_counts_against_no_connection(rig: Rig) -> None:
    """The caller's short deadline is no evidence against the connection."""
    add(rig, member("a", "hang"))
    path = rig.build(PoolConfig())
    with pytest.raises(DeadlineExceeded) as caught:
        await path.run_inference("toy", INPUTS, deadline=0.05)
    assert caught.value.attempted == ()
    assert path.registry.connection("a").state == "closed"
    assert [e.type for e in await rig.events()] == ["InferenceFailed"]


async def test_the_model_is_placed_where_the_router_says(rig: Rig) -> None:
    """No member holds the model: the path has it placed (through ``place``), then serves."""
    add(rig, member("a", holds=False))
    path = rig.build(PoolConfig())
    result = await path.run_inference("toy", INPUTS, deadline=5.0)
    assert rig.placed == [("toy", "a")]
    assert result.connection_id == "a"


async def test_an_unknown_model_is_refused_before_anything_is_sent(rig: Rig) -> None:
    """Refused at admission: recorded as refused, no connection tried, nothing attempted."""
    add(rig, member("a"))
    path = rig.build(PoolConfig())
    with pytest.raises(UnknownModel) as caught:
        await path.run_inference("other", INPUTS)
    assert caught.value.attempted == ()
    assert connection(rig.members["a"]).calls == 0
    assert [(e.type, e.outcome) for e in await rig.events()] == [("InferenceFailed", "refused")]


async def test_a_request_waits_for_a_draining_member_to_come_back(rig: Rig) -> None:
    """Every member draining for maintenance: the request waits (within its deadline) and is
    served once one serves again, instead of failing."""
    add(rig, member("a", "ok"))
    rig.members["a"].draining = True
    path = rig.build(PoolConfig())
    request = asyncio.ensure_future(path.run_inference("toy", INPUTS, deadline=5.0))
    await asyncio.sleep(0)
    assert not request.done()
    rig.members["a"].draining = False
    path.members_changed()
    result = await request
    assert result.connection_id == "a"


async def test_the_fallback_answers_when_no_connection_can(rig: Rig) -> None:
    """No serving member: the fallback's answer, flagged, with the reason it was asked."""
    add(rig, member("a"))
    rig.members["a"].driver.machine.state = ConnectionState.FAILED  # type: ignore[union-attr]
    path = rig.build(PoolConfig(), fallback=True)
    result = await path.run_inference("toy", INPUTS, deadline=5.0)
    assert result.is_fallback
    assert result.outputs == ["from the fallback"]
    assert [type(e) for e in rig.fallback_answers] == [NoHealthyConnection]
    assert path.counters["fallbacks"] == 1
    assert [e.type for e in await rig.events()] == ["FallbackServed"]
