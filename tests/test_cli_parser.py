"""The command line's surface: every command's ``--help``, where ``--json`` is accepted, each
command's defaults and required options, and the seed's flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from poolwarden.cli import main
from poolwarden.cli.parser import build_parser

COMMANDS = (
    "demo",
    "db",
    "db current",
    "db upgrade",
    "db check",
    "db leases",
    "bench",
    "bench store",
    "bench lifecycle",
    "bench recovery",
    "bench pool",
    "bench breaker",
    "bench analysis",
    "bench fuzz",
    "bench crash",
    "breakers",
    "analyze",
    "telemetry",
    "test-recovery",
    "rolling-restart",
    "soak",
    "whatif",
    "policy",
    "policy check",
    "events",
)
"""Every command and subcommand."""

REQUIRED: dict[str, list[str]] = {
    "db current": ["--db", "x.db"],
    "db upgrade": ["--db", "x.db"],
    "db check": ["--db", "x.db"],
    "db leases": ["--db", "x.db"],
    "breakers": ["--db", "x.db"],
    "analyze": ["--db", "x.db", "--out", "out"],
    "whatif": ["--db", "x.db", "--policy", "p.json"],
    "events": ["--db", "x.db"],
    "policy check": ["--policy", "p.toml"],
}
"""The options each command cannot run without (the others need none)."""

WITH_JSON = (
    "demo",
    "bench store",
    "bench lifecycle",
    "bench recovery",
    "bench pool",
    "bench breaker",
    "bench analysis",
    "bench fuzz",
    "bench crash",
    "breakers",
    "test-recovery",
    "rolling-restart",
    "soak",
    "whatif",
    "policy check",
    "events",
)
WITHOUT_JSON = ("db current", "db upgrade", "db check", "db leases", "analyze", "telemetry")

DEFAULTS: dict[str, dict[str, Any]] = {
    "soak": {
        "command": "soak",
        "workers": "auto",
        "connections": 2,
        "duration": 3600.0,
        "fault_every": 10.0,
        "db": "poolwarden.db",
        "json": False,
    },
    "rolling-restart": {
        "command": "rolling-restart",
        "connections": 2,
        "clients": 4,
        "workers": "auto",
        "db": "poolwarden.db",
        "json": False,
    },
    "demo": {
        "command": "demo",
        "workers": "auto",
        "connections": 3,
        "duration": 15.0,
        "faults": None,
        "seed": 7,
        "durability": "buffered",
        "pool_name": "main",
        "db": "poolwarden.db",
        "json": False,
    },
    "db current": {"command": "db", "db_command": "current", "db": "x.db"},
    "db upgrade": {"command": "db", "db_command": "upgrade", "db": "x.db"},
    "db check": {"command": "db", "db_command": "check", "db": "x.db"},
    "db leases": {"command": "db", "db_command": "leases", "db": "x.db"},
    "bench store": {
        "command": "bench",
        "bench_command": "store",
        "events": 200_000,
        "db": None,
        "sync_events": None,
        "json": False,
    },
    "bench lifecycle": {
        "command": "bench",
        "bench_command": "lifecycle",
        "connections": 10_000,
        "recoveries": 20_000,
        "rounds": 3,
        "json": False,
    },
    "bench recovery": {
        "command": "bench",
        "bench_command": "recovery",
        "workers": "chromium",
        "repeat": 3,
        "ping_timeout": 0.5,
        "warm_spares": 0,
        "faults": (),
        "seed": 0,
        "json": False,
    },
    "bench pool": {
        "command": "bench",
        "bench_command": "pool",
        "requests": 20_000,
        "concurrency": 16,
        "json": False,
    },
    "bench breaker": {
        "command": "bench",
        "bench_command": "breaker",
        "calls": 1_000_000,
        "events": 1_000_000,
        "breakers": 10_000,
        "snapshot_every": 10,
        "idle_breakers": 100_000,
        "json": False,
    },
    "bench analysis": {
        "command": "bench",
        "bench_command": "analysis",
        "events": 1_000_000,
        "rss_events": 3_000_000,
        "repeat": 3,
        "json": False,
    },
    "bench fuzz": {"command": "bench", "bench_command": "fuzz", "frames": 100_000, "seed": 0, "json": False},
    "bench crash": {"command": "bench", "bench_command": "crash", "kills": 100, "seed": 0, "json": False},
    "breakers": {"command": "breakers", "db": "x.db", "pool": None, "json": False},
    "analyze": {"command": "analyze", "db": "x.db", "out": "out", "policy": None, "pool": None},
    "telemetry": {
        "command": "telemetry",
        "db": "poolwarden.db",
        "detailed": False,
        "output": None,
        "prometheus": False,
        "pool": None,
    },
    "test-recovery": {
        "command": "test-recovery",
        "connection_id": None,
        "fault": "page_hang",
        "workers": "auto",
        "db": "poolwarden.db",
        "json": False,
    },
    "whatif": {"command": "whatif", "db": "x.db", "policy": "p.json", "json": False},
    "policy check": {"command": "policy", "policy_command": "check", "policy": "p.toml", "json": False},
    "events": {
        "command": "events",
        "db": "x.db",
        "stream": None,
        "type": None,
        "pool": None,
        "limit": None,
        "follow": False,
        "json": False,
    },
}


def parse(*argv: str) -> dict[str, Any]:
    """The parsed arguments, without the handler."""
    settings = vars(build_parser().parse_args(argv))
    assert callable(settings.pop("handler"))
    return settings


def test_every_command_is_listed_here() -> None:
    """The lists above name every command the parser has, so each test below covers them all."""
    found: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(" ".join([*path, name]))
                    walk(sub, [*path, name])

    walk(build_parser(), [])
    assert sorted(found) == sorted(COMMANDS)
    assert sorted(DEFAULTS) == sorted(c for c in COMMANDS if c not in ("db", "bench", "policy"))
    assert sorted((*WITH_JSON, *WITHOUT_JSON)) == sorted(DEFAULTS)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` prints the command's usage and exits 0."""
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['poolwarden', *command.split()])} ")
    assert "-h, --help" in out


