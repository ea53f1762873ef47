"""The one error tree of poolwarden.

Every error poolwarden raises on purpose derives from :class:`PoolwardenError`. Errors carry
structured fields (the file, the stream, the retry time) besides their message, so that callers
can act on them without parsing text. Some also derive from the standard exception with the same
meaning (``TypeError``, ``ValueError``, ``TimeoutError``) so that generic handlers keep working.

.. code-block:: text

    PoolwardenError
    ├── ConfigurationError (ValueError)
    ├── StoreError
    │   ├── StoreClosed
    │   ├── ConcurrencyConflict
    │   ├── EventNotSerializable (TypeError)
    │   ├── DatabaseError                 -- a problem with the database file itself
    │   │   ├── DatabaseUnavailable       -- missing folder, no permission, cannot open
    │   │   ├── ReadOnlyDatabase
    │   │   ├── CorruptDatabase           -- not SQLite, truncated, integrity check failed
    │   │   ├── DatabaseLocked            -- other writers held the lock past the timeout
    │   │   └── SchemaMismatch
    │   │       ├── SchemaOutdated        -- older than the code and upgrades were refused
    │   │       └── SchemaTooNew          -- written by a newer poolwarden
    │   ├── WriteFailed                   -- buffered appends that could not be committed
    │   └── LeaseLost (OwnershipError)    -- a write fenced by a lease another owner has since taken
    ├── OwnershipError                    -- who owns a pool's streams
    │   ├── LeaseHeld                     -- another live owner holds the pool's name
    │   └── LeaseLost (StoreError)
    ├── StateMachineError
    │   ├── InvalidTransition
    │   └── ReplayError                   -- a recorded event cannot be folded into state
    ├── ProtocolError                     -- a message broke the worker protocol
    ├── BrowserError                      -- a browser process could not be driven
    │   ├── BrowserNotFound (ConfigurationError)
    │   ├── BrowserLaunchFailed
    │   └── DevToolsError                 -- a CDP or BiDi command failed or went unanswered
    └── RequestError                      -- a request the pool could not serve
        ├── WorkerDisconnected            -- the worker's socket closed or is not attached
        ├── CircuitOpen
        │   └── IsolatedByOperator        -- every connection left was isolated by a person
        ├── NoHealthyConnection
        ├── MemoryPressure                -- a new model load refused under memory pressure
        ├── QueueFull
        ├── DeadlineExceeded (TimeoutError)
        ├── ModelError
        ├── InvalidInput (ValueError)
        └── UnknownModel (KeyError)
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "BrowserError",
    "BrowserLaunchFailed",
    "BrowserNotFound",
    "CircuitOpen",
    "ConcurrencyConflict",
    "ConfigurationError",
    "CorruptDatabase",
    "DatabaseError",
    "DatabaseLocked",
    "DatabaseUnavailable",
    "DeadlineExceeded",
    "DevToolsError",
    "EventNotSerializable",
    "InvalidInput",
    "InvalidTransition",
    "IsolatedByOperator",
    "LeaseHeld",
    "LeaseLost",
    "MemoryPressure",
    "ModelError",
    "NoHealthyConnection",
    "OwnershipError",
    "PoolwardenError",
    "ProtocolError",
    "QueueFull",
    "ReadOnlyDatabase",
    "ReplayError",
    "RequestError",
    "SchemaMismatch",
    "SchemaOutdated",
    "SchemaTooNew",
    "StateMachineError",
    "StoreClosed",
    "StoreError",
    "UnknownModel",
    "WorkerDisconnected",
    "WriteFailed",
]


class PoolwardenError(Exception):
    """Base class of every error poolwarden raises on purpose."""


class ConfigurationError(PoolwardenError, ValueError):
    """A setting or an argument is not valid."""


# --- the event store -------------------------------------------------------------------------


class StoreError(PoolwardenError):
    """The event store could not do what was asked."""


class StoreClosed(StoreError):
    """The store was closed; nothing more can be appended or read through it."""


class ConcurrencyConflict(StoreError):
    """An append expected a stream version that is no longer (or not yet) the stream's head.

    Nothing of the conflicting append was written.
    """

    def __init__(self, stream: str, expected_version: int, actual_version: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual_version}, the append expected {expected_version}"
        )
        self.stream = stream
        self.expected_version = expected_version
        self.actual_version = actual_version


class EventNotSerializable(StoreError, TypeError):
    """An event's payload cannot be stored as JSON."""

    def __init__(self, event_type: str, reason: str) -> None:
        super().__init__(f"payload of {event_type!r} is not JSON-serialisable: {reason}")
        self.event_type = event_type
        self.reason = reason


