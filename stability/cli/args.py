"""Shared argument parsing for the subcommands: comma lists, and errors as StabilityError.

Every comma list follows one rule: a value given twice is refused (``--seeds 0,0``), since
it is more often a typo for another value than a wish for the same work twice; an empty list
is refused where the command needs values (``nonempty``).
"""

import argparse
import contextlib
import copy
import io
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from stability.errors import StabilityError

T = TypeVar("T")

EXIT_FAILED = 1  # the command ran and wrote its results, but a check it was asked for failed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a killed writer


def silence_stdout() -> None:
    """After a broken pipe: send the rest of stdout nowhere, so exit does not raise again."""
    # Not a real file (captured in tests): nothing to silence.
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _once(items: list[tuple[str, T]]) -> list[T]:
    """The values, refusing one that is given twice (also as ``2,02`` or ``0.1,1e-1``)."""
    seen: dict[T, str] = {}
    for text, value in items:
        if value in seen:
            same = "" if seen[value] == text else f" (as {seen[value]!r} and {text!r})"
            raise argparse.ArgumentTypeError(
                f"{text!r} is listed twice{same}; give each value once"
            )
        seen[value] = text
    return [value for _, value in items]


def names(text: str) -> list[str]:
    """A comma list of names, blanks dropped, each at most once."""
    return _once([(t, t) for t in _split(text)])


def _comma_list(text: str, convert: Callable[[str], T], what: str) -> list[T]:
    out = []
    for t in _split(text):
        try:
            out.append((t, convert(t)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{t!r} is not {what}") from None
    return _once(out)


def ints(text: str) -> list[int]:
    """A comma list of integers."""
    return _comma_list(text, int, "an integer")


def floats(text: str) -> list[float]:
    """A comma list of numbers."""
    return _comma_list(text, float, "a number")


def nonempty(flag: str, values: list[T], what: str = "value") -> list[T]:
    """``values`` of ``flag``, refusing an empty list (``--lrs ""``, ``--activation ,,``)."""
    if not values:
        raise StabilityError(f"{flag} needs at least one {what}; got an empty list")
    return values


def figure_path(path: Path, flag: str = "--figure") -> Path:
    """``path``, if matplotlib can save a figure in the format its extension names: checked
    before the work whose figure it is, not by ``savefig`` after it."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        got = f"format {suffix!r}" if suffix else "no extension"
        raise StabilityError(
            f"{flag} {str(path)!r} has {got}; expected a file ending in one of {formats}"
        )
    return path


def add_db_argument(p: argparse.ArgumentParser) -> None:
    """``--db``: the SQLite results store every subcommand that reads or writes results takes."""
    from stability.results.store import DEFAULT_DB  # pandas: loaded once a command is chosen

    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="SQLite results store (default: %(default)s)"
    )


class TypedDefaults(argparse.HelpFormatter):
    """``%(default)s`` as the user would type it: ``relu,tanh``, not ``['relu', 'tanh']``."""

    def _expand_help(self, action: argparse.Action) -> str:
        if isinstance(action.default, list | tuple):
            action = copy.copy(action)
            action.default = ",".join(str(v) for v in action.default)
        return super()._expand_help(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # A comma list is one word: keep it whole (copyable) rather than cut mid-name.
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error takes the same one-line path,
    and shows defaults in ``--help`` as they are typed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", TypedDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise StabilityError(message)


SubParsers: TypeAlias = "argparse._SubParsersAction[Parser]"
