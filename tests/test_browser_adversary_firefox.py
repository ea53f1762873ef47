"""Another local user against a live Firefox worker: with no port (the default) there is nothing to
reach; with the opt-in BiDi port, that user reaches it and is refused a session only because the
worker holds the one Firefox allows, and a session that is free (before the worker takes it, or
on a Firefox nobody drives) reads the files of the user Firefox runs as.

As in tests/test_browser_adversary.py, tests/impostor.py runs as user nobody with the system's
python3 and searches every command line and environment it can read, every listening loopback
port (DevTools lists, and WebDriver BiDi at ``/session``: ``session.status``, and ``session.new``
where a session is held) and the worker's profile folders for the secret, then says hello as the
live worker id with everything it found. A root-owned process whose command line holds a page URL
with the secret of another worker id ("leaked") shows that the search works.
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

import pytest

from poolwarden.bridge.server import BridgeServer
from poolwarden.browser.launcher import find_firefox, launch_firefox, profiles_root
from poolwarden.workers.firefox import FirefoxWorker
from poolwarden.workers.handle import verify_round_trip
from tests.bridge_helpers import installed
from tests.bridge_recorder import SinkRecorder
from tests.test_browser_adversary import (
    LEAKED,
    LIVE,
    NOBODY,
    SETPRIV,
    SYSTEM_PYTHON,
    _listening_sockets,
    _run_impostor,
    impostor_dir,
)

__all__ = ["impostor_dir"]  # the fixture, imported for pytest to find

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not installed(find_firefox), reason="Firefox is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another user needs root"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
    pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="no system python3 for the impostor"),
]


async def _attack(worker: FirefoxWorker, server: BridgeServer, folder: Any) -> dict[str, Any]:
    leak = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(120)",
        server.page_url(LEAKED, with_secret=True),  # a secret on a command line, for another worker id
    )
    try:
        assert worker.process is not None
        paths = [str(profiles_root()), str(worker.process.user_data_dir)]
        return await _run_impostor(folder, server.port, paths)
    finally:
        leak.kill()
        await leak.wait()


def _check_nothing_of_the_live_worker(
    report: dict[str, Any], server: BridgeServer, events: SinkRecorder
) -> None:
    assert report["uid"] == NOBODY
    assert report["cmdlines_read"] > 10
    browsers = [line for line in report["firefox_cmdlines"] if "--profile" in line]
    assert browsers  # it read the command lines of Firefox (and its watchdog)...
    assert not [line for line in browsers if "token=" in line or "http" in line]  # ...no URL in them
    # Its search works: the secret planted on a command line was found and admitted.
    assert server.secret_for(LEAKED) in report["candidates"]
    assert any(a["worker"] == LEAKED and a["outcome"] == "welcome" for a in report["attempts"])
    # Nothing of the live worker's: no secret, no readable profile; its hello is refused.
    assert server.secret_for(LIVE) not in report["candidates"]
    assert all(value.startswith("denied") for value in report["paths"].values())
    live_attempts = [a for a in report["attempts"] if a["worker"] == LIVE]
    assert live_attempts
    assert all(a["outcome"] == "closed 4401" for a in live_attempts), live_attempts
    refused = [e for e in events.of_type("WorkerRefused") if e.connection_id == LIVE]
    assert {e.error_kind for e in refused} == {"bad_token"}


async def test_another_local_user_finds_no_port_and_no_secret_of_a_firefox_worker(impostor_dir: Any) -> None:
    """Default Firefox worker: no process of it listens on any port, so the impostor (nobody) has
    no remote-control endpoint to reach; it finds no secret of the live worker on any command line,
    port or file, is refused as that worker, and the worker keeps serving correct results."""
    events = SinkRecorder()
    async with BridgeServer(on_event=events) as server:
        worker = FirefoxWorker(server, LIVE)
        try:
            await worker.start()
            await verify_round_trip(worker.connection)
            assert worker.process is not None
            assert await asyncio.to_thread(_listening_sockets, worker.process.pid) == []

            report = await _attack(worker, server, impostor_dir)

            _check_nothing_of_the_live_worker(report, server, events)
            assert server.port in report["listening"]
            profile = str(worker.process.user_data_dir)
            assert not any(profile in "".join(bodies) for bodies in report["devtools"].values())
            conn = worker.connection
            assert conn.generation == 1
            await verify_round_trip(conn)
        finally:
            await worker.stop()


async def test_with_its_bidi_port_another_local_user_reaches_firefox_but_gets_no_session(
    impostor_dir: Any,
) -> None:
    """Opt-in BiDi port: the impostor (nobody) finds the port and speaks WebDriver BiDi on it, which
    is the exposure; it is refused a session only because the worker holds Firefox's one session
    ("Maximum number of active sessions"). It finds no secret (none is on a command line or in a
    URL) and the worker keeps serving correct results."""
    events = SinkRecorder()
    async with BridgeServer(on_event=events) as server:
        worker = FirefoxWorker(server, LIVE, remote_port=True)
        try:
            await worker.start()
            await verify_round_trip(worker.connection)
            assert worker.process is not None
            port = worker.process.devtools_port

            report = await _attack(worker, server, impostor_dir)

            _check_nothing_of_the_live_worker(report, server, events)
            assert port in report["listening"]
            probe = report["bidi"][str(port)]
            assert probe["status"]["result"] == {"ready": False, "message": "Session already started"}
            assert probe["new"]["error"] == "session not created"
            assert "Maximum number of active sessions" in probe["new"]["message"]
            conn = worker.connection
            assert conn.generation == 1
            await verify_round_trip(conn)
        finally:
            await worker.stop()


@pytest.fixture
def private_file() -> Iterator[Path]:
    """A file only its owner may read (0600, in a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="pw-private-"))
    secret = folder / "secret.txt"
    secret.write_text("only root may read this")
    secret.chmod(0o600)
    try:
        yield secret
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_free_bidi_session_reads_files_as_the_user_firefox_runs_as(
    impostor_dir: Path, private_file: Path
) -> None:
    """Why Firefox opens no port by default: on a Firefox with its BiDi port and no session held,
    user nobody, who may not open a file of ours (0600 in a 0700 folder), opens a session, has
    Firefox load that file and reads it."""
    secret = private_file
    browser = await launch_firefox("about:blank", remote_port=True)
    try:
        assert SETPRIV is not None
        command = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, "-I"]
        command += [str(impostor_dir / "impostor.py"), "bidi-read", str(browser.devtools_port), str(secret)]
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=impostor_dir
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["uid"] == NOBODY
        assert report["direct"].startswith("denied")
        assert "sessionId" in report["new"]["result"]
        assert report["through_firefox"] == "only root may read this"
    finally:
        await browser.kill()
