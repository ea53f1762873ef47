"""The worker protocol, sans I/O: message types, parsing with limits, tensor frames.

Both ends of a worker connection speak it: the bridge server (Python) and the worker page
(``worker.js``) or the simulated worker. Nothing here touches a socket or a clock; it turns frames
into typed messages and messages into frames, and raises :class:`~poolwarden.errors.ProtocolError`
(with its ``kind``) for anything that breaks the rules. docs/protocol.md is the written form.

Control messages are JSON objects in text frames, each with a ``type``. Tensors travel in binary
frames with this layout (all integers little-endian)::

    0      4 bytes   magic b"PWT1"
    4      uint32    H, the length of the JSON header
    8      H bytes   JSON header: {"type": "infer"|"result", "id": ..., "tensors": [
                         {"name": ..., "dtype": "float32", "shape": [...], "offset": o, "nbytes": b}]}
    ...    zeros up to the next multiple of 8
    D      data:     each tensor's float32 values, at D + offset; offsets are multiples of 8 and
                     the tensors are laid out in order without gaps other than that alignment.

Version 2 replaces the JSON header with a fixed binary one (magic b"PWT2", see docs/protocol.md
and :func:`encode_binary`); the data section is the same. The version of a connection's tensor
frames is the one its ``welcome`` names; a receiver tells the layouts apart by their magic.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

from poolwarden.errors import InvalidInput, ProtocolError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BINARY_MAGIC",
    "BINARY_MAGIC_V2",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Command",
    "ErrorReply",
    "Hello",
    "HookDone",
    "Limits",
    "Loaded",
    "Log",
    "MemoryReport",
    "PageMessage",
    "Pong",
    "Result",
    "StrikeCounter",
    "Tensor",
    "Unloaded",
    "WireErrorKind",
    "decode_binary",
    "encode_binary",
    "encode_command",
    "encode_error",
    "parse_command",
    "parse_page_message",
]

PROTOCOL_VERSION = 2
"""The highest protocol version this code speaks: what a worker announces in its hello. The
server's ``welcome`` names the version of the connection, the lower of the hello's and its own."""

SUPPORTED_VERSIONS = frozenset({1, 2})
"""The versions a hello may announce and still be accepted."""

BINARY_MAGIC = b"PWT1"
"""The first four bytes of every version 1 binary (tensor) frame."""

BINARY_MAGIC_V2 = b"PWT2"
"""The first four bytes of every version 2 binary (tensor) frame (a fixed binary header)."""

_HEADER = struct.Struct("<4sI")
# magic, type code, tensor count, model and backend lengths, id, elapsed_ms
_HEADER_V2 = struct.Struct("<4sBBBBQd")
_TYPE_CODES = {"infer": 1, "result": 2}
_TYPE_NAMES = {code: name for name, code in _TYPE_CODES.items()}


class WireErrorKind(StrEnum):
    """The typed error kinds carried by ``error`` messages in either direction.

    Not :class:`poolwarden.policy.ErrorKind`, which classifies failures for the breakers: the kinds
    a worker reports about a request share its values (``device_lost``, ``out_of_memory``,
    ``validation``, ``input``, ``timeout``) so they map onto it by value.
    """

    # What a worker reports about one request.
    DEVICE_LOST = "device_lost"
    OUT_OF_MEMORY = "out_of_memory"
    VALIDATION = "validation"
    INPUT = "input"
    UNKNOWN_MODEL = "unknown_model"
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"
    INTERNAL = "internal"
    # Breaches of the protocol itself.
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    BAD_TENSOR = "bad_tensor"
    BAD_TOKEN = "bad_token"
    UNSUPPORTED_VERSION = "unsupported_version"
    NOT_READY = "not_ready"
    WORKER_LIVE = "worker_live"
    """A hello for a worker id whose socket is live: refused, the live one keeps serving."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size caps applied when parsing; anything larger is a ``too_large`` breach.

    ``max_frame_bytes`` is also the WebSocket ``max_size``: a frame above it closes the
    connection (code 1009), because websockets refuses to buffer it. The other caps are checked
    after the frame arrived, so breaking them costs a strike, not the connection.
    """

    max_frame_bytes: int = 32 * 1024 * 1024
    max_text_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024
    max_tensors: int = 8
    max_rank: int = 4
    max_tensor_bytes: int = 16 * 1024 * 1024


# --- tensors ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named float32 tensor: its shape and its little-endian bytes, row-major."""

    name: str
    shape: tuple[int, ...]
    data: bytes = field(repr=False)
    dtype: str = "float32"

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)

    @classmethod
    def from_values(cls, name: str, values: Any) -> Tensor:
        """Make a tensor from nested lists of numbers or a numpy array.

        Raises :class:`~poolwarden.errors.InvalidInput` for ragged lists or non-numbers.
        """
        if hasattr(values, "shape") and hasattr(values, "astype"):
            import numpy as np

            arr = np.ascontiguousarray(values, dtype="<f4")
            return cls(name, tuple(int(d) for d in arr.shape), arr.tobytes())
        shape = _shape_of(name, values)
        flat = array("f")
        try:
            _flatten(values, len(shape), flat)
        except TypeError as exc:
            raise InvalidInput(f"tensor {name!r}: {exc}") from exc
        if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
            flat.byteswap()
        return cls(name, shape, flat.tobytes())

    def to_list(self) -> Any:
        """The values as nested Python lists of floats."""
        flat = array("f")
        flat.frombytes(self.data)
        if sys.byteorder == "big":  # pragma: no cover
            flat.byteswap()
        values: list[Any] = flat.tolist()
        for dim in reversed(self.shape[1:]):
            values = [values[i : i + dim] for i in range(0, len(values), dim)]
        return values

    def to_numpy(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The values as a writable numpy float32 array of this shape, a copy of the data (numpy
        is imported on first use)."""
        import numpy as np

        if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
            return np.frombuffer(self.data, dtype="<f4").reshape(self.shape).astype(np.float32)
        # One copy, straight into the array's own (writable) buffer.
        return np.frombuffer(bytearray(self.data), dtype=np.float32).reshape(self.shape)


def _shape_of(name: str, values: Any) -> tuple[int, ...]:
    shape: list[int] = []
    probe = values
    while isinstance(probe, list | tuple):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    if not shape:
        raise InvalidInput(
            f"tensor {name!r}: expected a (nested) list of numbers, got {type(values).__name__}"
        )
    return tuple(shape)


def _flatten(values: Any, depth: int, out: array[float]) -> None:
    if depth == 1:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"expected numbers, got {type(v).__name__}")
        out.extend(values)
        return
    width = None
    for row in values:
        if not isinstance(row, list | tuple):
            raise TypeError("ragged nesting")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise TypeError("rows of different lengths")
        _flatten(row, depth - 1, out)


def _align8(n: int) -> int:
    return (n + 7) & ~7


def encode_binary(header: Mapping[str, Any], tensors: Sequence[Tensor], version: int = 1) -> bytes:
    """Encode a binary frame: ``header`` (a dict with ``type`` and ``id``) plus ``tensors``.

    ``version`` is the connection's (its ``welcome``'s). Version 2's fixed header carries only
    ``type`` (``infer`` or ``result``), ``id``, ``model`` and, in a result, ``backend`` and
    ``elapsed_ms``; any other field is a ValueError.
    """
    if version >= 2:
        return _encode_v2(header, tensors)
    descriptors = []
    offset = 0
    for t in tensors:
        descriptors.append(
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "offset": offset,
                "nbytes": len(t.data),
            }
        )
        offset = _align8(offset + len(t.data))
    head = json.dumps({**header, "tensors": descriptors}, separators=(",", ":")).encode()
    parts = [_HEADER.pack(BINARY_MAGIC, len(head)), head, b"\0" * (_align8(8 + len(head)) - 8 - len(head))]
    for t in tensors:
        parts.append(t.data)
        parts.append(b"\0" * (_align8(len(t.data)) - len(t.data)))
    return b"".join(parts)


_V2_FIELDS = frozenset({"type", "id", "model", "backend", "elapsed_ms"})
_PADDING = tuple(b"\0" * n for n in range(8))
"""``_PADDING[-size & 7]`` pads ``size`` bytes to the next multiple of 8."""
_SHAPES: dict[int, struct.Struct] = {}
"""A version 2 tensor descriptor of each rank: name length, rank, then the shape (made on first use)."""


def _shape_struct(rank: int) -> struct.Struct:
    layout = _SHAPES.get(rank)
    if layout is None:
        layout = _SHAPES[rank] = struct.Struct(f"<BB{rank}I")
    return layout


def _encode_v2(header: Mapping[str, Any], tensors: Sequence[Tensor]) -> bytes:
    if not _V2_FIELDS.issuperset(header):
        raise ValueError(f"a version 2 tensor frame cannot carry {sorted(set(header) - _V2_FIELDS)}")
    model = str(header["model"]).encode()
    backend = str(header.get("backend", "")).encode()
    parts = [
        _HEADER_V2.pack(
            BINARY_MAGIC_V2,
            _TYPE_CODES[header["type"]],
            len(tensors),
            len(model),
            len(backend),
            header["id"],
            float(header.get("elapsed_ms", 0.0)),
        ),
        model,
        backend,
    ]
    size = _HEADER_V2.size + len(model) + len(backend)
    for t in tensors:
        name = t.name.encode()
        shape = t.shape
        descriptor = _shape_struct(len(shape)).pack(len(name), len(shape), *shape)
        parts.append(descriptor)
        parts.append(name)
        size += len(descriptor) + len(name)
    parts.append(_PADDING[-size & 7])
    for t in tensors:
        data = t.data
        parts.append(data)
        parts.append(_PADDING[-len(data) & 7])
    return b"".join(parts)


def _decode_v2(frame: bytes, limits: Limits) -> tuple[dict[str, Any], tuple[Tensor, ...]]:
    kind, request_id, model, backend, elapsed, tensors = _read_v2(frame, limits)
    header: dict[str, Any] = {"type": kind, "id": request_id, "model": model}
    if kind == "result":
        header["backend"] = backend
        header["elapsed_ms"] = elapsed
    return header, tensors


def _read_v2(frame: bytes, limits: Limits) -> tuple[str, int, str, str, float, tuple[Tensor, ...]]:
    """A version 2 frame's type, id, model, backend, elapsed_ms and tensors, every length checked
    (the id is at most 2**53 - 1, elapsed_ms finite, the texts UTF-8)."""
    try:
        _, code, count, model_len, backend_len, request_id, elapsed = _HEADER_V2.unpack_from(frame)
        at = _HEADER_V2.size
        model = frame[at : at + model_len].decode()
        backend = frame[at + model_len : at + model_len + backend_len].decode()
        at += model_len + backend_len
        if at > len(frame):
            raise ProtocolError("binary header runs past the frame", WireErrorKind.MALFORMED)
        kind = _TYPE_NAMES.get(code)
        if kind is None:
            raise ProtocolError(f"binary frame of type code {code}", WireErrorKind.UNKNOWN_TYPE)
        if request_id > MAX_SAFE_INTEGER or not math.isfinite(elapsed):
            raise ProtocolError(
                "binary header: id over 2**53 - 1 or elapsed_ms not finite", WireErrorKind.MALFORMED
            )
        if count > limits.max_tensors:
            raise ProtocolError(
                f"{count} tensors in one frame, the cap is {limits.max_tensors}", WireErrorKind.TOO_LARGE
            )
        shapes = []
        for _ in range(count):
            name_len, rank = frame[at], frame[at + 1]
            if not 1 <= rank <= limits.max_rank:
                raise ProtocolError(
                    f"tensor rank {rank} is not 1..{limits.max_rank}", WireErrorKind.BAD_TENSOR
                )
            shape = _shape_struct(rank).unpack_from(frame, at)[2:]
            at += 2 + 4 * rank
            name = frame[at : at + name_len].decode()
            at += name_len
            if not 1 <= len(name) <= 64 or at > len(frame):
                raise ProtocolError(
                    "tensor name must be a non-empty string of at most 64 characters",
                    WireErrorKind.BAD_TENSOR,
                )
            shapes.append((name, shape))
    except (struct.error, IndexError) as exc:
        raise ProtocolError(f"binary header runs past the frame: {exc}", WireErrorKind.MALFORMED) from exc
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"binary header text is not UTF-8: {exc}", WireErrorKind.MALFORMED) from exc
    if at > limits.max_header_bytes:
        raise ProtocolError(f"binary header of {at} bytes is over the cap", WireErrorKind.TOO_LARGE)
    base = _align8(at)
    expected = end = 0
    tensors = []
    size = len(frame)
    for name, shape in shapes:
        nbytes = 4 * math.prod(shape)
        if nbytes > limits.max_tensor_bytes:
            raise ProtocolError(f"tensor {name!r}: {nbytes} bytes is over the cap", WireErrorKind.TOO_LARGE)
        start = base + expected
        if start + nbytes > size:
            raise ProtocolError(f"tensor {name!r} runs past the end of the frame", WireErrorKind.BAD_TENSOR)
        tensors.append(Tensor(name, shape, bytes(frame[start : start + nbytes])))
        end = expected + nbytes
        expected = _align8(end)
    if not base + end <= size <= base + expected:
        raise ProtocolError("binary frame has bytes after its last tensor", WireErrorKind.BAD_TENSOR)
    return kind, request_id, model, backend, elapsed, tuple(tensors)


def decode_binary(frame: bytes, limits: Limits) -> tuple[dict[str, Any], tuple[Tensor, ...]]:
    """Decode a binary frame (either version, told by its magic) into its header and its tensors,
    checking every length."""
    if frame[:4] == BINARY_MAGIC_V2:
        return _decode_v2(frame, limits)
    if len(frame) < _HEADER.size:
        raise ProtocolError("binary frame shorter than its fixed header", WireErrorKind.MALFORMED)
    magic, head_len = _HEADER.unpack_from(frame)
    if magic != BINARY_MAGIC:
        raise ProtocolError(f"binary frame magic {magic!r} is not {BINARY_MAGIC!r}", WireErrorKind.MALFORMED)
    if head_len > limits.max_header_bytes:
        raise ProtocolError(f"binary header of {head_len} bytes is over the cap", WireErrorKind.TOO_LARGE)
    if _HEADER.size + head_len > len(frame):
        raise ProtocolError("binary header runs past the frame", WireErrorKind.MALFORMED)
    header = _load_json(bytes(frame[_HEADER.size : _HEADER.size + head_len]))
    raw = header.get("tensors")
    if not isinstance(raw, list):
        raise ProtocolError("binary header has no 'tensors' list", WireErrorKind.MALFORMED)
    if len(raw) > limits.max_tensors:
        raise ProtocolError(
            f"{len(raw)} tensors in one frame, the cap is {limits.max_tensors}", WireErrorKind.TOO_LARGE
        )
    base = _align8(_HEADER.size + head_len)
    expected = end = 0
    tensors = []
    for d in raw:
        tensor = _tensor_from(d, frame, base, expected, limits)
        tensors.append(tensor)
        end = expected + len(tensor.data)
        expected = _align8(end)
    # The last tensor's padding is optional; anything beyond it is not.
    if not base + end <= len(frame) <= base + expected:
        raise ProtocolError("binary frame has bytes after its last tensor", WireErrorKind.BAD_TENSOR)
    return header, tuple(tensors)


def _tensor_from(d: Any, frame: bytes, base: int, expected: int, limits: Limits) -> Tensor:
    if not isinstance(d, dict):
        raise ProtocolError("tensor descriptor is not an object", WireErrorKind.BAD_TENSOR)
    name, dtype, shape = d.get("name"), d.get("dtype"), d.get("shape")
    offset, nbytes = d.get("offset"), d.get("nbytes")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ProtocolError(
            "tensor name must be a non-empty string of at most 64 characters", WireErrorKind.BAD_TENSOR
        )
    if dtype != "float32":
        raise ProtocolError(
            f"tensor {name!r}: dtype {dtype!r} is not supported (float32 only)", WireErrorKind.BAD_TENSOR
        )
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= limits.max_rank
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise ProtocolError(
            f"tensor {name!r}: shape must be 1..{limits.max_rank} non-negative ints", WireErrorKind.BAD_TENSOR
        )
    if offset != expected or not isinstance(nbytes, int) or isinstance(nbytes, bool):
        raise ProtocolError(
            f"tensor {name!r}: offset {offset!r} is not the expected {expected}", WireErrorKind.BAD_TENSOR
        )
    if nbytes > limits.max_tensor_bytes:
        raise ProtocolError(f"tensor {name!r}: {nbytes} bytes is over the cap", WireErrorKind.TOO_LARGE)
    if nbytes != 4 * math.prod(shape):
        raise ProtocolError(
            f"tensor {name!r}: {nbytes} bytes do not match shape {shape}", WireErrorKind.BAD_TENSOR
        )
    start = base + offset
    if start + nbytes > len(frame):
        raise ProtocolError(f"tensor {name!r} runs past the end of the frame", WireErrorKind.BAD_TENSOR)
    return Tensor(name, tuple(shape), bytes(frame[start : start + nbytes]))


# --- JSON helpers ------------------------------------------------------------------------------


def _load_json(data: bytes | str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except RecursionError as exc:  # "[[[[..." within the size cap still overflows the decoder
        raise ProtocolError("JSON nested too deeply", WireErrorKind.MALFORMED) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}", WireErrorKind.MALFORMED) from exc
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object", WireErrorKind.MALFORMED)
    return obj


def _load_text(frame: str, limits: Limits) -> dict[str, Any]:
    cap = limits.max_text_bytes
    # A character is at least one byte: the cheap length check first, the exact one after it.
    if len(frame) <= cap and not frame.isascii():
        try:  # a text frame off the wire is valid UTF-8; a str given here may hold a lone surrogate
            size = len(frame.encode())
        except UnicodeEncodeError as exc:
            raise ProtocolError("text message is not valid Unicode text", WireErrorKind.MALFORMED) from exc
    else:
        size = len(frame)
    if size > cap:
        raise ProtocolError(f"text message over the {cap}-byte cap", WireErrorKind.TOO_LARGE)
    return _load_json(frame)


MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JavaScript number holds exactly; the page sends no larger one."""


