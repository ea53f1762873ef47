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
    if report.drift:
        print(f"tables: {len(report.drift)} difference(s) from the code's schema")
        for difference in report.drift[:20]:
            print(f"  {difference}")
    else:
        print("tables: match the code's schema")
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

    print(
        f"injecting each fault {args.repeat} time(s) into a {args.workers} worker, "
        "timing each to a verified HEALTHY ...",
        file=sys.stderr,
    )
    result = run(workers=args.workers, repeat=args.repeat, ping_timeout_s=args.ping_timeout)
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    print(f"workers {result['workers']}, ping timeout {result['ping_timeout_s']} s")
    for fault, figures in result["faults"].items():
        if figures["runs"] == 0:
            print(f"{fault:<15}  skipped")
        else:
            rung, median, runs = figures["rung"], figures["median_s"], figures["runs"]
            print(f"{fault:<15}  rung {rung:<9}  median {median:.3f} s  runs {runs}")
    return EXIT_OK


def _bench_pool(args: argparse.Namespace) -> int:
    from poolwarden.bench.pool import run

    print(f"{args.requests:,} requests through the pool and over the bare bridge ...", file=sys.stderr)
    _print_result(run(requests=args.requests, concurrency=args.concurrency), args.json)
    return EXIT_OK


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

    from poolwarden.telemetry.breakers import breaker_statuses

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
    from poolwarden.cli.demo import DemoOptions, print_summary, run_demo

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


def _write_json(data: object, output: str | None) -> None:
    _write_text(json.dumps(data, indent=2, default=str) + "\n", output)


def _write_text(text: str, output: str | None) -> None:
    if output is None:
        print(text, end="")
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        raise PoolwardenError(f"{output}: cannot write the telemetry: {error.strerror}") from error
    print(f"telemetry written to {output}", file=sys.stderr)


def _telemetry(args: argparse.Namespace) -> int:
    if args.prometheus:
        from poolwarden.telemetry.prometheus import metrics_from_log

        _write_text(asyncio.run(metrics_from_log(args.db)), args.output)
        return EXIT_OK
    from poolwarden.telemetry.from_log import telemetry_from_log

    _write_json(asyncio.run(telemetry_from_log(args.db, detailed=args.detailed)), args.output)
    return EXIT_OK


def _test_recovery(args: argparse.Namespace) -> int:
    from poolwarden.cli.trial import run_recovery_trial

    report = asyncio.run(
        run_recovery_trial(
            workers=args.workers, connection_id=args.connection_id, fault=args.fault, db=args.db
        )
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['why']}: injected {report['fault']} on {report['connection_id']}")
        for step in report["steps"]:
            latency = f" {step['latency_ms']:.0f} ms" if step["latency_ms"] is not None else ""
            print(
                f"  {step['at']}  {step['type']:<24} rung={step['rung']} outcome={step['outcome']}{latency}"
            )
        verdict = (
            f"recovered by {report['rung']}"
            if report["recovered"]
            else f"not recovered ({report['outcome']})"
        )
        print(f"{verdict} in {report['fault_to_healthy_s']} s (fault to serving again)")
    return EXIT_OK if report["recovered"] else EXIT_PROBLEM


def _whatif(args: argparse.Namespace) -> int:
    from poolwarden.policy import BreakerPolicy
    from poolwarden.whatif import what_if

    try:
        with open(args.policy, encoding="utf-8") as f:
            policy = BreakerPolicy.from_dict(json.load(f))
    except OSError as error:
        raise PoolwardenError(f"{args.policy}: cannot read the policy: {error.strerror}") from error
    except (ValueError, TypeError) as error:
        raise PoolwardenError(f"{args.policy}: not a breaker policy: {error}") from error

    async def records() -> list[Any]:
        from poolwarden.storage import open_store

        async with open_store(args.db, read_only=True) as store:
            return [e async for e in store.iter_all() if e.stream.startswith("breaker/")]

    report = what_if(asyncio.run(records()), policy)
    rows = [
        {
            "key": key,
            "calls": b.calls,
            "recorded_opens": len(b.recorded_opened),
            "whatif_opens": len(b.opened),
            "recorded_rejected": b.recorded_rejected,
            "whatif_rejected": b.rejected,
            "final_state": str(b.final_state),
        }
        for key, b in sorted(report.breakers.items())
    ]
    if args.json:
        print(json.dumps({"breakers": rows, "approximations": list(report.approximations)}))
        return EXIT_OK
    for row in rows:
        print(
            f"{row['key']:<36} calls {row['calls']:>7}"
            f"  opens {row['recorded_opens']} -> {row['whatif_opens']}"
            f"  rejected {row['recorded_rejected']} -> {row['whatif_rejected']}  ends {row['final_state']}"
        )
    for note in report.approximations:
        print(f"note: {note}")
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    from poolwarden.analysis.report import main_analyze

    return main_analyze(args.db, args.out, args.policy)


