"""``poolwarden bench ...``: each benchmark run with the command line's settings, its figures printed."""

from __future__ import annotations

import argparse
import json
import sys

from poolwarden.cli.output import EXIT_OK, EXIT_PROBLEM, print_result
from poolwarden.errors import ConfigurationError

__all__ = ["analysis", "breaker", "crash", "fuzz", "lifecycle", "pool", "recovery", "store"]


def store(args: argparse.Namespace) -> int:
    from poolwarden.bench import store as store_sqlite
    from poolwarden.bench import store_postgres

    if args.db is None:
        print(
            f"appending {args.events:,} events through the store and through raw sqlite3 ...", file=sys.stderr
        )
        print_result(store_sqlite.run(events=args.events, sync_events=args.sync_events), args.json)
    else:
        print(
            f"appending {args.events:,} events through the store and through raw asyncpg ...", file=sys.stderr
        )
        print_result(store_postgres.run(args.db, events=args.events, sync_events=args.sync_events), args.json)
    return EXIT_OK


def lifecycle(args: argparse.Namespace) -> int:
    from poolwarden.bench.lifecycle import run

    print(f"deciding recoveries and restoring {args.connections:,} connections ...", file=sys.stderr)
    print_result(run(connections=args.connections, recoveries=args.recoveries, rounds=args.rounds), args.json)
    return EXIT_OK


def recovery(args: argparse.Namespace) -> int:
    from poolwarden.bench.recovery import run

    print(
        f"injecting each fault {args.repeat} time(s) into a {args.workers} worker, "
        "timing each to a verified HEALTHY ...",
        file=sys.stderr,
    )
    result = run(
        workers=args.workers,
        repeat=args.repeat,
        ping_timeout_s=args.ping_timeout,
        warm_spares=args.warm_spares,
        faults=tuple(args.faults),
        seed=args.seed,
    )
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
    if result.get("warm_spares"):
        print(
            f"warm spares {result['warm_spares']}: promoted {result['spares_promoted']}, "
            f"spare PSS {result['spare_pss_mb']} MiB"
        )
    return EXIT_OK


def pool(args: argparse.Namespace) -> int:
    from poolwarden.bench.pool import run

    print(f"{args.requests:,} requests through the pool and over the bare bridge ...", file=sys.stderr)
    print_result(run(requests=args.requests, concurrency=args.concurrency), args.json)
    return EXIT_OK


def breaker(args: argparse.Namespace) -> int:
    from poolwarden.bench.breaker import run

    result = run(
        args.json,
        calls=args.calls,
        restore_events=args.events,
        restore_breakers=args.breakers,
        idle_breakers=args.idle_breakers,
        snapshot_every=args.snapshot_every,
    )
    print_result(result, args.json)
    return EXIT_OK


def analysis(args: argparse.Namespace) -> int:
    from poolwarden.bench.analysis import run

    if args.events < 1 or args.rss_events < 0 or args.repeat < 1:
        raise ConfigurationError("--events and --repeat must be at least 1, --rss-events at least 0")
    sizes = f"{args.events:,}" + (f" and {args.rss_events:,}" if args.rss_events else "")
    print(f"building logs of {sizes} events and loading them in fresh processes ...", file=sys.stderr)
    print_result(run(events=args.events, repeat=args.repeat, rss_events=args.rss_events), args.json)
    return EXIT_OK


def fuzz(args: argparse.Namespace) -> int:
    from poolwarden.bench.fuzz import run

    print(f"{args.frames:,} hostile frames through both wire parsers ...", file=sys.stderr)
    result = run(frames=args.frames, seed=args.seed)
    print_result(result, args.json)
    return EXIT_OK if result["unhandled"] == 0 else EXIT_PROBLEM


def crash(args: argparse.Namespace) -> int:
    from poolwarden.bench.crash import run

    if args.kills < 1:
        raise ConfigurationError("--kills must be at least 1")
    print(f"killing {args.kills:,} writers with SIGKILL at random points ...", file=sys.stderr)
    result = run(kills=args.kills, seed=args.seed)
    print_result(result, args.json)
    failed = result["lost"] or result["integrity_failures"] or result["restore_mismatches"]
    return EXIT_PROBLEM if failed else EXIT_OK