def _is_text(value: object) -> TypeGuard[str]:
    """True for a string that UTF-8 can encode (a lone surrogate cannot be stored or sent)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not _is_text(value):
        raise ProtocolError(
            f"{_kind_of(obj)}: field {key!r} must be a string of Unicode text", WireErrorKind.MALFORMED
        )
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise ProtocolError(
            f"{_kind_of(obj)}: field {key!r} must be a non-negative integer of at most 2**53 - 1",
            WireErrorKind.MALFORMED,
        )
    return value


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key)


def _num(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key, 0.0)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
        return float(value)
    if not isinstance(value, float) or not math.isfinite(value):
        raise ProtocolError(
            f"{_kind_of(obj)}: field {key!r} must be a finite number", WireErrorKind.MALFORMED
        )
    return value


def _dict(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise ProtocolError(f"{_kind_of(obj)}: field {key!r} must be an object", WireErrorKind.MALFORMED)
    try:  # it is recorded as it came: it must be JSON that UTF-8 can carry, without NaN
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise ProtocolError(
            f"{_kind_of(obj)}: field {key!r} holds what JSON text cannot carry", WireErrorKind.MALFORMED
        ) from exc
    return value


def _kind_of(obj: Mapping[str, Any]) -> str:
    """The message's type for an error message (``?`` when it is not a plain string)."""
    kind = obj.get("type")
    return kind if _is_text(kind) else "?"