def _bench_analysis(args: argparse.Namespace) -> int:
    from poolwarden.bench.analysis import run

    print(f"building a log of {args.events:,} events and loading it ...", file=sys.stderr)
    _print_result(run(events=args.events), args.json)
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    from poolwarden.cli.eventlog import print_events

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
        "recovery", help="inject each fault into a live worker and time it to a verified HEALTHY"
    )
    recovery.add_argument(
        "--workers", choices=["chromium", "firefox", "simulated"], default="chromium", help="the worker kind"
    )
    recovery.add_argument("--repeat", type=int, default=3, help="injections of each fault (default 3)")
    recovery.add_argument(
        "--ping-timeout", type=float, default=0.5, help="the ping rung's (and heartbeat's) timeout, seconds"
    )
    recovery.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    recovery.set_defaults(handler=_bench_recovery)

    pool = bench_commands.add_parser("pool", help="inference through the pool against the bare bridge")
    pool.add_argument("--requests", type=int, default=20_000, help="requests per run (default 20,000)")
    pool.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    pool.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    pool.set_defaults(handler=_bench_pool)

    breaker = bench_commands.add_parser(
        "breaker", help="protected call against a bare call; creating and restoring breakers"
    )
    breaker.add_argument("--calls", type=int, default=1_000_000, help="calls timed for the hot path")
    breaker.add_argument("--events", type=int, default=1_000_000, help="events in the restore log")
    breaker.add_argument("--breakers", type=int, default=10_000, help="breakers in the restore log")
    breaker.add_argument("--snapshot-every", type=int, default=10, help="events between snapshots")
    breaker.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    breaker.set_defaults(handler=_bench_breaker)

    breakers = commands.add_parser(
        "breakers", help="every breaker's state as last persisted and as it stands now"
    )
    breakers.add_argument("--db", required=True, metavar="PATH")
    breakers.add_argument("--json", action="store_true", help="one JSON array")
    breakers.set_defaults(handler=_breakers)

    analyze = commands.add_parser("analyze", help="write a post-mortem report (HTML + PNG plots) from a log")
    analyze.add_argument("--db", required=True, metavar="PATH")
    analyze.add_argument("--out", required=True, metavar="DIR")
    analyze.add_argument("--policy", metavar="FILE", help="a breaker policy (JSON) for a what-if section")
    analyze.set_defaults(handler=_analyze)

    analysis = bench_commands.add_parser(
        "analysis", help="load_events against pandas.read_sql on the same file"
    )
    analysis.add_argument(
        "--events", type=int, default=1_000_000, help="events in the log (default 1,000,000)"
    )
    analysis.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    analysis.set_defaults(handler=_bench_analysis)

    telemetry = commands.add_parser("telemetry", help="the seed's telemetry, counted from a log")
    telemetry.add_argument("--db", default="poolwarden.db", metavar="PATH")
    telemetry.add_argument("--detailed", action="store_true", help="per connection, breaker and model")
    telemetry.add_argument("--output", metavar="FILE", help="write the JSON here instead of stdout")
    telemetry.add_argument(
        "--prometheus",
        action="store_true",
        help="Prometheus text exposition instead of JSON (needs poolwarden[prometheus])",
    )
    telemetry.set_defaults(handler=_telemetry)

    trial = commands.add_parser(
        "test-recovery", help="start a pool, inject a fault, show the ladder recover it and how fast"
    )
    trial.add_argument("--connection-id", help="the connection to hurt (default: the one holding the model)")
    trial.add_argument(
        "--fault",
        default="page_hang",
        choices=("browser_kill", "renderer_crash", "page_hang", "socket_drop", "device_lost"),
    )
    trial.add_argument("--workers", choices=("auto", "chromium", "firefox", "simulated"), default="auto")
    trial.add_argument("--db", default="poolwarden.db", metavar="PATH")
    trial.add_argument("--json", action="store_true")
    trial.set_defaults(handler=_test_recovery)

    whatif = commands.add_parser("whatif", help="replay a log's breaker calls through another policy")
    whatif.add_argument("--db", required=True, metavar="PATH")
    whatif.add_argument("--policy", required=True, metavar="FILE", help="a BreakerPolicy as JSON")
    whatif.add_argument("--json", action="store_true")
    whatif.set_defaults(handler=_whatif)

    events = commands.add_parser("events", help="print the event log")
    events.add_argument("--db", required=True, metavar="PATH")
    events.add_argument("--stream", help="only this stream (or streams starting with it, if it ends in /)")
    events.add_argument("--type", action="append", help="only events of this type (repeatable)")
    events.add_argument("--limit", type=int, default=None, help="at most this many (the last ones)")
    events.add_argument("--follow", action="store_true", help="keep printing new events as they land")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(handler=_events)
    return parser


def _seed_flags(argv: Sequence[str]) -> list[str] | None:
    """The seed's flags (``--test-recovery``, ``--export-telemetry``) as subcommand arguments."""
    seed = argparse.ArgumentParser(prog="poolwarden", add_help=False)
    seed.add_argument("--test-recovery", action="store_true")
    seed.add_argument("--export-telemetry", action="store_true")
    seed.add_argument("--connection-id")
    seed.add_argument("--detailed", action="store_true")
    seed.add_argument("--output")
    seed.add_argument("--db", default="poolwarden.db")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--test-recovery", "--export-telemetry", "--connection-id", "--detailed"):
        argv = _seed_flags(argv) or argv
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
