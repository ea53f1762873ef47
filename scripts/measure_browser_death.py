"""Measure how long a pool's browsers outlive the pool process, for each browser and signal.

Each run starts a pool of two connections (``chromium`` or ``firefox``) in a child process whose
profiles go to a fresh temp folder, counts the processes of its browsers (every process naming
that folder on its command line, and their descendants), kills the pool with the signal, and
polls every 0.05 s until none is left. No other pool is started meanwhile, so nothing is swept.

Usage: .venv/bin/python scripts/measure_browser_death.py [--repeat N] [--browsers chromium,firefox];
the last line printed is one JSON object: {browser: {signal: {"processes": [...], "seconds": [...],
"left": [...]}}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_browser_ownership import (
    _POOL_OWNER,
    _browsers_under,
    _run_owner,
    _wait_until_none_under,
)


async def one(browser: str, signum: signal.Signals) -> tuple[int, float, list[str]]:
    """One pool killed with ``signum``: (processes before, seconds until none left, what is left)."""
    tmp = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))  # short: Chromium's socket path limit
    db = Path(tempfile.mkdtemp())
    try:
        owner = await _run_owner(_POOL_OWNER, tmp, browser, str(db / "pool.db"))
        count = len(await asyncio.to_thread(_browsers_under, tmp))
        owner.send_signal(signum)
        await owner.wait()
        waited, left = await asyncio.to_thread(_wait_until_none_under, tmp, 10.0)
        return count, round(waited, 2), left
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(db, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--browsers", default="chromium,firefox")
    options = parser.parse_args()
    figures: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for browser in options.browsers.split(","):
        for signum in (signal.SIGKILL, signal.SIGTERM):
            runs = [await one(browser, signum) for _ in range(options.repeat)]
            figures.setdefault(browser, {})[signum.name] = {
                "processes": [r[0] for r in runs],
                "seconds": [r[1] for r in runs],
                "left": [r[2] for r in runs],
            }
            print(browser, signum.name, figures[browser][signum.name], flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
