"""Launching headless Chromium or Firefox as a worker, killing it whole, and sweeping orphans.

Each launch gets a fresh user-data-dir (mode 0700) under :func:`profiles_root` (one per user,
0700 too), holding a marker file that names the Python process that owns it (its pid and its
start time, so a recycled pid is not taken for the owner). The browser runs in its own session
(so its own process group): :meth:`BrowserProcess.kill` kills the group, then any process still
using the user-data-dir.

Browsers die with the process that launched them, even one killed by SIGKILL: each is started by
a ``/bin/sh`` that leaves a watchdog in the browser's process group, blocked reading a *lifeline*
pipe whose only write end the launching process holds, then execs the browser (same pid). When
the launcher dies, the kernel closes that end; the watchdog reads end-of-file and SIGKILLs the
whole group (the browser, Firefox's content processes, Chromium's zygotes, itself). Unlike a
parent-death signal (``PR_SET_PDEATHSIG``) this does not depend on which thread forked, needs no
``preexec_fn``, and reaches every process of the group, not only the one it was set on. On top,
Chromium is driven over ``--remote-debugging-pipe`` (see :mod:`poolwarden.browser.pipe`) and closes
itself when that pipe closes. :func:`sweep_orphans` (the pool runs it at start-up) kills whatever
still escaped, by ownership marker.

Firefox is launched with no remote-control port unless asked (``remote_port=True``): its start
page comes from the profile's prefs, which no other user can read, so the URL may hold a secret.

Everything that reads ``/proc`` (psutil) runs in a thread, never on the event loop.
"""

# ruff: noqa: ASYNC109 -- a launch has its own start-up deadline, reported as BrowserLaunchFailed.

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from poolwarden.browser.cdp import DevTools
from poolwarden.browser.pipe import PipeTransport, chromium_pipes
from poolwarden.errors import BrowserError, BrowserLaunchFailed, BrowserNotFound, DevToolsError

__all__ = [
    "CHROMIUM_CANDIDATES",
    "CHROMIUM_FLAGS",
    "FIREFOX_CANDIDATES",
    "FIREFOX_PREFS",
    "MARKER_FILE",
    "BrowserProcess",
    "find_chromium",
    "find_firefox",
    "launch_chromium",
    "launch_firefox",
    "profiles_root",
    "sweep_orphans",
    "tree_pss",
]

CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "microsoft-edge",
    "microsoft-edge-stable",
)
"""Where Chromium is looked for, in order (absolute paths, then names on PATH). Debian's
``/usr/bin/chromium`` is a wrapper script; the binary itself comes first so signals reach it."""

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-default-browser-check",
    "--mute-audio",
    # DevTools over fds 3 and 4 only: no port any local user could reach, and the browser closes
    # itself when our end of the pipe closes (we died).
    "--remote-debugging-pipe",
)
"""Flags every worker Chromium gets; ``--enable-unsafe-webgpu`` and the user-data-dir are added
per launch."""

_WATCHDOG = "{ read -r _ <&9; kill -s KILL 0; } 3<&- 4>&- &"
"""The watchdog: blocks reading the lifeline (fd 9) until the launcher's end closes, then SIGKILLs
its own process group, which is the browser's. It holds neither of Chromium's pipes (fds 3 and 4),
so a browser that exits still closes them for the launcher to see."""

_CHROMIUM_EXEC = (
    f'exec 3<&0 4>&1 9<&2 0</dev/null 1>/dev/null 2>>"$1"; shift\n{_WATCHDOG}\nexec 9<&- "$0" "$@"'
)
"""How Chromium is started: ``/bin/sh`` gets the DevTools pipes as stdin and stdout and the lifeline
as stderr (the three descriptors a launch can hand over without ``pass_fds``, whose numbers dash
could not name), moves them to fds 3, 4 and 9, points stdin/stdout at /dev/null and stderr at the
log (``$1``), leaves the watchdog behind and execs the browser (``$0``; same pid, so same process
group). No ``preexec_fn``: forking with Python code to run in the child is unsafe while other
threads (``asyncio.to_thread``) hold locks."""

_FIREFOX_EXEC = f'exec 9<&2 2>>"$1"; shift\n{_WATCHDOG}\nexec 9<&- "$0" "$@"'
"""How Firefox is started: as Chromium, without the DevTools pipes (stdin/stdout are /dev/null)."""

FIREFOX_CANDIDATES = ("firefox-esr", "firefox")
"""Names of Firefox looked for on PATH, in order."""

FIREFOX_PREFS: dict[str, bool | int | str] = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.telemetry.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "extensions.update.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
}
"""Prefs written to every worker Firefox profile (user.js); the WebGPU prefs and the start page
are added per launch."""

MARKER_FILE = "poolwarden-owner.json"
"""The file in each user-data-dir naming the process that owns the browser."""


