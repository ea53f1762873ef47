"""How a chunk of events travels from SQLite as a few long texts, and how it becomes typed columns.

One query per chunk returns one row of texts (:data:`CHUNK_SELECT`), each made by an aggregate
that walks the chunk's events in the same order. SQLite writes them in the reader thread while
this side decodes the previous chunk (``analysis/snapshot.py``), so the two costs overlap; each
text is shaped so that decoding it makes as few Python objects as possible, where SQLite's own
cost stays close to the plain per-column JSON arrays (``analysis/load.py`` has the figures):

- integers (position, version, schema version, times as integer microseconds) as one
  comma-separated text that ``numpy.fromstring`` parses without a Python object per value;
- ``latency_ms`` the same, ``nan`` standing for NULL, and ``fence`` (-1 for NULL);
- the ten text columns with few distinct values as ONE text, one line per event holding that
  event's values as a JSON array (JSON escapes every newline, so lines cannot be confused). A
  pool's log holds a few thousand distinct lines among a million events: each line is coded
  with a dictionary, each distinct line decoded once, and every category column is then a
  ``numpy.take`` of its table by the line codes;
- ``incident_id`` (many distinct values) as a JSON array, one string object kept for each
  distinct id of a chunk; payloads, already JSON, as one array. Both arrays are decoded by
  msgspec where it is installed (the ``analysis`` extra brings it), in half the time of
  ``json.loads``, to the same values: a text msgspec refuses (``NaN``, a lone surrogate, a number
  too large for a float) is handed to ``json.loads``, whose answer, or error, stands.

Each column is filled into one array allocated for all chunks, and :meth:`ChunkDecoder.frame`
lets each go as soon as its Series is made: the peak is the frame, plus one column's copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from poolwarden.analysis.frames import (
    CATEGORY_COLUMNS,
    EVENT_COLUMNS,
    TIME_DTYPE,
    code_dtype,
    empty_events,
    pool_column,
)
from poolwarden.envelope import ENVELOPE, TIME_DTYPE_NAME
from poolwarden.errors import CorruptDatabase

__all__ = ["CHUNK_SELECT", "CHUNK_SELECT_POSTGRES", "DENSE_CHUNK_SELECT", "ChunkDecoder", "dense_row"]

# msgspec parses the payload array of a million events in ~0.16 s CPU where json.loads takes
# ~0.35 s, and gives the same values: integers of any size as ints (orjson makes a float of one
# past 64 bits, so it is not used), floats correctly rounded, the last of duplicate keys. What it
# refuses and json accepts (NaN, Infinity, 1e400, lone surrogates, escaped or not) goes to
# json.loads. It is imported with the module, not in the first load (13 to 27 ms in a fresh
# process).
try:
    import msgspec
except ModuleNotFoundError:  # the analysis extra installs it; without it, json.loads alone
    _HAVE_MSGSPEC = False
else:
    _HAVE_MSGSPEC = True


def _fast_decoder() -> tuple[Callable[[str], Any], tuple[type[Exception], ...]] | None:
    """A new msgspec JSON decoder's ``decode`` and the errors that hand a text to json.loads;
    None without msgspec. ValueError too: msgspec raises UnicodeEncodeError for a str holding a
    lone surrogate, which json.loads takes."""
    if not _HAVE_MSGSPEC:
        return None
    return msgspec.json.Decoder().decode, (msgspec.DecodeError, ValueError)


# Each column travels in the text its envelope dtype calls for; the few texts of one kind each
# (latency_ms the real numbers, incident_id the free text, payload the JSON) are named below, and
# an envelope column this module does not carry stops it at import.
_INTEGER_COLUMNS = tuple(c.name for c in ENVELOPE if c.dtype == "int64")
_TIME_COLUMNS = tuple(c.name for c in ENVELOPE if c.dtype == TIME_DTYPE_NAME)
_NUMBERS = (*_INTEGER_COLUMNS, *_TIME_COLUMNS)
_SINGLES = {"latency_ms": "float64", "incident_id": "str", "payload": "object", "fence": "Int64"}
if {c.name: c.dtype for c in ENVELOPE if c.name not in (*_NUMBERS, *CATEGORY_COLUMNS)} != _SINGLES:
    raise RuntimeError("analysis.columns does not carry every column of the event envelope")

# Times are read as integer microseconds: SQLite prints a REAL with 15 significant digits, too
# few for epoch seconds. No CAST elsewhere: a text where a number belongs fails to parse and is
# reported, where a CAST would quietly make it 0.
_SELECT_LIST = (
    "count(*)",
    *(f"group_concat({name})" for name in _INTEGER_COLUMNS),
    *(f"group_concat(CAST(round({name} * 1000000.0) AS INTEGER))" for name in _TIME_COLUMNS),
    "group_concat(ifnull(latency_ms, 'nan'))",
    "group_concat(ifnull(fence, -1))",  # fencing numbers start at 1: -1 stands for NULL
    f"group_concat(json_array({', '.join(CATEGORY_COLUMNS)}), '\n')",  # a literal: char(10) is a call a row
    "json_group_array(incident_id)",
    "'[' || group_concat(payload, ',') || ']'",
)

CHUNK_SELECT = "SELECT " + ", ".join(_SELECT_LIST) + " FROM events"
"""The select of one chunk (add its WHERE): one row, its texts in the order ``ChunkDecoder.add`` reads."""

# A chunk of an unfiltered load almost always holds every position of its range, and a log's
# fences are all set or all NULL: then SQLite need not write out the positions nor stand -1 for
# each NULL fence (0.06 s of SQLite's ~1.05 s a million events, 0.02 s of decoding). The range
# is scanned by rowid, in position order, so the events' positions are the range itself.
_DENSE_SELECT_LIST = (
    "count(*)",
    "min(position)",
    "max(position)",
    "count(fence)",
    *_SELECT_LIST[2:-5],  # the integers after position, and the times
    _SELECT_LIST[-5],  # latency_ms
    "group_concat(fence)",  # NULLs left out: this text is whole only if all are set
    *_SELECT_LIST[-3:],
)
if _SELECT_LIST[1] != "group_concat(position)" or _SELECT_LIST[-4] != "group_concat(ifnull(fence, -1))":
    raise RuntimeError("analysis.columns: the dense select no longer mirrors CHUNK_SELECT")

DENSE_CHUNK_SELECT = "SELECT " + ", ".join(_DENSE_SELECT_LIST) + " FROM events"
"""A leaner select of one chunk of an unfiltered load; :func:`dense_row` makes its row
:data:`CHUNK_SELECT`'s, or says that the chunk needs CHUNK_SELECT."""


