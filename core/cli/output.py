"""What a command hands back: its exit code, and its figures printed as a table, JSON or a file."""

from __future__ import annotations

import json
import sys
from typing import Any

from poolwarden.errors import PoolwardenError

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "print_result",
    "write_json",
    "write_text",
]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + 2, 128 + 15
"""Stopped by SIGINT (Ctrl-C) or SIGTERM, after a clean shutdown: the shell's convention."""
EXIT_BROKEN_PIPE = 128 + 13
"""The reader of stdout went away (``| head``): what a Unix tool killed by SIGPIPE reports."""


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or one aligned ``key  value`` line each."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(key) for key in result)
    for key, value in result.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        print(f"{key:<{width}}  {shown}")


def write_json(data: object, output: str | None) -> None:
    """``data`` as indented JSON to ``output`` (stdout when None)."""
    write_text(json.dumps(data, indent=2, default=str) + "\n", output)


def write_text(text: str, output: str | None) -> None:
    """``text`` to the file ``output`` (saying so on stderr), or to stdout when None."""
    if output is None:
        print(text, end="")
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        raise PoolwardenError(f"{output}: cannot write the telemetry: {error.strerror}") from error
    print(f"telemetry written to {output}", file=sys.stderr)
