"""The one classifier over the whole error tree, as each of its callers asks it.

Every class of :mod:`poolwarden.errors` is in the table (a new one fails
:func:`test_the_table_covers_the_error_tree` until someone decides how it counts), with the kind
it is for a guarded call (the default), for the pool's request path (``REQUEST_TRANSPORT``) and
for a lifecycle step (``STEP_TRANSPORT``, ``as_reported``); and the callers' own entry points give
exactly what the classifier gives.
"""

from __future__ import annotations

import asyncio

import pytest

import poolwarden.errors as errors_module
from poolwarden.aio.guard import classify_exception
from poolwarden.aio.lifecycle_driver import error_kind_of
from poolwarden.classify import REQUEST_TRANSPORT, STEP_TRANSPORT, classify
from poolwarden.errors import (
    BrowserError,
    BrowserLaunchFailed,
    BrowserNotFound,
    CircuitOpen,
    ConcurrencyConflict,
    ConfigurationError,
    CorruptDatabase,
    DatabaseError,
    DatabaseLocked,
    DatabaseUnavailable,
    DeadlineExceeded,
    DevToolsError,
    EventNotSerializable,
    InvalidInput,
    InvalidTransition,
    IsolatedByOperator,
    LeaseHeld,
    LeaseLost,
    MemoryPressure,
    ModelError,
    NoHealthyConnection,
    OwnershipError,
    PoolwardenError,
    ProtocolError,
    QueueFull,
    ReadOnlyDatabase,
    ReplayError,
    RequestError,
    SchemaMismatch,
    SchemaOutdated,
    SchemaTooNew,
    StateMachineError,
    StoreClosed,
    StoreError,
    UnknownModel,
    WorkerDisconnected,
    WriteFailed,
)
from poolwarden.policy import ErrorKind

U = ErrorKind.UNKNOWN


class Reported(Exception):
    """A foreign exception that carries its own ``kind`` (only the lifecycle reads it)."""

    kind = "device_lost"


class ReportedTransport(ConnectionError):
    """A transport fault that also reports a word of its own."""

    kind = "socket_gone"


# (exception, for a guarded call, for a request, for a lifecycle step)
TABLE: list[tuple[BaseException, ErrorKind, ErrorKind, str]] = [
    # the error tree, every class
    (PoolwardenError("x"), U, U, "unknown"),
    (ConfigurationError("x"), U, U, "unknown"),
    (StoreError("x"), U, U, "unknown"),
    (StoreClosed("x"), U, U, "unknown"),
    (ConcurrencyConflict("s", 1, 2), U, U, "unknown"),
    (EventNotSerializable("T", "why"), U, U, "unknown"),
    (DatabaseError(None, "x"), U, U, "unknown"),
    (DatabaseUnavailable(None, "x"), U, U, "unknown"),
    (ReadOnlyDatabase(None, "x"), U, U, "unknown"),
    (CorruptDatabase(None, "x"), U, U, "unknown"),
    (DatabaseLocked(None, "x"), U, U, "unknown"),
    (SchemaMismatch(None, "a", "b", "x"), U, U, "unknown"),
    (SchemaOutdated(None, "a", "b", "x"), U, U, "unknown"),
    (SchemaTooNew(None, "a", "b", "x"), U, U, "unknown"),
    (WriteFailed([("s", OSError())]), U, U, "unknown"),
    (OwnershipError("x"), U, U, "unknown"),
    (LeaseHeld("main", "host:1:2", 10.0, 5.0), U, U, "unknown"),
    (LeaseLost("main", 1, 2), U, U, "unknown"),
    (StateMachineError("x"), U, U, "unknown"),
    (InvalidTransition("m", "s", "t"), U, U, "unknown"),
    (ReplayError("s", 1, "x"), U, U, "unknown"),
    (ProtocolError("x", "bad_token"), U, U, "bad_token"),
    (BrowserError("x"), U, U, "unknown"),
    (BrowserNotFound("chromium", ["/usr/bin"]), U, U, "unknown"),
    (BrowserLaunchFailed("x"), U, U, "unknown"),
    (DevToolsError("x"), U, U, "unknown"),
    (RequestError("x"), U, U, "unknown"),
    (WorkerDisconnected("conn-0", 1006), U, ErrorKind.TRANSPORT, "unknown"),
    (CircuitOpen("k", "open", None), U, U, "unknown"),
    (NoHealthyConnection("x"), U, U, "unknown"),
    (IsolatedByOperator(["c0"]), U, U, "unknown"),
    (MemoryPressure("x", level="critical", percent=95.0, threshold=90.0), U, U, "unknown"),
    (QueueFull("x", 0.1), U, U, "unknown"),
    (DeadlineExceeded("x"), ErrorKind.TIMEOUT, ErrorKind.TIMEOUT, "timeout"),
    (ModelError("x", "device_lost"), ErrorKind.DEVICE_LOST, ErrorKind.DEVICE_LOST, "device_lost"),
    (ModelError("x", "validation"), ErrorKind.VALIDATION, ErrorKind.VALIDATION, "validation"),
    (ModelError("x", "weird"), U, U, "weird"),
    (InvalidInput("x"), ErrorKind.INPUT, ErrorKind.INPUT, "unknown"),
    (UnknownModel("x"), U, U, "unknown"),
    # what Python and asyncio raise
    (asyncio.CancelledError(), ErrorKind.CANCELLED, ErrorKind.CANCELLED, "unknown"),
    (KeyboardInterrupt(), ErrorKind.CANCELLED, ErrorKind.CANCELLED, "unknown"),
    (SystemExit(), ErrorKind.CANCELLED, ErrorKind.CANCELLED, "unknown"),
    (GeneratorExit(), ErrorKind.CANCELLED, ErrorKind.CANCELLED, "unknown"),
    (TimeoutError(), ErrorKind.TIMEOUT, ErrorKind.TIMEOUT, "timeout"),
    (ConnectionRefusedError(), ErrorKind.TRANSPORT, ErrorKind.TRANSPORT, "transport"),
    (OSError(), ErrorKind.TRANSPORT, ErrorKind.TRANSPORT, "unknown"),
    (FileNotFoundError(), ErrorKind.TRANSPORT, ErrorKind.TRANSPORT, "unknown"),
    (MemoryError(), ErrorKind.OUT_OF_MEMORY, ErrorKind.OUT_OF_MEMORY, "unknown"),
    (ValueError(), U, U, "unknown"),
    (RuntimeError(), U, U, "unknown"),
    (Reported(), U, U, "device_lost"),
    (ReportedTransport(), ErrorKind.TRANSPORT, ErrorKind.TRANSPORT, "socket_gone"),
]


