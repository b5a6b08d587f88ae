"""The user's code, named and run behind a fence: ``pkg.module:name`` references, the JSON of
``--model-args``, and ``user_code(where)``, which turns whatever escapes the user's code into
one line.

Inside ``user_code`` an exception, and ``SystemExit`` too (a module that calls ``sys.exit(3)``
at import), becomes a ``StabilityError`` naming where it happened (exit 2 at the CLI, never
the user's own code); ``KeyboardInterrupt`` passes through, so Ctrl-C stays exit 130. With
``quiet`` the user's prints go to stderr, so a ``--json`` document is all that stdout holds.
"""

import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch

from stability.errors import StabilityError

# Frames inside torch or this package say nothing about where the user's code failed.
_NOT_USER = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message (at file:line)``, short enough for one line of
    stderr; the place is the innermost frame of the traceback, where the user's code failed."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: sys.exit({exc.code!r}) was called"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 200:
        first = first[:197] + "..."
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if not f.filename.startswith(_NOT_USER)]
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return (f"{type(exc).__name__}: {first}" if first else type(exc).__name__) + where


@contextlib.contextmanager
def quiet_stdout(quiet: bool) -> Iterator[None]:
    """With ``quiet``, the block's prints go to stderr (``--json``: stdout is the document)."""
    with contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext():
        yield


TIMEOUT_ENV = "STABILITY_USER_TIMEOUT"


class UserTimeout(Exception):
    """The user's code ran past ``$STABILITY_USER_TIMEOUT`` seconds."""


def user_timeout() -> float:
    """Seconds each call into the user's code may take: ``$STABILITY_USER_TIMEOUT``, or 0 (no
    limit)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(text or "0")
    except ValueError:
        value = -1.0
    if not (value >= 0 and value < 1e9):
        raise StabilityError(f"{TIMEOUT_ENV} must be a number of seconds >= 0, got {text!r}")
    return value


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ``UserTimeout`` in the block after ``seconds`` (SIGALRM: the main thread only,
    and not while a timer of someone else's runs); a C call is cut at its return."""
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise UserTimeout(f"still running after {seconds:g} s ({TIMEOUT_ENV})")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def user_code(where: str) -> Iterator[None]:
    """Run the user's code; anything it raises (``SystemExit`` included) is one line that
    starts with ``where``. A ``StabilityError`` from inside is already one line: it passes.
    With ``$STABILITY_USER_TIMEOUT`` set, code still running after that many seconds is
    stopped the same way (``UserTimeout``)."""
    try:
        with _deadline(user_timeout()):
            yield
    except (StabilityError, KeyboardInterrupt):
        raise
    except (Exception, SystemExit) as exc:
        raise StabilityError(f"{where} raised {one_line(exc)}") from None


def resolve(ref: str, flag: str) -> Any:
    """The object named by ``pkg.module:attr`` (``attr`` may be dotted), imported.

    The working directory is importable, as for ``python -m``: a user's ``mymodel.py`` beside
    them works with the installed ``stability`` script too."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise StabilityError(f"{flag} {ref!r}: expected pkg.module:name")
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:  # only while importing: the caller's sys.path is left as it was
        sys.path.insert(0, os.getcwd())
    try:
        with _deadline(user_timeout()):
            module = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # any error while importing the module is theirs
        raise StabilityError(
            f"{flag} {ref!r}: module {module_name!r} does not import ({one_line(exc)})"
        ) from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(module, "__file__", module_name)
            raise StabilityError(
                f"{flag} {ref!r}: {module_name} has no attribute {attr!r} ({where})"
            )
        obj = getattr(obj, part)
    return obj


def parse_kwargs(text: str | None, flag: str = "--model-args") -> dict[str, Any]:
    """A JSON object of keyword arguments (``None`` or empty: none)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StabilityError(f"{flag} {text!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise StabilityError(f"{flag} {text!r} must be a JSON object of keyword arguments")
    return value
