"""``poolwarden demo``: the main job runs, loses no request, and records everything in its log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from poolwarden.cli.demo import DemoOptions, run_demo
from poolwarden.policy import BreakerPolicy
from poolwarden.storage import open_store
from poolwarden.whatif import what_if


async def test_demo_on_simulated_workers_loses_nothing_and_recovers(tmp_path: Path) -> None:
    """Under every fault kind the demo answers every request, right, and the ladder recovers."""
    db = tmp_path / "demo.db"
    summary = await run_demo(
        DemoOptions(workers="simulated", connections=3, duration=6.0, db=str(db)), live=False
    )
    assert summary["requests"] > 100
    assert summary["requests_lost"] == 0
    assert summary["wrong_results"] == 0
    assert summary["served"] + sum(summary["errors_by_kind"].values()) == summary["requests"]
    assert [f["fault"] for f in summary["faults"]] == [
        "browser_kill",
        "renderer_crash",
        "page_hang",
        "socket_drop",
        "device_lost",
    ]
    # A simulated worker has no browser process: a kill shows as a socket that stays down, which
    # the reconnect rung repairs (the restart rung is exercised on real Chromium below).
    assert summary["recoveries"].get("reconnect", 0) >= 2
    keys = {b["key"] for b in summary["breakers"]}
    assert {"conn-0", "conn-1", "conn-2"} <= keys
    # The what-if replays the demo's own log through its own (default) policy exactly.
    async with open_store(db, read_only=True) as store:
        records = [e async for e in store.iter_all() if e.stream.startswith("breaker/")]
    report = what_if(records, BreakerPolicy())
    assert any(b.recorded_opened for b in report.breakers.values())
    for key, result in report.breakers.items():
        assert result.reproduces, (key, result.recorded_transitions, result.transitions)
        assert result.rejected == result.recorded_rejected


def test_demo_cli_json_last_line(tmp_path: Path) -> None:
    """`poolwarden demo --json` ends with one JSON object holding the summary's keys."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolwarden",
            "demo",
            "--workers",
            "simulated",
            "--duration",
            "2",
            "--connections",
            "2",
            "--faults",
            "browser_kill",
            "--db",
            str(tmp_path / "d.db"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"requests", "requests_lost", "errors_by_kind", "recoveries", "breakers"} <= set(summary)
    assert summary["requests_lost"] == 0
    assert all(set(b) == {"key", "state"} for b in summary["breakers"])


@pytest.mark.browser
def test_short_demo_on_real_chromium(tmp_path: Path) -> None:
    """A short demo on real headless Chromium serves requests checked against numpy, loses none."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolwarden",
            "demo",
            "--workers",
            "chromium",
            "--duration",
            "8",
            "--connections",
            "2",
            "--faults",
            "renderer_crash,browser_kill",
            "--db",
            str(tmp_path / "c.db"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["workers"] == "chromium"
    assert summary["served"] > 0
    assert summary["requests_lost"] == 0
    assert summary["wrong_results"] == 0
    assert set(summary["backends"]) <= {"webgpu", "webnn", "js"}
    assert summary["recoveries"].get("restart", 0) >= 1  # the killed browser was restarted
    assert summary["recoveries"].get("reconnect", 0) >= 1  # the crashed renderer was reloaded
