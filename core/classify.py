"""The one classifier: what kind of failure an exception (or an error message) is.

Breakers count failures by :class:`~poolwarden.policy.ErrorKind`, the pool decides on retries and
recovery by it, and the log records it in ``error_kind``. Every place that turns an error into a
kind asks :func:`classify`:

* the breaker guards (:mod:`poolwarden.aio.guard`), for any wrapped call: the default;
* the pool's request path (:mod:`poolwarden.pool.serving`), where the bridge's
  :class:`~poolwarden.errors.WorkerDisconnected` is a transport fault too:
  ``transport=REQUEST_TRANSPORT``;
* the lifecycle driver (:mod:`poolwarden.aio.lifecycle_driver`), which records a failed recovery
  step in the words its exception reported: ``transport=STEP_TRANSPORT, as_reported=True``;
* the seed's API (:mod:`poolwarden.compat`), which knows an error only by its message: a ``str``.

The rules, most specific first (the arguments change only the steps they name):

1. a cancellation (asyncio's ``CancelledError``, ``KeyboardInterrupt``, ``SystemExit``,
   ``GeneratorExit``) is ``cancelled``;
2. a ``TimeoutError`` (:class:`~poolwarden.errors.DeadlineExceeded` included) is ``timeout``;
3. :class:`~poolwarden.errors.InvalidInput` is ``input``;
4. a :class:`~poolwarden.errors.ModelError` is the kind the worker reported, ``unknown`` if that
   is no :class:`~poolwarden.policy.ErrorKind`;
5. an exception of one of the ``transport`` types (by default ``ConnectionError`` and every
   ``OSError``) is ``transport``;
6. ``MemoryError`` is ``out_of_memory``;
7. anything else is ``unknown``.

With ``as_reported=True`` (a lifecycle step's failure) steps 1, 3 and 6 are left out, and step 4
takes the string ``kind`` of *any* exception (a :class:`~poolwarden.errors.ProtocolError`'s
``bad_token``, a worker's own word) as it is, whether or not it is an ``ErrorKind``.

A message (the seed's ``update_circuit_breaker(error=...)``) is matched against
:data:`MESSAGE_PATTERNS`, first match wins; no message is ``unknown``.

Pure: no I/O, no asyncio import (asyncio's ``CancelledError`` is looked up only once asyncio is
loaded: an instance of it cannot exist before).
"""

from __future__ import annotations

import re
import sys
from typing import Literal, overload

from poolwarden.errors import InvalidInput, ModelError, ProtocolError, WorkerDisconnected
from poolwarden.policy import ErrorKind

__all__ = [
    "MESSAGE_PATTERNS",
    "REQUEST_TRANSPORT",
    "STEP_TRANSPORT",
    "TRANSPORT",
    "classify",
]

TRANSPORT: tuple[type[BaseException], ...] = (ConnectionError, OSError)
"""Exceptions that say the transport failed, for a call of any kind (the default)."""

REQUEST_TRANSPORT: tuple[type[BaseException], ...] = (WorkerDisconnected, ConnectionError, OSError)
"""For a request to a worker: also the bridge's socket closing under it."""

STEP_TRANSPORT: tuple[type[BaseException], ...] = (ConnectionError, ProtocolError)
"""For a recovery step: a refused or broken connection, or a page that broke the protocol (an
``OSError`` of a browser launch is no transport fault)."""

MESSAGE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"time ?out|deadline", re.I), ErrorKind.TIMEOUT),
    (re.compile(r"device.?lost", re.I), ErrorKind.DEVICE_LOST),
    (re.compile(r"out of memory|oom|out_of_memory", re.I), ErrorKind.OUT_OF_MEMORY),
    (re.compile(r"websocket|connection|socket|disconnect", re.I), ErrorKind.TRANSPORT),
    (re.compile(r"crash", re.I), ErrorKind.PAGE_CRASH),
    (re.compile(r"invalid input|shape|input", re.I), ErrorKind.INPUT),
    (re.compile(r"validation", re.I), ErrorKind.VALIDATION),
)
"""What an error message says, checked in order (the seed passed errors as text)."""

_INTERRUPTIONS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@overload
def classify(
    error: BaseException | str | None,
    *,
    transport: tuple[type[BaseException], ...] = ...,
    as_reported: Literal[False] = ...,
) -> ErrorKind: ...
@overload
def classify(
    error: BaseException,
    *,
    transport: tuple[type[BaseException], ...] = ...,
    as_reported: Literal[True],
) -> str: ...


def classify(
    error: BaseException | str | None,
    *,
    transport: tuple[type[BaseException], ...] = TRANSPORT,
    as_reported: bool = False,
) -> str:
    """The kind of failure ``error`` is (see the module docstring for the rules and the arguments).

    ``transport``: the exception types that count as a transport fault. ``as_reported``: the
    lifecycle's reading, the kind an exception reported, verbatim (then the result may be a
    string outside :class:`~poolwarden.policy.ErrorKind`).
    """
    if error is None or isinstance(error, str):
        return _by_message(error)
    if not as_reported and _is_cancellation(error):
        return ErrorKind.CANCELLED
    if isinstance(error, TimeoutError):
        return ErrorKind.TIMEOUT
    if as_reported:
        kind = getattr(error, "kind", None)
        if isinstance(kind, str):
            return kind
    elif isinstance(error, InvalidInput):
        return ErrorKind.INPUT
    elif isinstance(error, ModelError):
        try:
            return ErrorKind(error.kind)
        except ValueError:
            return ErrorKind.UNKNOWN
    if isinstance(error, transport):
        return ErrorKind.TRANSPORT
    if not as_reported and isinstance(error, MemoryError):
        return ErrorKind.OUT_OF_MEMORY
    return ErrorKind.UNKNOWN


def _is_cancellation(error: BaseException) -> bool:
    if isinstance(error, _INTERRUPTIONS):
        return True
    asyncio = sys.modules.get("asyncio")  # not imported here: the pure model never loads it
    return asyncio is not None and isinstance(error, asyncio.CancelledError)


def _by_message(message: str | None) -> ErrorKind:
    if message:
        for pattern, kind in MESSAGE_PATTERNS:
            if pattern.search(message):
                return kind
    return ErrorKind.UNKNOWN
