"""Hostile input: for any frame, both parsers return a message or raise ProtocolError.

Frames are built from the messages the real page sends, with every field replaced by hostile
values (lone surrogates, 400-digit numbers, NaN, nested objects, wrong types), and from random
bytes and text. Anything other than a parsed message or a ``ProtocolError`` is a failure: the
bridge must be able to answer every frame with a typed refusal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.errors import ProtocolError
from poolwarden.protocol import (
    Command,
    ErrorReply,
    Hello,
    HookDone,
    Limits,
    Loaded,
    Log,
    MemoryReport,
    Pong,
    Result,
    Unloaded,
    encode_binary,
    parse_command,
    parse_page_message,
)
from poolwarden.protocol_examples import COMMANDS, PAGE_MESSAGES, RESULT_HEADER

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


def _text(message: dict[str, Any]) -> str:
    # allow_nan: the page's JSON.stringify never writes NaN, but a hostile peer may send it.
    return json.dumps(message, allow_nan=True)


def _parses_or_refuses(parse: Any, frame: str | bytes) -> object:
    try:
        return parse(frame, LIMITS)
    except ProtocolError:
        return None


@st.composite
def mutated(draw: st.DrawFn, messages: Sequence[Mapping[str, Any]]) -> str:
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


@settings(max_examples=500, deadline=None)
@given(mutated((RESULT_HEADER,)))
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


@pytest.mark.parametrize("example", PAGE_MESSAGES, ids=lambda m: str(m["type"]))
def test_each_example_page_message_parses(example: Mapping[str, Any]) -> None:
    """The fuzzers' starting points are well-formed: each parses, as the type it names."""
    classes = {
        "hello": Hello,
        "loaded": Loaded,
        "unloaded": Unloaded,
        "error": ErrorReply,
        "pong": Pong,
        "memory": MemoryReport,
        "log": Log,
        "hook_done": HookDone,
    }
    assert isinstance(parse_page_message(json.dumps(example), LIMITS), classes[str(example["type"])])


def test_each_example_command_and_the_result_header_parse() -> None:
    for example in COMMANDS:
        assert parse_command(json.dumps(example), LIMITS).type == example["type"]
    result = parse_page_message(encode_binary(RESULT_HEADER, ()), LIMITS)
    assert isinstance(result, Result)
