"""stdout that outlives its reader: ``stability doctor | head -3`` still writes every result.

Python ignores SIGPIPE, so a reader that goes away turns the next write or flush to stdout
into ``BrokenPipeError``, wherever it happens: mid-table, or at the final flush. Unguarded,
that stops the command between its printing and its writing, and the CSVs and the store
never get the results. ``guarded_stdout`` catches it at the stream: from then on stdout goes
to /dev/null (also for the interpreter's flush at exit), the command finishes its work, and
it exits with its own code.
"""

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO, cast

from stability.cli.args import silence_stdout


class PipeGuard:
    """A stand-in for ``sys.stdout`` that drops output once its reader has gone."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def _gone(self) -> None:
        self.broken = True
        silence_stdout()
        # What is still buffered now goes to /dev/null; a second failure is harmless.
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._gone()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[PipeGuard]:
    """``sys.stdout`` wrapped in a ``PipeGuard`` for the block; flushed and restored after."""
    original = sys.stdout
    guard = PipeGuard(original)
    sys.stdout = cast(TextIO, guard)
    try:
        yield guard
    finally:
        guard.flush()
        if sys.stdout is cast(TextIO, guard):  # not replaced again inside the block
            sys.stdout = original
