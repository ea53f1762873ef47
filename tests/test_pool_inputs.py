"""A request's inputs, checked and converted once: the tensors sent, and the typed refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from poolwarden.errors import InvalidInput
from poolwarden.pool.inputs import as_tensors
from poolwarden.protocol import Tensor


@pytest.mark.parametrize("rows", [1, 100])  # 16 values take Python's sum, 1,600 numpy's
def test_numbers_become_little_endian_float32_tensors_of_their_shape(rows: int) -> None:
    """Arrays and nested lists come out as float32 tensors with the same values and shape."""
    values = np.arange(rows * 16, dtype=np.float64).reshape(rows, 16) / 7
    tensors = as_tensors("m", 16, {"input": values, "list": values.tolist()})
    for name in ("input", "list"):
        tensor = tensors[name]
        assert (tensor.name, tensor.shape) == (name, (rows, 16))
        np.testing.assert_array_equal(tensor.to_numpy(), values.astype(np.float32))


def test_a_tensor_given_is_checked_like_any_input() -> None:
    """A Tensor passes through with its values; one of the wrong width is refused."""
    good = Tensor.from_values("x", [[0.5] * 16])
    assert as_tensors("m", 16, {"x": good})["x"].to_numpy().tolist() == [[0.5] * 16]
    with pytest.raises(InvalidInput, match="last axis must be 16"):
        as_tensors("m", 16, {"x": Tensor.from_values("x", [[0.5] * 4])})


@pytest.mark.parametrize("rows", [1, 100])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinity_anywhere_is_refused(rows: int, bad: float) -> None:
    """One non-finite value among many is found, by either path of the check."""
    values = np.zeros((rows, 16), dtype=np.float32)
    values[-1, -1] = bad
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        as_tensors("m", 16, {"input": values})


def test_large_finite_values_are_not_mistaken_for_overflow() -> None:
    """The float64 sum of the largest float32 values stays finite: they are accepted."""
    values = np.full((100, 16), np.finfo(np.float32).max, dtype=np.float32)
    assert as_tensors("m", 16, {"input": values})["input"].shape == (100, 16)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[0.0] * 16], "must be a mapping"),
        ({}, "must be a mapping"),
        ({"input": [["a"] * 16]}, "is not numeric"),
        ({"input": [[1.0] * 16, [1.0] * 3]}, "is not numeric"),  # ragged
        ({"input": 3.0}, "has shape"),
        ({"input": [[1.0] * 15]}, "last axis must be 16"),
    ],
)
def test_inputs_that_cannot_fit_are_typed_refusals(inputs: Any, message: str) -> None:
    """Each kind of bad input is an InvalidInput naming the model and what is wrong."""
    with pytest.raises(InvalidInput, match=message) as caught:
        as_tensors("toy-mlp", 16, inputs)
    assert "toy-mlp" in str(caught.value)
