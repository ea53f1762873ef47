"""The one codec of domain events: declared columns, the registry, and upcasting old schema versions."""

from __future__ import annotations

import enum
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from poolwarden.bridge_events import WorkerRefused
from poolwarden.codec import (
    REGISTRY,
    DomainEvent,
    EventRegistry,
    Stored,
    column,
    decode,
    encode,
    payload,
)
from poolwarden.errors import ConfigurationError, ReplayError
from poolwarden.events import RecordedEvent
from poolwarden.lifecycle_events import RecoveryCompleted
from poolwarden.memory import MemoryPressureChanged, MemorySampled, PressureLevel
from poolwarden.pool_events import InferenceServed, InferencesServed, ModelPlaced
from poolwarden.storage import SQLiteEventStore


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True, kw_only=True)
class Painted(DomainEvent):
    """A test-only event: its current shape is version 3."""

    SCHEMA_VERSION: ClassVar[int] = 3

    connection_id: str
    colour: Colour = field(metadata=column("to_state"))
    coats: int
    brush: str | None = field(default=None, metadata=payload("tool", omit_none=True))


def _registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Painted)

    @registry.upcaster("Painted", 1)
    def v1_to_v2(old: Stored) -> Stored:
        # Version 1 wrote the colour in the payload and counted layers, not coats.
        body = dict(old.payload)
        columns = {**old.columns, "to_state": body.pop("colour")}
        body["coats"] = body.pop("layers")
        return Stored(body, columns)

    @registry.upcaster("Painted", 2)
    def v2_to_v3(old: Stored) -> Stored:
        # Version 2 called the brush ``brush``; version 3 calls it ``tool``.
        body = dict(old.payload)
        if "brush" in body:
            body["tool"] = body.pop("brush")
        return Stored(body, old.columns)

    return registry


def _recorded(event: DomainEvent, at: float = 5.0, stream: str = "pool/main") -> RecordedEvent:
    """What the store gives back for ``event``, built without a store."""
    return RecordedEvent.of(encode(event, at), position=1, stream=stream, version=1, recorded_at=at)


def test_fields_named_like_columns_are_columns_and_the_rest_payload_in_field_order() -> None:
    """ModelPlaced: identity and latency in the columns; backend, model_type, kind in the payload."""
    new = encode(
        ModelPlaced(
            connection_id="c1",
            model_id="m",
            browser="chromium",
            latency_ms=12.5,
            backend="webgpu",
            model_type="text",
            kind="toy",
        ),
        100.0,
    )
    assert (new.type, new.occurred_at, new.schema_version) == ("ModelPlaced", 100.0, 1)
    assert (new.connection_id, new.model_id, new.browser, new.latency_ms) == ("c1", "m", "chromium", 12.5)
    assert list(new.payload.items()) == [("backend", "webgpu"), ("model_type", "text"), ("kind", "toy")]


def test_declared_metadata_renames_omits_and_converts() -> None:
    """A renamed payload key, an omitted None, an enum column written as its value."""
    summary = encode(
        InferencesServed(
            connection_id="c",
            model_id="m",
            browser="b",
            n=2,
            backend="js",
            first_at=1.0,
            last_at=2.0,
            latency_ms_total=3.0,
            latency_ms_max=2.0,
            latencies=[1.0, 2.0],
        ),
        3.0,
    )
    assert summary.latency_ms is None
    assert summary.payload["latency_ms"] == [1.0, 2.0]
    assert summary.outcome == "success"
    refused = encode(WorkerRefused(connection_id=None, error_kind="foreign_host", host="evil"), 1.0)
    assert refused.payload == {"host": "evil"}
    changed = encode(
        MemoryPressureChanged(from_state=PressureLevel.NORMAL, to_state=PressureLevel.CRITICAL, percent=97.0),
        1.0,
    )
    assert (changed.from_state, changed.to_state) == ("normal", "critical")


