"""The worker protocol: tensor frames, message parsing, limits, typed errors."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwarden.errors import InvalidInput, ProtocolError
from poolwarden.protocol import (
    ErrorReply,
    Hello,
    Limits,
    MemoryReport,
    Pong,
    Result,
    StrikeCounter,
    Tensor,
    WireErrorKind,
    decode_binary,
    encode_binary,
    encode_command,
    parse_command,
    parse_page_message,
)

LIMITS = Limits()


def hello(**overrides: object) -> str:
    body = {
        "type": "hello",
        "protocol": 1,
        "token": "t",
        "worker_id": "w1",
        "instance": "abc",
        "browser": {"name": "chromium", "user_agent": "UA"},
        "backend": "webgpu",
        "capabilities": {
            "webgpu": {"available": True, "isFallbackAdapter": True, "limits": {"maxBufferSize": 1 << 30}},
            "webnn": {"available": False},
        },
    }
    body.update(overrides)
    return json.dumps(body)


def test_tensor_from_nested_lists_round_trips() -> None:
    """Nested lists become a float32 tensor of the same shape and come back as the same values."""
    t = Tensor.from_values("input", [[1.0, 2.5], [3.0, -4.0], [0.0, 1.0]])
    assert t.shape == (3, 2)
    assert len(t.data) == 24
    assert t.to_list() == [[1.0, 2.5], [3.0, -4.0], [0.0, 1.0]]


def test_tensor_from_numpy_is_little_endian_float32() -> None:
    """A numpy array of any dtype is sent as little-endian float32 bytes."""
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = Tensor.from_values("x", arr)
    assert t.data == arr.astype("<f4").tobytes()
    np.testing.assert_array_equal(t.to_numpy(), arr.astype(np.float32))


@pytest.mark.parametrize("values", [[[1.0, 2.0], [3.0]], [["a", "b"]], [[True, 1.0]], 5.0])
def test_tensor_rejects_ragged_or_non_numeric_input(values: object) -> None:
    """Ragged rows, strings, booleans and bare scalars are InvalidInput, not silently converted."""
    with pytest.raises(InvalidInput):
        Tensor.from_values("x", values)


@given(
    st.lists(
        st.lists(st.floats(allow_nan=False, width=32), min_size=3, max_size=3),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=0, max_value=3),
)
def test_binary_frame_round_trips(rows: list[list[float]], extra: int) -> None:
    """Any set of tensors survives encode_binary/decode_binary bit for bit, whatever the alignment."""
    tensors = [Tensor.from_values("a", rows), Tensor.from_values("b", [1.0] * (extra + 1))]
    header, decoded = decode_binary(encode_binary({"type": "result", "id": 7}, tensors), LIMITS)
    assert header["id"] == 7
    assert decoded == tuple(tensors)


def test_binary_frame_layout_is_aligned_to_eight_bytes() -> None:
    """Tensor data starts at an 8-byte boundary after the header, as worker.js expects."""
    frame = encode_binary(
        {"type": "infer", "id": 1, "model": "m"}, [Tensor.from_values("input", [1.0, 2.0, 3.0])]
    )
    magic, head_len = struct.unpack_from("<4sI", frame)
    assert magic == b"PWT1"
    base = (8 + head_len + 7) & ~7
    assert frame[base : base + 12] == np.array([1, 2, 3], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda f: b"XXXX" + f[4:], WireErrorKind.MALFORMED),
        (lambda f: f[:6], WireErrorKind.MALFORMED),
        (lambda f: f[:-8], WireErrorKind.BAD_TENSOR),
        (lambda f: f + b"\0" * 16, WireErrorKind.BAD_TENSOR),
        (lambda f: f[:4] + struct.pack("<I", 10**6) + f[8:], WireErrorKind.TOO_LARGE),
    ],
)
def test_damaged_binary_frames_raise_typed_protocol_errors(mutate: object, kind: WireErrorKind) -> None:
    """Bad magic, truncation, trailing bytes and an oversized header each raise their ProtocolError kind."""
    frame = encode_binary({"type": "result", "id": 1}, [Tensor.from_values("o", [[1.0, 2.0]])])
    with pytest.raises(ProtocolError) as info:
        decode_binary(mutate(frame), LIMITS)  # type: ignore[operator]
    assert info.value.kind == kind


def test_tensor_descriptor_must_match_its_bytes() -> None:
    """A descriptor whose byte count disagrees with its shape is a bad_tensor breach."""
    head = json.dumps(
        {
            "type": "result",
            "id": 1,
            "tensors": [{"name": "o", "dtype": "float32", "shape": [3], "offset": 0, "nbytes": 8}],
        }
    ).encode()
    frame = struct.pack("<4sI", b"PWT1", len(head)) + head + b"\0" * ((8 - len(head) % 8) % 8) + b"\0" * 8
    with pytest.raises(ProtocolError) as info:
        decode_binary(frame, LIMITS)
    assert info.value.kind == WireErrorKind.BAD_TENSOR


def test_too_many_tensors_is_too_large() -> None:
    """More tensors than Limits.max_tensors in one frame is refused."""
    frame = encode_binary({"type": "result", "id": 1}, [Tensor.from_values(f"t{i}", [1.0]) for i in range(3)])
    with pytest.raises(ProtocolError) as info:
        decode_binary(frame, Limits(max_tensors=2))
    assert info.value.kind == WireErrorKind.TOO_LARGE


def test_hello_is_parsed_with_its_capabilities() -> None:
    """A hello yields its token, worker id, backend and the WebGPU fallback flag."""
    msg = parse_page_message(hello(), LIMITS)
    assert isinstance(msg, Hello)
    assert (msg.token, msg.worker_id, msg.backend, msg.browser) == ("t", "w1", "webgpu", "chromium")
    assert msg.is_fallback_adapter is True
    assert msg.webgpu is not None
    assert msg.webgpu["limits"]["maxBufferSize"] == 1 << 30
    assert msg.webnn_available is False


def test_hello_with_an_unsupported_version_is_refused() -> None:
    """A hello announcing protocol 3 is an unsupported_version breach."""
    with pytest.raises(ProtocolError) as info:
        parse_page_message(hello(protocol=3), LIMITS)
    assert info.value.kind == WireErrorKind.UNSUPPORTED_VERSION


def test_reply_messages_are_parsed_into_their_types() -> None:
    """pong, memory, error and binary result frames parse into their dataclasses."""
    pong = parse_page_message('{"type":"pong","id":3,"backend":"webgpu","gpu":"ok","elapsed_ms":1.5}', LIMITS)
    assert pong == Pong(3, "webgpu", "ok", 1.5)
    mem = parse_page_message(
        '{"type":"memory","id":4,"js_heap_used":10,"js_heap_total":null,"gpu_buffer_bytes":64,'
        '"test_allocated_bytes":0,"models":["toy-mlp"]}',
        LIMITS,
    )
    assert mem == MemoryReport(4, 10, None, 64, 0, ("toy-mlp",))
    err = parse_page_message('{"type":"error","id":null,"kind":"device_lost","message":"gone"}', LIMITS)
    assert err == ErrorReply(None, "device_lost", "gone")
    out = Tensor.from_values("output", [[1.0]])
    frame = encode_binary({"type": "result", "id": 9, "model": "m", "backend": "js", "elapsed_ms": 2}, [out])
    result = parse_page_message(frame, LIMITS)
    assert isinstance(result, Result)
    assert (result.id, result.backend, result.tensors) == (9, "js", (out,))


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("not json", WireErrorKind.MALFORMED),
        ("[1, 2]", WireErrorKind.MALFORMED),
        ('{"type": "launch_missiles"}', WireErrorKind.UNKNOWN_TYPE),
        ('{"type": "pong", "id": "x", "backend": "js", "gpu": "ok"}', WireErrorKind.MALFORMED),
        ('{"type": "pong", "id": -1, "backend": "js", "gpu": "ok"}', WireErrorKind.MALFORMED),
        ('{"type": "log", "message": ' + json.dumps("x" * 70000) + "}", WireErrorKind.TOO_LARGE),
    ],
)
def test_bad_text_messages_raise_typed_protocol_errors(frame: str, kind: WireErrorKind) -> None:
    """Invalid JSON, non-objects, unknown types, wrong field types and oversized text have their kinds."""
    with pytest.raises(ProtocolError) as info:
        parse_page_message(frame, LIMITS)
    assert info.value.kind == kind


def test_binary_frame_from_a_worker_must_be_a_result() -> None:
    """A worker may not send an infer frame to the server."""
    frame = encode_binary({"type": "infer", "id": 1, "model": "m"}, [])
    with pytest.raises(ProtocolError) as info:
        parse_page_message(frame, LIMITS)
    assert info.value.kind == WireErrorKind.UNKNOWN_TYPE


def test_commands_round_trip_for_the_worker_side() -> None:
    """The worker side parses the server's text and binary commands back into Command objects."""
    cmd = parse_command(encode_command("load_model", 5, model="m", kind="matmul", options={"k": 8}), LIMITS)
    assert (cmd.type, cmd.id, cmd.fields["options"]) == ("load_model", 5, {"k": 8})
    x = Tensor.from_values("input", [[1.0, 2.0]])
    infer = parse_command(encode_binary({"type": "infer", "id": 6, "model": "m"}, [x]), LIMITS)
    assert (infer.type, infer.id, infer.tensors) == ("infer", 6, (x,))
    with pytest.raises(ProtocolError):
        parse_command('{"type": "format_disk"}', LIMITS)