def dense_row(row: Sequence[Any]) -> tuple[Any, ...] | None:
    """:data:`DENSE_CHUNK_SELECT`'s ``row`` in the shape :meth:`ChunkDecoder.add` reads, if it can be.

    The positions become a ``range`` and the fences ``None`` when all are NULL. None when the
    chunk misses a position of its range or mixes set and NULL fences: read it with CHUNK_SELECT.
    """
    count, first, last, fenced, *rest = row
    if count == 0:
        return (0, None, *rest)
    if last - first + 1 != count or fenced not in (0, count):
        return None
    *numbers, latency, fences, lines, incident_ids, payloads = rest
    return (
        count,
        range(first, last + 1),
        *numbers,
        latency,
        fences if fenced else None,
        lines,
        incident_ids,
        payloads,
    )


# The same texts from PostgreSQL: string_agg and json_agg, times rounded half up as SQLite's
# round() does, NULLs as the same stand-ins. Its JSON has spaces after commas, which the decoder
# does not mind (a line is only ever compared with lines of the same log). No ORDER BY inside
# the aggregates (PostgreSQL 15 would sort the chunk once per aggregate, which set the pace):
# the aggregates of one query walk the same rows in one pass, so the texts agree with each
# other row for row; the chunk's range is read by the primary key's index, in position order,
# and ChunkDecoder.frame() checks that order and sorts if it ever is not.
_IN_ORDER = ""
_POSTGRES_SELECT_LIST = (
    "count(*)",
    *(f"string_agg({name}::text, ','{_IN_ORDER})" for name in _INTEGER_COLUMNS),
    *(f"string_agg(floor({name} * 1000000.0 + 0.5)::bigint::text, ','{_IN_ORDER})" for name in _TIME_COLUMNS),
    f"string_agg(coalesce(latency_ms::text, 'nan'), ','{_IN_ORDER})",
    f"string_agg(coalesce(fence, -1)::text, ','{_IN_ORDER})",
    f"string_agg(json_build_array({', '.join(CATEGORY_COLUMNS)})::text, E'\\n'{_IN_ORDER})",
    f"coalesce(json_agg(incident_id{_IN_ORDER})::text, '[]')",
    f"'[' || string_agg(payload, ','{_IN_ORDER}) || ']'",
)

CHUNK_SELECT_POSTGRES = "SELECT " + ", ".join(_POSTGRES_SELECT_LIST) + " FROM events"
""":data:`CHUNK_SELECT` in PostgreSQL's SQL: the same texts, in the same order."""


