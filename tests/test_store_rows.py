"""encode_json: the store's one JSON encoding of payloads and snapshots."""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest

from poolwarden.errors import EventNotSerializable
from poolwarden.storage.rows import encode_json

_VALUES: list[dict[str, Any]] = [
    {},
    {"attempt": 3, "detail": "websocket closed", "n": 0},
    {"text": 'é \u2028 "quoted" \\ \x00 \U0001f600', "nested": {"list": [1, 2.5, None, True, False, {}]}},
    {"big": 10**30, "tiny": 5e-324, "huge": 1.7976931348623157e308, "negative zero": -0.0},
    collections.OrderedDict([("b", 1), ("a", 2)]),
]


@pytest.mark.parametrize("value", _VALUES)
def test_encode_json_is_compact_json_of_the_value(value: dict[str, Any]) -> None:
    """encode_json gives json.dumps' text with compact separators and no ASCII escaping."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert encode_json(value, "T") == expected


@pytest.mark.parametrize(
    "value",
    [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {(1, 2): 1}, {"x": {1j: 1}}],
)
def test_encode_json_refuses_what_json_cannot_hold(value: dict[Any, Any]) -> None:
    """A value JSON cannot hold is refused with EventNotSerializable, which names what it was."""
    with pytest.raises(EventNotSerializable, match="T"):
        encode_json(value, "T")


def test_encode_json_refuses_a_value_that_contains_itself_and_still_encodes_after() -> None:
    """A dict or list that contains itself is refused; the next value is encoded as ever."""
    looped: dict[str, Any] = {}
    looped["self"] = looped
    inner: list[Any] = []
    inner.append(inner)
    for value in (looped, {"list": inner}):
        with pytest.raises(EventNotSerializable, match="contains itself"):
            encode_json(value, "T")
    assert encode_json({"ok": [1]}, "T") == '{"ok":[1]}'
