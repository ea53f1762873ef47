"""The command line's grammar: every command, its options, their defaults and help; the seed's flags.

Options several commands share (``--json``, ``--db``, ``--workers``) are added by one function
each rather than by argparse parent parsers: a parent's options come first in a command's
``--help``, and each command keeps its options in the order it has always listed them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import TypeAlias

from poolwarden.cli import bench_commands, commands

__all__ = ["SEED_FLAGS", "build_parser", "positive_int", "positive_seconds", "translate_seed_flags"]

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]

DEFAULT_DB = "poolwarden.db"
WORKER_KINDS = ("auto", "chromium", "firefox", "simulated")
LAST_LINE = "print one JSON object as the last line"

SEED_FLAGS = ("--test-recovery", "--export-telemetry", "--connection-id", "--detailed")
"""The seed's flags a command line may start with instead of a command."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def _json_option(parser: argparse.ArgumentParser, help: str | None = LAST_LINE) -> None:
    """``--json``: print the result as JSON (how, ``help`` says)."""
    parser.add_argument("--json", action="store_true", help=help)


def _db_option(parser: argparse.ArgumentParser, *, required: bool, help: str | None = None) -> None:
    """``--db PATH``: the event log, required or ``poolwarden.db`` by default."""
    if required:
        parser.add_argument("--db", required=True, metavar="PATH", help=help)
    else:
        parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=help)


def _pool_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--pool NAME``: only what the pool of that name wrote to a log several pools share
    (``poolwarden.pool_streams.pool_of`` says which streams are its)."""
    parser.add_argument("--pool", metavar="NAME", help=f"only {what} of the pool of this name")


def _workers_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--workers``: which kind of worker serves (``auto`` by default)."""
    parser.add_argument("--workers", choices=WORKER_KINDS, default="auto", help=help)


def _command(
    group: Commands, name: str, help: str, handler: Handler, *, description: str | None = None
) -> argparse.ArgumentParser:
    """A command (or subcommand) in ``group`` that runs ``handler``."""
    parser = group.add_parser(name, help=help, description=description)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="poolwarden",
        description="Keep a pool of browser-based AI accelerators serving through failure.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(top)
    _add_db(top)
    _add_bench(top)
    _add_log_readers(top)
    return parser


def _add_demo(top: Commands) -> None:
    demo = _command(
        top,
        "demo",
        "the main job: a pool serving under injected faults, recorded in the event log",
        commands.demo,
    )
    _workers_option(demo, "auto: real Chromium if installed, else simulated workers (default auto)")
    demo.add_argument("--connections", type=positive_int, default=3, help="browser connections (default 3)")
    demo.add_argument("--duration", type=positive_seconds, default=15.0, help="seconds of load (default 15)")
    demo.add_argument(
        "--faults",
        default=None,
        help="comma-separated faults to inject, in order (default: all of "
        "browser_kill,renderer_crash,page_hang,socket_drop,device_lost; '' for none)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed for inputs and fault targets")
    demo.add_argument("--durability", choices=("sync", "buffered"), default="buffered")
    demo.add_argument(
        "--pool-name",
        default="main",
        help="the pool's name: its streams and its lease in the log (default main); a second "
        "pool of the same name on the same log is refused while the first runs",
    )
    _db_option(demo, required=False, help="the event log (default ./poolwarden.db)")
    _json_option(demo, "print the summary as one JSON object, last line")


def _add_db(top: Commands) -> None:
    db = top.add_parser("db", help="look after a database file: schema revision, upgrades, integrity")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("current", commands.db_current, "print the file's schema revision and the code's"),
        (
            "upgrade",
            commands.db_upgrade,
            "bring the file's schema to the code's head (creating the file if missing)",
        ),
        (
            "check",
            commands.db_check,
            "schema at head and PRAGMA integrity_check; non-zero exit on any problem",
        ),
        ("leases", commands.db_leases, "which pool names are held, by whom, until when"),
    ):
        action = _command(actions, name, text, handler, description=text)
        _db_option(action, required=True, help="the SQLite file")


