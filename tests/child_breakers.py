"""A process using named durable breakers (``open_breakers``) on a shared SQLite file, line by line.

Usage: python child_breakers.py DB [--poll SECONDS] [--flush SECONDS] [--open-for SECONDS]

Commands on stdin, one per line; each answers one line on stdout:

* ``trip NAME``: three failing calls through NAME; answers ``tripped NAME <epoch seconds>``.
* ``trip-now NAME``: ``Breakers.trip`` (a manual trip, durable when it returns); answers
  ``tripped NAME <epoch seconds once durable>``.
* ``until-rejected NAME TIMEOUT``: calls through NAME that succeed, one every millisecond or so,
  until one is rejected; answers ``watching NAME`` after the first call went through, then
  ``rejected NAME <epoch seconds of the rejection>`` or ``timeout NAME <state>``.
* ``calls NAME N EVERY``: N calls through NAME, every EVERY-th one failing (rejections are fine).
* ``wait NAME STATE TIMEOUT``: wait (polling the breaker, not sleeping a fixed time) until NAME is
  in STATE; answers ``seen NAME <epoch seconds>`` or ``timeout NAME <state>``.
* ``hammer NAME SECONDS``: a succeeding call through NAME every 5 ms for SECONDS (rejections are
  fine); answers ``hammered NAME <calls that ran>``.
* ``pending``: answers ``pending N ERROR``: how many events wait in memory for the log, and
  the class of the store error the background flush last met (``none`` if none).
* ``flush``: wait until everything recorded is committed; answers ``flushed``.
* ``sync``: wait two poll intervals (so that one poll saw everything already in the log);
  answers ``state <json of each breaker's shared state>``.
* ``exit``: leave ``open_breakers`` (summarise, flush, snapshot); answers ``report <json>``: the
  events this process's breakers emitted and the appends the store acknowledged to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from poolwarden.aio.guard import Breakers, open_breakers
from poolwarden.errors import CircuitOpen
from poolwarden.events import AppendResult
from poolwarden.policy import BreakerPolicy, OpenBackoff
from poolwarden.storage import open_store


def policy(open_for: float = 300.0) -> BreakerPolicy:
    """The children's policy: three failures in a row open a breaker for ``open_for`` seconds."""
    return BreakerPolicy(consecutive_failures=3, backoff=OpenBackoff(base=open_for, jitter="none"))


POLICY = policy()


def say(line: str) -> None:
    """One answer line, flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def call(breakers: Breakers, name: str, fail: bool) -> bool:
    """One call through ``name``; a failure raises ConnectionError inside the guard. Returns
    whether the breaker let it run."""
    try:
        with breakers.circuit(name):
            if fail:
                raise ConnectionError("upstream down")
    except ConnectionError:
        pass
    except CircuitOpen:
        return False
    return True


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--flush", type=float, default=0.25)
    parser.add_argument("--open-for", type=float, default=300.0)
    args = parser.parse_args()
    acked: list[AppendResult] = []
    async with open_store(args.db) as store:
        append = store.append

        async def counting_append(*a: Any, **kw: Any) -> Any:
            receipt = await append(*a, **kw)
            acked.append(await receipt)  # raises on a conflict: not acknowledged
            return receipt

        store.append = counting_append  # type: ignore[method-assign]
        async with open_breakers(
            store, policy=policy(args.open_for), flush_interval=args.flush, poll_interval=args.poll
        ) as breakers:
            registry = breakers.registry
            say("ready")
            while True:
                line = (await asyncio.to_thread(sys.stdin.readline)).split()
                if not line or line[0] == "exit":
                    break
                command, rest = line[0], line[1:]
                if command == "trip":
                    for _ in range(3):
                        call(breakers, rest[0], fail=True)
                    say(f"tripped {rest[0]} {time.time()!r}")
                elif command == "trip-now":
                    await breakers.trip(rest[0], "child", "tripped by hand")
                    say(f"tripped {rest[0]} {time.time()!r}")
                elif command == "until-rejected":
                    name, deadline = rest[0], time.monotonic() + float(rest[1])
                    watching = False
                    while time.monotonic() < deadline:
                        try:
                            with breakers.circuit(name):
                                pass
                        except CircuitOpen:
                            say(f"rejected {name} {time.time()!r}")
                            break
                        if not watching:
                            say(f"watching {name}")
                            watching = True
                        await asyncio.sleep(0.001)  # let the poller run
                    else:
                        say(f"timeout {name} {breakers.breaker(name).state.value}")
                elif command == "calls":
                    name, n, every = rest[0], int(rest[1]), int(rest[2])
                    for i in range(n):
                        call(breakers, name, fail=i % every == every - 1)
                        if i % 10 == 0:
                            await asyncio.sleep(0.001)  # let the flusher and the poller run
                    say(f"called {name}")
                elif command == "wait":
                    name, state, deadline = rest[0], rest[1], time.monotonic() + float(rest[2])
                    # A pure breaker has no event to wait on: look at it every 2 ms until the deadline.
                    while breakers.breaker(name).state.value != state and time.monotonic() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.002)
                    if breakers.breaker(name).state.value == state:
                        say(f"seen {name} {time.time()!r}")
                    else:
                        say(f"timeout {name} {breakers.breaker(name).state.value}")
                elif command == "hammer":
                    name, until = rest[0], time.monotonic() + float(rest[1])
                    ran = 0
                    while time.monotonic() < until:
                        ran += call(breakers, name, fail=False)
                        await asyncio.sleep(0.005)
                    say(f"hammered {name} {ran}")
                elif command == "pending":
                    durable = breakers._durable  # the driver behind open_breakers: a test looks in
                    assert durable is not None
                    error = type(durable.last_error).__name__ if durable.last_error else "none"
                    say(f"pending {durable.pending} {error}")
                elif command == "flush":
                    await breakers.flush()
                    say("flushed")
                elif command == "sync":
                    await asyncio.sleep(2 * args.poll)
                    say("state " + json.dumps({b.key: b.shared_state() for b in registry}))
        emitted = sum(breaker.activity[1] for breaker in registry)
    say(
        "report "
        + json.dumps(
            {
                "emitted": emitted,
                "acked": [[r.stream, r.first_version, r.last_version] for r in acked],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
