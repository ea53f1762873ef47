"""Rebuild breakers from the log: a snapshot (if any) plus the events recorded after it.

Restore semantics: the breaker comes back with its state, ``opened_at``, ``retry_at``, re-open
streak, epoch and the window counts since its last transition, exactly as the live breaker had
them when its last event was written (the property tests hold this to equality). Then time
catches up: an OPEN breaker whose ``retry_at`` passed while the process was down turns
HALF_OPEN (never CLOSED), and that transition is a new event to persist.

A half-open trial that was in flight when the process died never reports; the round ends at
its ``half_open.max_seconds`` deadline and the breaker re-opens, as it would for a hung call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from poolwarden.breaker import CircuitBreaker
from poolwarden.breaker_events import STREAM_PREFIX, key_of_stream
from poolwarden.clock import Clock
from poolwarden.errors import ReplayError, StateMachineError
from poolwarden.events import RecordedEvent, Snapshot
from poolwarden.policy import BreakerLevel, BreakerPolicy, RandomSource

__all__ = ["PolicyFor", "fold", "level_of", "restore", "restore_all"]

PolicyFor = Callable[[str, BreakerLevel], BreakerPolicy]
"""Chooses the policy of a restored breaker from its key and level."""


def level_of(connection_id: str | None, model_id: str | None) -> BreakerLevel:
    """The level a breaker's identity columns imply: a model, a connection, or a standalone name."""
    if model_id is not None:
        return BreakerLevel.MODEL
    if connection_id is not None:
        return BreakerLevel.CONNECTION
    return BreakerLevel.STANDALONE


def fold(breaker: CircuitBreaker, records: Iterable[RecordedEvent]) -> CircuitBreaker:
    """Apply ``records`` (one stream's, in version order) to ``breaker``; returns it.

    An event that is not a breaker event, or impossible in the state it finds, raises
    :class:`~poolwarden.errors.ReplayError` naming its stream and version.
    """
    apply = breaker.apply_recorded
    for record in records:
        try:
            apply(record)
        except StateMachineError as exc:
            if isinstance(exc, ReplayError):
                raise
            raise ReplayError(record.stream, record.version, str(exc)) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayError(record.stream, record.version, f"malformed {record.type}: {exc!r}") from exc
    return breaker


def restore(
    key: str,
    records: Iterable[RecordedEvent],
    *,
    policy: BreakerPolicy | None = None,
    snapshot: Snapshot | None = None,
    level: BreakerLevel | None = None,
    connection_id: str | None = None,
    model_id: str | None = None,
    clock: Clock,
    rng: RandomSource,
    catch_up: bool = True,
) -> CircuitBreaker:
    """The breaker ``key`` as of its last event: ``snapshot`` plus the ``records`` after it.

    Records at or below the snapshot's version are skipped, so the whole stream may be passed.
    Without a snapshot, the identity (level, connection, model) comes from the arguments or else
    from the first event's columns.
    With ``catch_up`` the breaker then polls its clock (open -> half-open if its wait passed).
    """
    after = snapshot.version if snapshot is not None else 0
    tail = (record for record in records if record.version > after)
    if snapshot is not None:
        breaker = CircuitBreaker.from_snapshot(dict(snapshot.state), policy, clock=clock, rng=rng)
    else:
        tail_list = list(tail)
        first = tail_list[0] if tail_list else None
        if first is not None and connection_id is None and model_id is None:
            connection_id, model_id = first.connection_id, first.model_id
        breaker = CircuitBreaker(
            key,
            policy,
            clock=clock,
            rng=rng,
            level=level if level is not None else level_of(connection_id, model_id),
            connection_id=connection_id,
            model_id=model_id,
        )
        tail = (record for record in tail_list)
    fold(breaker, tail)
    if catch_up:
        breaker.poll()
    return breaker


def restore_all(
    records: Iterable[RecordedEvent],
    *,
    policy_for: PolicyFor,
    snapshots: Mapping[str, Snapshot] | None = None,
    clock: Clock,
    rng: RandomSource,
    catch_up: bool = True,
) -> dict[str, CircuitBreaker]:
    """Every breaker of a log (any interleaving of ``breaker/...`` streams, in position order).

    Events of other streams are skipped. Returns breakers by key.
    """
    snapshots = snapshots or {}
    by_stream: dict[str, list[RecordedEvent]] = {}
    for record in records:
        if record.stream.startswith(STREAM_PREFIX):
            by_stream.setdefault(record.stream, []).append(record)
    breakers: dict[str, CircuitBreaker] = {}
    for stream in snapshots.keys() | by_stream.keys():
        if not stream.startswith(STREAM_PREFIX):
            continue
        key = key_of_stream(stream)
        stream_records = by_stream.get(stream, [])
        snap = snapshots.get(stream)
        if snap is not None:
            level = BreakerLevel(snap.state["level"])
        elif stream_records:
            level = level_of(stream_records[0].connection_id, stream_records[0].model_id)
        else:
            level = BreakerLevel.STANDALONE
        breakers[key] = restore(
            key,
            stream_records,
            policy=policy_for(key, level),
            snapshot=snap,
            level=level,
            clock=clock,
            rng=rng,
            catch_up=catch_up,
        )
    return breakers