@pytest.mark.parametrize("command", WITH_JSON)
def test_json_is_accepted(command: str) -> None:
    assert parse(*command.split(), *REQUIRED.get(command, []), "--json")["json"] is True


@pytest.mark.parametrize("command", WITHOUT_JSON)
def test_json_is_refused_where_it_never_was(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command.split(), *REQUIRED.get(command, []), "--json"])
    assert done.value.code == 2
    assert "unrecognized arguments: --json" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(DEFAULTS))
def test_defaults(command: str) -> None:
    """Each command's settings when only its required options are given."""
    assert parse(*command.split(), *REQUIRED.get(command, [])) == DEFAULTS[command]


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_required_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without its required options a command exits 2 and names the first one missing."""
    with pytest.raises(SystemExit) as done:
        main(command.split())
    assert done.value.code == 2
    assert f"the following arguments are required: {REQUIRED[command][0]}" in capsys.readouterr().err


@pytest.mark.parametrize("group", ["db", "bench"])
def test_a_group_without_its_subcommand_is_a_usage_error(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([group])
    assert done.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: poolwarden ")
    for command in ("demo", "db", "bench", "breakers", "analyze", "telemetry", "test-recovery", "whatif"):
        assert command in out


def test_choices_are_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["demo", "--workers", "edge"],
        ["demo", "--durability", "never"],
        ["test-recovery", "--fault", "meteor"],
        ["test-recovery", "--workers", "edge"],
        ["bench", "recovery", "--workers", "auto"],
    ):
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args(argv)
        assert done.value.code == 2, argv
        assert "invalid choice" in capsys.readouterr().err


def test_repeatable_and_typed_options() -> None:
    settings = parse("events", "--db", "x.db", "--type", "A", "--type", "B", "--limit", "5", "--follow")
    assert (settings["type"], settings["limit"], settings["follow"]) == (["A", "B"], 5, True)
    settings = parse("demo", "--faults", "", "--duration", "2.5", "--connections", "4")
    assert (settings["faults"], settings["duration"], settings["connections"]) == ("", 2.5, 4)


def test_seed_test_recovery_flag_reaches_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--test-recovery --connection-id ID`` runs ``test-recovery`` on that connection (here one
    the pool does not have: a clear error, exit 1)."""
    db = tmp_path / "trial.db"
    argv = ["--test-recovery", "--connection-id", "nope", "--workers", "simulated", "--db", str(db)]
    assert main(argv) == 1
    assert "no connection 'nope' in the pool" in capsys.readouterr().err
    assert db.exists()


def test_seed_export_telemetry_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--export-telemetry --detailed --output FILE`` writes the detailed telemetry of ``--db``."""
    db, out = tmp_path / "empty.db", tmp_path / "telemetry.json"
    assert main(["db", "upgrade", "--db", str(db)]) == 0
    assert main(["--export-telemetry", "--db", str(db), "--detailed", "--output", str(out)]) == 0
    assert f"telemetry written to {out}" in capsys.readouterr().err
    telemetry = json.loads(out.read_text())
    assert telemetry["source"] == {"db": str(db), "live": False}
    assert "connection_details" in telemetry
