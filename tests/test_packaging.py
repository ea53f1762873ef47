"""The wheel holds every package of the source tree, under the one ``poolwarden`` namespace."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        config: dict[str, object] = tomllib.load(file)["tool"]["setuptools"]
    return config


def test_every_source_package_is_listed_for_the_wheel() -> None:
    """Each folder with an __init__.py under a mapped folder is a listed package (an editable
    install would hide a missing one; a wheel would ship without it)."""
    config = _setuptools()
    folders: dict[str, str] = config["package-dir"]  # type: ignore[assignment]
    listed = set(config["packages"])  # type: ignore[call-overload]
    found = set()
    for package, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert all(name == "poolwarden" or name.startswith("poolwarden.") for name in listed)