# --- page -> server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message of every connection: who the page is and what it can run.

    ``instance`` changes with every page load, so a reload is told apart from a reconnect.
    ``capabilities`` is kept whole (see docs/protocol.md); the fields most callers need are
    lifted out: the backend the page chose, and whether its WebGPU adapter is a software fallback.
    """

    token: str
    protocol: int
    worker_id: str
    instance: str
    browser: str
    user_agent: str
    backend: str
    capabilities: Mapping[str, Any]
    hooks: bool

    @property
    def webgpu(self) -> Mapping[str, Any] | None:
        """The WebGPU adapter description, or None when the page has no WebGPU adapter."""
        gpu = self.capabilities.get("webgpu")
        return gpu if isinstance(gpu, dict) and gpu.get("available") else None

    @property
    def is_fallback_adapter(self) -> bool | None:
        """Whether the WebGPU adapter is a software fallback (SwiftShader); None without WebGPU."""
        gpu = self.webgpu
        return None if gpu is None else bool(gpu.get("isFallbackAdapter"))

    @property
    def webnn_available(self) -> bool:
        """Whether the page could create a WebNN context."""
        nn = self.capabilities.get("webnn")
        return isinstance(nn, dict) and bool(nn.get("available"))


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model was loaded (weights built and uploaded) and is ready for ``infer``."""

    id: int
    model: str
    backend: str
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class Unloaded:
    """A model was unloaded and its buffers released."""

    id: int
    model: str


