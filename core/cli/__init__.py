"""The ``poolwarden`` command line.

Every failure poolwarden can name ends in one line on stderr (``poolwarden: <what> (<what to
do>)``) and a non-zero exit code, never a traceback. The grammar is in :mod:`poolwarden.cli.parser`,
what each command does in :mod:`poolwarden.cli.commands` and :mod:`poolwarden.cli.bench_commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from poolwarden.cli.output import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_PROBLEM,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from poolwarden.cli.parser import SEED_FLAGS, build_parser, translate_seed_flags
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


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGTERM stops the command the way Ctrl-C does: it is handed to the
    SIGINT handler in force (``asyncio.run`` installs one that cancels the main task, so a pool
    closes, flushes its log and stops its browsers; otherwise ``KeyboardInterrupt``). Yields a
    function telling whether SIGTERM came. A SIGTERM that the parent set to be ignored stays
    ignored; off the main thread nothing is installed (Python handles signals there only)."""
    came = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal came
        came = True
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job of a shell): stop all the same
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield lambda: came
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield lambda: came
        return
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield lambda: came
    finally:
        signal.signal(signal.SIGTERM, previous)
