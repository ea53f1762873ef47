"""What the command line prints, read as a user reads it: pipes, refusals, times, faults, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from poolwarden.cli import main
from poolwarden.cli.demo import DemoOptions, demo_logging, print_summary, run_demo
from poolwarden.cli.eventlog import display_value, format_event
from poolwarden.errors import CircuitOpen, ConfigurationError
from poolwarden.events import NewEvent, RecordedEvent
from poolwarden.storage import open_store

T0 = 1_796_401_500.0


@pytest.fixture
def big_log(tmp_path: Path) -> Path:
    """A log of 20,000 events: more than a pipe's buffer holds once printed."""
    db = tmp_path / "big.db"

    async def write() -> None:
        async with open_store(db) as store:
            events = [NewEvent(type="Tick", occurred_at=T0 + i, payload={"i": i}) for i in range(20_000)]
            await store.append("ticks", events)

    asyncio.run(write())
    return db


@pytest.mark.parametrize("command", [["events"], ["events", "--json"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(big_log: Path, command: list[str]) -> None:
    """`poolwarden events | head -1` prints one line, no traceback, and exits as SIGPIPE would (141)."""
    poolwarden = f"{sys.executable} -m poolwarden {' '.join(command)} --db {big_log}"
    shell = f"{poolwarden} | head -1; echo ${{PIPESTATUS[0]}} >&2"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120, check=False)
    assert len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "141"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--connections", "0", "must be at least 1, not 0"),
        ("--duration", "-1", "must be a number of seconds above 0, not -1"),
        ("--duration", "0", "must be a number of seconds above 0, not 0"),
    ],
)
def test_demo_refuses_bad_numbers_before_printing_anything(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bad --connections or --duration is a usage error (2), said before any header line."""
    with pytest.raises(SystemExit) as stopped:
        main(["demo", "--workers", "simulated", "--db", str(tmp_path / "d.db"), option, value])
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "poolwarden demo:" not in err.replace("poolwarden demo: error:", "")
    assert message in err
    assert not (tmp_path / "d.db").exists()


async def test_run_demo_refuses_bad_options_before_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    """Called from Python, the same numbers are a ConfigurationError, and nothing is printed."""
    for options in (DemoOptions(connections=0), DemoOptions(duration=-1.0)):
        with pytest.raises(ConfigurationError):
            await run_demo(options, live=False)
    assert capsys.readouterr() == ("", "")


def test_the_summary_lists_only_faults_that_were_injected(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault the JSON marks injected: false is under "faults not injected", with why; each
    injected fault says what became of it."""
    summary = {
        "connections": 2,
        "workers": "simulated",
        "requests": 10,
        "served": 10,
        "requests_lost": 0,
        "errors_by_kind": {},
        "faults": [
            {
                "fault": "browser_kill",
                "connection_id": "conn-0",
                "injected": True,
                "outcome": "recovered by restart",
            },
            {
                "fault": "socket_drop",
                "connection_id": "conn-1",
                "injected": True,
                "outcome": "healed without recovery",
            },
            {"fault": "device_lost", "connection_id": "conn-1", "injected": False, "why": "not connected"},
        ],
        "recoveries": {"restart": 1},
        "backends": {"simulated": 10},
        "latency_ms": {"p50": 1.0, "p99": 2.0},
        "breakers": [],
        "db": "d.db",
    }
    monkeypatch.setenv("COLUMNS", "200")  # one table row a line
    print_summary(summary)
    out = capsys.readouterr().out
    injected = out[out.index("faults injected") : out.index("faults not injected")]
    assert "browser_kill on conn-0: recovered by restart" in injected
    assert "socket_drop on conn-1: healed without recovery" in injected
    assert "device_lost" not in injected
    assert "device_lost: not connected" in out[out.index("faults not injected") :]


async def test_every_injected_fault_of_the_demo_says_what_became_of_it(tmp_path: Path) -> None:
    """In a demo run each injected fault has an outcome: recovered by a rung, or healed by itself."""
    summary = await run_demo(
        DemoOptions(workers="simulated", connections=3, duration=4.0, db=str(tmp_path / "d.db")), live=False
    )
    for fault in summary["faults"]:
        if fault["injected"]:
            assert re.match(
                r"recovered by (ping|reconnect|restart)|healed without recovery|quarantined", fault["outcome"]
            ), fault
    healed = [f for f in summary["faults"] if f.get("outcome", "").startswith("healed")]
    assert all(f["fault"] == "socket_drop" for f in healed)


def test_an_unknown_event_type_is_named_with_the_close_ones(
    big_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`events --type BreakerOpen` fails (1) naming BreakerOpened; a name near none lists the log's."""
    assert main(["events", "--db", str(big_log), "--type", "BreakerOpen"]) == 1
    err = capsys.readouterr().err
    assert "no event type is named 'BreakerOpen'; did you mean BreakerOpened" in err
    assert main(["events", "--db", str(big_log), "--type", "Nonexistent"]) == 1
    err = capsys.readouterr().err
    assert "no event type is named 'Nonexistent'; the log holds Tick" in err
    assert main(["events", "--db", str(big_log), "--type", "Tick", "--limit", "1"]) == 0


def test_circuit_open_says_when_in_iso_time_and_seconds_from_now() -> None:
    """The message shows the retry time as ISO (UTC) and how far off it is, not a raw epoch."""
    error = CircuitOpen("conn-0", "model conn-0/toy-mlp: open until 1796401520.620", 1796401520.62, now=T0)
    assert str(error) == (
        "circuit 'conn-0' is open: model conn-0/toy-mlp: open until 2026-12-04T16:25:20.620Z"
        " (retry in 20.6 s)"
    )
    assert error.reason == "model conn-0/toy-mlp: open until 1796401520.620"  # the breaker's words, kept


def test_printed_events_round_floats_and_show_epochs_as_times() -> None:
    """latency_ms=2.7149999999965075 prints as 2.715; first_at, deadline and retry_at as ISO times."""
    event = RecordedEvent.of(
        NewEvent(
            type="InferencesServed",
            occurred_at=T0,
            latency_ms=2.7149999999965075,
            payload={
                "first_at": T0,
                "start_deadline": T0 + 5,
                "n": 3,
                "latency_ms": [1.23456, 2.0],
                "count_at": 7,
            },
        ),
        position=1,
        stream="pool/main",
        version=1,
        recorded_at=T0,
    )
    line = format_event(event)
    assert "latency_ms=2.715 " in line
    assert '"first_at":"2026-12-04T16:25:00.000+00:00"' in line
    assert '"start_deadline":"2026-12-04T16:25:05.000+00:00"' in line
    assert '"latency_ms":[1.235,2.0]' in line
    assert '"count_at":7' in line  # a small number under a time-like key is not a time
    assert display_value(True, "at") is True


def test_the_demo_routes_page_console_lines_through_one_logging_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A page's console warning goes to the live display's console (printed above its table), once,
    not through Python's last-resort handler into the middle of it."""
    page = logging.getLogger("poolwarden.worker")
    buffer = io.StringIO()
    with demo_logging(Console(file=buffer, width=120)):
        page.warning("%s: %s", "conn-0", "GPU device lost; recreating it")
    assert "conn-0: GPU device lost; recreating it" in buffer.getvalue()
    assert capsys.readouterr().err == ""
    with demo_logging(None):
        page.warning("%s: %s", "conn-1", "GPU device lost; recreating it")
    assert capsys.readouterr().err.splitlines() == [
        "WARNING poolwarden.worker: conn-1: GPU device lost; recreating it"
    ]
    assert logging.getLogger("poolwarden").handlers == []  # put back as it was


def test_events_of_one_pool_of_a_fleet_s_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`events --pool NAME` keeps that pool's streams (its own, its connections' lifecycles and
    breakers) out of a log that several pools and a standalone breaker share."""
    import asyncio

    from poolwarden.events import NewEvent
    from poolwarden.storage import open_store

    db = tmp_path / "fleet.db"
    streams = [
        "pool/main",
        "pool/main/bridge",
        "connection/conn-0",
        "breaker/conn-0/toy-mlp",
        "pool/east",
        "pool/east/memory",
        "connection/east.conn-0",
        "breaker/east.conn-1",
        "breaker/payments",
    ]

    async def write() -> None:
        async with open_store(db) as store:
            for stream in streams:
                await store.append(stream, [NewEvent(type="Happened", occurred_at=1_800_000_000.0)])

    asyncio.run(write())
    for pool, expected in (
        ("east", {"pool/east", "pool/east/memory", "connection/east.conn-0", "breaker/east.conn-1"}),
        ("main", {"pool/main", "pool/main/bridge", "connection/conn-0", "breaker/conn-0/toy-mlp"}),
    ):
        assert main(["events", "--db", str(db), "--pool", pool, "--json"]) == 0
        printed = {json.loads(line)["stream"] for line in capsys.readouterr().out.splitlines()}
        assert printed == expected
