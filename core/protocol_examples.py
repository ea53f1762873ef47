"""One well-formed example of each message of the wire protocol (docs/protocol.md).

Fuzzing starts from them (``poolwarden bench fuzz`` and tests/test_protocol_fuzz.py mutate their
fields), and tests/test_protocol_fuzz.py checks that each one parses as what it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COMMANDS", "PAGE_MESSAGES", "RESULT_HEADER"]

PAGE_MESSAGES: tuple[Mapping[str, Any], ...] = (
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
)
"""One of each message a page sends, as JSON text carries it."""

COMMANDS: tuple[Mapping[str, Any], ...] = (
    {"type": "welcome", "protocol": 1, "worker_id": "w1", "generation": 1},
    {"type": "load_model", "id": 2, "model": "m", "kind": "toy-mlp", "options": {}},
    {"type": "ping", "id": 3},
)
"""Commands the server sends as text (``infer`` goes as a binary frame)."""

RESULT_HEADER: Mapping[str, Any] = {
    "type": "result",
    "id": 1,
    "model": "m",
    "backend": "webgpu",
    "elapsed_ms": 2.0,
}
"""The JSON header of a binary ``result`` frame (with no tensors)."""