@pytest.mark.parametrize(
    "event",
    [
        InferenceServed(
            connection_id="c",
            model_id="m",
            browser="b",
            latency_ms=3.0,
            backend="wasm",
            attempts=2,
            worker_ms=1.5,
            panic=False,
        ),
        MemorySampled(scope="browser", connection_id="c", browser="b", pss_mb=12.0),
        MemoryPressureChanged(from_state=PressureLevel.WARNING, to_state=PressureLevel.NORMAL, percent=50.0),
        WorkerRefused(connection_id="w", error_kind="bad_token", detail="wrong token"),
    ],
    ids=lambda e: e.TYPE,
)
def test_every_family_decodes_back_to_its_class(event: DomainEvent) -> None:
    """What encode writes, the registry reads back as an equal event of the same class."""
    assert decode(_recorded(event)) == event


def test_a_class_with_its_own_time_keeps_it() -> None:
    """A lifecycle event carries occurred_at; encode takes it from there, decode puts it back."""
    from poolwarden.lifecycle_types import ConnectionState, Rung

    event = RecoveryCompleted(
        connection_id="c",
        occurred_at=42.0,
        rung=Rung.PING,
        error_kind=None,
        from_state=ConnectionState.PINGING,
        latency_ms=5.0,
    )
    new = encode(event)
    assert new.occurred_at == 42.0
    assert decode(_recorded(event, at=42.0, stream="connection/c")) == event


def test_an_event_without_time_needs_one() -> None:
    with pytest.raises(TypeError, match="has no time of its own"):
        encode(MemorySampled(scope="host", percent=1.0))


