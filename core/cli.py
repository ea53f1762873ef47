"""The ``poolwarden`` command line.

Every failure poolwarden can name ends in one line on stderr (``poolwarden: <what> (<what to
do>)``) and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from poolwarden.errors import PoolwardenError

__all__ = ["main"]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _db_current(args: argparse.Namespace) -> int:
    from poolwarden.storage.admin import current_revision

    status = current_revision(args.db)
    print(f"{args.db}: revision {status.current or '(none)'}, code head {status.head}: {status.state.value}")
    return EXIT_OK if status.state.value == "current" else EXIT_PROBLEM


def _db_upgrade(args: argparse.Namespace) -> int:
    from poolwarden.storage.admin import upgrade_database

    before, after = asyncio.run(upgrade_database(args.db))
    if before == after:
        print(f"{args.db}: already at revision {after}")
    else:
        print(f"{args.db}: upgraded from {before or '(new file)'} to {after}")
    return EXIT_OK


def _db_check(args: argparse.Namespace) -> int:
    from poolwarden.storage.admin import check_database

    report = check_database(args.db)
    schema = report.schema
    print(f"schema: revision {schema.current or '(none)'}, code head {schema.head}: {schema.state.value}")
    if report.integrity:
        print(f"integrity: {len(report.integrity)} problem(s)")
        for problem in report.integrity[:20]:
            print(f"  {problem}")
    else:
        print("integrity: ok")
    return EXIT_OK if report.ok else EXIT_PROBLEM


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(key) for key in result)
    for key, value in result.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        print(f"{key:<{width}}  {shown}")


def _bench_store(args: argparse.Namespace) -> int:
    from poolwarden.bench.store import run

    print(f"appending {args.events:,} events through the store and through raw sqlite3 ...", file=sys.stderr)
    _print_result(run(events=args.events, sync_events=args.sync_events), args.json)
    return EXIT_OK


def _bench_lifecycle(args: argparse.Namespace) -> int:
    from poolwarden.bench.lifecycle import run

    print(f"deciding recoveries and restoring {args.connections:,} connections ...", file=sys.stderr)
    _print_result(
        run(connections=args.connections, recoveries=args.recoveries, rounds=args.rounds), args.json
    )
    return EXIT_OK


def _bench_recovery(args: argparse.Namespace) -> int:
    from poolwarden.bench.recovery import run

    print(f"injecting each fault {args.repeat} time(s) into one {args.workers} worker ...", file=sys.stderr)
    result = run(workers=args.workers, repeat=args.repeat, ping_timeout=args.ping_timeout)
    if args.json:
        _print_result(result, True)
    else:
        print(f"{'fault':<16}{'recovered':<11}{'rung':<11}{'median_s':>10}{'max_s':>10}{'runs':>6}")
        for fault, figures in result["faults"].items():
            print(
                f"{fault:<16}{figures['recovered']!s:<11}{figures['rung']:<11}"
                f"{figures.get('median_s', '-'):>10}{figures.get('max_s', '-'):>10}{figures['runs']:>6}"
            )
    return EXIT_PROBLEM if any(f["recovered"] is False for f in result["faults"].values()) else EXIT_OK


def _bench_breaker(args: argparse.Namespace) -> int:
    from poolwarden.bench.breaker import run

    result = run(
        args.json,
        calls=args.calls,
        restore_events=args.events,
        restore_breakers=args.breakers,
        snapshot_every=args.snapshot_every,
    )
    _print_result(result, args.json)
    return EXIT_OK


def _breakers(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from poolwarden.breaker_report import breaker_statuses

    statuses = asyncio.run(breaker_statuses(args.db))
    if args.json:
        print(json.dumps([status.as_dict() for status in statuses]))
        return EXIT_OK
    if not statuses:
        print(f"{args.db}: no breakers recorded")
    for status in statuses:
        retry = (
            datetime.fromtimestamp(status.retry_at, tz=UTC).isoformat(timespec="seconds")
            if status.retry_at is not None
            else "-"
        )
        print(f"{status.key:<40} {status.state:<12} now {status.effective_state:<12} retry_at {retry}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from poolwarden.demo import DemoOptions, print_summary, run_demo

    faults = tuple(f for f in args.faults.split(",") if f) if args.faults is not None else None
    options = DemoOptions(
        workers=args.workers,
        connections=args.connections,
        duration=args.duration,
        seed=args.seed,
        durability=args.durability,
        db=args.db,
    )
    if faults is not None:
        options = dataclasses.replace(options, faults=faults)
    summary = asyncio.run(run_demo(options, live=not args.json))
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return EXIT_OK if summary["requests_lost"] == 0 and summary["wrong_results"] == 0 else EXIT_PROBLEM


def _events(args: argparse.Namespace) -> int:
    from poolwarden.eventlog import print_events

    return asyncio.run(
        print_events(
            args.db,
            stream=args.stream,
            types=args.type,
            follow=args.follow,
            as_json=args.json,
            limit=args.limit,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="poolwarden",
        description="Keep a pool of browser-based AI accelerators serving through failure.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the main job: a pool serving under injected faults, recorded in the event log"
    )
    demo.add_argument(
        "--workers",
        choices=("auto", "chromium", "firefox", "simulated"),
        default="auto",
        help="auto: real Chromium if installed, else simulated workers (default auto)",
    )
    demo.add_argument("--connections", type=int, default=3, help="browser connections (default 3)")
    demo.add_argument("--duration", type=float, default=15.0, help="seconds of load (default 15)")
    demo.add_argument(
        "--faults",
        default=None,
        help="comma-separated faults to inject, in order (default: all of "
        "browser_kill,renderer_crash,page_hang,socket_drop,device_lost; '' for none)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed for inputs and fault targets")
    demo.add_argument("--durability", choices=("sync", "buffered"), default="buffered")
    demo.add_argument(
        "--db", default="poolwarden.db", metavar="PATH", help="the event log (default ./poolwarden.db)"
    )
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object, last line")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="look after a database file: schema revision, upgrades, integrity")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("current", _db_current, "print the file's schema revision and the code's"),
        ("upgrade", _db_upgrade, "bring the file's schema to the code's head (creating the file if missing)"),
        ("check", _db_check, "schema at head and PRAGMA integrity_check; non-zero exit on any problem"),
    ):
        sub = db_commands.add_parser(name, help=text, description=text)
        sub.add_argument("--db", required=True, metavar="PATH", help="the SQLite file")
        sub.set_defaults(handler=handler)

    bench = commands.add_parser("bench", help="benchmarks, each against a same-process baseline")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    store = bench_commands.add_parser("store", help="append and replay speed against raw sqlite3")
    store.add_argument("--events", type=int, default=200_000, help="events to append (default 200,000)")
    store.add_argument(
        "--sync-events", type=int, default=None, help="events for the sync-mode run (default: --events)"
    )
    store.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    store.set_defaults(handler=_bench_store)
    lifecycle = bench_commands.add_parser(
        "lifecycle", help="recovery decision cost against a bare trigger; restore against JSON decoding"
    )
    lifecycle.add_argument("--connections", type=int, default=10_000, help="connections to restore")
    lifecycle.add_argument("--recoveries", type=int, default=20_000, help="recoveries to decide per round")
    lifecycle.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the best")
    lifecycle.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    lifecycle.set_defaults(handler=_bench_lifecycle)
    recovery = bench_commands.add_parser(
        "recovery", help="fault to verified recovery through the lifecycle ladder, per fault"
    )
    recovery.add_argument(
        "--workers", choices=["chromium", "firefox", "simulated"], default="chromium", help="the worker"
    )
    recovery.add_argument("--repeat", type=int, default=3, help="injections per fault (default 3)")
    recovery.add_argument(
        "--ping-timeout", type=float, default=0.5, help="heartbeat and ping rung timeout (default 0.5 s)"
    )
    recovery.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    recovery.set_defaults(handler=_bench_recovery)

    breaker = bench_commands.add_parser(
        "breaker", help="protected call against a bare call; creating and restoring breakers"
    )
    breaker.add_argument("--calls", type=int, default=1_000_000, help="calls timed for the hot path")
    breaker.add_argument("--events", type=int, default=1_000_000, help="events in the restore log")
    breaker.add_argument("--breakers", type=int, default=10_000, help="breakers in the restore log")
    breaker.add_argument("--snapshot-every", type=int, default=25, help="events between snapshots")
    breaker.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    breaker.set_defaults(handler=_bench_breaker)

    breakers = commands.add_parser(
        "breakers", help="every breaker's state as last persisted and as it stands now"
    )
    breakers.add_argument("--db", required=True, metavar="PATH")
    breakers.add_argument("--json", action="store_true", help="one JSON array")
    breakers.set_defaults(handler=_breakers)

    events = commands.add_parser("events", help="print the event log")
    events.add_argument("--db", required=True, metavar="PATH")
    events.add_argument("--stream", help="only this stream (or streams starting with it, if it ends in /)")
    events.add_argument("--type", action="append", help="only events of this type (repeatable)")
    events.add_argument("--limit", type=int, default=None, help="at most this many (the last ones)")
    events.add_argument("--follow", action="store_true", help="keep printing new events as they land")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(handler=_events)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except PoolwardenError as error:
        print(f"poolwarden: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
