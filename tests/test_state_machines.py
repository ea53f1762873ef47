"""The transitions Machines behind the breaker and the lifecycle, held to their declarations.

Both modules trigger one shared Machine's events on models that were never given to
``add_model`` (too costly per breaker; see ``poolwarden.breaker.CircuitBreaker._fire``), and the
breaker's replay checks transitions against a table read back out of its Machine. Neither is a
use transitions documents, so these tests pin what it does: the table equals the transitions as
written here (from docs/breakers.md and docs/lifecycle.md), and triggering each event from each
state does exactly what the table says, raising ``MachineError`` and changing nothing otherwise.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from transitions import MachineError

from poolwarden import breaker as breaker_module
from poolwarden import lifecycle as lifecycle_module
from poolwarden.breaker import BreakerState, CircuitBreaker
from poolwarden.breaker_events import BreakerClosed, BreakerHalfOpened, BreakerOpened
from poolwarden.clock import FakeClock
from poolwarden.errors import InvalidTransition
from poolwarden.lifecycle_events import LifecycleRecord
from poolwarden.lifecycle_types import ConnectionState

B = BreakerState
S = ConnectionState

# docs/breakers.md, "States": the automatic transitions, then the manual ones from every state.
BREAKER_TABLE: dict[tuple[str, BreakerState], BreakerState] = {
    ("trip", B.CLOSED): B.OPEN,
    ("trip", B.HALF_OPEN): B.OPEN,
    ("half_open", B.OPEN): B.HALF_OPEN,
    ("close", B.HALF_OPEN): B.CLOSED,
    **{
        (action, state): dest
        for action, dest in (
            ("force_open", B.FORCED_OPEN),
            ("disable", B.DISABLED),
            ("metrics_only", B.METRICS_ONLY),
            ("reset", B.CLOSED),
            ("trip_manually", B.OPEN),
        )
        for state in B
    },
}

_ALIVE = (S.STARTING, S.HEALTHY, S.DRAINING, S.PINGING, S.RECONNECTING, S.RESTARTING)

# docs/lifecycle.md, the diagram under "States".
LIFECYCLE_TABLE: dict[tuple[str, ConnectionState], ConnectionState] = {
    ("started", S.STARTING): S.HEALTHY,
    ("enter_ping", S.HEALTHY): S.PINGING,
    ("enter_ping", S.DRAINING): S.PINGING,
    ("enter_reconnect", S.HEALTHY): S.RECONNECTING,
    ("enter_reconnect", S.DRAINING): S.RECONNECTING,
    ("enter_reconnect", S.PINGING): S.RECONNECTING,
    **{("enter_restart", state): S.RESTARTING for state in _ALIVE},
    **{("recovered", state): S.HEALTHY for state in (S.PINGING, S.RECONNECTING, S.RESTARTING)},
    **{("quarantine", state): S.FAILED for state in _ALIVE},
    ("drain", S.HEALTHY): S.DRAINING,
    **{("close", state): S.CLOSED for state in (*_ALIVE, S.FAILED)},
    **{("resume", state): S.STARTING for state in (S.STARTING, S.HEALTHY, S.DRAINING)},
}


class _Bare:
    """A model the Machine has never seen, as the breaker and the lifecycle record are."""

    def __init__(self, state: Any) -> None:
        self.state = state


def _triggered(machine: Any, trigger: str, state: Any) -> Any:
    """The state ``trigger`` leads to from ``state``, or None where the Machine refuses it."""
    model = _Bare(state)
    try:
        assert machine.events[trigger].trigger(model) is True
    except MachineError:
        assert model.state is state  # refused: nothing changed
        return None
    return model.state


def test_the_breaker_replay_table_is_the_declared_transitions() -> None:
    assert breaker_module._TABLE == BREAKER_TABLE


def test_the_breaker_machine_has_only_the_declared_triggers() -> None:
    assert set(breaker_module._TRIGGERS) == {trigger for trigger, _ in BREAKER_TABLE}


@pytest.mark.parametrize(
    ("trigger", "state"), list(itertools.product(sorted({t for t, _ in BREAKER_TABLE}), list(B)))
)
def test_each_breaker_trigger_on_an_unadded_model_does_what_the_table_says(
    trigger: str, state: BreakerState
) -> None:
    assert _triggered(breaker_module._MACHINE, trigger, state) is BREAKER_TABLE.get((trigger, state))


def test_live_and_replay_refuse_the_same_impossible_transition() -> None:
    """A close from CLOSED is refused by the Machine live and by the table in replay, alike."""
    live = CircuitBreaker("k", clock=FakeClock(), rng=random.Random(0))
    with pytest.raises(InvalidTransition):
        live._emit(BreakerClosed(key="k", at=0.0))
    assert live.state is B.CLOSED
    replayed = CircuitBreaker("k", clock=FakeClock(), rng=random.Random(0))
    with pytest.raises(InvalidTransition):
        replayed.apply(BreakerClosed(key="k", at=0.0))
    assert replayed.state is B.CLOSED


def test_live_and_replay_take_the_same_transitions() -> None:
    events = [
        BreakerOpened(
            key="k", at=1.0, from_state="closed", reason="consecutive_failures", retry_at=31.0, streak=0
        ),
        BreakerHalfOpened(key="k", at=31.0),
        BreakerClosed(key="k", at=32.0),
    ]
    live = CircuitBreaker("k", clock=FakeClock(), rng=random.Random(0))
    replayed = CircuitBreaker("k", clock=FakeClock(), rng=random.Random(0))
    for event in events:
        live._emit(event)
        replayed.apply(event)
        assert live.state is replayed.state
    assert live.snapshot() == replayed.snapshot()


def test_the_lifecycle_machine_holds_the_declared_transitions() -> None:
    machine = lifecycle_module._MACHINE
    table = {
        (name, S[transition.source]): S[str(transition.dest)]
        for name in machine.get_triggers(*S)
        for transition in machine.get_transitions(name)
    }
    assert table == LIFECYCLE_TABLE


@pytest.mark.parametrize(
    ("trigger", "state"), list(itertools.product(sorted({t for t, _ in LIFECYCLE_TABLE}), list(S)))
)
def test_each_lifecycle_trigger_on_an_unadded_record_does_what_the_table_says(
    trigger: str, state: ConnectionState
) -> None:
    machine = lifecycle_module._MACHINE
    record = LifecycleRecord("conn-1", state=state)
    try:
        machine.events[trigger].trigger(record)
    except MachineError:
        assert (trigger, state) not in LIFECYCLE_TABLE
        assert record.state is state
    else:
        assert record.state is LIFECYCLE_TABLE[(trigger, state)]
    assert _triggered(machine, trigger, state) is LIFECYCLE_TABLE.get((trigger, state))
