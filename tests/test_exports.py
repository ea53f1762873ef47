"""The package's public names: exactly those listed, each importable, none loaded eagerly."""

from __future__ import annotations

import subprocess
import sys

import poolwarden


def test_all_lists_exactly_the_lazy_exports() -> None:
    """__all__ is the set of lazily exported names plus __version__, sorted."""
    assert poolwarden.__all__ == sorted([*poolwarden._EXPORTS, "__version__"])


def test_every_export_resolves() -> None:
    """Every public name imports to an object defined under poolwarden."""
    for name in poolwarden._EXPORTS:
        value = getattr(poolwarden, name)
        assert getattr(value, "__module__", "").startswith("poolwarden"), name


def test_import_is_cheap() -> None:
    """`import poolwarden` loads neither SQLAlchemy nor websockets."""
    code = (
        "import sys, poolwarden; "
        "print(any(m.split('.')[0] in ('sqlalchemy', 'websockets') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
