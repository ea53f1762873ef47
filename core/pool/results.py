"""What the pool hands back: a served request's result, and what it knows of a loaded model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from poolwarden.errors import RequestError

__all__ = ["Fallback", "InferenceResult", "ModelInfo"]

Fallback = Callable[[str, Mapping[str, Any], RequestError], Awaitable[Any]]
"""Called when no connection could serve a request; its return value is the result's output."""


@dataclass(slots=True)
class InferenceResult:
    """What a served request returns: the output and where and how it was computed.

    (Not frozen: one is made for every request, and a frozen dataclass costs twice as much.)
    """

    model_id: str
    outputs: list[Any]
    connection_id: str | None
    browser: str | None
    backend: str
    latency_ms: float
    attempts: int
    is_fallback: bool = False

    @property
    def is_simulation(self) -> bool:
        """Whether no real browser computed the output: a simulated worker did (``backend``
        ``simulated``). The seed's meaning of its flag: the numbers are right (the simulated
        worker computes them and the tests check them against numpy) but no browser, GPU or NPU
        ran them, so they say nothing of a browser's speed or backends."""
        return self.backend == "simulated" or self.browser == "simulated"

    def to_dict(self) -> dict[str, Any]:
        """The result as the seed's dictionaries looked, plus where it ran."""
        return {
            "success": True,
            "status": "fallback" if self.is_fallback else "success",
            "model_id": self.model_id,
            "output": self.outputs,
            "connection_id": self.connection_id,
            "browser": self.browser,
            "backend": self.backend,
            "latency_ms": self.latency_ms,
            "attempts": self.attempts,
            "is_simulation": self.is_simulation,
            "is_fallback": self.is_fallback,
        }


@dataclass(slots=True)
class ModelInfo:
    """What the pool knows of a model it was asked to load."""

    model_id: str
    kind: str
    model_type: str
    options: dict[str, Any]
    input_width: int