def test_strike_counter_says_when_the_limit_is_reached() -> None:
    """strike() is False until the limit-th breach, then True."""
    counter = StrikeCounter(3)
    assert [counter.strike() for _ in range(3)] == [False, False, True]


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    """Nesting deep enough to overflow the JSON decoder is a malformed breach, not a RecursionError."""
    with pytest.raises(ProtocolError) as info:
        parse_page_message("[" * 60000, LIMITS)
    assert info.value.kind == WireErrorKind.MALFORMED


@given(st.binary(max_size=300))
def test_any_binary_frame_parses_or_raises_protocol_error(frame: bytes) -> None:
    """Arbitrary bytes never escape as anything but a ProtocolError."""
    with contextlib.suppress(ProtocolError):
        parse_page_message(frame, LIMITS)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=20,
)
_TYPES = ["hello", "pong", "memory", "error", "log", "loaded", "unloaded", "hook_done", "x"]
_FIELDS = ("id", "token", "protocol", "worker_id", "browser", "capabilities", "models", "backend", "gpu")


@given(_JSON, st.sampled_from(_TYPES))
def test_any_json_message_parses_or_raises_protocol_error(value: object, kind: str) -> None:
    """A message of any type whose fields hold arbitrary JSON never escapes as another exception."""
    with contextlib.suppress(ProtocolError):
        parse_page_message(json.dumps({**dict.fromkeys(_FIELDS, value), "type": kind}), LIMITS)


def test_to_numpy_is_a_writable_float32_copy() -> None:
    """A tensor's array has its shape and values, is float32 and writable, and shares no memory
    with the tensor (changing it leaves the tensor's bytes as they were)."""
    tensor = Tensor.from_values("t", [[1.0, 2.0], [3.0, 4.0]])
    array = tensor.to_numpy()
    assert array.dtype == np.float32
    assert array.shape == (2, 2)
    assert array.flags.writeable
    array[0, 0] = 9.0
    assert tensor.to_numpy()[0, 0] == 1.0
    assert tensor.to_list() == [[1.0, 2.0], [3.0, 4.0]]
