"""The wheel holds every package of the source tree, under the one ``poolwarden`` namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
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


def test_the_built_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    """A wheel built from the tree holds each .py file and each declared data file, where the
    import namespace puts it."""
    # Built from a copy: setuptools would reuse a stale build/ in the tree and ship what it held.
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", *_setuptools()["package-dir"].values()):  # type: ignore[attr-defined]
        if "/" in name:
            continue  # a sub-folder of one copied whole
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(path, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("poolwarden-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    config = _setuptools()
    folders: dict[str, str] = config["package-dir"]  # type: ignore[assignment]
    expected = set()
    for package, folder in folders.items():
        for source in (ROOT / folder).rglob("*.py"):
            if not (source.parent / "__init__.py").exists():
                continue  # not in a package (no such file ships, none is imported)
            relative = source.relative_to(ROOT / folder)
            expected.add("/".join([*package.split("."), *relative.parts]))
    data: dict[str, list[str]] = config["package-data"]  # type: ignore[assignment]
    for package, names in data.items():
        expected |= {"/".join([*package.split("."), name]) for name in names}
    assert expected - shipped == set()
