"""``poolwarden bench recovery`` on the simulated worker: every fault recovered, the issue's JSON shape."""

from __future__ import annotations

import json

import pytest

from poolwarden.cli import main


def test_bench_recovery_prints_the_issue_json_as_its_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    """One run of each fault recovers at its rung, and the last line is exactly the issue's object."""
    assert main(["bench", "recovery", "--workers", "simulated", "--repeat", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"workers", "ping_timeout_s", "faults"}
    assert result["workers"] == "simulated"
    assert result["ping_timeout_s"] == 0.5
    rungs = {fault: figures["rung"] for fault, figures in result["faults"].items()}
    # The simulated worker has no process of its own: a kill shows as a socket that stays down.
    assert rungs == {
        "browser_kill": "reconnect",
        "renderer_crash": "reconnect",
        "page_hang": "reconnect",
        "socket_drop": "none",
        "device_lost": "ping",
    }
    for figures in result["faults"].values():
        assert set(figures) == {"recovered", "rung", "median_s", "runs"}
        assert figures["recovered"] is True
        assert figures["runs"] == 1
        assert figures["median_s"] > 0


def test_bench_recovery_refuses_a_repeat_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    """--repeat 0 ends in one clear error line and a non-zero exit, no traceback."""
    assert main(["bench", "recovery", "--workers", "simulated", "--repeat", "0"]) == 1
    assert "--repeat must be at least 1" in capsys.readouterr().err
