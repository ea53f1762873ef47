"""Where an SQLite store lives, and what its file must be before SQLite is let near it.

:func:`sqlite_url` turns a path, ``":memory:"`` or an SQLite URL into the async driver's URL and
the file's path; :func:`check_file` refuses, with the error tree's types, a file that SQLite would
fail on later or that it could harm (a missing folder, not a regular file, not SQLite, cut short).
The store, ``poolwarden db`` and analysis' loader all check a file this way.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from poolwarden.errors import ConfigurationError, CorruptDatabase, DatabaseUnavailable

__all__ = ["check_file", "sqlite_url"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_url(target: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """The SQLAlchemy URL for a path, ``":memory:"`` or a ``sqlite+aiosqlite://`` URL, and its file.

    >>> sqlite_url(":memory:")
    ('sqlite+aiosqlite://', None)
    """
    text = os.fspath(target)
    if text in (":memory:", ""):
        return "sqlite+aiosqlite://", None
    if "://" not in text:
        path = Path(text).expanduser().absolute()
        return f"sqlite+aiosqlite:///{path}", path
    url = make_url(text)
    if url.get_backend_name() != "sqlite":
        shown = url.render_as_string(hide_password=True)
        raise ConfigurationError(f"{shown!r} is not an SQLite URL; this backend stores events in SQLite")
    url = url.set(drivername="sqlite+aiosqlite")
    if not url.database or url.database == ":memory:":
        return "sqlite+aiosqlite://", None
    path = Path(url.database).expanduser().absolute()
    return url.set(database=str(path)).render_as_string(hide_password=False), path


def check_file(path: Path, *, must_exist: bool = False) -> None:
    """Refuse, before SQLite touches it, a file that would fail later or come to harm.

    Raises :class:`DatabaseUnavailable` for a missing folder (or a missing file when
    ``must_exist``), something that is not a regular file, or a file that cannot be read, and
    :class:`CorruptDatabase` for a file that is not SQLite or was cut short.
    """
    folder = path.parent
    if not folder.is_dir():
        raise DatabaseUnavailable(path, f"the folder {folder} does not exist")
    if not path.exists():
        if must_exist:
            raise DatabaseUnavailable(path, "does not exist", hint="check the path")
        return
    if not path.is_file():
        raise DatabaseUnavailable(path, "is not a regular file", hint="check the path")
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except PermissionError as error:
        raise DatabaseUnavailable(path, f"cannot be read: {error.strerror}") from error
    if header and (len(header) < 100 or not header.startswith(_SQLITE_MAGIC)):
        raise CorruptDatabase(path, "is not an SQLite database (its header is wrong)")
    if header and _truncated(path, header):
        raise CorruptDatabase(path, "is shorter than its header says: the file was truncated")


def _truncated(path: Path, header: bytes) -> bool:
    """Whether the file holds fewer pages than its header records (and no WAL explains it).

    The header's page count is trusted only when its "version-valid-for" number matches the
    change counter, as SQLite itself does; a non-empty WAL may hold pages a checkpoint was
    copying when a process died, so then SQLite, not this check, is the judge.
    """
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    change_counter = header[24:28]
    pages = int.from_bytes(header[28:32], "big")
    valid = header[92:96] == change_counter and pages > 0
    wal = path.with_name(path.name + "-wal")
    if not valid or (wal.exists() and wal.stat().st_size > 0):
        return False
    return path.stat().st_size < pages * page_size
