"""Another local user tries to hijack a live Chromium worker, and fails.

A real Chromium worker serves on a bridge; tests/impostor.py, run as user nobody with the system's
python3 (copied to a world-readable folder, so nothing of the project's needs to be readable),
searches every command line and environment it can read, every listening loopback port (with
DevTools' ``/json/version`` and ``/json/list``) and the worker's profile folders for the secret,
then says hello as the live worker id with everything it found.

So that the search is known to work, a root-owned stand-in for the old leak runs alongside: a
process whose command line holds a page URL with the secret of another worker id ("leaked"), as
Chromium's did before it got its page over a pipe. The impostor must find that one and be
welcomed as "leaked", while finding nothing that admits it as the live worker, which keeps
serving correct results.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from poolwarden.bridge.server import BridgeServer
from poolwarden.browser.launcher import find_chromium, profiles_root
from poolwarden.workers.chromium import ChromiumWorker
from poolwarden.workers.handle import verify_round_trip
from tests.bridge_helpers import installed
from tests.bridge_recorder import SinkRecorder

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not installed(find_chromium), reason="Chromium is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another user needs root"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
    pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="no system python3 for the impostor"),
]

LIVE = "live-1"
LEAKED = "leaked"


@pytest.fixture
def impostor_dir() -> Iterator[Path]:
    """A world-readable folder holding a copy of the impostor script, which user nobody can run."""
    folder = Path(tempfile.mkdtemp(prefix="pw-impostor-"))
    try:
        folder.chmod(0o755)
        script = folder / "impostor.py"
        shutil.copyfile(Path(__file__).with_name("impostor.py"), script)
        script.chmod(0o644)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _listening_sockets(pid: int) -> list[str]:
    """Listening sockets of process ``pid`` and its descendants."""
    found = []
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [f"{proc.pid} {c.laddr}" for c in connections if c.status == psutil.CONN_LISTEN]
    return found


async def _run_impostor(folder: Path, port: int, paths: list[str]) -> dict[str, Any]:
    assert SETPRIV is not None
    command = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    command += [SYSTEM_PYTHON, "-I", str(folder / "impostor.py"), str(port), f"{LIVE},{LEAKED}", *paths]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=folder
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    return report


async def test_another_local_user_cannot_find_the_secret_nor_speak_as_the_worker(impostor_dir: Path) -> None:
    """Run as nobody, the impostor reads Chromium's command lines but finds no secret of the live
    worker anywhere, finds no DevTools endpoint, cannot read the profile, and is refused as the live
    worker; the same search finds a secret planted on a command line and is welcomed with it."""
    events = SinkRecorder()
    async with BridgeServer(on_event=events) as server:
        worker = ChromiumWorker(server, LIVE)
        leak = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import time; time.sleep(120)",
            server.page_url(LEAKED, with_secret=True),  # the old exposure, for another worker id
        )
        try:
            await worker.start()
            conn = worker.connection
            await verify_round_trip(conn)
            assert worker.process is not None
            profile = worker.process.user_data_dir
            assert await asyncio.to_thread(_listening_sockets, worker.process.pid) == []

            report = await _run_impostor(impostor_dir, server.port, [str(profiles_root()), str(profile)])

            assert report["uid"] == NOBODY
            # It really looked: it read command lines, among them this Chromium's (with its profile).
            assert report["cmdlines_read"] > 10
            assert any(str(profile) in line for line in report["chromium_cmdlines"])
            assert server.port in report["listening"]
            # ...and its search works: the secret planted on a command line was found and admitted.
            leaked = server.secret_for(LEAKED)
            assert leaked in report["candidates"]
            assert {"worker": LEAKED, "source": f"/proc/{leak.pid}/cmdline", "outcome": "welcome"} in report[
                "attempts"
            ]
            # Nothing of the live worker's: no secret, no DevTools endpoint of this Chromium, no profile.
            assert server.secret_for(LIVE) not in report["candidates"]
            assert server.token not in report["candidates"]
            assert not any(f":{server.port}/" in "".join(bodies) for bodies in report["devtools"].values())
            assert report["paths"][str(profile)].startswith("denied")
            assert report["paths"][str(profiles_root())].startswith("denied")
            live_attempts = [a for a in report["attempts"] if a["worker"] == LIVE]
            assert live_attempts  # it tried (with the leaked secret at least)
            assert all(a["outcome"] == "closed 4401" for a in live_attempts), live_attempts
            refused = [e for e in events.of_type("WorkerRefused") if e.connection_id == LIVE]
            assert len(refused) == len(live_attempts)
            assert {e.error_kind for e in refused} == {"bad_token"}

            # The real worker was never displaced, and still computes the right numbers.
            assert conn.generation == 1
            assert conn.connected
            await verify_round_trip(conn)
            served = [e for e in events.of_type("WorkerConnected") if e.connection_id == LIVE]
            assert len(served) == 1
        finally:
            leak.kill()
            await leak.wait()
            await worker.stop()
