"""Shared argument parsing for the subcommands: comma lists, and errors as StabilityError."""

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias, TypeVar

from stability.errors import StabilityError
from stability.results.store import DEFAULT_DB

T = TypeVar("T")

EXIT_FAILED = 1  # the command ran and wrote its results, but a check it was asked for failed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a killed writer


def silence_stdout() -> None:
    """After a broken pipe: send the rest of stdout nowhere, so exit does not raise again."""
    # Not a real file (captured in tests): nothing to silence.
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def names(text: str) -> list[str]:
    """A comma list of names, blanks dropped."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _comma_list(text: str, convert: Callable[[str], T], what: str) -> list[T]:
    out = []
    for t in names(text):
        try:
            out.append(convert(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{t!r} is not {what}") from None
    return out


def ints(text: str) -> list[int]:
    """A comma list of integers."""
    return _comma_list(text, int, "an integer")


def floats(text: str) -> list[float]:
    """A comma list of numbers."""
    return _comma_list(text, float, "a number")


def add_db_argument(p: argparse.ArgumentParser) -> None:
    """``--db``: the SQLite results store every subcommand that reads or writes results takes."""
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="SQLite results store (default: %(default)s)"
    )


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error takes the same one-line path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise StabilityError(message)


SubParsers: TypeAlias = "argparse._SubParsersAction[Parser]"
