"""``--json``: one JSON document on stdout, so a script reads results without parsing text.

With ``--json`` stdout carries exactly that document and nothing else; the lines a person
reads go to stderr. Each document names its schema (``stability-<command>/1``), documented
in docs/json.md. Non-finite floats (a variance that overflowed) become ``null``, as JSON
has no inf or NaN, and numpy scalars become plain numbers.
"""

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:  # pandas' missing values (pd.NA, NaT)
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def document(command: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` under a schema name, made JSON-safe."""
    return {"schema": f"stability-{command}/1", **_plain(dict(body))}


def emit(command: str, body: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Write the document, one line, to stdout."""
    out = stream or sys.stdout
    out.write(json.dumps(document(command, body), allow_nan=False) + "\n")
    out.flush()


def human(json_mode: bool) -> TextIO:
    """Where lines for a person go: stderr under ``--json``, else stdout."""
    return sys.stderr if json_mode else sys.stdout


@contextlib.contextmanager
def stdout_to_stderr(json_mode: bool) -> Iterator[None]:
    """Under ``--json``, what anything prints in the block (this tool, a library, a forked
    worker) goes to stderr: stdout holds the one document ``emit`` writes after it."""
    if not json_mode:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def add_json_argument(p: argparse.ArgumentParser, command: str) -> None:
    """``--json`` with one help text everywhere, naming the command's schema."""
    p.add_argument(
        "--json",
        action="store_true",
        help=f"print one JSON document (schema stability-{command}/1, docs/json.md) on "
        "stdout; the lines for a person go to stderr",
    )