@dataclass(frozen=True, slots=True)
class Result:
    """The answer to ``infer``: the output tensors and the backend that computed them."""

    id: int
    model: str
    backend: str
    elapsed_ms: float
    tensors: tuple[Tensor, ...]


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A typed error: about request ``id``, or about the connection when ``id`` is None."""

    id: int | None
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to an application ping; it proves the page's JavaScript thread runs.

    ``gpu`` says what the page's tiny GPU submission did: ``ok`` (completed within the deadline),
    ``timeout``, ``lost`` (the device is gone) or ``none`` (the page has no GPU device).
    """

    id: int
    backend: str
    gpu: str
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """What the page knows of its own memory; ``None`` where the browser does not say."""

    id: int
    js_heap_used: int | None
    js_heap_total: int | None
    gpu_buffer_bytes: int
    test_allocated_bytes: int
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Log:
    """A line the page wants in Python's log."""

    level: str
    message: str


@dataclass(frozen=True, slots=True)
class HookDone:
    """A test hook ran (only pages loaded with the hooks flag answer these)."""

    id: int
    action: str


PageMessage: TypeAlias = (
    Hello | Loaded | Unloaded | Result | ErrorReply | Pong | MemoryReport | Log | HookDone
)
"""Any message a worker page sends."""


def parse_page_message(frame: str | bytes, limits: Limits) -> PageMessage:
    """Parse one frame a worker sent, or raise ProtocolError with the breach's kind."""
    if isinstance(frame, bytes | bytearray | memoryview):
        frame = bytes(frame)
        if frame[:4] == BINARY_MAGIC_V2:  # the fixed header's fields need no checks beyond its own
            kind, request_id, model, backend, elapsed, tensors = _read_v2(frame, limits)
            if kind != "result":
                raise ProtocolError(
                    f"binary frame of type {kind!r} from a worker", WireErrorKind.UNKNOWN_TYPE
                )
            return Result(request_id, model, backend, elapsed, tensors)
        header, tensors = decode_binary(frame, limits)
        if header.get("type") != "result":
            raise ProtocolError(
                f"binary frame of type {header.get('type')!r} from a worker", WireErrorKind.UNKNOWN_TYPE
            )
        return Result(
            _int(header, "id"),
            _str(header, "model"),
            _str(header, "backend"),
            _num(header, "elapsed_ms"),
            tensors,
        )
    msg = _load_text(frame, limits)
    kind = _kind_of(msg)
    if kind == "hello":
        return _parse_hello(msg)
    if kind == "loaded":
        return Loaded(_int(msg, "id"), _str(msg, "model"), _str(msg, "backend"), _num(msg, "elapsed_ms"))
    if kind == "unloaded":
        return Unloaded(_int(msg, "id"), _str(msg, "model"))
    if kind == "error":
        return ErrorReply(_opt_int(msg, "id"), _str(msg, "kind"), _str(msg, "message", ""))
    if kind == "pong":
        return Pong(_int(msg, "id"), _str(msg, "backend"), _str(msg, "gpu"), _num(msg, "elapsed_ms"))
    if kind == "memory":
        models = msg.get("models", [])
        if not isinstance(models, list) or not all(_is_text(m) for m in models):
            raise ProtocolError("memory: 'models' must be a list of strings", WireErrorKind.MALFORMED)
        return MemoryReport(
            _int(msg, "id"),
            _opt_int(msg, "js_heap_used"),
            _opt_int(msg, "js_heap_total"),
            _int(msg, "gpu_buffer_bytes"),
            _int(msg, "test_allocated_bytes"),
            tuple(models),
        )
    if kind == "log":
        return Log(_str(msg, "level", "info"), _str(msg, "message"))
    if kind == "hook_done":
        return HookDone(_int(msg, "id"), _str(msg, "action"))
    raise ProtocolError(f"unknown message type {kind!r}", WireErrorKind.UNKNOWN_TYPE)


