"""A throwaway PostgreSQL cluster for the tests: initdb in a private folder, a private port and
socket folder, removed afterwards.

PostgreSQL refuses to run as root; run as root (as CI does), the cluster is made and run as the
``postgres`` user (Debian's package creates it) through ``runuser``. The superuser ``postgres``
has a password, and TCP connections must give it (scram-sha-256), so a wrong password is a real
authentication failure. Nothing here sleeps a fixed time: starting waits for ``pg_isready``.

By default the server listens on 127.0.0.1 only. ``listen_addresses`` adds addresses of this
machine to listen on too (the fleet tests' veth ends, tests/netns.py), and ``clients`` the
client addresses or networks that may connect over TCP from elsewhere than 127.0.0.1 (with the
password too: a ``host ... scram-sha-256`` line each in ``pg_hba.conf``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PASSWORD", "Cluster", "find_bin"]

PASSWORD = "pw-test-secret"


def find_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL server of its own: :meth:`start`, :meth:`stop`, :meth:`remove`."""

    def __init__(
        self,
        bin_dir: Path,
        *,
        fsync: bool = False,
        listen_addresses: Sequence[str] = (),
        clients: Sequence[str] = (),
    ) -> None:
        self.bin = bin_dir
        self.listen_addresses = ("127.0.0.1", *listen_addresses)
        self.fsync = fsync  # off for the tests (nothing to keep); on for honest benchmark figures
        self.root = Path(tempfile.mkdtemp(prefix="poolwarden-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("mkdir", str(self.sockets))
        password_file = self.root / "pw"
        password_file.write_text(PASSWORD + "\n")
        os.chmod(password_file, 0o644)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        if clients:
            # initdb's host lines admit 127.0.0.1 and ::1; these admit the others, password required.
            with (self.data / "pg_hba.conf").open("a") as hba:
                for client in clients:
                    hba.write(f"host all all {client} scram-sha-256\n")

    @property
    def url(self) -> str:
        """A URL for database ``postgres`` over TCP, with the password."""
        return self.url_for("postgres")

    def url_for(self, database: str, password: str = PASSWORD, host: str = "127.0.0.1") -> str:
        """A URL for ``database`` over TCP to ``host`` (one of the listen addresses)."""
        return f"postgresql+asyncpg://postgres:{password}@{host}:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.sockets} -c listen_addresses={','.join(self.listen_addresses)} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200",
            "start",
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come up: {self.log()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions and close every connection)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