def test_the_table_covers_the_error_tree() -> None:
    """Every class of the error tree has its row: a new error needs a decision on how it counts."""
    covered = {type(exc) for exc, *_ in TABLE}
    tree = {getattr(errors_module, name) for name in errors_module.__all__}
    assert tree - covered == set()


@pytest.mark.parametrize(("exc", "call", "request_", "step"), TABLE, ids=lambda v: type(v).__name__)
def test_each_caller_reads_each_error(
    exc: BaseException, call: ErrorKind, request_: ErrorKind, step: str
) -> None:
    """The kind for a guarded call, for a request to a worker, and for a recovery step."""
    assert classify(exc) is call
    assert classify(exc, transport=REQUEST_TRANSPORT) is request_
    assert classify(exc, transport=STEP_TRANSPORT, as_reported=True) == step


@pytest.mark.parametrize(("exc", "call", "request_", "step"), TABLE, ids=lambda v: type(v).__name__)
def test_the_callers_entry_points_are_the_classifier(
    exc: BaseException, call: ErrorKind, request_: ErrorKind, step: str
) -> None:
    """The guard's default and the lifecycle's recorded kind are the one classifier's answers."""
    assert classify_exception(exc) is call
    assert error_kind_of(exc) == step


def test_the_arguments_change_only_their_steps() -> None:
    """``transport`` decides which exceptions are transport faults, and nothing else."""
    assert classify(WorkerDisconnected("c"), transport=(WorkerDisconnected,)) is ErrorKind.TRANSPORT
    assert classify(OSError(), transport=(WorkerDisconnected,)) is ErrorKind.UNKNOWN
    assert classify(TimeoutError(), transport=(TimeoutError,)) is ErrorKind.TIMEOUT  # timeout first
    assert classify(ProtocolError("x", "malformed"), transport=STEP_TRANSPORT) is ErrorKind.TRANSPORT
    # as reported, a ProtocolError's own word comes before its being a transport fault
    assert (
        classify(ProtocolError("x", "malformed"), transport=STEP_TRANSPORT, as_reported=True) == "malformed"
    )


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (None, U),
        ("", U),
        ("Connection timeout", ErrorKind.TIMEOUT),  # the first pattern that matches wins
        ("deadline passed", ErrorKind.TIMEOUT),
        ("GPU device lost", ErrorKind.DEVICE_LOST),
        ("device-lost", ErrorKind.DEVICE_LOST),
        ("OOM", ErrorKind.OUT_OF_MEMORY),
        ("out of memory", ErrorKind.OUT_OF_MEMORY),
        ("WebSocket closed", ErrorKind.TRANSPORT),
        ("worker disconnected", ErrorKind.TRANSPORT),
        ("page crashed", ErrorKind.PAGE_CRASH),
        ("invalid input", ErrorKind.INPUT),
        ("bad shape", ErrorKind.INPUT),
        ("validation failed", ErrorKind.VALIDATION),
        ("something else", U),
    ],
)
def test_a_message_is_read_by_its_words(message: str | None, kind: ErrorKind) -> None:
    """An error known only by its text (the seed's ``update_circuit_breaker``) is matched by pattern."""
    assert classify(message) is kind
