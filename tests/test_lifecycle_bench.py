"""The lifecycle benchmark runs and checks what it measured (its timings are not asserted)."""

from __future__ import annotations

import json

import pytest

from poolwarden.bench.lifecycle import run
from poolwarden.cli import main


def test_bench_reports_every_figure() -> None:
    """A small run restores every connection it recorded and reports each figure."""
    figures = run(connections=20, recoveries=10, rounds=1)
    assert figures["connections"] == 20
    assert figures["events"] == 20 * 12
    for key in (
        "recovery_us",
        "trigger_us",
        "restore_s",
        "json_decode_s",
        "restore_ratio",
        "bytes_per_connection",
    ):
        assert figures[key] > 0


def test_bench_json_is_the_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`poolwarden bench lifecycle --json` prints one JSON object as its last line."""
    code = main(["bench", "lifecycle", "--json", "--connections", "5", "--recoveries", "5", "--rounds", "1"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["connections"] == 5
