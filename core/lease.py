"""Who owns a pool's streams: a lease on the pool's name, with a fencing number.

A pool has a name (default ``main``); the streams it writes are its own. Before it writes
anything it takes the lease on its name in the log it writes to. The rules, which every store
backend applies inside its write transactions (the contract tests check them):

* **Taking.** A lease that does not exist, was released, or has expired (``expires_at`` passed by
  the store's clock) is taken: its holder is the new owner, its ``expires_at`` is now plus the
  time to live, and its *fencing number* is one more than any fencing number the log ever gave
  (for any name), so a fencing number names one owner's term across the whole log. A lease that
  is held and has not expired is refused with :class:`~poolwarden.errors.LeaseHeld`, whoever asks.
* **Renewing.** The holder renews its lease (a heartbeat, every third of the time to live) while
  the fencing number is still its own; once another owner has taken over, renewal raises
  :class:`~poolwarden.errors.LeaseLost`. A holder that was stopped (SIGSTOP, a long GC pause, a
  suspended VM) past its lease learns this at its next heartbeat or write.
* **Fencing.** Every append and snapshot of an owner carries its fencing number. The store checks
  it against the lease's inside the transaction that would write it and refuses it
  (:class:`~poolwarden.errors.LeaseLost`, nothing written) when the lease has moved on. The check
  and the write are one transaction, so no late write of a stale owner lands after a takeover,
  whatever the timing. The fencing number is stored in each event (column ``fence``).
* **Releasing.** A clean stop releases the lease (it expires at once; the fencing number stays,
  so the next owner's is higher).

Pure: the decisions are functions of the row the store read and the store's clock; the store
does the reading and writing.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from poolwarden.errors import ConfigurationError, LeaseHeld, LeaseLost

__all__ = [
    "DEFAULT_POOL_NAME",
    "Lease",
    "LeaseRow",
    "check_pool_name",
    "decide_renew",
    "decide_take",
    "holder_id",
    "is_pool_name",
]

DEFAULT_POOL_NAME = "main"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def is_pool_name(name: str) -> bool:
    """Whether ``name`` is a valid pool name: 1 to 40 of ``a-z 0-9 _ -``, starting with a letter
    or digit (it becomes part of stream and connection ids), and not starting with ``conn-``
    (the default pool's connection ids, and so its breakers' keys, start with that)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and not name.startswith("conn-")


def check_pool_name(name: str) -> str:
    """``name`` if it is a valid pool name (:func:`is_pool_name`), else a :class:`ConfigurationError`."""
    if not is_pool_name(name):
        raise ConfigurationError(
            f"a pool name is 1 to 40 characters of a-z, 0-9, '_' and '-', starting with a letter or digit "
            f"and not with 'conn-' (the default pool's connection ids); not {name!r}"
        )
    return name


def holder_id() -> str:
    """Who this process is, for a lease: host, pid and the process's start (so a reused pid is
    another holder)."""
    started = ""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as stat:
            started = stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):  # not Linux: host and pid still tell who it is
        pass
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this owner holds: write with its :attr:`fence`; renew before :attr:`expires_at`."""

    name: str
    holder: str
    fence: int
    acquired_at: float
    expires_at: float
    took_over_from: str | None = None
    """The holder whose expired lease this one replaced (``None``: it was free or released)."""


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The lease as the store holds it (one row per name)."""

    name: str
    holder: str
    fence: int
    expires_at: float
    released: bool


def decide_take(
    current: LeaseRow | None, *, name: str, holder: str, ttl: float, now: float, last_fence: int
) -> Lease:
    """The lease ``holder`` gets on ``name`` at ``now``, or :class:`LeaseHeld`.

    :param current: the name's row, if the log has one.
    :param last_fence: the highest fencing number the log ever gave (0 if none).
    """
    if not ttl > 0:
        raise ConfigurationError(f"a lease's time to live must be > 0 seconds, not {ttl}")
    took_over_from = None
    if current is not None and not current.released:
        if current.expires_at > now:
            raise LeaseHeld(name, current.holder, current.expires_at, now)
        took_over_from = current.holder
    return Lease(name, holder, last_fence + 1, now, now + ttl, took_over_from)


def decide_renew(current: LeaseRow | None, lease: Lease, *, ttl: float, now: float) -> Lease:
    """``lease`` renewed at ``now`` for ``ttl`` more seconds, or :class:`LeaseLost` if the row's
    fencing number is no longer ``lease``'s (taken over) or the lease was released."""
    if current is None or current.fence != lease.fence or current.released:
        raise LeaseLost(
            lease.name, lease.fence, None if current is None or current.released else current.fence
        )
    return Lease(lease.name, lease.holder, lease.fence, lease.acquired_at, now + ttl, lease.took_over_from)
