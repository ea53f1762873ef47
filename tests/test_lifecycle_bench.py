"""The lifecycle benchmark runs and checks what it measured (its timings are not asserted)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from poolwarden.cli import main


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """`poolwarden bench lifecycle --json ARGV`: exit 0, and its last line parsed."""
    assert main(["bench", "lifecycle", "--json", *argv]) == 0
    last: str = capsys.readouterr().out.strip().splitlines()[-1]
    figures: dict[str, Any] = json.loads(last)
    return figures


def test_bench_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """A small run restores every connection it recorded and reports each figure."""
    figures = bench(capsys, "--connections", "20", "--recoveries", "10", "--rounds", "1")
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
    figures = bench(capsys, "--connections", "5", "--recoveries", "5", "--rounds", "1")
    assert figures["connections"] == 5