class DatabaseError(StoreError):
    """A problem with the database file itself: where it is, what it holds, who may write it."""

    hint = "check the path and the file"

    def __init__(self, path: str | Path | None, detail: str, hint: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.detail = detail
        if hint is not None:
            self.hint = hint
        where = self.path if self.path is not None else "the database"
        super().__init__(f"{where}: {detail} ({self.hint})")


class DatabaseUnavailable(DatabaseError):
    """The database cannot be opened: its folder is missing, or permission is denied."""

    hint = "create the folder or fix its permissions"


class ReadOnlyDatabase(DatabaseError):
    """The database file or its folder cannot be written; appends are impossible."""

    hint = "make the file and its folder writable, or open the store with read_only=True"


class CorruptDatabase(DatabaseError):
    """The file is not an SQLite database, or SQLite reports it damaged."""

    hint = "restore it from a backup, or move it aside and start a new file"


class DatabaseLocked(DatabaseError):
    """Other connections held the write lock longer than the store was willing to wait."""

    hint = "another process is writing; retry, or raise busy_timeout"


class SchemaMismatch(DatabaseError):
    """The file's schema revision is not the one this code expects."""

    def __init__(self, path: str | Path | None, found: str | None, expected: str, detail: str) -> None:
        self.found = found
        self.expected = expected
        super().__init__(path, detail)


class SchemaOutdated(SchemaMismatch):
    """The file's schema is older than the code, and upgrading was not allowed."""

    hint = "run `poolwarden db upgrade --db PATH`, or open the store with upgrade=True"


class SchemaTooNew(SchemaMismatch):
    """The file was written by a newer poolwarden whose schema this code does not know."""

    hint = "upgrade poolwarden to read this file"


class WriteFailed(StoreError):
    """Buffered appends that had been accepted could not be committed.

    ``failures`` pairs each failed append's stream with the error that stopped it.
    """

    def __init__(self, failures: Sequence[tuple[str, BaseException]]) -> None:
        self.failures = list(failures)
        first = self.failures[0] if self.failures else ("?", RuntimeError("unknown"))
        super().__init__(
            f"{len(self.failures)} buffered append(s) could not be committed; first: "
            f"stream {first[0]!r}: {first[1]}"
        )


# --- the state machines -----------------------------------------------------------------------


# --- ownership of a pool's streams ------------------------------------------------------------


class OwnershipError(PoolwardenError):
    """Who may write a pool's streams: a lease on the pool's name decides (see ``poolwarden.lease``)."""


class LeaseHeld(OwnershipError):
    """Another owner holds the lease on this pool name and its lease has not expired.

    ``holder`` says who (host, pid, start time); ``expires_at`` is when the lease lapses unless
    its holder renews it, which a live holder does every third of its time to live.
    """

    def __init__(self, name: str, holder: str, expires_at: float, now: float) -> None:
        self.name = name
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(
            f"pool {name!r} is owned by {holder} (its lease runs {max(expires_at - now, 0.0):.1f} s more "
            "and is renewed while it lives): stop that pool first, or give this one another name"
        )


class LeaseLost(OwnershipError, StoreError):
    """A write was fenced: the lease it was made under has been taken over by a newer owner.

    ``fence`` is the writer's fencing number, ``current`` the lease's now (``None``: released).
    Nothing of the refused append or snapshot was written.
    """

    def __init__(self, name: str, fence: int, current: int | None) -> None:
        self.name = name
        self.fence = fence
        self.current = current
        now = "released" if current is None else f"held under fence {current}"
        super().__init__(
            f"pool {name!r}: this owner's lease (fence {fence}) is lost, the lease is now {now}; "
            "the write was refused"
        )


class StateMachineError(PoolwardenError):
    """A state machine was driven in a way its design forbids."""


class InvalidTransition(StateMachineError):
    """An input is not allowed in the machine's current state."""

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        super().__init__(f"{machine}: {trigger!r} is not allowed in state {state}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


class ReplayError(StateMachineError):
    """A recorded event cannot be folded into a machine: unknown type, or impossible where it is.

    ``stream`` and ``version`` say which event; nothing is guessed past it.
    """

    def __init__(self, stream: str, version: int | None, detail: str) -> None:
        where = f"{stream!r} version {version}" if version is not None else repr(stream)
        super().__init__(f"cannot replay {where}: {detail}")
        self.stream = stream
        self.version = version
        self.detail = detail


# --- the wire --------------------------------------------------------------------------------


class ProtocolError(PoolwardenError):
    """A message from a browser worker broke the protocol (malformed, unknown, too large).

    ``kind`` names the breach (``malformed``, ``unknown_type``, ``too_large``, ``bad_tensor``,
    ``bad_token``, ``unsupported_version``, ...) as it is sent back to the peer in the error reply.
    """

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


# --- browsers --------------------------------------------------------------------------------


class BrowserError(PoolwardenError):
    """A browser process could not be found, started or driven."""


class BrowserNotFound(BrowserError, ConfigurationError):
    """No executable of the requested browser was found; ``tried`` lists the places looked at."""

    def __init__(self, browser: str, tried: Sequence[str]) -> None:
        self.browser = browser
        self.tried = list(tried)
        super().__init__(f"no {browser} executable found (tried: {', '.join(self.tried)})")


class BrowserLaunchFailed(BrowserError):
    """The browser was started but did not come up (exited, or never answered on its DevTools pipe
    or opened its BiDi port), or its profiles folder is not private to this user."""


class DevToolsError(BrowserError):
    """A Chrome DevTools Protocol (or WebDriver BiDi) command failed, or its answer did not come in time."""


# --- requests --------------------------------------------------------------------------------


class RequestError(PoolwardenError):
    """A request to the pool was not served; the subclass says why.

    ``attempted`` names the connections whose breakers recorded a failed attempt of the request,
    in order (the pool's request path sets it on the error it raises; empty otherwise).
    """

    attempted: tuple[str, ...] = ()


def _readable_times(text: str) -> str:
    """``text`` with each epoch (seconds, 2001 or later, with decimals) as an ISO time, UTC."""

    def iso(match: re.Match[str]) -> str:
        when = datetime.fromtimestamp(float(match.group(0)), tz=UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return re.sub(r"\b[1-9]\d{9}\.\d+\b", iso, text)


class CircuitOpen(RequestError):
    """A circuit breaker rejected the call; it may be retried at ``retry_at`` (epoch seconds).

    The message shows times as a person reads them: ``retry_at`` (and any epoch in ``reason``)
    as an ISO time, and how many seconds from ``now`` (the caller's clock; the system's by
    default) that is. ``reason`` keeps the breaker's words as they were.
    """

    def __init__(self, key: str, reason: str, retry_at: float | None, *, now: float | None = None) -> None:
        message = f"circuit {key!r} is open: {_readable_times(reason)}"
        if retry_at is not None:
            wait = retry_at - (time.time() if now is None else now)
            message += f" (retry in {wait:.1f} s)" if wait >= 0 else f" (retry was due {-wait:.1f} s ago)"
        super().__init__(message)
        self.key = key
        self.reason = reason
        self.retry_at = retry_at


class IsolatedByOperator(CircuitOpen):
    """Every connection that could serve was isolated by a person (its breaker forced open), and
    nothing else is left: panic routing never overrides a person's decision. ``connections``
    names them."""

    def __init__(self, connections: Sequence[str]) -> None:
        names = ", ".join(connections)
        super().__init__(names, f"isolated by an operator ({names}); no other connection is left", None)
        self.connections = tuple(connections)


class MemoryPressure(RequestError):
    """A new model load was refused under memory pressure: the host's memory in use
    (``percent``) is at or above ``threshold`` (of the pressure ``level``, warning or critical).
    Models already loaded keep serving."""

    def __init__(self, message: str, *, level: str, percent: float, threshold: float) -> None:
        super().__init__(message)
        self.level = level
        self.percent = percent
        self.threshold = threshold


class WorkerDisconnected(RequestError):
    """The worker's socket closed before answering, or no page is attached to that worker now.

    Retryable: the request never completed, so sending it to another worker is safe. ``code`` is
    the WebSocket close code when one was seen (1006 when the peer vanished without a close frame).
    """

    def __init__(self, connection_id: str, code: int | None = None, reason: str = "") -> None:
        detail = f" (close code {code}{': ' + reason if reason else ''})" if code is not None else ""
        super().__init__(f"worker {connection_id!r} is not connected{detail}")
        self.connection_id = connection_id
        self.code = code
        self.reason = reason


class NoHealthyConnection(RequestError):
    """No connection of the pool can serve the request now."""


class QueueFull(RequestError):
    """The pool's or the connection's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(RequestError, TimeoutError):
    """The request's deadline passed before it was answered."""


class ModelError(RequestError):
    """The model failed on the worker; ``kind`` is the error kind the worker reported."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class InvalidInput(RequestError, ValueError):
    """The request's inputs do not fit the model."""


class UnknownModel(RequestError, KeyError):
    """No model of that id is known to the pool."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"
