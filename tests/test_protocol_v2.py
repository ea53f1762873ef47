"""Protocol version 2: tensor frames with a fixed binary header, and the version negotiated per socket."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.bridge.server import BridgeServer
from poolwarden.errors import ProtocolError
from poolwarden.protocol import (
    BINARY_MAGIC,
    BINARY_MAGIC_V2,
    Command,
    Limits,
    Result,
    Tensor,
    WireErrorKind,
    decode_binary,
    encode_binary,
    parse_command,
    parse_page_message,
)
from poolwarden.workers.simulated import FrameTemplate, SimulatedWorker

LIMITS = Limits()
X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
RESULT = {"type": "result", "id": 7, "model": "toy-mlp", "backend": "webgpu", "elapsed_ms": 1.25}


def _result_frame() -> bytes:
    return encode_binary(RESULT, [Tensor.from_values("output", [[1.0, 2.0, 3.0]])], 2)


def test_an_infer_frame_round_trips_in_version_2() -> None:
    """The fixed header: magic, type code, counts and lengths, id, elapsed_ms; data 8-aligned."""
    frame = encode_binary(
        {"type": "infer", "id": 2**53 - 1, "model": "toy-mlp"}, [Tensor.from_values("input", X)], 2
    )
    assert frame[:4] == BINARY_MAGIC_V2
    _magic, code, count, model_len, backend_len, request_id, elapsed = struct.unpack_from("<4sBBBBQd", frame)
    assert (code, count, model_len, backend_len, request_id, elapsed) == (1, 1, 7, 0, 2**53 - 1, 0.0)
    assert frame[24:31] == b"toy-mlp"
    assert frame[31:33] == bytes((5, 2))
    assert struct.unpack_from("<2I", frame, 33) == (2, 16)
    assert frame[41:46] == b"input"
    assert frame[48:] == X.astype("<f4").tobytes()  # 46 rounded up to 48
    command = parse_command(frame, LIMITS)
    assert command == Command(
        "infer", 2**53 - 1, {"type": "infer", "id": 2**53 - 1, "model": "toy-mlp"}, command.tensors
    )
    np.testing.assert_array_equal(command.tensors[0].to_numpy(), X)


def test_a_result_frame_round_trips_in_version_2() -> None:
    """A result's header keeps its backend and elapsed time; several tensors stay 8-aligned."""
    tensors = [Tensor.from_values("a", [1.0, 2.0, 3.0]), Tensor.from_values("b", [[4.0], [5.0]])]
    message = parse_page_message(encode_binary(RESULT, tensors, 2), LIMITS)
    assert isinstance(message, Result)
    assert (message.id, message.model, message.backend, message.elapsed_ms) == (7, "toy-mlp", "webgpu", 1.25)
    assert message.tensors == tuple(tensors)


def test_version_1_frames_still_decode() -> None:
    """Either layout is told by its magic, so a version 1 socket is served as before."""
    frame = encode_binary(RESULT, [Tensor.from_values("output", [1.0])])
    assert frame[:4] == BINARY_MAGIC
    header, _ = decode_binary(frame, LIMITS)
    assert header["id"] == 7


def test_a_version_2_frame_carries_only_its_fixed_fields() -> None:
    """A field the fixed header has no place for is refused when encoding, not dropped."""
    with pytest.raises(ValueError, match="cannot carry"):
        encode_binary({**RESULT, "extra": 1}, [], 2)


