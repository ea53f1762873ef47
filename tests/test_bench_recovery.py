"""The recovery benchmark runs on simulated workers and reports every fault (timings not asserted)."""

from __future__ import annotations

import json

import pytest

from poolwarden.cli import main


def test_bench_recovery_json_reports_every_fault_recovered(capsys: pytest.CaptureFixture[str]) -> None:
    """`poolwarden bench recovery --workers simulated --json` recovers each fault at its rung."""
    code = main(
        ["bench", "recovery", "--workers", "simulated", "--repeat", "1", "--json", "--ping-timeout", "0.2"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["workers"] == "simulated"
    assert result["ping_timeout_s"] == 0.2
    faults = result["faults"]
    assert set(faults) == {"browser_kill", "renderer_crash", "page_hang", "socket_drop", "device_lost"}
    assert {name: f["rung"] for name, f in faults.items()} == {
        "browser_kill": "restart",
        "renderer_crash": "reconnect",
        "page_hang": "reconnect",
        "socket_drop": "reconnect",
        "device_lost": "ping",
    }
    assert all(f["recovered"] and f["runs"] == 1 and f["median_s"] > 0 for f in faults.values())
