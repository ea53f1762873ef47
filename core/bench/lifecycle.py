"""``poolwarden bench lifecycle [--json]``: what the connection lifecycle machine costs, against baselines.

In one process: a whole recovery decided by the pure machine (a missed heartbeat, the ping, the
verified round trip, events converted for the store), against one bare transitions trigger on
the same kind of shared Machine; and restoring N connections from their stored events (decode and
fold), against only decoding those events' JSON payloads, which any restore must do.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

from transitions import Machine

from poolwarden.clock import FakeClock
from poolwarden.events import RecordedEvent
from poolwarden.lifecycle import ConnectionLifecycle, uuid_ids
from poolwarden.lifecycle_events import LifecycleEvent, stream_of
from poolwarden.lifecycle_types import HeartbeatMissed, ProcessExited

__all__ = ["run"]


def _recover(life: ConnectionLifecycle) -> None:
    life.fault(HeartbeatMissed())
    life.step_succeeded(life.attempt)
    life.step_succeeded(life.attempt)
    for event in life.drain_events():
        event.to_new_event()
    life.drain_commands()


def _per_call(fn: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def _trigger_s(calls: int) -> float:
    machine = Machine(
        model=None,
        states=["a", "b"],
        initial="a",
        auto_transitions=False,
        transitions=[
            {"trigger": "go", "source": "a", "dest": "b"},
            {"trigger": "back", "source": "b", "dest": "a"},
        ],
    )

    class Model:
        state = "a"

    model = Model()
    # Triggered as poolwarden.lifecycle triggers its shared Machine: on a model never add_model'ed.
    go, back = machine.events["go"], machine.events["back"]
    return _per_call(lambda: (go.trigger(model), back.trigger(model)), calls) / 2


def _history(index: int, clock: FakeClock) -> list[RecordedEvent]:
    """A connection's stored stream: started, one ping recovery, one restart recovery."""
    life = ConnectionLifecycle(f"conn-{index}", browser="chromium", clock=clock, ids=lambda: f"inc-{index}")
    life.hello()
    for fault in (HeartbeatMissed(), ProcessExited()):
        life.fault(fault)
        life.step_succeeded(life.attempt)
        life.step_succeeded(life.attempt)
    events: list[LifecycleEvent] = life.drain_events()
    stream = stream_of(life.connection_id)
    recorded = []
    for version, event in enumerate(events, start=1):
        new = event.to_new_event()
        recorded.append(
            RecordedEvent.of(
                new, position=version, stream=stream, version=version, recorded_at=new.occurred_at
            )
        )
    return recorded


def run(connections: int = 10_000, recoveries: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    """Run the lifecycle benchmark and return its figures."""
    clock = FakeClock()
    life = ConnectionLifecycle("bench", clock=clock, ids=uuid_ids)  # as the pool makes ids
    life.hello()
    recovery_s = min(_per_call(lambda: _recover(life), recoveries) for _ in range(rounds))
    if life.last_incident_id is None or life.state.value != "healthy":
        raise AssertionError("the benchmark's recoveries did not complete")
    trigger_s = min(_trigger_s(recoveries) for _ in range(rounds))

    streams = [_history(i, clock) for i in range(connections)]
    events = sum(len(s) for s in streams)
    decode_s = restore_s = float("inf")
    # The best of a few rounds, as timeit does: the machine's other work only ever adds time.
    for _ in range(rounds):
        # Fresh copies each round, so that no payload is decoded (and cached) before it is timed.
        streams = [_history(i, clock) for i in range(connections)]
        started = time.perf_counter()
        for stream in streams:
            for recorded in stream:
                json.loads(recorded.payload_json)
        decode_s = min(decode_s, time.perf_counter() - started)
        started = time.perf_counter()
        restored = [
            ConnectionLifecycle.restore(s[0].connection_id or "", s, clock=clock, ids=uuid_ids)
            for s in streams
        ]
        restore_s = min(restore_s, time.perf_counter() - started)
        if any(r.state.value != "healthy" or r.restarts_in_window() != 1 for r in restored):
            raise AssertionError("a restored connection is not the one recorded")

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [ConnectionLifecycle(f"m-{i}", browser="chromium", clock=clock, ids=uuid_ids) for i in range(1000)]
    for machine in kept:
        machine.drain_events()
        machine.drain_commands()
    bytes_per_connection = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    tracemalloc.stop()

    return {
        "recovery_us": round(recovery_s * 1e6, 2),
        "trigger_us": round(trigger_s * 1e6, 2),
        "recovery_in_triggers": round(recovery_s / trigger_s, 2),
        "connections": connections,
        "events": events,
        "restore_s": round(restore_s, 4),
        "json_decode_s": round(decode_s, 4),
        "restore_ratio": round(restore_s / decode_s, 2),
        "bytes_per_connection": round(bytes_per_connection),
    }
