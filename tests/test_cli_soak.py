"""``poolwarden soak``: a short run on simulated workers holds and reports every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolwarden.cli import main


@pytest.mark.slow
def test_a_short_soak_holds_and_reports_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 s with a fault every 1.5 s: nothing lost or wrong, no process leaked, exit 0, all figures."""
    code = main(
        [
            "soak",
            "--workers",
            "simulated",
            "--duration",
            "8",
            "--fault-every",
            "1.5",
            "--db",
            str(tmp_path / "soak.db"),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, report
    assert report["ok"] is True
    assert report["lost"] == 0
    assert report["wrong_results"] == 0
    assert report["leaked_processes"] == []
    assert report["requests"] > 0
    assert sum(report["faults"].values()) >= 3
    assert set(report["rss_mb"]) == {"start", "end", "growth"}
    times = [at for at, _ in report["rss_series_mb"]]
    assert len(times) >= 10  # every twelfth of the run
    assert times == sorted(times)
    assert set(report["browser_pss_mb"]) == {"start", "end", "growth"}
    assert report["latency_ms"]["p50"] is not None
    # breakers of the connections serving at the end, apart from those of replaced ones
    assert isinstance(report["breakers_not_closed"], list)
    assert isinstance(report["retired_breakers_not_closed"], int)
