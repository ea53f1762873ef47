"""What each command (but the benchmarks) does with its parsed arguments; each returns an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from poolwarden.cli.output import EXIT_OK, EXIT_PROBLEM, write_json, write_text
from poolwarden.cli.running import run_async

__all__ = [
    "analyze",
    "breakers",
    "db_check",
    "db_current",
    "db_upgrade",
    "demo",
    "events",
    "policy_check",
    "recovery_trial",
    "telemetry",
    "whatif",
]


def db_current(args: argparse.Namespace) -> int:
    from poolwarden.storage.admin import current_revision, shown

    status = current_revision(args.db)
    revision = status.current or "(none)"
    print(f"{shown(args.db)}: revision {revision}, code head {status.head}: {status.state.value}")
    return EXIT_OK if status.state.value == "current" else EXIT_PROBLEM


def db_upgrade(args: argparse.Namespace) -> int:
    from poolwarden.storage.admin import shown, upgrade_database
    from poolwarden.storage.postgres import is_postgres_url

    before, after = run_async(upgrade_database(args.db))
    if before == after:
        print(f"{shown(args.db)}: already at revision {after}")
    else:
        fresh = "(empty database)" if is_postgres_url(args.db) else "(new file)"
        print(f"{shown(args.db)}: upgraded from {before or fresh} to {after}")
    return EXIT_OK


def db_check(args: argparse.Namespace) -> int:
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


def db_leases(args: argparse.Namespace) -> int:
    import time

    from poolwarden.storage import open_store

    async def read() -> list[Any]:
        async with open_store(args.db, read_only=True) as store:
            return await store.leases()

    rows = run_async(read())
    now = time.time()
    if not rows:
        print(f"{args.db}: no pool has held a lease here")
    for row in rows:
        if row.released:
            state = "released"
        elif row.expires_at > now:
            state = f"held, expires in {row.expires_at - now:.1f} s unless renewed"
        else:
            state = f"expired {now - row.expires_at:.1f} s ago (free to take over)"
        print(f"{row.name}: fence {row.fence}, holder {row.holder}: {state}")
    return EXIT_OK


def breakers(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from poolwarden.breaker_events import STREAM_PREFIX
    from poolwarden.pool_streams import PoolStreams
    from poolwarden.telemetry.breakers import breaker_statuses

    statuses = run_async(breaker_statuses(args.db))
    if args.pool is not None:
        owner = PoolStreams(args.pool)
        statuses = [status for status in statuses if owner.owns(STREAM_PREFIX + status.key)]
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


def demo(args: argparse.Namespace) -> int:
    from poolwarden.cli.demo import DemoOptions, print_summary, run_demo

    faults = tuple(f for f in args.faults.split(",") if f) if args.faults is not None else None
    options = DemoOptions(
        workers=args.workers,
        connections=args.connections,
        duration=args.duration,
        seed=args.seed,
        durability=args.durability,
        db=args.db,
        pool_name=args.pool_name,
    )
    if faults is not None:
        options = dataclasses.replace(options, faults=faults)
    summary = run_async(run_demo(options, live=not args.json))
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return EXIT_OK if summary["requests_lost"] == 0 and summary["wrong_results"] == 0 else EXIT_PROBLEM


def telemetry(args: argparse.Namespace) -> int:
    if args.prometheus:
        from poolwarden.telemetry.prometheus import metrics_from_log

        write_text(run_async(metrics_from_log(args.db, pool=args.pool)), args.output)
        return EXIT_OK
    from poolwarden.telemetry.from_log import telemetry_from_log

    figures = telemetry_from_log(args.db, detailed=args.detailed, pool=args.pool)
    write_json(run_async(figures), args.output)
    return EXIT_OK


def recovery_trial(args: argparse.Namespace) -> int:
    from poolwarden.cli.trial import run_recovery_trial

    report = run_async(
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
        if report["rung"] == "page":
            verdict = "recovered by the page itself (it re-attached and a round trip verified it)"
        elif report["recovered"]:
            verdict = f"recovered by {report['rung']}"
        else:
            verdict = f"not recovered ({report['outcome']})"
        print(f"{verdict} in {report['fault_to_healthy_s']} s (fault to serving again)")
    return EXIT_OK if report["recovered"] else EXIT_PROBLEM


def rolling_restart(args: argparse.Namespace) -> int:
    from poolwarden.cli.maintenance import run_rolling_restart

    report = run_async(
        run_rolling_restart(
            workers=args.workers, connections=args.connections, db=args.db, clients=args.clients
        )
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"restarted {', '.join(report['restarted'])} one at a time in {report['seconds']} s; "
            f"served {report['served']:,}, failed {report['failed']}, wrong {report['wrong_results']}"
        )
    ok = report["failed"] == 0 and report["wrong_results"] == 0
    return EXIT_OK if ok else EXIT_PROBLEM


def soak(args: argparse.Namespace) -> int:
    from poolwarden.cli.soak import run_soak

    report = run_async(
        run_soak(
            workers=args.workers,
            connections=args.connections,
            duration=args.duration,
            fault_every=args.fault_every,
            db=args.db,
        )
    )
    if args.json:
        print(json.dumps(report))
    else:
        rss, pss = report["rss_mb"], report["browser_pss_mb"]
        print(
            f"{report['requests']:,} requests in {report['duration_s']} s: lost {report['lost']}, "
            f"wrong {report['wrong_results']}; faults {report['faults']}; recoveries {report['recoveries']}"
        )
        print(
            f"RSS {rss['start']} -> {rss['end']} MB ({rss['growth']:+.1%}); browsers' PSS "
            f"{pss['start']} -> {pss['end']} MB; leaked processes {len(report['leaked_processes'])}"
        )
        print("holds" if report["ok"] else "DOES NOT HOLD")
    return EXIT_OK if report["ok"] else EXIT_PROBLEM


def whatif(args: argparse.Namespace) -> int:
    from poolwarden.policy import BreakerPolicy
    from poolwarden.whatif import what_if

    policy = BreakerPolicy.from_file(args.policy)

    async def records() -> list[Any]:
        from poolwarden.storage import open_store

        async with open_store(args.db, read_only=True) as store:
            return [e async for e in store.iter_all() if e.stream.startswith("breaker/")]

    report = what_if(run_async(records()), policy)
    rows = [
        {
            "key": key,
            "calls": b.calls,
            "recorded_opens": len(b.recorded_opened),
            "whatif_opens": len(b.opened),
            "recorded_rejected": b.recorded_rejected,
            "whatif_rejected": b.rejected,
            "final_state": str(b.final_state),
            "transitions_as_recorded": b.reproduces,
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
            + ("  (as recorded)" if row["transitions_as_recorded"] else "")
        )
    for note in report.approximations:
        print(f"note: {note}")
    return EXIT_OK


def policy_check(args: argparse.Namespace) -> int:
    from poolwarden.policy import BreakerPolicy

    policy = BreakerPolicy.from_file(args.policy)
    if args.json:
        print(json.dumps(policy.to_dict()))
        return EXIT_OK
    for line in policy.explain():
        print(line)
    return EXIT_OK


def analyze(args: argparse.Namespace) -> int:
    from poolwarden.analysis.report import main_analyze

    return main_analyze(args.db, args.out, args.policy, args.pool)


def events(args: argparse.Namespace) -> int:
    from poolwarden.cli.eventlog import print_events

    return run_async(
        print_events(
            args.db,
            stream=args.stream,
            types=args.type,
            follow=args.follow,
            as_json=args.json,
            limit=args.limit,
            pool=args.pool,
        )
    )