class _Column:
    """One column's values, chunk after chunk, in an array allocated once for all of them if it can be.

    Filling one array as chunks arrive leaves nothing to concatenate after the last chunk, when
    the reader has stopped and nothing else overlaps with the work.
    """

    def __init__(self, dtype: Any, capacity: int) -> None:
        self.array: npt.NDArray[Any] = np.empty(capacity, dtype=dtype)
        self.used = 0

    def extend(self, values: npt.NDArray[Any]) -> None:
        end = self.used + len(values)
        if end > len(self.array):  # more events than expected: grow by doubling
            grown = np.empty(max(end, 2 * len(self.array)), dtype=self.array.dtype)
            grown[: self.used] = self.array[: self.used]
            self.array = grown
        self.array[self.used : end] = values
        self.used = end

    def values(self) -> npt.NDArray[Any]:
        used = self.array[: self.used]
        return used if 2 * self.used >= len(self.array) else used.copy()  # let a mostly empty one go


_FIRST_CAPACITY = 1 << 20
"""At most this many events are allocated for before they come (a filter may keep few of the span)."""


class ChunkDecoder:
    """Decodes chunk rows as they arrive, then assembles the frame of all of them.

    :param path: the log's file, named in errors.
    :param expected: how many events may come (an upper bound is best: a larger number only
        reserves address space; a smaller one costs a copy when it is passed).
    """

    def __init__(self, path: Path | str, expected: int) -> None:
        self._path = path  # named in a CorruptDatabase
        capacity = max(1, min(expected, _FIRST_CAPACITY))
        self._numbers = {name: _Column(np.int64, capacity) for name in _NUMBERS}
        self._latency = _Column(np.float64, capacity)
        self._fences = _Column(np.int64, capacity)
        self._line_ids: dict[str, int] = {}
        self._line_codes = _Column(np.int32, capacity)
        self._incident_ids = _Column(object, capacity)
        self._payloads = _Column(object, capacity)
        self._fast = _fast_decoder()

    def add(self, row: Sequence[Any]) -> None:
        """Decode one chunk's row (as selected by :data:`CHUNK_SELECT`)."""
        count, *numbers, latency, fences, lines, incident_ids, payloads = row
        if count == 0:  # every aggregate of an empty chunk is NULL
            return
        positions, *numbers = numbers
        if isinstance(positions, range):  # a dense chunk (dense_row): every position of its range
            self._numbers[_NUMBERS[0]].extend(np.arange(positions.start, positions.stop, dtype=np.int64))
        else:
            self._numbers[_NUMBERS[0]].extend(self._numbers_of(positions, np.int64, count, _NUMBERS[0]))
        for name, text in zip(_NUMBERS[1:], numbers, strict=True):
            self._numbers[name].extend(self._numbers_of(text, np.int64, count, name))
        self._latency.extend(self._numbers_of(latency, np.float64, count, "latency_ms"))
        if fences is None:  # a dense chunk with no fence set
            self._fences.extend(np.full(count, -1, dtype=np.int64))
        else:
            self._fences.extend(self._numbers_of(fences, np.int64, count, "fence"))
        self._line_codes.extend(self._code_lines(lines.split("\n"), count))
        self._incident_ids.extend(self._shared(self._objects(incident_ids, count, "incident_id")))
        self._payloads.extend(self._objects(payloads, count, "payload"))

    def _numbers_of(self, text: str, dtype: type[np.generic], count: int, name: str) -> npt.NDArray[Any]:
        try:
            values = np.fromstring(text, dtype=dtype, sep=",")
        except ValueError as error:
            raise CorruptDatabase(self._path, f"an event's {name} is not a number") from error
        if len(values) != count:  # group_concat skips NULLs: a NULL in a NOT NULL column
            raise CorruptDatabase(self._path, f"{count - len(values)} events have no {name}")
        return values

    def _json(self, text: str, name: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CorruptDatabase(self._path, f"an event's {name} is not valid JSON ({error.msg})") from error

    def _array(self, text: str, name: str) -> Any:
        """The JSON array ``text``, decoded by msgspec if it can, else as :meth:`_json` decodes it."""
        if self._fast is not None:
            decode, refused = self._fast
            try:
                return decode(text)
            except refused:  # json.loads has the last word: its value, or its error
                pass
        return self._json(text, name)

    def _objects(self, text: str, count: int, name: str) -> npt.NDArray[np.object_]:
        values = self._array(text, name)
        if not isinstance(values, list) or len(values) != count:
            raise CorruptDatabase(self._path, f"{count} events gave a {name} array of another length")
        return np.fromiter(values, dtype=object, count=count)

    @staticmethod
    def _shared(values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        """``values`` with NaN for None and one string object for each distinct value.

        An incident's events are close together, mostly in one chunk: sharing their id per chunk
        keeps one string where ``json.loads`` made one an event (14 MB less a million events).
        """
        seen: dict[Any, Any] = {None: np.nan}
        return np.fromiter(map(seen.setdefault, values, values), dtype=object, count=len(values))

    def _code_lines(self, lines: list[str], count: int) -> npt.NDArray[np.int32]:
        if len(lines) != count:
            raise CorruptDatabase(self._path, f"{count} events gave {len(lines)} lines of text columns")
        ids = self._line_ids
        try:
            return np.fromiter(map(ids.__getitem__, lines), np.int32, count=count)
        except KeyError:  # lines not seen in earlier chunks: rare after the first
            for line in set(lines).difference(ids):
                ids[line] = len(ids)
            return np.fromiter(map(ids.__getitem__, lines), np.int32, count=count)

    def frame(self) -> pd.DataFrame:
        """Every chunk added as one frame with :data:`EVENT_COLUMNS`' dtypes, in position order.

        Called once, at the end: each column's arrays are let go as soon as its Series is made,
        so that no more than one column's copy is ever held beside the frame being built.
        """
        if self._payloads.used == 0:
            return empty_events()
        data: dict[str, Any] = {}
        for name in _NUMBERS:
            values = self._numbers.pop(name).values()
            if name in _TIME_COLUMNS:  # pandas copies here (no public way around it): one at a time
                data[name] = pd.Series(values.view("datetime64[us]"), dtype=TIME_DTYPE, copy=False)
            else:
                data[name] = pd.Series(values, copy=False)
            del values
        data["latency_ms"] = pd.Series(self._latency.values(), copy=False)
        fences = self._fences.values()
        data["fence"] = pd.Series(pd.arrays.IntegerArray(fences, fences < 0), copy=False)
        data.update(self._categories())
        data["pool"] = pool_column(data["stream"])
        self._line_codes = _Column(np.int32, 1)
        data["incident_id"] = _strings(self._incident_ids.values())
        self._incident_ids = _Column(object, 1)
        data["payload"] = pd.Series(self._payloads.values(), copy=False)
        frame = pd.DataFrame({name: data[name] for name in EVENT_COLUMNS}, copy=False)
        position = frame["position"].to_numpy()
        if not bool(np.all(position[1:] > position[:-1])):  # SQLite scans by rowid; be sure
            frame = frame.sort_values("position", ignore_index=True)
        return frame

    def _categories(self) -> dict[str, pd.Series]:
        """Each category column from the distinct lines' values and every event's line code."""
        codes = self._line_codes.values()
        distinct = [self._json(line, "text column") for line in self._line_ids]  # in id order
        columns: dict[str, pd.Series] = {}
        for index, name in enumerate(CATEGORY_COLUMNS):
            values = [None if value is None else str(value) for value in (d[index] for d in distinct)]
            categories = sorted({value for value in values if value is not None})
            code_of: dict[str | None, int] = {value: i for i, value in enumerate(categories)}
            code_of[None] = -1
            table = np.fromiter(map(code_of.__getitem__, values), code_dtype(len(categories)), len(values))
            columns[name] = pd.Series(
                pd.Categorical.from_codes(table[codes], pd.Index(categories, dtype="str"), validate=False),
                copy=False,
            )
        return columns


_STR = pd.api.types.pandas_dtype("str")


def _strings(values: npt.NDArray[np.object_]) -> pd.Series:
    """A ``str`` Series of ``values`` (strings and NaN), on the same array if pandas allows it.

    pandas' constructors copy an object array into a ``str`` one (24 MB at 3,000,000 events);
    the array class itself takes it as it is, after checking that it holds only strings and NaN.
    With pyarrow installed, ``str`` is stored in Arrow, and the usual conversion applies.
    """
    if isinstance(_STR, pd.StringDtype) and _STR.storage == "python":
        array_type: Any = _STR.construct_array_type()  # StringArray; pandas 2.2 lacks ``dtype=``
        try:
            array = array_type(values, dtype=_STR)
        except (ValueError, TypeError):  # not only strings and NaN, or an older pandas: convert
            pass
        else:
            return pd.Series(array, copy=False)
    return pd.Series(values, dtype="str")
