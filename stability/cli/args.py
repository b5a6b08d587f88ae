"""Shared argument parsing for the subcommands: comma lists, and errors as StabilityError."""

import argparse
from typing import TypeAlias

from stability.errors import StabilityError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def names(text: str) -> list[str]:
    """A comma list of names, blanks dropped."""
    return [t.strip() for t in text.split(",") if t.strip()]


def ints(text: str) -> list[int]:
    """A comma list of integers."""
    out = []
    for t in names(text):
        try:
            out.append(int(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{t!r} is not an integer") from None
    return out


def floats(text: str) -> list[float]:
    """A comma list of numbers."""
    out = []
    for t in names(text):
        try:
            out.append(float(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{t!r} is not a number") from None
    return out


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error takes the same one-line path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise StabilityError(message)


SubParsers: TypeAlias = "argparse._SubParsersAction[Parser]"
