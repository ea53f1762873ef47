"""poolwarden.analysis's public names: each importable and documented; matplotlib only when drawing."""

from __future__ import annotations

import subprocess
import sys

import poolwarden.analysis


def test_every_public_name_resolves_and_is_documented() -> None:
    """Every name in __all__ exists, and every function and class among them has a docstring."""
    assert poolwarden.analysis.__all__ == sorted(poolwarden.analysis.__all__)
    for name in poolwarden.analysis.__all__:
        value = getattr(poolwarden.analysis, name)
        if callable(value):
            assert value.__doc__, name


def test_loading_does_not_import_matplotlib() -> None:
    """`import poolwarden.analysis` leaves matplotlib unloaded until a report is drawn."""
    code = "import sys, poolwarden.analysis; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