def _add_bench(top: Commands) -> None:
    bench = top.add_parser("bench", help="benchmarks, each against a same-process baseline")
    benchmarks = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)

    store = _command(
        benchmarks, "store", "append and replay speed against raw sqlite3 (or asyncpg)", bench_commands.store
    )
    store.add_argument("--events", type=int, default=200_000, help="events to append (default 200,000)")
    store.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="a PostgreSQL URL: run there, against raw asyncpg (default: SQLite, in a temporary folder)",
    )
    store.add_argument(
        "--sync-events", type=int, default=None, help="events for the sync-mode run (default: --events)"
    )
    _json_option(store)

    lifecycle = _command(
        benchmarks,
        "lifecycle",
        "recovery decision cost against a bare trigger; restore against JSON decoding",
        bench_commands.lifecycle,
    )
    lifecycle.add_argument("--connections", type=int, default=10_000, help="connections to restore")
    lifecycle.add_argument("--recoveries", type=int, default=20_000, help="recoveries to decide per round")
    lifecycle.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the best")
    _json_option(lifecycle)

    recovery = _command(
        benchmarks,
        "recovery",
        "inject each fault into a live worker and time it to a verified HEALTHY",
        bench_commands.recovery,
    )
    recovery.add_argument(
        "--workers", choices=["chromium", "firefox", "simulated"], default="chromium", help="the worker kind"
    )
    recovery.add_argument("--repeat", type=int, default=3, help="injections of each fault (default 3)")
    recovery.add_argument(
        "--ping-timeout", type=float, default=0.5, help="the ping rung's (and heartbeat's) timeout, seconds"
    )
    recovery.add_argument(
        "--warm-spares",
        type=int,
        default=0,
        help="warm spare browsers the restart rung promotes instead of launching (default 0)",
    )
    recovery.add_argument(
        "--faults",
        nargs="+",
        choices=["browser_kill", "renderer_crash", "page_hang", "socket_drop", "device_lost"],
        default=(),
        help="only these faults (default: all)",
    )
    recovery.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds where in the heartbeat's cycle each fault lands (default 0)",
    )
    _json_option(recovery)

    pool = _command(
        benchmarks, "pool", "inference through the pool against the bare bridge", bench_commands.pool
    )
    pool.add_argument("--requests", type=int, default=20_000, help="requests per run (default 20,000)")
    pool.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    _json_option(pool)

    breaker = _command(
        benchmarks,
        "breaker",
        "protected call against a bare call; creating and restoring breakers",
        bench_commands.breaker,
    )
    breaker.add_argument("--calls", type=int, default=1_000_000, help="calls timed for the hot path")
    breaker.add_argument("--events", type=int, default=1_000_000, help="events in the restore log")
    breaker.add_argument("--breakers", type=int, default=10_000, help="breakers in the restore log")
    breaker.add_argument("--snapshot-every", type=int, default=10, help="events between snapshots")
    breaker.add_argument(
        "--idle-breakers",
        type=int,
        default=100_000,
        help="breakers alive in the idle-cost measure, in its own process (default 100,000; 0: skip)",
    )
    _json_option(breaker)

    analysis = _command(
        benchmarks,
        "analysis",
        "load_events against pandas.read_sql on the same file",
        bench_commands.analysis,
    )
    analysis.add_argument(
        "--events", type=int, default=1_000_000, help="events in the timed log (default 1,000,000)"
    )
    analysis.add_argument(
        "--rss-events",
        type=int,
        default=3_000_000,
        help="events in the log whose load's peak RSS is measured (default 3,000,000; 0: none)",
    )
    analysis.add_argument(
        "--repeat", type=int, default=3, help="fresh-process runs of each load, alternately (default 3)"
    )
    _json_option(analysis)

    fuzz = _command(
        benchmarks,
        "fuzz",
        "hostile frames through both wire parsers; exit 1 if any escapes ProtocolError",
        bench_commands.fuzz,
    )
    fuzz.add_argument("--frames", type=int, default=100_000, help="frames to parse (default 100,000)")
    fuzz.add_argument("--seed", type=int, default=0, help="seed of the frames drawn")
    _json_option(fuzz)

    crash = _command(
        benchmarks,
        "crash",
        "SIGKILL sync appenders and durable-breaker processes; exit 1 if anything acknowledged is lost",
        bench_commands.crash,
    )
    crash.add_argument("--kills", type=int, default=100, help="children to kill (default 100)")
    crash.add_argument("--seed", type=int, default=0, help="seed of the kill times and the children's work")
    _json_option(crash)


