"""Translating SQLite's errors into poolwarden's error tree, once, at the boundary.

SQLite reports what went wrong as a result code (``sqlite3.Error.sqlite_errorcode``); its low byte
is the primary code. SQLAlchemy wraps the driver's exception, so both layers are unwrapped here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import exc as sa_exc

from poolwarden.errors import (
    CorruptDatabase,
    DatabaseError,
    DatabaseLocked,
    DatabaseUnavailable,
    ReadOnlyDatabase,
)

__all__ = ["driver_error", "is_locked", "translate"]

_BUSY, _LOCKED, _CORRUPT, _READONLY, _IOERR, _FULL, _CANTOPEN, _NOTADB = 5, 6, 11, 8, 10, 13, 14, 26


def driver_error(error: BaseException) -> sqlite3.Error | None:
    """The sqlite3 exception behind ``error`` (itself, or wrapped by SQLAlchemy), if any."""
    if isinstance(error, sa_exc.DBAPIError) and isinstance(error.orig, sqlite3.Error):
        return error.orig
    if isinstance(error, sqlite3.Error):
        return error
    return None


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_locked(error: BaseException) -> bool:
    """Whether ``error`` is SQLite saying another connection holds the lock (worth retrying)."""
    driver = driver_error(error)
    return driver is not None and _primary_code(driver) in (_BUSY, _LOCKED)


def translate(error: BaseException, path: str | Path | None) -> DatabaseError | None:
    """The poolwarden error for a SQLite failure on ``path``, or None if it is not SQLite's."""
    driver = driver_error(error)
    if driver is None:
        return None
    code = _primary_code(driver)
    message = str(driver)
    if code in (_BUSY, _LOCKED):
        return DatabaseLocked(path, message)
    if code == _READONLY:
        return ReadOnlyDatabase(path, message)
    if code == _CANTOPEN:
        return DatabaseUnavailable(path, message)
    if code in (_NOTADB, _CORRUPT):
        return CorruptDatabase(path, message)
    if code == _FULL:
        return DatabaseError(path, message, hint="free disk space; nothing was written")
    if code == _IOERR:
        return DatabaseError(path, message, hint="check the disk and the file's folder")
    return DatabaseError(path, message, hint="see SQLite's message")