def _parse_hello(msg: Mapping[str, Any]) -> Hello:
    protocol = _int(msg, "protocol")
    if protocol not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {protocol} is not supported (supported: {sorted(SUPPORTED_VERSIONS)})",
            WireErrorKind.UNSUPPORTED_VERSION,
        )
    browser = _dict(msg, "browser")
    return Hello(
        token=_str(msg, "token"),
        protocol=protocol,
        worker_id=_str(msg, "worker_id"),
        instance=_str(msg, "instance"),
        browser=_str(browser, "name", "unknown"),
        user_agent=_str(browser, "user_agent", ""),
        backend=_str(msg, "backend"),
        capabilities=_dict(msg, "capabilities"),
        hooks=bool(msg.get("hooks", False)),
    )


# --- server -> page --------------------------------------------------------------------------


_COMMAND_TYPES = frozenset(
    {"welcome", "rebind", "load_model", "unload_model", "infer", "ping", "memory", "hook", "error"}
)


@dataclass(frozen=True, slots=True)
class Command:
    """A message from the server to a worker, as a worker parses it.

    ``fields`` holds the JSON object (or the binary header) whole; ``tensors`` is non-empty only
    for ``infer``.
    """

    type: str
    id: int | None
    fields: Mapping[str, Any]
    tensors: tuple[Tensor, ...] = ()


