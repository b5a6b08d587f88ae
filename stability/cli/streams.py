"""stdout and stderr that cannot stop a command: the results are written whatever the streams do.

- A reader that goes away (``stability doctor | head -3``): Python ignores SIGPIPE, so the
  next write or flush raises ``BrokenPipeError``, mid-table or at the final flush. The guard
  catches it at the stream: from then on stdout goes to /dev/null (also for the interpreter's
  flush at exit), the command finishes its work, and exits with its own code, quietly.
- A stdout that cannot be written (``> /dev/full``, an I/O error): the same, but the failure
  is noted (``failed``) so ``main`` can say so in one line and exit 1 after the results.
- A closed stdout or stderr (``>&-``): ``standard_fds`` puts /dev/null on descriptors 0-2
  before anything is opened, so a store or CSV never lands on fd 1 and a stray write (a
  worker's, C code's) cannot go into it; the command's lines go nowhere.
- A stream that cannot encode (``LC_ALL=C``, ``PYTHONIOENCODING=ascii``): text falls back to
  ASCII (``+-`` for ``±``, ``x`` for ``×``, ``^2`` for ``²``; ``?`` for anything else).
"""

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO, cast

from stability.cli.args import silence_stdout

_WORDS = {"σw²": "sigma_w^2", "σ²": "sigma^2", "⚠️": "[!]"}
_ASCII = str.maketrans(
    {
        "±": "+-", "×": "x", "·": "*", "−": "-", "—": "--", "–": "-", "→": "->", "←": "<-",
        "≈": "~", "≤": "<=", "≥": ">=", "≠": "!=", "…": "...", "∞": "inf", "µ": "u", "μ": "u",
        "σ": "sigma", "λ": "lambda", "Δ": "delta", "√": "sqrt", "°": " deg", "²": "^2",
        "³": "^3", "¹": "^1", "⁰": "^0", "⁻": "^-", "✓": "ok", "✗": "x", "✅": "[ok]",
        "❌": "[FAIL]", "⚠": "[!]", "\ufe0f": "", "‘": "'", "’": "'", "“": '"', "”": '"',
    }
)  # fmt: skip


def to_ascii(text: str) -> str:
    """``text`` with this tool's symbols spelled in ASCII; other characters left as they are."""
    for word, plain in _WORDS.items():
        text = text.replace(word, plain)
    return text.translate(_ASCII)


def standard_fds() -> None:
    """/dev/null on each of descriptors 0, 1, 2 that is closed; a closed ``sys.stdout`` or
    ``sys.stderr`` (``None``) becomes a text stream on it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # the lowest free descriptor: fd itself unless a lower one is free
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115 (lives to exit)


class PipeGuard:
    """A stand-in for ``sys.stdout`` (or ``sys.stderr``) that drops output once it cannot be
    written, and spells what the stream cannot encode in ASCII."""

    def __init__(self, stream: TextIO, is_stdout: bool = True) -> None:
        self.stream = stream
        self.is_stdout = is_stdout
        self.broken = False
        self.failed = ""  # why writing failed (not a reader gone): "No space left on device"

    def _gone(self, exc: BaseException) -> None:
        self.broken = True
        if not isinstance(exc, BrokenPipeError):
            self.failed = getattr(exc, "strerror", None) or type(exc).__name__
        if self.is_stdout:
            silence_stdout()
        # What is still buffered now goes to /dev/null; a second failure is harmless.
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def _encoded(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:  # TextIOWrapper encodes all of it first: nothing went out
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            plain = to_ascii(text).encode(encoding, "replace").decode(encoding)
            self.stream.write(plain)

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._encoded(text)
            except (OSError, ValueError, io.UnsupportedOperation) as exc:  # ValueError: closed
                self._gone(exc)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self._gone(exc)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[PipeGuard]:
    """``sys.stdout`` and ``sys.stderr`` wrapped in ``PipeGuard`` for the block, flushed and
    restored after; the stdout guard is yielded (its ``failed`` says whether output was lost)."""
    original, original_err = sys.stdout, sys.stderr
    guard, err_guard = PipeGuard(original), PipeGuard(original_err, is_stdout=False)
    sys.stdout, sys.stderr = cast(TextIO, guard), cast(TextIO, err_guard)
    try:
        yield guard
    finally:
        guard.flush()
        err_guard.flush()
        if sys.stdout is cast(TextIO, guard):  # not replaced again inside the block
            sys.stdout = original
        if sys.stderr is cast(TextIO, err_guard):
            sys.stderr = original_err