def test_a_type_name_belongs_to_one_class() -> None:
    """Registering another class under a known type name is refused."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class ModelPlaced(DomainEvent):
        model_id: str

    with pytest.raises(ConfigurationError, match="already"):
        REGISTRY.register(ModelPlaced)


def test_a_column_must_be_one_of_the_envelope() -> None:
    with pytest.raises(ConfigurationError, match="not a column"):
        column("colour")


def test_unknown_and_malformed_events_raise_replay_error() -> None:
    registry = _registry()
    good = _recorded(Painted(connection_id="c", colour=Colour.RED, coats=2))
    with pytest.raises(ReplayError, match="not a known event type"):
        registry.decode(good._replace(type="Sculpted"))
    with pytest.raises(ReplayError, match="malformed Painted"):
        registry.decode(good._replace(payload_json="{}"))  # no coats


def _old_painted(schema_version: int, body: dict[str, Any], to_state: str | None = None) -> RecordedEvent:
    return RecordedEvent(
        1, "paint/1", 1, "Painted", schema_version, 7.0, 7.0, json.dumps(body), None, "c", to_state=to_state
    )


def test_upcasters_chain_from_any_old_version_to_the_current_class() -> None:
    """Version 1 goes through v1->v2 and v2->v3; version 2 through v2->v3 only."""
    registry = _registry()
    current = Painted(connection_id="c", colour=Colour.BLUE, coats=3, brush="wide")
    v1 = _old_painted(1, {"colour": "blue", "layers": 3, "brush": "wide"})
    v2 = _old_painted(2, {"coats": 3, "brush": "wide"}, to_state="blue")
    assert registry.decode(v1) == current
    assert registry.decode(v2) == current
    assert registry.decode(_recorded(current)) == current  # the current version needs none


def test_a_missing_link_or_a_newer_version_is_a_replay_error() -> None:
    registry = EventRegistry()
    registry.register(Painted)
    registry.add_upcaster("Painted", 2, lambda old: old)
    with pytest.raises(ReplayError, match="version 1: no upcaster to 2"):
        registry.decode(_old_painted(1, {"colour": "red", "layers": 1}))
    with pytest.raises(ReplayError, match="newer than this code reads"):
        registry.decode(_old_painted(4, {"coats": 1}, to_state="red"))
    with pytest.raises(ConfigurationError, match="already has an upcaster"):
        registry.add_upcaster("Painted", 2, lambda old: old)


async def test_an_old_version_in_a_real_log_file_reads_back_as_the_current_class(tmp_path: Path) -> None:
    """A version-1 event appended to an SQLite file, read back by the store, decodes upcast."""
    registry = _registry()
    current = encode(Painted(connection_id="c", colour=Colour.RED, coats=1), 9.0)
    old = replace(
        current,
        schema_version=1,
        to_state=None,
        payload={"colour": "red", "layers": 4, "brush": "round"},
    )
    async with SQLiteEventStore(tmp_path / "old.db") as store:
        await store.append("paint/1", [old, current])
    async with SQLiteEventStore(tmp_path / "old.db") as store:
        first, second = await store.read_stream("paint/1")
    assert first.schema_version == 1
    assert registry.decode(first) == Painted(connection_id="c", colour=Colour.RED, coats=4, brush="round")
    assert registry.decode(second) == Painted(connection_id="c", colour=Colour.RED, coats=1)


def test_breaker_replay_fast_path_upcasts_an_old_version() -> None:
    """A CallFailed of an older schema version leaves the fast path for the codec (which refuses
    it: no CallFailed upcaster exists), rather than being read as if it were current."""
    from poolwarden.breaker import CircuitBreaker
    from poolwarden.breaker_events import CallFailed
    from poolwarden.clock import FakeClock
    from poolwarden.policy import ErrorKind

    failed = CallFailed(key="k", at=1.0, kind=ErrorKind.TIMEOUT, duration=0.1)
    record = _recorded(failed, at=1.0, stream="breaker/k")
    breaker = CircuitBreaker("k", clock=FakeClock(1.0), rng=random.Random(0))
    breaker.apply_recorded(record)  # the current version: folded
    with pytest.raises(ReplayError, match="newer than this code reads"):
        breaker.apply_recorded(record._replace(schema_version=2))


_STORE_JSON = (
    __import__("json").JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
)


def test_the_stored_bytes_are_those_the_hand_written_codecs_wrote() -> None:
    """Payload keys in the order, and columns with the values, that the string-and-dict emitters
    and the hand-written breaker codec wrote, so that old and new rows of a log look alike."""
    from poolwarden.breaker_events import CallFailed, Successes
    from poolwarden.bridge_events import WorkerConnected
    from poolwarden.memory import MemoryActionDecided
    from poolwarden.policy import ErrorKind

    failed = encode(
        CallFailed(key="c/m", at=1.0, kind=ErrorKind.TIMEOUT, duration=0.1, successes=Successes(n=2))
    )
    assert _STORE_JSON(failed.payload) == '{"counted":true,"slow":false,"duration":0.1,"ok":{"n":2}}'
    assert (failed.error_kind, failed.latency_ms, failed.outcome) == ("timeout", 100.0, "counted")
    served = encode(
        InferencesServed(
            connection_id="c",
            model_id="m",
            browser="b",
            n=2,
            backend="js",
            first_at=1.0,
            last_at=2.0,
            latency_ms_total=3.0,
            latency_ms_max=2.0,
            latencies=[1.0, 2.0],
        ),
        3.0,
    )
    assert _STORE_JSON(served.payload) == (
        '{"n":2,"backend":"js","first_at":1.0,"last_at":2.0,"latency_ms_total":3.0,'
        '"latency_ms_max":2.0,"latency_ms":[1.0,2.0]}'
    )
    host = encode(MemorySampled(scope="host", percent=40.0, available_mb=12.0, total_mb=20.0), 1.0)
    assert _STORE_JSON(host.payload) == '{"scope":"host","percent":40.0,"available_mb":12.0,"total_mb":20.0}'
    decided = encode(
        MemoryActionDecided(
            connection_id="c",
            model_id=None,
            browser="b",
            outcome="recycle",
            reason="r",
            level=PressureLevel.CRITICAL,
        ),
        1.0,
    )
    assert _STORE_JSON(decided.payload) == '{"reason":"r","level":"critical"}'
    connected = encode(
        WorkerConnected(
            connection_id="w",
            browser="chromium",
            generation=1,
            instance="i",
            backend="webgpu",
            user_agent="ua",
            fallback_adapter=False,
            webnn=True,
        ),
        1.0,
    )
    assert _STORE_JSON(connected.payload) == (
        '{"generation":1,"instance":"i","backend":"webgpu","user_agent":"ua","fallback_adapter":false,'
        '"webnn":true}'
    )
