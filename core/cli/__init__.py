"""The ``poolwarden`` command line.

Every failure poolwarden can name ends in one line on stderr (``poolwarden: <what> (<what to
do>)``) and a non-zero exit code, never a traceback. The grammar is in :mod:`poolwarden.cli.parser`,
what each command does in :mod:`poolwarden.cli.commands` and :mod:`poolwarden.cli.bench_commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from poolwarden.cli.output import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_PROBLEM,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from poolwarden.cli.parser import SEED_FLAGS, build_parser, translate_seed_flags
from poolwarden.cli.running import sigterm_as_sigint
from poolwarden.errors import PoolwardenError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SEED_FLAGS:
        argv = translate_seed_flags(argv) or argv
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    with sigterm_as_sigint() as terminated:
        try:
            return handler(args)
        except PoolwardenError as error:
            print(f"poolwarden: {error}", file=sys.stderr)
            return EXIT_PROBLEM
        except KeyboardInterrupt:
            return EXIT_TERMINATED if terminated() else EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as Unix tools do. What is still
            # buffered for stdout would raise again at exit, so stdout goes to /dev/null.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