def encode_command(type: str, id: int | None = None, **fields: Any) -> str:
    """Encode a server -> worker control message as a JSON text frame."""
    if type not in _COMMAND_TYPES or type == "infer":
        raise ValueError(f"{type!r} is not a text command")
    body: dict[str, Any] = {"type": type}
    if id is not None:
        body["id"] = id
    body.update(fields)
    return json.dumps(body, separators=(",", ":"))


def encode_error(id: int | None, kind: str, message: str, **extra: Any) -> str:
    """Encode an ``error`` message (used by both ends)."""
    return json.dumps({"type": "error", "id": id, "kind": str(kind), "message": message, **extra})


def parse_command(frame: str | bytes, limits: Limits) -> Command:
    """Parse one frame the server sent (the worker's side of the protocol)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        header, tensors = decode_binary(bytes(frame), limits)
        if header.get("type") != "infer":
            raise ProtocolError(f"binary frame of type {header.get('type')!r}", WireErrorKind.UNKNOWN_TYPE)
        _str(header, "model")
        return Command("infer", _int(header, "id"), header, tensors)
    msg = _load_text(frame, limits)
    kind = _kind_of(msg)
    if kind not in _COMMAND_TYPES or kind == "infer":
        raise ProtocolError(f"unknown message type {kind!r}", WireErrorKind.UNKNOWN_TYPE)
    return Command(kind, _opt_int(msg, "id"), msg)


# --- abuse -------------------------------------------------------------------------------------


class StrikeCounter:
    """Counts protocol breaches on one connection; past ``limit`` the connection must be closed.

    Each breach is answered with an error reply, so a peer with a bug hears about it; a peer that
    keeps breaking the rules is cut off rather than allowed to make the server parse garbage forever.
    """

    __slots__ = ("limit", "strikes")

    def __init__(self, limit: int = 5) -> None:
        if limit < 1:
            raise ValueError("the strike limit must be at least 1")
        self.limit = limit
        self.strikes = 0

    def strike(self) -> bool:
        """Record one breach; True when the connection has now used up its strikes."""
        self.strikes += 1
        return self.strikes >= self.limit
