"""Translating PostgreSQL's (asyncpg's) errors into poolwarden's error tree, once, at the boundary.

PostgreSQL names what went wrong with a SQLSTATE; asyncpg raises one class per SQLSTATE, and
plain ``OSError`` when no server answers. SQLAlchemy wraps the driver's exception (and its
asyncpg adapter wraps it once more), so every layer is unwrapped here. asyncpg is imported only
when a PostgreSQL store is used (``pip install 'poolwarden[postgres]'``); this module is not.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc

from poolwarden.errors import (
    DatabaseError,
    DatabaseLocked,
    DatabaseUnavailable,
    ReadOnlyDatabase,
)

__all__ = ["is_connection_lost", "sqlstate", "translate"]

# SQLSTATE classes and codes (PostgreSQL's appendix A).
_CONNECTION = "08"  # connection exception
_AUTH = ("28000", "28P01")  # invalid authorization specification, invalid password
_NO_DATABASE = "3D000"  # invalid catalog name
_SHUTDOWN = ("57P01", "57P02", "57P03")  # admin shutdown, crash shutdown, cannot connect now
_READ_ONLY = "25006"
_RETRY = ("40001", "40P01", "55P03")  # serialization failure, deadlock, lock not available
_TOO_MANY = "53300"

# asyncpg's own (SQLSTATE-less) errors for a connection that is gone, by class name, so that
# this module does not import asyncpg.
_GONE = frozenset({"ConnectionDoesNotExistError", "InternalClientError"})


def _driver(error: BaseException) -> BaseException:
    """The innermost driver exception behind SQLAlchemy's wrappers."""
    seen = 0
    while seen < 5:
        seen += 1
        if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
            error = error.orig
            continue
        inner = getattr(error, "__cause__", None)
        if type(error).__module__.startswith("sqlalchemy") and isinstance(inner, BaseException):
            error = inner
            continue
        break
    return error


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of ``error`` (or of the driver exception it wraps), if it has one."""
    code = getattr(_driver(error), "sqlstate", None)
    return code if isinstance(code, str) else None


def is_connection_lost(error: BaseException) -> bool:
    """Whether ``error`` says the connection to the server is gone (or never came up)."""
    driver = _driver(error)
    code = sqlstate(driver)
    if code is not None:
        return code.startswith(_CONNECTION) or code in _SHUTDOWN
    if isinstance(driver, OSError | asyncio.TimeoutError | EOFError):
        return True
    if type(driver).__name__ in _GONE:
        return True
    if type(driver).__name__ == "InterfaceError" and "closed" in str(driver):
        return True  # asyncpg's "connection is closed": a connection that died before this call
    return isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated


def translate(error: BaseException, where: str) -> DatabaseError | None:
    """The poolwarden error for a PostgreSQL failure at ``where`` (a URL without its password),
    or None if ``error`` is not one."""
    driver = _driver(error)
    code = sqlstate(driver)
    message = str(driver) or type(driver).__name__
    if code in _AUTH:
        return DatabaseUnavailable(
            where, f"authentication failed: {message}", hint="check the user name and password in the URL"
        )
    if code == _NO_DATABASE:
        return DatabaseUnavailable(
            where, f"no such database: {message}", hint="create it (createdb NAME) or fix the URL"
        )
    if code == _TOO_MANY:
        return DatabaseUnavailable(where, message, hint="the server has no connection slot left; retry")
    if is_connection_lost(error):
        return DatabaseUnavailable(
            where,
            f"the server cannot be reached or the connection was lost: {message}",
            hint="is the server running and reachable? the store reconnects when it is back",
        )
    if code == _READ_ONLY:
        return ReadOnlyDatabase(where, message)
    if code in _RETRY:
        return DatabaseLocked(where, message)
    if code is not None or type(driver).__module__.startswith("asyncpg"):
        return DatabaseError(where, message, hint="see PostgreSQL's message")
    return None
