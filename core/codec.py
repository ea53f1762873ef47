"""One codec for every domain event: from an event class to the store's envelope and back.

A domain event is a frozen dataclass deriving from :class:`DomainEvent`. Its type name is its
class name (:attr:`DomainEvent.TYPE`), written once. Where each field goes is declared on the
field, once, and both directions are derived from that declaration:

- a field named like one of the envelope's indexed columns (``INDEXED_FIELDS``: connection_id,
  model_id, browser, error_kind, from_state, to_state, rung, outcome, latency_ms) or
  ``incident_id`` is that column; a field named ``occurred_at`` is the event's time;
- every other field is a key of the JSON payload, of the field's name;
- ``field(metadata=...)`` says otherwise: :func:`column` (a column of another name),
  :func:`payload` (another key, left out when ``None``, converted to and from JSON, written after
  the class's own keys, or also filling columns derived from it), :func:`occurred_at` (the time
  under another name) and :func:`from_stream` (not stored: read back from the stream id).

A class may also fill columns with constants (:attr:`DomainEvent.COLUMNS`: a breaker's
``BreakerClosed`` is always ``half_open -> closed``); they are written, and not read back.
Enum fields are written as their values and read back as members (the enum comes from the
field's annotation). The payload's keys keep the order of the fields, so an event is written
byte for byte as it always was.

:func:`encode` turns an event into a :class:`~poolwarden.events.NewEvent`. :class:`EventRegistry`
knows the classes by type name and :meth:`EventRegistry.decode` turns a
:class:`~poolwarden.events.RecordedEvent` back into its class; each family's module registers its
classes in :data:`REGISTRY` when it is imported.

**Upcasting.** Every class has a :attr:`DomainEvent.SCHEMA_VERSION` (1 until its stored shape
changes), and :func:`encode` stores it with the event. When a class's stored shape changes, its
version goes up by one and an upcaster is registered for the version before it
(``@REGISTRY.upcaster("BreakerOpened", 1)``): a function from that version's :class:`Stored`
(the payload and the columns, as plain dicts) to the next version's. Decoding an event written at
an older version runs the chain (v1 -> v2 -> v3 ...) and then builds the current class; an event
of a version newer than the class, or with a missing link, is a :class:`ReplayError`.

Decoding an event of the current version costs what the hand-written codecs cost: the per-class
plan (which field comes from where, which converter) is worked out once.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

from poolwarden.errors import ConfigurationError, ReplayError
from poolwarden.events import INDEXED_FIELDS, NewEvent, RecordedEvent

__all__ = [
    "COLUMN_NAMES",
    "REGISTRY",
    "DomainEvent",
    "EventRegistry",
    "Stored",
    "Upcaster",
    "column",
    "decode",
    "encode",
    "from_stream",
    "occurred_at",
    "payload",
]

COLUMN_NAMES: frozenset[str] = frozenset((*INDEXED_FIELDS, "incident_id"))
"""The envelope's columns a field may go to."""

_META = "poolwarden.codec"

Where = Literal["column", "payload", "time", "stream"]


@dataclass(frozen=True, slots=True)
class _Spec:
    """Where one field goes; see the module docstring."""

    where: Where
    name: str | None = None
    omit_none: bool = False
    last: bool = False
    to_json: Callable[[Any], Any] | None = None
    from_json: Callable[[Any], Any] | None = None
    derived: tuple[tuple[str, Callable[[Any], Any]], ...] = ()


def column(name: str | None = None) -> dict[str, Any]:
    """Field metadata: the field is the indexed column ``name`` (by default its own name)."""
    if name is not None and name not in COLUMN_NAMES:
        raise ConfigurationError(f"{name!r} is not a column of the event envelope")
    return {_META: _Spec("column", name)}


