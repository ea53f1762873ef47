"""Fleet-wide views of a log several pools share: ``events``, ``breakers``, ``telemetry`` and
``analyze`` with ``--pool NAME`` show that pool's alone; without, the whole log and, for
telemetry and the report, a breakdown by pool. The log is written by two real pools
(``tests/fleet_log.py``), on an SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from poolwarden.analysis import load_events, pool_summary
from poolwarden.cli import main
from poolwarden.pool_streams import pool_of, pool_of_connection
from poolwarden.telemetry.from_log import POOL_SECTIONS, telemetry_from_log
from tests.fleet_log import EXPECTED, write_fleet

POOLS = sorted(EXPECTED)


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fleet") / "fleet.db"
    asyncio.run(write_fleet(path))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0, argv
    return capsys.readouterr().out


def _telemetry(capsys: pytest.CaptureFixture[str], db: Path | str, *more: str) -> dict[str, Any]:
    return json.loads(_run(capsys, "telemetry", "--db", str(db), *more))  # type: ignore[no-any-return]


def test_events_of_one_pool_and_of_the_fleet(fleet_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owners = {}
    for name in POOLS:
        lines = _run(capsys, "events", "--db", str(fleet_db), "--pool", name, "--json").splitlines()
        owners[name] = {pool_of(json.loads(line)["stream"]) for line in lines}
    assert owners == {name: {name} for name in POOLS}
    lines = _run(capsys, "events", "--db", str(fleet_db), "--json").splitlines()
    assert {pool_of(json.loads(line)["stream"]) for line in lines} == {*POOLS, None}  # None: payments-api


def test_breakers_of_one_pool(fleet_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in POOLS:
        statuses = json.loads(_run(capsys, "breakers", "--db", str(fleet_db), "--pool", name, "--json"))
        assert statuses, name
        assert {pool_of("breaker/" + s["key"]) for s in statuses} == {name}
        opened = [s["key"] for s in statuses if s["state"] in ("open", "forced_open")]
        assert len(opened) == EXPECTED[name]["open"], opened


def _figures(telemetry: dict[str, Any]) -> dict[str, int]:
    return {
        "connections": telemetry["connections"]["total"],
        "served": telemetry["requests"]["served"],
        "failed_requests": telemetry["requests"]["failed"],
        "recovered": telemetry["recovery"]["recovered"],
        "open": telemetry["circuit_breaker"]["open"],
    }


def _expected(name: str) -> dict[str, int]:
    return {key: value for key, value in EXPECTED[name].items() if key != "faults"}


def test_telemetry_of_one_pool(fleet_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in POOLS:
        telemetry = _telemetry(capsys, fleet_db, "--pool", name, "--detailed")
        assert telemetry["source"]["pool"] == name
        assert "pools" not in telemetry
        assert _figures(telemetry) == _expected(name)
        connections = {d["connection_id"] for d in telemetry["connection_details"]}
        assert {pool_of_connection(c) for c in connections} == {name}
        assert {pool_of("breaker/" + b["key"]) for b in telemetry["breaker_details"]} == {name}
        assert len(telemetry["recent_errors"]) == EXPECTED[name]["failed_requests"]


def test_telemetry_of_the_fleet_breaks_down_by_pool(
    fleet_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole log's figures add up the pools' (and the standalone breaker), and its ``pools``
    section gives each pool exactly what ``--pool NAME`` gives."""
    fleet = _telemetry(capsys, fleet_db)
    assert "pool" not in fleet["source"]
    assert sorted(fleet["pools"]) == POOLS
    for name in POOLS:
        alone = _telemetry(capsys, fleet_db, "--pool", name)
        assert fleet["pools"][name] == {section: alone[section] for section in POOL_SECTIONS}
    totals = _figures(fleet)
    for key in ("connections", "served", "failed_requests", "recovered"):
        assert totals[key] == sum(EXPECTED[name][key] for name in POOLS), key
    assert totals["open"] == sum(EXPECTED[name]["open"] for name in POOLS) + 1  # payments-api


