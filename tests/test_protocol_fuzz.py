"""Hostile input: for any frame, both parsers return a message or raise ProtocolError.

Frames are built from the messages the real page sends, with every field replaced by hostile
values (lone surrogates, 400-digit numbers, NaN, nested objects, wrong types), and from random
bytes and text. Anything other than a parsed message or a ``ProtocolError`` is a failure: the
bridge must be able to answer every frame with a typed refusal.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.errors import ProtocolError
from poolwarden.protocol import (
    Command,
    Hello,
    Limits,
    MemoryReport,
    encode_binary,
    parse_command,
    parse_page_message,
)

LIMITS = Limits()

HOSTILE_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\x00", "", "é" * 3, "\U0001f600"])
HOSTILE_NUMBERS = st.sampled_from([10**400, -(10**400), 2**53 + 1, -1, 1e308, math.inf, -math.inf, math.nan])
HOSTILE_SCALARS = st.one_of(
    HOSTILE_TEXT, HOSTILE_NUMBERS, st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)
)
HOSTILE = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

PAGE_MESSAGES: list[dict[str, Any]] = [
    {
        "type": "hello",
        "protocol": 1,
        "token": "t",
        "worker_id": "w1",
        "instance": "i",
        "backend": "webgpu",
        "browser": {"name": "chromium", "user_agent": "ua"},
        "capabilities": {"webgpu": {"adapter": "x"}},
        "hooks": True,
    },
    {"type": "loaded", "id": 1, "model": "m", "backend": "webgpu", "elapsed_ms": 1.5},
    {"type": "unloaded", "id": 1, "model": "m"},
    {"type": "error", "id": 1, "kind": "model_error", "message": "boom"},
    {"type": "pong", "id": 1, "backend": "webgpu", "gpu": "ok", "elapsed_ms": 0.5},
    {
        "type": "memory",
        "id": 1,
        "js_heap_used": 1,
        "js_heap_total": 2,
        "gpu_buffer_bytes": 3,
        "test_allocated_bytes": 0,
        "models": ["m"],
    },
    {"type": "log", "level": "info", "message": "hi"},
    {"type": "hook_done", "id": 1, "action": "hang"},
]
COMMANDS: list[dict[str, Any]] = [
    {"type": "welcome", "id": None, "connection_id": "c"},
    {"type": "load_model", "id": 2, "model": "m", "kind": "toy-mlp", "options": {}},
    {"type": "ping", "id": 3},
]


def _text(message: dict[str, Any]) -> str:
    # allow_nan: the page's JSON.stringify never writes NaN, but a hostile peer may send it.
    return json.dumps(message, allow_nan=True)


def _parses_or_refuses(parse: Any, frame: str | bytes) -> object:
    try:
        return parse(frame, LIMITS)
    except ProtocolError:
        return None


@st.composite
def mutated(draw: st.DrawFn, messages: list[dict[str, Any]]) -> str:
    message = dict(draw(st.sampled_from(messages)))
    for key in draw(st.lists(st.sampled_from(sorted(message)), max_size=3, unique=True)):
        if key != "type" or draw(st.booleans()):
            message[key] = draw(HOSTILE)
    if draw(st.booleans()):
        message[draw(st.text(max_size=4))] = draw(HOSTILE)
    return _text(message)


@settings(max_examples=1500, deadline=None)
@given(mutated(PAGE_MESSAGES))
def test_a_page_message_with_hostile_fields_parses_or_is_refused(frame: str) -> None:
    parsed = _parses_or_refuses(parse_page_message, frame)
    if parsed is not None:
        _assert_clean(parsed)


@settings(max_examples=500, deadline=None)
@given(mutated(COMMANDS))
def test_a_command_with_hostile_fields_parses_or_is_refused(frame: str) -> None:
    parsed = _parses_or_refuses(parse_command, frame)
    assert parsed is None or isinstance(parsed, Command)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=256),
        st.text(max_size=256),
        st.text(st.characters(codec=None, categories=("Cs", "Lo", "Nd", "Po")), max_size=64),
    )
)
def test_random_frames_are_parsed_or_refused(frame: str | bytes) -> None:
    _parses_or_refuses(parse_page_message, frame)
    _parses_or_refuses(parse_command, frame)


RESULT_HEADER: dict[str, Any] = {
    "type": "result",
    "id": 1,
    "model": "m",
    "backend": "webgpu",
    "elapsed_ms": 2.0,
}


@settings(max_examples=500, deadline=None)
@given(mutated([RESULT_HEADER]))
def test_a_binary_result_with_a_hostile_header_parses_or_is_refused(text: str) -> None:
    parsed = _parses_or_refuses(parse_page_message, encode_binary(json.loads(text), ()))
    if parsed is not None:
        _assert_clean(parsed)


def _assert_clean(message: object) -> None:
    """What a parser lets through can be stored and computed with: text encodes as UTF-8,
    numbers are finite and integers fit a JavaScript number exactly."""
    values = [getattr(message, name) for name in getattr(message, "__slots__", ())]
    if isinstance(message, Hello):
        values = [message.token, message.worker_id, message.instance, message.browser, message.backend]
    for value in values:
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, float):
            assert math.isfinite(value), message
        elif isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value <= 2**53, message
        elif isinstance(value, tuple) and isinstance(message, MemoryReport):
            for model in value:
                model.encode("utf-8")