def payload(
    key: str | None = None,
    *,
    omit_none: bool = False,
    last: bool = False,
    to_json: Callable[[Any], Any] | None = None,
    from_json: Callable[[Any], Any] | None = None,
    derived: Mapping[str, Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """Field metadata: the field is the payload's ``key`` (by default its own name).

    ``omit_none``: the key is left out when the value is ``None`` (and a missing key reads as the
    field's default). ``last``: the key is written after the keys of the class's own fields (a
    base class's summaries, say). ``to_json``/``from_json``: converters for a value that is not
    JSON as it is (applied to non-``None`` values). ``derived``: columns filled from the value on
    writing, ``{column: function of the value}``; they are not read back (the payload is).
    """
    for name in derived or {}:
        if name not in COLUMN_NAMES:
            raise ConfigurationError(f"{name!r} is not a column of the event envelope")
    spec = _Spec("payload", key, omit_none, last, to_json, from_json, tuple((derived or {}).items()))
    return {_META: spec}


def occurred_at() -> dict[str, Any]:
    """Field metadata: the field is the event's time (the envelope's ``occurred_at``)."""
    return {_META: _Spec("time")}


def from_stream(parse: Callable[[str], Any]) -> dict[str, Any]:
    """Field metadata: the field is not stored; it is ``parse(stream id)`` when read back."""
    return {_META: _Spec("stream", from_json=parse)}


class DomainEvent:
    """The base of every domain event class (each a frozen dataclass).

    ``TYPE`` is the stored type name: the class's name, set for each subclass. ``SCHEMA_VERSION``
    is the version of its stored shape. ``COLUMNS`` are columns every event of the class carries.
    """

    __slots__ = ()

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    COLUMNS: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.TYPE = cls.__name__

    def to_new_event(self, occurred_at: float | None = None) -> NewEvent:
        """The event as the store appends it: :func:`encode`."""
        return encode(self, occurred_at)


E = TypeVar("E", bound=DomainEvent)


class Stored(NamedTuple):
    """An event's stored data as an upcaster sees it: the payload, and the columns by name
    (``INDEXED_FIELDS`` and ``incident_id``). An upcaster returns the next version's."""

    payload: dict[str, Any]
    columns: dict[str, Any]


Upcaster = Callable[[Stored], Stored]
"""Turns one schema version's :class:`Stored` into the next version's."""


# --- the plans ----------------------------------------------------------------------------------


class _Field(NamedTuple):
    name: str
    where: Where
    key: str  # the column or payload key
    omit_none: bool
    to_json: Callable[[Any], Any] | None
    from_json: Callable[[Any], Any] | None
    derived: tuple[tuple[str, Callable[[Any], Any]], ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    type: str
    schema_version: int
    constants: Mapping[str, Any]
    time: str | None  # the field holding the event's time, if it has one
    encoders: tuple[_Field, ...]  # column and payload fields, in payload order
    plain: tuple[tuple[str, str, bool], ...] | None
    """(field, key, is a column) when no field converts, derives or omits: the fast path."""
    columns: tuple[tuple[str, str, Callable[[Any], Any] | None], ...]  # (field, column, from_json)
    keys: tuple[tuple[str, str, Callable[[Any], Any] | None], ...]  # (field, payload key, from_json)
    streams: tuple[tuple[str, Callable[[str], Any]], ...]  # (field, parse)
    reads_payload: bool


_PLANS: dict[type[DomainEvent], _Plan] = {}


def _plan_of(cls: type[DomainEvent]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _make_plan(cls)
    return plan


def _make_plan(cls: type[DomainEvent]) -> _Plan:
    if not dataclasses.is_dataclass(cls):
        raise ConfigurationError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields: list[tuple[bool, _Field]] = []
    time: str | None = None
    for f in dataclasses.fields(cls):
        spec: _Spec | None = f.metadata.get(_META)
        if spec is None:
            if f.name == "occurred_at":
                spec = _Spec("time")
            elif f.name in COLUMN_NAMES:
                spec = _Spec("column")
            else:
                spec = _Spec("payload")
        if spec.where == "time":
            time = f.name
            continue
        key = spec.name or f.name
        if spec.where == "column" and key not in COLUMN_NAMES:
            raise ConfigurationError(f"{cls.__name__}.{f.name}: {key!r} is not a column of the envelope")
        from_json = spec.from_json
        members = _enum_of(hints.get(f.name))
        if from_json is None and members is not None:
            from_json = {m.value: m for m in members}.__getitem__
        entry = _Field(f.name, spec.where, key, spec.omit_none, spec.to_json, from_json, spec.derived)
        fields.append((spec.last, entry))
    ordered = tuple(field for last, field in sorted(fields, key=lambda item: item[0]))  # stable
    encoders = tuple(field for field in ordered if field.where != "stream")
    plain = tuple((f.name, f.key, f.where == "column") for f in encoders)
    if any(f.derived or f.omit_none or f.to_json is not None for f in encoders):
        plain = None
    return _Plan(
        type=cls.TYPE,
        schema_version=cls.SCHEMA_VERSION,
        constants=dict(cls.COLUMNS),
        time=time,
        encoders=encoders,
        plain=plain,
        columns=tuple((f.name, f.key, f.from_json) for _, f in fields if f.where == "column"),
        keys=tuple((f.name, f.key, f.from_json) for _, f in fields if f.where == "payload"),
        streams=tuple((f.name, f.from_json) for _, f in fields if f.where == "stream" and f.from_json),
        reads_payload=any(field.where == "payload" for _, field in fields),
    )


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    """The enum an annotation (``Rung``, ``Rung | None``) names, if any."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, enum.Enum):
                return arg
    return None


# --- encoding -----------------------------------------------------------------------------------


def encode(event: DomainEvent, occurred_at: float | None = None) -> NewEvent:
    """The :class:`NewEvent` that stores ``event``.

    The time is the event's own (its ``occurred_at`` field, or the one declared with
    :func:`occurred_at`) if its class has one, else ``occurred_at`` (which is then required).
    """
    plan = _PLANS.get(type(event)) or _plan_of(type(event))
    columns = dict(plan.constants) if plan.constants else {}
    body: dict[str, Any] = {}
    if plan.plain is not None:  # most classes: every field stored as it is (enums by value)
        for name, key, is_column in plan.plain:
            value = getattr(event, name)
            if isinstance(value, enum.Enum):
                value = value.value
            (columns if is_column else body)[key] = value
    else:
        _encode_fields(event, plan, columns, body)
    if plan.time is not None:
        occurred_at = getattr(event, plan.time)
    elif occurred_at is None:
        raise TypeError(f"{plan.type} has no time of its own: encode it with occurred_at")
    return NewEvent(
        type=plan.type,
        occurred_at=occurred_at,
        payload=body,
        schema_version=plan.schema_version,
        **columns,
    )


def _encode_fields(event: DomainEvent, plan: _Plan, columns: dict[str, Any], body: dict[str, Any]) -> None:
    """Fill ``columns`` and ``body`` from ``event``'s fields, with every declared conversion."""
    for name, where, key, omit_none, to_json, _, derived in plan.encoders:
        value = getattr(event, name)
        if derived:
            for target, function in derived:
                columns[target] = function(value)
        if value is None:
            if omit_none:
                continue
        elif to_json is not None:
            value = to_json(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        if where == "column":
            columns[key] = value
        else:
            body[key] = value


# --- decoding -----------------------------------------------------------------------------------


class EventRegistry:
    """Domain event classes by type name, and the upcasters of their older schema versions."""

    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, *classes: type[DomainEvent]) -> None:
        """Know ``classes`` by their type names (a name is one class's only)."""
        for cls in classes:
            known = self._classes.get(cls.TYPE)
            if known is not None and known is not cls:
                where = f"{known.__module__}.{known.__name__}"
                raise ConfigurationError(f"event type {cls.TYPE!r} is already {where}")
            _plan_of(cls)  # a bad declaration fails at import, not at the first event
            self._classes[cls.TYPE] = cls

    def get(self, type_name: str) -> type[DomainEvent] | None:
        """The class of ``type_name``, if it is known."""
        return self._classes.get(type_name)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._classes

    def types(self, base: type[DomainEvent] = DomainEvent) -> frozenset[str]:
        """The type names of the known classes deriving from ``base``."""
        return frozenset(name for name, cls in self._classes.items() if issubclass(cls, base))

    def add_upcaster(self, type_name: str, from_version: int, upcaster: Upcaster) -> None:
        """Register ``upcaster``: it turns ``type_name`` events of ``from_version`` into the next version."""
        if (type_name, from_version) in self._upcasters:
            raise ConfigurationError(f"{type_name} already has an upcaster from version {from_version}")
        self._upcasters[type_name, from_version] = upcaster

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of :meth:`add_upcaster`."""

        def register(function: Upcaster) -> Upcaster:
            self.add_upcaster(type_name, from_version, function)
            return function

        return register

    def decode(self, record: RecordedEvent) -> DomainEvent:
        """The domain event ``record`` stores, upcast to its class's current schema version.

        An unknown type, a malformed event, or a version that cannot be brought to the current one
        raises :class:`ReplayError` naming the stream and version.
        """
        cls = self._classes.get(record.type)
        if cls is None:
            raise ReplayError(record.stream, record.version, f"{record.type!r} is not a known event type")
        return self.decode_as(cls, record)

    def decode_as(self, cls: type[E], record: RecordedEvent) -> E:
        """:meth:`decode` for a caller that has looked ``cls`` up already."""
        plan = _PLANS.get(cls) or _plan_of(cls)
        try:
            if record.schema_version == plan.schema_version:
                body = record.payload if plan.reads_payload else _EMPTY
                return _build(cls, plan, record, body, record.stream, record.occurred_at)
            stored = self._upcast(record, plan.schema_version)
            columns = types.SimpleNamespace(**stored.columns)
            return _build(cls, plan, columns, stored.payload, record.stream, record.occurred_at)
        except ReplayError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReplayError(record.stream, record.version, f"malformed {record.type}: {exc!r}") from exc

    def _upcast(self, record: RecordedEvent, current: int) -> Stored:
        version = record.schema_version
        if version > current:
            detail = f"{record.type} schema version {version} is newer than this code reads ({current})"
            raise ReplayError(record.stream, record.version, detail)
        stored = Stored(dict(record.payload), {name: getattr(record, name) for name in sorted(COLUMN_NAMES)})
        while version < current:
            upcaster = self._upcasters.get((record.type, version))
            if upcaster is None:
                detail = f"{record.type} schema version {version}: no upcaster to {version + 1}"
                raise ReplayError(record.stream, record.version, detail)
            stored = upcaster(stored)
            version += 1
        return stored


_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def _build(cls: type[E], plan: _Plan, columns: Any, body: Mapping[str, Any], stream: str, at: float) -> E:
    kwargs: dict[str, Any] = {}
    if plan.time is not None:
        kwargs[plan.time] = at
    for name, parse in plan.streams:
        kwargs[name] = parse(stream)
    for name, key, from_json in plan.columns:
        value = getattr(columns, key)
        kwargs[name] = from_json(value) if from_json is not None and value is not None else value
    for name, key, from_json in plan.keys:
        if key in body:  # else the field's default, or a TypeError naming it
            value = body[key]
            kwargs[name] = from_json(value) if from_json is not None and value is not None else value
    return cls(**kwargs)


REGISTRY = EventRegistry()
"""Every domain event class poolwarden writes; each family's module registers its own."""


def decode(record: RecordedEvent) -> DomainEvent:
    """:meth:`EventRegistry.decode` on :data:`REGISTRY`."""
    return REGISTRY.decode(record)
