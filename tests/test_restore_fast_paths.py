"""The shortcuts a restore takes give what the plain way gives: windows, payloads, the collector."""

from __future__ import annotations

import gc
import json
import random
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwarden.collector import collector_paused
from poolwarden.envelope import COLUMN_NAMES
from poolwarden.events import RecordedEvent, Snapshot, decode_json
from poolwarden.outcome_window import CountWindow, window_from_json
from poolwarden.policy import SlidingWindow
from poolwarden.storage.sqlite import group_heads

SIZE = 8


def _added_one_by_one(codes: str) -> CountWindow:
    window = CountWindow(SIZE)
    for char in codes:
        window.add(int(char))
    return window


@given(st.text(alphabet="0123", max_size=SIZE + 4), st.lists(st.sampled_from([0, 1, 2, 3]), max_size=12))
def test_a_count_window_from_json_is_the_window_its_codes_make_one_by_one(
    codes: str, later: list[int]
) -> None:
    """A count window rebuilt from its digits holds what adding each digit in turn makes, and
    goes on the same way (same ring, same totals) as calls are added."""
    rebuilt = window_from_json(
        {"kind": "count", "size": SIZE, "codes": codes}, SlidingWindow(size=SIZE, min_calls=SIZE)
    )
    expected = _added_one_by_one(codes)
    for code in [None, *later]:
        if code is not None:
            rebuilt.add(code)
            expected.add(code)
        assert isinstance(rebuilt, CountWindow)
        assert (rebuilt.to_json(), rebuilt.calls, rebuilt.failures, rebuilt.slow) == (
            expected.to_json(),
            expected.calls,
            expected.failures,
            expected.slow,
        )
        assert (bytes(rebuilt._ring), rebuilt._head) == (bytes(expected._ring), expected._head)


def test_a_count_window_from_json_refuses_what_adding_refuses() -> None:
    """A digit string that is not outcome codes fails as adding its characters one by one fails."""
    with pytest.raises(ValueError, match="invalid literal for int"):
        window_from_json(
            {"kind": "count", "size": SIZE, "codes": "01x"}, SlidingWindow(size=SIZE, min_calls=SIZE)
        )


@given(
    st.one_of(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
            max_leaves=8,
        ).map(lambda value: json.dumps(value, separators=(",", ":"))),
        st.text(alphabet=' {}[]":,01ae\t\n\ufeff'),
    )
)
def test_decode_json_is_json_loads(text: str) -> None:
    """decode_json gives json.loads's value, or raises its error with its message."""
    outcomes = []
    for decode in (json.loads, decode_json):
        try:
            outcomes.append(("value", decode(text)))
        except json.JSONDecodeError as error:
            outcomes.append(("error", str(error)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_paused_leaves_the_collector_as_it_found_it(enabled: bool) -> None:
    """The collector is off inside the block and as it was after, even when the block raises."""
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        inside = []

        def block() -> None:
            with collector_paused():
                inside.append(gc.isenabled())
                raise RuntimeError

        with pytest.raises(RuntimeError):
            block()
        assert inside == [False]
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 6)), unique=True), st.randoms())
def test_group_heads_gives_each_stream_its_events_in_version_order_whatever_order_they_came_in(
    keys: list[tuple[str, int]], shuffle: random.Random
) -> None:
    """SQLite's tails query has no ORDER BY (its plan gives the order); rows out of it are sorted."""
    rows = [_row(stream, version) for stream, version in keys]
    shuffle.shuffle(rows)
    snapshot = ("b", 3, json.dumps({"state": "closed"}), 1.5, 1)
    heads = group_heads([snapshot], rows)
    assert heads["b"][0] == Snapshot("b", 3, {"state": "closed"}, 1.5, 1)
    for stream in "abc":
        expected = sorted(version for s, version in keys if s == stream)
        if expected or stream == "b":
            assert [event.version for event in heads[stream][1]] == expected
        else:
            assert stream not in heads


def _row(stream: str, version: int) -> RecordedEvent:
    values = dict.fromkeys(COLUMN_NAMES)
    values.update(stream=stream, version=version, type="CallFailed", payload='{"counted": true}')
    return RecordedEvent(*(values[name] for name in COLUMN_NAMES))


def test_collector_paused_in_two_threads_at_once_leaves_the_collector_on() -> None:
    """Blocks in two threads overlapping every which way (as a restore on the loop's thread and a
    writer's bulk commit in its driver's thread do): the collector is off while any block runs and
    on again after the last. Switching threads every microsecond, the unlocked version left it off
    within the first trials."""
    was, interval = gc.isenabled(), sys.getswitchinterval()
    seen_on_inside: list[bool] = []

    def pause_often() -> None:
        for _ in range(2000):
            with collector_paused():
                if gc.isenabled():
                    seen_on_inside.append(True)

    try:
        sys.setswitchinterval(1e-6)
        for _ in range(20):
            gc.enable()
            threads = [threading.Thread(target=pause_often) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert gc.isenabled()
        assert seen_on_inside == []
    finally:
        sys.setswitchinterval(interval)
        (gc.enable if was else gc.disable)()
