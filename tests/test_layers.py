"""The architecture holds: layers import only downwards, no import loop, the pure model is pure.

The import graph is read from the source (every ``import`` statement, including those inside
functions and under ``TYPE_CHECKING``: a type-only import is still a dependency of the design),
so a forbidden import fails here before it can slow anything down. docs/architecture.md draws
the same layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "core": "poolwarden",
    "storage": "poolwarden.storage",
    "analysis": "poolwarden.analysis",
    "migrations": "poolwarden.migrations",
}

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (layer, module prefixes), lowest first. A module may import its own layer and those below.
    ("pure model", ("poolwarden.<top>",)),
    ("storage", ("poolwarden.storage", "poolwarden.migrations")),
    ("edges", ("poolwarden.bridge", "poolwarden.browser", "poolwarden.workers", "poolwarden.worker_page")),
    ("drivers", ("poolwarden.aio",)),
    ("telemetry and analysis", ("poolwarden.telemetry", "poolwarden.analysis")),
    ("pool", ("poolwarden.pool",)),
    (
        "faces",
        ("poolwarden.cli", "poolwarden.compat", "poolwarden.bench", "poolwarden", "poolwarden.__main__"),
    ),
)

PURE_POOL_HELPERS = (
    "poolwarden.pool.placement",
    "poolwarden.pool.routing",
    "poolwarden.pool.tally",
    "poolwarden.pool.retry_budget",
    "poolwarden.pool.results",
)
"""Modules of the pool that decide without I/O; they are held to the pure model's rule."""

IO_LIBRARIES = frozenset({"asyncio", "sqlalchemy", "aiosqlite", "websockets", "psutil"})
"""What the pure model never imports: no event loop, no SQL, no sockets, no process sampling."""


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: its import name -> its file."""
    modules: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(path: Path, modules: Mapping[str, Path]) -> tuple[set[str], set[str]]:
    """(poolwarden modules, other top-level packages) that the file at ``path`` imports."""
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                (ours if name.split(".")[0] == "poolwarden" else theirs).add(name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "poolwarden":
                theirs.add(node.module)
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                ours.add(full if full in modules else node.module)
    return {m for m in ours if m in modules}, {m.split(".")[0] for m in theirs}


def import_graph(root: Path = ROOT) -> dict[str, tuple[set[str], set[str]]]:
    modules = discover(root)
    return {name: imports_of(path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of the layer ``module`` belongs to (longest prefix wins)."""
    best, best_length = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "poolwarden.<top>":  # a module directly in core/
                matches = module.count(".") == 1 and module.startswith("poolwarden.")
                length = len("poolwarden.")
            elif prefix == "poolwarden":  # the package itself (its public names), not its children
                matches, length = module == prefix, len(prefix)
            else:
                matches = module == prefix or module.startswith(prefix + ".")
                length = len(prefix)
            if matches and length > best_length:
                best, best_length = index, length
    if best < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


def is_pure(module: str) -> bool:
    return layer_of(module) == 0 or module in PURE_POOL_HELPERS


def layer_violations(graph: Mapping[str, tuple[set[str], set[str]]]) -> list[str]:
    found = []
    for module, (ours, theirs) in sorted(graph.items()):
        for target in sorted(ours):
            if layer_of(target) > layer_of(module):
                below, above = LAYERS[layer_of(module)][0], LAYERS[layer_of(target)][0]
                found.append(f"{module} ({below}) imports {target} ({above})")
        if is_pure(module):
            found.extend(f"{module} is pure but imports {lib}" for lib in sorted(theirs & IO_LIBRARIES))
            found.extend(
                f"{module} is pure but imports {target}" for target in sorted(ours) if not is_pure(target)
            )
    return found


def cycles(graph: Mapping[str, tuple[set[str], set[str]]]) -> list[list[str]]:
    """Every strongly connected set of modules larger than one (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    counter = 0

    def strongconnect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node][0]):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node][0]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in discover():
        layer_of(module)


def test_layers_import_only_downwards_and_the_pure_model_imports_no_io() -> None:
    assert layer_violations(import_graph()) == []


def test_there_is_no_import_loop() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_forbidden_import(tmp_path: Path) -> None:
    """A copy of the tree with one bad import added fails both checks (they can fail)."""
    graph = import_graph()
    broken = {name: (set(ours), set(theirs)) for name, (ours, theirs) in graph.items()}
    broken["poolwarden.breaker"][1].add("asyncio")
    broken["poolwarden.breaker"][0].add("poolwarden.pool.pool")
    broken["poolwarden.storage.base"][0].add("poolwarden.aio.durable_breakers")
    violations = layer_violations(broken)
    assert "poolwarden.breaker is pure but imports asyncio" in violations
    assert any(
        v.startswith("poolwarden.breaker (pure model) imports poolwarden.pool.pool") for v in violations
    )
    assert any(v.startswith("poolwarden.storage.base (storage) imports poolwarden.aio") for v in violations)
    assert cycles(broken) != []


@pytest.mark.parametrize(
    "module",
    [
        "poolwarden.breaker",
        "poolwarden.lifecycle",
        "poolwarden.memory",
        "poolwarden.protocol",
        *PURE_POOL_HELPERS,
    ],
)
def test_importing_a_pure_module_loads_no_io_library(module: str) -> None:
    """Measured on a fresh interpreter: what ``import`` really loads, not only what the file names."""
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(sorted(m for m in {sorted(IO_LIBRARIES)!r} if m in sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"importing {module} loaded {loaded.stdout.strip()}"