def profiles_root() -> Path:
    """The folder holding the user-data-dirs of the browsers poolwarden launches: one per user
    (``poolwarden-browsers-<uid>`` in the temp dir), created 0700, so that no other local user can
    read a profile, plant a marker in it, or swap a profile for another."""
    return Path(tempfile.gettempdir()) / f"poolwarden-browsers-{os.geteuid()}"


def find_chromium(path: str | os.PathLike[str] | None = None) -> str:
    """The Chromium executable: ``path`` when given, else the first of CHROMIUM_CANDIDATES found."""
    return _find("chromium", [os.fspath(path)] if path is not None else CHROMIUM_CANDIDATES)


def find_firefox(path: str | os.PathLike[str] | None = None) -> str:
    """The Firefox executable: ``path`` when given, else the first of FIREFOX_CANDIDATES found."""
    return _find("firefox", [os.fspath(path)] if path is not None else FIREFOX_CANDIDATES)


def _find(browser: str, candidates: Sequence[str]) -> str:
    for candidate in candidates:
        found = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return found
    raise BrowserNotFound(browser, candidates)


@dataclass(eq=False)
class BrowserProcess:
    """A running browser that poolwarden launched and owns."""

    kind: str
    process: asyncio.subprocess.Process
    user_data_dir: Path
    devtools_port: int
    devtools_path: str
    url: str
    devtools: DevTools | None = None
    """Chromium: the CDP client on the browser's private pipe, connected at launch (there is only
    one pipe, so only one client). Closing it makes the browser close itself. Firefox: None."""
    lifeline: int | None = None
    """Our (only) write end of the watchdog's lifeline: closing it, or our death, kills the group."""

    @property
    def pid(self) -> int:
        """The browser's main process id (also its process group id)."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the main process has not exited."""
        return self.process.returncode is None

    @property
    def devtools_url(self) -> str:
        """Firefox's WebDriver BiDi WebSocket URL (Chromium has no port: use :attr:`devtools`)."""
        if not self.devtools_port:
            raise BrowserError(f"{self.kind} has no remote-control port (it is driven over a pipe)")
        return f"ws://127.0.0.1:{self.devtools_port}{self.devtools_path}"

    async def kill(self, *, remove_profile: bool = True) -> None:
        """Kill the whole process tree (SIGKILL to the group, then stragglers), and remove the profile
        (unless told not to: a restart removes it while the next browser starts)."""
        # The group first: a stopped (SIGSTOP) or hung browser answers nothing, so nothing may
        # wait on it before it is dead; SIGKILL ends a stopped process all the same.
        self.cut_lifeline()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.devtools is not None:
            await self.devtools.close()
        await self.process.wait()
        await asyncio.to_thread(_kill_users_of, self.user_data_dir)
        if remove_profile:
            await self.remove_profile()

    def cut_lifeline(self) -> None:
        """Close our end of the lifeline: the watchdog SIGKILLs the browser's group (idempotent)."""
        lifeline, self.lifeline = self.lifeline, None
        if lifeline is not None:
            os.close(lifeline)

    async def stderr_tail(self, size: int = 2000) -> str:
        """The end of what the browser wrote to stderr (its ``stderr.log``), for error messages."""
        return await asyncio.to_thread(_tail, self.user_data_dir / "stderr.log", size)

    async def remove_profile(self) -> None:
        """Delete the user-data-dir (in a thread: it holds a hundred files or more)."""
        await asyncio.to_thread(shutil.rmtree, self.user_data_dir, True)

    async def pss_bytes(self) -> int:
        """The proportional set size of the browser's process tree, in bytes (0 once it is gone)."""
        return await asyncio.to_thread(tree_pss, self.pid)

    async def stopped(self) -> bool:
        """Whether the browser's main process or any of its children is stopped (SIGSTOP, a
        frozen cgroup): such a browser answers nothing, DevTools included (read in a thread)."""
        return await asyncio.to_thread(_tree_stopped, self.pid)

    async def renderer_pids(self) -> list[int]:
        """The pids of the browser's renderer processes (where its pages run)."""
        return await asyncio.to_thread(_renderers, self.pid)


