"""The built-in models every worker serves, with deterministic weights and a numpy reference.

A worker (the browser page or the simulated worker) computes these models for real, so that the
answers Python gets back can be checked. Weights come from a fixed seed through mulberry32, a tiny
PRNG that ``worker.js`` implements line for line: both sides derive bit-identical float32 weights.
Each weight is ``((u >> 8) / 2**24 - 0.5) * scale`` with ``scale`` a power of two, a value float32
holds exactly, so no rounding differs between Python and JavaScript; only the order of summation
can, which is why results are compared with a tolerance (:data:`RTOL`, :data:`ATOL`).

Models:

- ``toy-mlp``: ``input`` ``[batch, 16]`` -> dense 16x32 + relu -> dense 32x4 -> ``output`` ``[batch, 4]``.
- ``matmul``: ``input`` ``[m, k]`` times a fixed ``[k, n]`` matrix -> ``output`` ``[m, n]``;
  ``k`` and ``n`` are load options (default 64).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from poolwarden.errors import InvalidInput, UnknownModel

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "ATOL",
    "DEFAULT_SEED",
    "MODEL_KINDS",
    "RTOL",
    "Dense",
    "ModelSpec",
    "mulberry32",
    "reference_forward",
    "resolve_model",
]

DEFAULT_SEED = 20240917
"""The seed every built-in model's weights come from unless the load options give another."""

RTOL = 1e-4
"""Relative tolerance when comparing a worker's float32 output with the reference."""

ATOL = 1e-4
"""Absolute tolerance when comparing a worker's float32 output with the reference."""

MODEL_KINDS = ("toy-mlp", "matmul")
"""The kinds of model a worker can load."""

_MAX_DIM = 1024
_MASK = 0xFFFFFFFF


def mulberry32(seed: int) -> Iterator[int]:
    """Yield mulberry32's stream of unsigned 32-bit integers from ``seed`` (as worker.js does)."""
    a = seed & _MASK
    while True:
        a = (a + 0x6D2B79F5) & _MASK
        t = ((a ^ (a >> 15)) * (1 | a)) & _MASK
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & _MASK)) & _MASK) ^ t
        yield (t ^ (t >> 14)) & _MASK


def _draw(stream: Iterator[int], count: int, scale: float) -> list[float]:
    return [((next(stream) >> 8) / 16777216.0 - 0.5) * scale for _ in range(count)]


@dataclass(frozen=True, slots=True)
class Dense:
    """One dense layer: ``y = x @ weight + bias``, optionally followed by relu.

    ``weight`` is row-major ``[inputs, outputs]``.
    """

    inputs: int
    outputs: int
    weight: tuple[float, ...]
    bias: tuple[float, ...]
    relu: bool


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A built-in model resolved from its kind and load options: its layers and input width."""

    kind: str
    options: Mapping[str, int]
    layers: tuple[Dense, ...]

    @property
    def input_width(self) -> int:
        """The size of the last dimension the input must have."""
        return self.layers[0].inputs


def resolve_model(kind: str, options: Mapping[str, Any] | None = None) -> ModelSpec:
    """Build the model ``kind`` with ``options`` (``seed``; for matmul ``k`` and ``n``).

    Raises :class:`UnknownModel` for a kind no worker knows and :class:`InvalidInput` for options
    out of range.
    """
    opts = dict(options or {})
    if kind not in MODEL_KINDS:
        raise UnknownModel(f"no built-in model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    allowed = {"seed"} | ({"k", "n"} if kind == "matmul" else set())
    unknown = set(opts) - allowed
    if unknown:
        raise InvalidInput(f"{kind}: unknown load option(s) {sorted(unknown)}")
    values: dict[str, int] = {}
    for key, default in (("seed", DEFAULT_SEED), ("k", 64), ("n", 64)):
        if key not in allowed:
            continue
        value = opts.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(f"{kind}: option {key!r} must be an integer, not {value!r}")
        if key != "seed" and not 1 <= value <= _MAX_DIM:
            raise InvalidInput(f"{kind}: option {key!r} must be in 1..{_MAX_DIM}, not {value}")
        values[key] = value
    return _build(kind, tuple(sorted(values.items())))


@lru_cache(maxsize=32)
def _build(kind: str, options: tuple[tuple[str, int], ...]) -> ModelSpec:
    opts = dict(options)
    stream = mulberry32(opts["seed"])
    layers: tuple[Dense, ...]
    if kind == "toy-mlp":
        layers = (
            Dense(16, 32, tuple(_draw(stream, 16 * 32, 0.5)), tuple(_draw(stream, 32, 0.125)), True),
            Dense(32, 4, tuple(_draw(stream, 32 * 4, 0.5)), tuple(_draw(stream, 4, 0.125)), False),
        )
    else:
        k, n = opts["k"], opts["n"]
        layers = (Dense(k, n, tuple(_draw(stream, k * n, 1.0)), (0.0,) * n, False),)
    return ModelSpec(kind, opts, layers)


def reference_forward(spec: ModelSpec, x: npt.ArrayLike) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Compute ``spec`` on ``x`` (shape ``[batch, input_width]``) in float32 with numpy."""
    import numpy as np

    out = np.asarray(x, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != spec.input_width:
        raise InvalidInput(
            f"{spec.kind}: input must have shape [batch, {spec.input_width}], not {list(out.shape)}"
        )
    for layer in spec.layers:
        weight = np.asarray(layer.weight, dtype=np.float32).reshape(layer.inputs, layer.outputs)
        out = out @ weight + np.asarray(layer.bias, dtype=np.float32)
        if layer.relu:
            out = np.maximum(out, np.float32(0.0))
    return out
