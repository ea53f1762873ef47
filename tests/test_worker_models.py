"""The built-in models: deterministic weights, option checks, the numpy reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from poolwarden.errors import InvalidInput, UnknownModel
from poolwarden.workers.models import mulberry32, reference_forward, resolve_model


def test_mulberry32_matches_the_published_sequence() -> None:
    """mulberry32(0) yields the sequence every JavaScript implementation of it yields."""
    # The JS one-liner (Math.imul based) gives these first outputs for seed 0.
    assert list(itertools.islice(mulberry32(0), 3)) == [1144304738, 1416247, 958946056]


def test_weights_are_deterministic_and_exact_in_float32() -> None:
    """The same seed gives the same weights, and every weight is exactly representable in float32."""
    a, b = resolve_model("toy-mlp"), resolve_model("toy-mlp", {"seed": 20240917})
    assert a.layers == b.layers
    weights = np.array(a.layers[0].weight, dtype=np.float64)
    np.testing.assert_array_equal(weights.astype(np.float32).astype(np.float64), weights)
    assert resolve_model("toy-mlp", {"seed": 1}).layers[0].weight != a.layers[0].weight


def test_toy_mlp_maps_sixteen_inputs_to_four_outputs() -> None:
    """toy-mlp takes [batch, 16] and returns [batch, 4], relu applied after the first layer."""
    spec = resolve_model("toy-mlp")
    x = np.ones((2, 16), dtype=np.float32)
    out = reference_forward(spec, x)
    assert out.shape == (2, 4)
    assert out.dtype == np.float32
    hidden = np.maximum(
        x @ np.array(spec.layers[0].weight, np.float32).reshape(16, 32) + spec.layers[0].bias, 0
    )
    expected = hidden @ np.array(spec.layers[1].weight, np.float32).reshape(32, 4) + spec.layers[1].bias
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_matmul_size_comes_from_its_options() -> None:
    """matmul's k and n are load options; the input must be [m, k]."""
    spec = resolve_model("matmul", {"k": 8, "n": 3})
    assert reference_forward(spec, np.zeros((5, 8))).shape == (5, 3)
    with pytest.raises(InvalidInput):
        reference_forward(spec, np.zeros((5, 7)))


@pytest.mark.parametrize(
    ("kind", "options", "error"),
    [
        ("resnet", {}, UnknownModel),
        ("matmul", {"k": 0}, InvalidInput),
        ("matmul", {"n": 4096}, InvalidInput),
        ("matmul", {"k": "8"}, InvalidInput),
        ("toy-mlp", {"k": 8}, InvalidInput),
    ],
)
def test_bad_model_kinds_and_options_are_typed_errors(
    kind: str, options: dict[str, object], error: type
) -> None:
    """Unknown kinds are UnknownModel; out-of-range or foreign options are InvalidInput."""
    with pytest.raises(error):
        resolve_model(kind, options)