async def launch_chromium(
    url: str = "about:blank",
    *,
    executable: str | os.PathLike[str] | None = None,
    webgpu: bool = True,
    extra_args: Iterable[str] = (),
    root: Path | None = None,
    timeout: float = 15.0,
) -> BrowserProcess:
    """Start headless Chromium on ``url``, driven over its DevTools pipe, and wait until it answers.

    ``url`` is on the command line, which every local user can read (``/proc/<pid>/cmdline``): pass
    nothing secret. A worker page is opened afterwards over the pipe
    (:meth:`~poolwarden.browser.cdp.DevTools.open_page`). The returned process's ``devtools`` is the
    connected CDP client. ``webgpu`` adds ``--enable-unsafe-webgpu`` (without it Linux Chromium
    offers no adapter, and the page falls back to JavaScript). Raises BrowserNotFound or
    BrowserLaunchFailed.
    """
    binary = find_chromium(executable)
    profile = await asyncio.to_thread(_new_profile, root or profiles_root(), "chromium")
    args = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if webgpu:
        args.append("--enable-unsafe-webgpu")
    args.extend(extra_args)
    args.append(url)
    pipes = chromium_pipes()
    try:
        process, lifeline = await _start(
            _CHROMIUM_EXEC, binary, args, profile, stdin=pipes.child_read, stdout=pipes.child_write
        )
    except BaseException:
        pipes.close_all()
        await asyncio.to_thread(shutil.rmtree, profile, True)
        raise
    pipes.close_child_ends()  # the browser holds them now; ours must not keep its fd 3 open
    devtools = DevTools(PipeTransport(pipes.parent_read, pipes.parent_write))
    browser = BrowserProcess("chromium", process, profile, 0, "", url, devtools, lifeline)
    try:
        await devtools.open()
        try:
            # The first answer on the pipe is the sign the browser is up; an exit at start-up
            # closes the pipe, which fails this command at once.
            await devtools.send("Browser.getVersion", timeout=timeout)
        except DevToolsError as exc:
            if process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # exiting: wait for its code
                        await process.wait()
            if process.returncode is not None:
                tail = await asyncio.to_thread(_tail, profile / "stderr.log")
                raise BrowserLaunchFailed(
                    f"chromium exited with {process.returncode} at start-up: {tail}"
                ) from exc
            raise BrowserLaunchFailed(f"chromium did not answer on its DevTools pipe: {exc}") from exc
        return browser
    except BaseException:
        await browser.kill()
        raise


async def launch_firefox(
    url: str,
    *,
    executable: str | os.PathLike[str] | None = None,
    webgpu: bool = True,
    remote_port: bool = False,
    extra_args: Iterable[str] = (),
    root: Path | None = None,
    timeout: float = 30.0,
) -> BrowserProcess:
    """Start headless Firefox on ``url`` with a fresh profile.

    ``url`` is the start page, set in the profile's prefs (``browser.startup.homepage``), not on
    the command line: the profile is 0700, so the URL may carry a secret no other user can read.

    ``remote_port=False`` (the default): Firefox opens no port at all and no one, not even the
    caller, can drive it; it returns once the process runs. ``remote_port=True``: Firefox also
    listens for WebDriver BiDi on a random loopback port, **which every local user can reach**
    (no authentication: whoever opens the one session may run script in any page, read files
    through ``file://``, install an extension); it returns once the port is open
    (:attr:`BrowserProcess.devtools_url`). ``webgpu`` sets the WebGPU prefs (Firefox ESR on a
    machine without a GPU offers no adapter anyway; the page then uses its JavaScript path). The
    profile also turns off the network chatter (updates, telemetry, remote settings) a worker has
    no use for.
    """
    binary = find_firefox(executable)
    profile = await asyncio.to_thread(_new_profile, root or profiles_root(), "firefox")
    prefs = {**FIREFOX_PREFS, "dom.webgpu.enabled": webgpu, "gfx.webgpu.ignore-blocklist": webgpu}
    if url == "about:blank":
        prefs["browser.startup.page"] = 0  # a blank page (a home page of about:blank is not one)
    else:
        prefs |= {"browser.startup.page": 1, "browser.startup.homepage": url}  # the home page
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in prefs.items()]
    await asyncio.to_thread((profile / "user.js").write_text, "\n".join(lines) + "\n")
    args = ["--headless", "--no-remote", "--profile", str(profile)]
    if remote_port:
        args += ["--remote-debugging-port", "0"]
    args.extend(extra_args)
    endpoint = _firefox_endpoint if remote_port else _no_endpoint
    return await _spawn("firefox", binary, args, profile, url, endpoint, timeout)


def _no_endpoint(profile: Path) -> tuple[int, str]:
    return (0, "")


def _firefox_endpoint(profile: Path) -> tuple[int, str] | None:
    # Firefox writes its WebDriver BiDi port here once it listens.
    try:
        port = json.loads(_read_text(profile / "WebDriverBiDiServer.json") or "{}").get("ws_port")
    except ValueError:
        return None  # half-written
    return (port, "/session") if isinstance(port, int) and port > 0 else None