def test_prometheus_text_of_one_pool(fleet_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _run(capsys, "telemetry", "--db", str(fleet_db), "--prometheus", "--pool", "east")
    breakers = set(re.findall(r'circuit_breaker_state\{key="([^"]+)"', text))
    assert breakers
    assert {pool_of("breaker/" + key) for key in breakers} == {"east"}
    assert 'poolwarden_circuit_breakers{state="open"} 1.0' in text


def test_a_name_no_pool_can_have_is_one_line(fleet_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("events", "breakers", "telemetry"):
        assert main([command, "--db", str(fleet_db), "--pool", "East"]) != 0
        assert capsys.readouterr().err.count("\n") == 1, command


def _summary_of(expected: dict[str, int]) -> dict[str, int]:
    return {
        "connections": expected["connections"],
        "requests": expected["served"] + expected["failed_requests"],
        "served": expected["served"],
        "failed_requests": expected["failed_requests"],
        "faults": expected["faults"],
        "recovered": expected["recovered"],
        "open_breakers": expected["open"],
    }


def test_the_analysis_frame_has_each_event_s_pool(fleet_db: Path) -> None:
    df = load_events(fleet_db)
    assert df["pool"].dtype == "category"
    assert [pool_of(str(s)) for s in df["stream"]] == [None if p != p else p for p in df["pool"]]
    summary = pool_summary(df).set_index("pool")
    assert sorted(summary.index) == POOLS
    for name in POOLS:
        row = summary.loc[name]
        assert {key: int(row[key]) for key in _summary_of(EXPECTED[name])} == _summary_of(EXPECTED[name])
        alone = load_events(fleet_db, pool=name)
        assert set(alone["pool"]) == {name}
        assert len(alone) == int((df["pool"] == name).sum())
        assert pool_summary(alone).set_index("pool").loc[name].equals(row)


def _report_rows(page: str) -> dict[str, list[str]]:
    """The Pools section's table, row by row, keyed by pool; its header under ``"pool"``."""
    section = page.split("<h2>Pools</h2>", 1)[1].split("<h2>", 1)[0]
    header = re.findall(r"<th>([^<]*)</th>", section)
    rows = {"pool": header}
    for row in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S):
        cells = re.findall(r"<td>([^<]*)</td>", row)
        if cells:
            rows[cells[0]] = cells
    return rows


def test_the_report_of_a_fleet_has_a_row_per_pool(
    fleet_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(capsys, "analyze", "--db", str(fleet_db), "--out", str(tmp_path / "fleet"))
    rows = _report_rows((tmp_path / "fleet" / "report.html").read_text(encoding="utf-8"))
    header = rows.pop("pool")
    assert sorted(rows) == POOLS
    for name in POOLS:
        shown = dict(zip(header, rows[name], strict=True))
        expected = _summary_of(EXPECTED[name])
        assert {key: int(shown[key]) for key in expected} == expected, name


def test_the_report_of_one_pool(fleet_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "analyze", "--db", str(fleet_db), "--out", str(tmp_path / "east"), "--pool", "east")
    page = (tmp_path / "east" / "report.html").read_text(encoding="utf-8")
    assert "<h1>poolwarden post-mortem of pool east</h1>" in page
    assert "<h2>Pools</h2>" not in page
    assert f"{len(load_events(fleet_db, pool='east')):,} events on" in page
    assert "conn-0" not in page.replace("east.conn-0", "")  # nothing of main's connection


async def test_fleet_views_on_postgresql(postgres_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The same log on PostgreSQL: telemetry per pool and the analysis frame's pools agree."""
    await write_fleet(postgres_db)
    fleet = await telemetry_from_log(postgres_db)
    assert sorted(fleet["pools"]) == POOLS
    for name in POOLS:
        alone = await telemetry_from_log(postgres_db, pool=name)
        assert _figures(alone) == _expected(name)
        assert fleet["pools"][name] == {section: alone[section] for section in POOL_SECTIONS}
    summary = (await asyncio.to_thread(lambda: pool_summary(load_events(postgres_db)))).set_index("pool")
    for name in POOLS:
        row = summary.loc[name]
        assert {key: int(row[key]) for key in _summary_of(EXPECTED[name])} == _summary_of(EXPECTED[name])
    assert await asyncio.to_thread(main, ["events", "--db", postgres_db, "--pool", "east", "--json"]) == 0
    streams = {json.loads(line)["stream"] for line in capsys.readouterr().out.splitlines()}
    assert streams
    assert {pool_of(stream) for stream in streams} == {"east"}