def _set(offset: int, fmt: str, *values: object) -> Callable[[bytes], bytes]:
    def mutate(frame: bytes) -> bytes:
        data = bytearray(frame)
        struct.pack_into(fmt, data, offset, *values)
        return bytes(data)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda f: f[:20], WireErrorKind.MALFORMED),
        (lambda f: f[:30], WireErrorKind.MALFORMED),
        (lambda f: f[:-8], WireErrorKind.BAD_TENSOR),
        (lambda f: f + b"\0" * 16, WireErrorKind.BAD_TENSOR),
        (_set(4, "<B", 9), WireErrorKind.UNKNOWN_TYPE),
        (_set(5, "<B", 9), WireErrorKind.TOO_LARGE),
        (_set(8, "<Q", 2**53), WireErrorKind.MALFORMED),
        (_set(16, "<d", float("nan")), WireErrorKind.MALFORMED),
        (_set(24, "<B", 0xFF), WireErrorKind.MALFORMED),  # the model name is not UTF-8
        (_set(24 + 7 + 6 + 1, "<B", 0), WireErrorKind.BAD_TENSOR),  # rank 0
        (_set(24 + 7 + 6 + 2, "<I", 1 << 30), WireErrorKind.TOO_LARGE),
        (_set(24 + 7 + 6, "<B", 0), WireErrorKind.BAD_TENSOR),  # an empty name
    ],
)
@pytest.mark.parametrize("parse", [decode_binary, parse_page_message])
def test_damaged_version_2_frames_raise_typed_protocol_errors(
    mutate: Callable[[bytes], bytes], kind: WireErrorKind, parse: Callable[[bytes, Limits], object]
) -> None:
    """Truncation, trailing bytes, a bad type code, too many tensors, a bad id, time, name or
    shape; the same through the page's message parser, which reads a version 2 result directly."""
    with pytest.raises(ProtocolError) as info:
        parse(mutate(_result_frame()), LIMITS)
    assert info.value.kind == kind


def test_a_version_2_infer_frame_from_a_worker_is_refused() -> None:
    """A worker may not send an infer frame in version 2 either."""
    frame = encode_binary({"type": "infer", "id": 1, "model": "m"}, [], 2)
    with pytest.raises(ProtocolError, match="binary frame of type 'infer' from a worker") as info:
        parse_page_message(frame, LIMITS)
    assert info.value.kind == WireErrorKind.UNKNOWN_TYPE


def test_a_version_2_result_parses_from_any_bytes_like_frame() -> None:
    """A result frame given as bytearray or memoryview parses to the same message, its tensors bytes."""
    frame = _result_frame()
    expected = parse_page_message(frame, LIMITS)
    for view in (bytearray(frame), memoryview(frame)):
        message = parse_page_message(view, LIMITS)
        assert message == expected
        assert isinstance(message, Result)
        assert type(message.tensors[0].data) is bytes


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_any_version_2_frame_parses_or_is_refused(data: st.DataObject) -> None:
    """Random bytes after the magic, or a real frame with bytes overwritten: a message or a ProtocolError."""
    frame = bytearray(_result_frame())
    if data.draw(st.booleans()):
        frame = bytearray(BINARY_MAGIC_V2 + data.draw(st.binary(max_size=96)))
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            frame[data.draw(st.integers(4, len(frame) - 1))] = data.draw(st.integers(0, 255))
    for parse in (parse_page_message, parse_command):
        with contextlib.suppress(ProtocolError):
            parse(bytes(frame), LIMITS)


def test_a_frame_template_writes_each_id() -> None:
    """The echo mode's frames: only the id differs, in either version."""
    for version in (1, 2):
        template = FrameTemplate(RESULT, [Tensor.from_values("output", [1.0])], version)
        for request_id in (1, 12345, 2**53 - 1):
            message = parse_page_message(template(request_id), LIMITS)
            assert isinstance(message, Result)
            assert message.id == request_id


@pytest.mark.parametrize(("announced", "spoken"), [(1, 1), (2, 2)])
async def test_the_welcome_names_the_version_of_the_socket(announced: int, spoken: int) -> None:
    """A version 1 worker gets welcome protocol 1 and version 1 frames; a version 2 one, 2."""
    async with BridgeServer() as server:
        worker = SimulatedWorker.for_server(server, "w1", protocol=announced)
        await worker.start()
        connection = server.worker("w1")
        await connection.wait_for_hello(after=0, timeout=5.0)
        assert connection.protocol == spoken
        await connection.load_model("toy-mlp", "toy-mlp")
        result = await connection.infer("toy-mlp", {"input": X}, timeout=5.0)
        assert result.tensors[0].shape == (2, 4)
        assert worker._frames == spoken
        await worker.stop()
