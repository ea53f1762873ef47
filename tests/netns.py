"""Test hosts made of Linux network namespaces: each a namespace with a veth pair to this one.

A host is a network namespace ``pw-<pid>-<letter>`` holding one end of a veth pair, with its own
address in a private /30 (``10.213.k.2``); the other end stays here with ``10.213.k.1``, where a
server listening on that address is reached from the host. Traffic stays on this machine. A
process runs on a host through ``ip netns exec NAME ...`` (:meth:`Host.command`).

Creating namespaces needs root (CI runs as root) and iproute2's ``ip``; :func:`unavailable`
says why they cannot be made here, and :func:`hosts` makes them and removes everything it made
afterwards (also after a failure), ending the processes still inside them (ours: the namespaces
are this process's own).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["NETWORK", "Host", "hosts", "unavailable"]

NETWORK = ipaddress.IPv4Network("10.213.0.0/16")
"""Where the hosts' /30s are taken from (a range nothing on the development machine or CI uses:
:func:`hosts` also skips any /30 that an address of this machine already falls in)."""


def _ip(*args: str) -> str:
    """Run ``ip ARGS``; its stdout. A failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (not root, no ``ip``), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the fleet tests as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    return None


@dataclass(frozen=True, slots=True)
class Host:
    """One test host: a namespace and its veth pair."""

    namespace: str
    outside: str
    """The veth end in this (the root) namespace."""
    inside: str
    """The veth end in the host's namespace."""
    address: str
    """The host's address, as servers see it."""
    gateway: str
    """This side's address on the host's link: where the host reaches a server running here."""

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        """Take the host's link down (a partition: nothing passes either way)."""
        _ip("link", "set", self.outside, "down")

    def mend(self) -> None:
        """Bring the host's link up again."""
        _ip("link", "set", self.outside, "up")

    def pids(self) -> list[int]:
        """The processes running in the host's namespace."""
        return [int(pid) for pid in _ip("netns", "pids", self.namespace).split()]


def _used_subnets() -> set[ipaddress.IPv4Network]:
    """The /30s of NETWORK that an address of this machine already falls in."""
    used: set[ipaddress.IPv4Network] = set()
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        words = line.split()
        address = ipaddress.IPv4Interface(words[words.index("inet") + 1])
        if address.ip in NETWORK:
            used.add(ipaddress.IPv4Network((int(address.ip) & ~3, 30)))
    return used


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    used = _used_subnets()
    subnets = list(NETWORK.subnets(new_prefix=30))
    start = os.getpid() % len(subnets)  # concurrent runs start apart
    free = [s for s in subnets[start:] + subnets[:start] if s not in used]
    return free[:count]


def _remove(host: Host) -> None:
    """End the processes left in ``host``, delete its link and its namespace (what exists of them)."""
    with contextlib.suppress(RuntimeError):  # the namespace may not have been made
        for pid in host.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for args in (("link", "del", host.outside), ("netns", "del", host.namespace)):
        subprocess.run(["ip", *args], capture_output=True, timeout=30)  # absent already is fine


def _make(host: Host) -> None:
    _ip("netns", "add", host.namespace)
    _ip("link", "add", host.outside, "type", "veth", "peer", "name", host.inside)
    _ip("link", "set", host.inside, "netns", host.namespace)
    _ip("addr", "add", f"{host.gateway}/30", "dev", host.outside)
    _ip("link", "set", host.outside, "up")
    _ip("-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", host.inside)
    _ip("-n", host.namespace, "link", "set", host.inside, "up")
    _ip("-n", host.namespace, "link", "set", "lo", "up")


@contextlib.contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """``count`` hosts (namespaces ``pw-<pid>-a``, ``-b`` ...), removed when the block ends.

    Raises RuntimeError (with ip's message) when one cannot be made; see :func:`unavailable`."""
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    if count > 26:
        raise ValueError("at most 26 hosts")
    subnets = _free_subnets(count)
    pid = os.getpid()
    made: list[Host] = []
    try:
        for index, subnet in enumerate(subnets):
            letter = "abcdefghijklmnopqrstuvwxyz"[index]
            gateway, address = list(subnet.hosts())
            host = Host(
                namespace=f"pw-{pid}-{letter}",
                outside=f"pw{pid}{letter}o",  # an interface name holds at most 15 characters
                inside=f"pw{pid}{letter}i",
                address=str(address),
                gateway=str(gateway),
            )
            made.append(host)
            _make(host)
        yield made
    finally:
        for host in reversed(made):
            _remove(host)
