"""``poolwarden bench recovery`` on the simulated worker: every fault recovered, the issue's JSON shape."""

from __future__ import annotations

import itertools
import json

import pytest

from poolwarden.bench.recovery import HEARTBEAT_INTERVAL_S, injection_phases
from poolwarden.cli import main


def test_bench_recovery_prints_the_issue_json_as_its_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    """One run of each fault recovers at its rung, and the last line is exactly the issue's object."""
    assert main(["bench", "recovery", "--workers", "simulated", "--repeat", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"workers", "ping_timeout_s", "heartbeat_interval_s", "seed", "faults"}
    assert result["workers"] == "simulated"
    assert result["ping_timeout_s"] == 0.5
    assert (result["heartbeat_interval_s"], result["seed"]) == (HEARTBEAT_INTERVAL_S, 0)
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


def test_injections_land_anywhere_in_the_heartbeats_cycle() -> None:
    """The delays before injections spread over one heartbeat interval, the same for one seed."""
    delays = list(itertools.islice(injection_phases(3), 400))
    assert delays == list(itertools.islice(injection_phases(3), 400))
    assert delays != list(itertools.islice(injection_phases(4), 400))
    assert all(0.0 <= delay <= HEARTBEAT_INTERVAL_S for delay in delays)
    # Uniform: each tenth of the interval gets some of the 400 (a fixed point would fill one).
    tenths = {min(9, int(delay / HEARTBEAT_INTERVAL_S * 10)) for delay in delays}
    assert tenths == set(range(10))