async def _start(
    script: str,
    binary: str,
    args: Sequence[str],
    profile: Path,
    *,
    stdin: int = asyncio.subprocess.DEVNULL,
    stdout: int = asyncio.subprocess.DEVNULL,
) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``binary`` through ``script`` (see _CHROMIUM_EXEC); return it and our lifeline end."""
    lifeline_read, lifeline = os.pipe()  # both non-inheritable: no other child of ours holds them
    try:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            script,
            binary,
            str(profile / "stderr.log"),
            *args,
            stdin=stdin,
            stdout=stdout,
            stderr=lifeline_read,
            start_new_session=True,  # its own process group, killed whole
        )
    except BaseException:
        os.close(lifeline)
        raise
    finally:
        os.close(lifeline_read)  # the watchdog holds its own
    return process, lifeline


async def _spawn(
    kind: str,
    binary: str,
    args: Sequence[str],
    profile: Path,
    url: str,
    endpoint: Callable[[Path], tuple[int, str] | None],
    timeout: float,
) -> BrowserProcess:
    try:
        process, lifeline = await _start(_FIREFOX_EXEC, binary, args, profile)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, profile, True)
        raise
    browser = BrowserProcess(kind, process, profile, 0, "", url, lifeline=lifeline)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if process.returncode is not None:
                tail = await asyncio.to_thread(_tail, profile / "stderr.log")
                raise BrowserLaunchFailed(f"{kind} exited with {process.returncode} at start-up: {tail}")
            found = await asyncio.to_thread(endpoint, profile)
            if found is not None:
                browser.devtools_port, browser.devtools_path = found
                return browser
            if time.monotonic() > deadline:
                raise BrowserLaunchFailed(f"{kind} did not open its remote-control port within {timeout} s")
            await asyncio.sleep(delay)  # the file appears when the browser is ready; no event to await
            delay = min(delay * 2, 0.1)
    except BaseException:
        await browser.kill()
        raise


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def _private_root(root: Path) -> Path:
    # A root another user owns or may write to would let them swap a live profile for one with a
    # dead owner's marker (and have the sweep kill a live browser), or read what is in a profile.
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise BrowserLaunchFailed(
            f"{root} must be a directory owned by uid {os.geteuid()} and writable by no one else"
        )
    return root


def _new_profile(root: Path, kind: str) -> Path:
    profile = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=_private_root(root)))  # mode 0700
    me = psutil.Process()
    marker = {"owner_pid": me.pid, "owner_create_time": me.create_time(), "created_at": time.time()}
    (profile / MARKER_FILE).write_text(json.dumps(marker))
    return profile


def _owner_alive(marker: dict[str, object]) -> bool:
    pid, created = marker.get("owner_pid"), marker.get("owner_create_time")
    if not isinstance(pid, int) or not isinstance(created, int | float):
        return False
    try:
        # A recycled pid belongs to a process started at another time.
        return abs(psutil.Process(pid).create_time() - created) < 1.0
    except psutil.Error:
        return False


def _uses_profile(proc: psutil.Process, profile: Path) -> bool:
    # Chromium: --user-data-dir=<profile>; Firefox: --profile <profile>.
    path = str(profile)
    try:
        return any(arg == path or arg.endswith("=" + path) for arg in proc.cmdline())
    except psutil.Error:
        return False


def _kill_users_of(profile: Path) -> list[int]:
    killed = []
    for proc in psutil.process_iter():
        if not _uses_profile(proc, profile):
            continue
        # A session leader we started: its group also holds the children without the flag
        # (Firefox's content processes). Once the group is killed, the process may be reaped at
        # any moment, so a vanished process counts as killed rather than as an error.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()
        killed.append(proc.pid)
    return killed


def _sweep(root: Path) -> list[int]:
    killed: list[int] = []
    try:
        profiles = list(root.iterdir())
    except OSError:
        return killed  # no such folder (nothing was ever launched), or not ours to read
    for profile in profiles:
        try:
            if profile.is_symlink() or profile.lstat().st_uid != os.geteuid():
                continue  # not ours: never act on what another user put here
            marker = json.loads((profile / MARKER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or half-written by a launch in progress
        if isinstance(marker, dict) and _owner_alive(marker):
            continue
        killed.extend(_kill_users_of(profile))
        shutil.rmtree(profile, ignore_errors=True)
    return killed


async def sweep_orphans(root: Path | None = None) -> list[int]:
    """Kill browsers whose owning Python process is gone, remove their profiles; return the pids killed."""
    return await asyncio.to_thread(_sweep, root or profiles_root())


def tree_pss(pid: int) -> int:
    """PSS of process ``pid`` and all its descendants, in bytes (blocking: call it in a thread)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total


def _tree_stopped(pid: int) -> bool:
    try:
        main = psutil.Process(pid)
        processes = [main, *main.children(recursive=True)]
    except psutil.Error:
        return False
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_STOPPED:
                return True
    return False


def _renderers(pid: int) -> list[int]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    pids = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            cmdline = child.cmdline()
            # Chromium's renderers; Firefox's content processes that host tabs.
            if "--type=renderer" in cmdline or ("-contentproc" in cmdline and "tab" in cmdline):
                pids.append(child.pid)
    return pids