def _add_log_readers(top: Commands) -> None:
    """The commands that read a log (and ``test-recovery``, which writes one and reads it back)."""
    breakers = _command(
        top, "breakers", "every breaker's state as last persisted and as it stands now", commands.breakers
    )
    _db_option(breakers, required=True)
    _pool_option(breakers, "the breakers")
    _json_option(breakers, "one JSON array")

    analyze = _command(
        top, "analyze", "write a post-mortem report (HTML + PNG plots) from a log", commands.analyze
    )
    _db_option(analyze, required=True)
    analyze.add_argument("--out", required=True, metavar="DIR")
    analyze.add_argument("--policy", metavar="FILE", help="a breaker policy (JSON) for a what-if section")
    _pool_option(analyze, "the events (default: the whole log, with a section per pool)")

    telemetry = _command(top, "telemetry", "the seed's telemetry, counted from a log", commands.telemetry)
    _db_option(telemetry, required=False)
    telemetry.add_argument("--detailed", action="store_true", help="per connection, breaker and model")
    telemetry.add_argument("--output", metavar="FILE", help="write the JSON here instead of stdout")
    telemetry.add_argument(
        "--prometheus",
        action="store_true",
        help="Prometheus text exposition instead of JSON (needs poolwarden[prometheus])",
    )
    _pool_option(telemetry, "the figures (default: the whole log, with a section per pool)")

    trial = _command(
        top,
        "test-recovery",
        "start a pool, inject a fault, show the ladder recover it and how fast",
        commands.recovery_trial,
    )
    trial.add_argument("--connection-id", help="the connection to hurt (default: the one holding the model)")
    trial.add_argument(
        "--fault",
        default="page_hang",
        choices=("browser_kill", "renderer_crash", "page_hang", "socket_drop", "device_lost"),
    )
    _workers_option(trial)
    _db_option(trial, required=False)
    _json_option(trial, None)

    rolling = _command(
        top,
        "rolling-restart",
        "start a pool under load, restart each browser in turn (one at a time); failed must be 0",
        commands.rolling_restart,
    )
    rolling.add_argument("--connections", type=int, default=2, help="browser connections (default 2)")
    rolling.add_argument("--clients", type=int, default=4, help="client loops sending requests (default 4)")
    _workers_option(rolling)
    _db_option(rolling, required=False)
    _json_option(rolling)

    soak = _command(
        top,
        "soak",
        "a long run under load and a fault every few seconds: lost, wrong, RSS, browser PSS, leaks",
        commands.soak,
    )
    _workers_option(soak)
    soak.add_argument("--connections", type=int, default=2, help="browser connections (default 2)")
    soak.add_argument("--duration", type=float, default=3600.0, help="seconds of load (default 3600)")
    soak.add_argument(
        "--fault-every", type=float, default=10.0, help="seconds between injected faults (default 10)"
    )
    _db_option(soak, required=False, help="the event log (default ./poolwarden.db)")
    _json_option(soak)

    whatif = _command(top, "whatif", "replay a log's breaker calls through another policy", commands.whatif)
    _db_option(whatif, required=True)
    whatif.add_argument("--policy", required=True, metavar="FILE", help="a BreakerPolicy as JSON or TOML")
    _json_option(whatif, None)

    policy = top.add_parser("policy", help="breaker policy files")
    policy_actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    text = "validate a breaker policy file (JSON or TOML) and print what it means"
    check = _command(policy_actions, "check", text, commands.policy_check, description=text)
    check.add_argument("--policy", required=True, metavar="FILE", help="a BreakerPolicy as JSON or TOML")
    _json_option(check, "the complete policy, every default filled in")

    events = _command(top, "events", "print the event log", commands.events)
    _db_option(events, required=True)
    events.add_argument("--stream", help="only this stream (or streams starting with it, if it ends in /)")
    events.add_argument("--type", action="append", help="only events of this type (repeatable)")
    _pool_option(events, "the streams (a fleet's log holds several pools)")
    events.add_argument("--limit", type=int, default=None, help="at most this many (the last ones)")
    events.add_argument("--follow", action="store_true", help="keep printing new events as they land")
    _json_option(events, "one JSON object per line")


def translate_seed_flags(argv: Sequence[str]) -> list[str] | None:
    """The seed's flags (``--test-recovery``, ``--export-telemetry``) as subcommand arguments."""
    seed = argparse.ArgumentParser(prog="poolwarden", add_help=False)
    seed.add_argument("--test-recovery", action="store_true")
    seed.add_argument("--export-telemetry", action="store_true")
    seed.add_argument("--connection-id")
    seed.add_argument("--detailed", action="store_true")
    seed.add_argument("--output")
    seed.add_argument("--db", default=DEFAULT_DB)
    seed.add_argument("--workers", default="auto")
    args, rest = seed.parse_known_args(list(argv))
    if args.test_recovery:
        translated = ["test-recovery", "--db", args.db, "--workers", args.workers]
        return translated + (["--connection-id", args.connection_id] if args.connection_id else []) + rest
    if args.export_telemetry:
        translated = ["telemetry", "--db", args.db]
        return (
            translated
            + (["--detailed"] if args.detailed else [])
            + (["--output", args.output] if args.output else [])
            + rest
        )
    return None
