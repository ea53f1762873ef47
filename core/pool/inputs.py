"""A request's inputs, checked once and made into the tensors that go on the wire.

Inputs that cannot fit the model are refused with :class:`~poolwarden.errors.InvalidInput`
before they cost a round trip, and never retried. The check converts each input to float32
once; the tensors it returns are what the bridge sends, so nothing is converted twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from poolwarden.errors import InvalidInput
from poolwarden.protocol import Tensor

__all__ = ["as_tensors"]


def as_tensors(model_id: str, input_width: int, inputs: Mapping[str, Any]) -> dict[str, Tensor]:
    """``inputs`` (name -> numpy array, nested lists or :class:`Tensor`) as float32 tensors.

    Raises :class:`InvalidInput` when ``inputs`` is not a non-empty mapping, a value is not
    numeric, its last axis is not ``input_width``, or it holds NaN or infinity.
    """
    if not (inputs.__class__ is dict or isinstance(inputs, Mapping)) or not inputs:
        raise InvalidInput(
            f"inputs for {model_id!r} must be a mapping of name to tensor, got {type(inputs).__name__}"
        )
    tensors: dict[str, Tensor] = {}
    for name, value in inputs.items():
        try:
            array = np.ascontiguousarray(
                value.to_numpy() if isinstance(value, Tensor) else value, dtype="<f4"
            )
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"input {name!r} for {model_id!r} is not numeric: {error}") from error
        if array.ndim == 0 or array.shape[-1] != input_width:
            raise InvalidInput(
                f"input {name!r} for {model_id!r} has shape {array.shape}; "
                f"the last axis must be {input_width}"
            )
        if not _all_finite(array):
            raise InvalidInput(f"input {name!r} for {model_id!r} holds NaN or infinity")
        tensors[name] = Tensor(str(name), array.shape, array.tobytes())
    return tensors


_SMALL = 256


def _all_finite(array: np.ndarray[Any, np.dtype[np.float32]]) -> bool:
    """Whether ``array`` holds no NaN and no infinity.

    A float64 sum of float32 values is finite exactly when every value is (no float32 sum of
    realistic length overflows a float64); for a small array Python's own sum of the values is
    cheaper than numpy's reduction set-up, and the check runs on every request.
    """
    if array.size <= _SMALL:
        return math.isfinite(sum(array.ravel().tolist()))
    return math.isfinite(array.sum(dtype=np.float64))
