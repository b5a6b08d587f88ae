"""The store's file as SQLite sees it: opening it safely, and SQLite's failures as one line.

Every failure a user can meet (a corrupt file, a read-only mount, a full disk or a file-size
limit, a lock held past the timeout) becomes a ``StabilityError`` that names the file and
what to do, never a traceback. Integrity is checked (``PRAGMA quick_check``) when a store is
opened, before anything is written: a corrupt file is never written to.
"""

import functools
import json
import math
import os
import re
import sqlite3
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from stability.errors import StabilityError

TIMEOUT_ENV = "STABILITY_DB_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
_VERIFIED: set[tuple[str, int, int, int]] = set()  # (path, inode, size, mtime) that passed

P = ParamSpec("P")
R = TypeVar("R")


def lock_timeout() -> float:
    """Seconds to wait for another process's lock: ``$STABILITY_DB_TIMEOUT`` or 30."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise StabilityError(f"{TIMEOUT_ENV} must be a number of seconds >= 0, got {text!r}")
    return value


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to ``path``; read-only ones (``mode=ro``) never create or write it."""
    if readonly:
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=lock_timeout())
    return sqlite3.connect(path, timeout=lock_timeout())


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def recover_hint(path: Path) -> str:
    return (
        f"salvage what it holds with: sqlite3 {path} .recover > fixed.sql, restore a backup, "
        "or pass --db with another path"
    )


QUICK_CHECK_MAX_BYTES = 16 * 2**20  # quick_check reads every page: ~3 ms per MB, ~45 ms here


def _looks_whole(path: Path) -> bool:
    """The header's page count times page size is the file's size (when the header says its
    count is current): false for a file cut short or grown by garbage. Reads 100 bytes."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError:
        return False
    if len(header) < 100:
        return False
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if header[24:28] != header[92:96]:  # the count was left stale by an old writer
        return size % page_size == 0
    return int.from_bytes(header[28:32], "big") * page_size == size


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check``: refuse a damaged store before the first write to it.

    quick_check reads every page (about 300 ms for 100 MB), so it runs on a store of up to
    ``QUICK_CHECK_MAX_BYTES``, and on a bigger one only when its header does not match its
    size; a bigger store's damage elsewhere is met by SQLite when the page is read (still one
    line, ``explain``). A file already verified in this process, unchanged since, is not
    read again.
    """
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key in _VERIFIED:
        return
    if key is None or key[2] <= QUICK_CHECK_MAX_BYTES or not _looks_whole(path):
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StabilityError(
                f"results database {str(path)!r} is corrupt (quick_check: "
                f"{_one_line(problems[-1])}); nothing was written to it: {recover_hint(path)}"
            )
    if key is not None:
        _VERIFIED.add(key)


def decode_row(data: Any, table: str, rowid: int, path: Path) -> dict[str, Any]:
    """The JSON object in ``table``'s ``data`` column at ``rowid``; anything else (text that is
    not JSON, a list, a number) is one line naming the table and the row."""
    try:
        value = json.loads(data)
    except (TypeError, ValueError) as exc:  # JSONDecodeError, bytes that are not UTF-8, NULL
        what = f"is not JSON ({_one_line(str(exc))})"
    else:
        if isinstance(value, dict):
            return value
        what = f"holds a JSON {type(value).__name__}, not an object"
    raise StabilityError(
        f"results database {str(path)!r} is damaged: table {table!r} row {rowid} {what}; "
        f"{recover_hint(path)} (or delete that row)"
    )


LATER_TABLES = ("doctor_rows", "records")  # added after version 1: a writer adds them on open


def schema_columns(schema: str) -> dict[str, list[str]]:
    """Every table of the ``CREATE TABLE`` script ``schema`` and its column names."""
    tables = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", schema, re.S):
        words = [line.split()[0] for line in body.splitlines() if line.strip()]
        tables[name] = [w for w in words if w.upper() not in ("PRIMARY", "FOREIGN", "UNIQUE")]
    return tables


def check_tables(conn: sqlite3.Connection, path: Path, schema: str, app_id: int) -> None:
    """Refuse a stability store that lost a table or a column, before anything is written.

    Recreating a lost table empty would make the store lie: ``cells`` would say done for
    cells whose rows are gone, and a resumed sweep would judge nothing and pass. A file that
    is not yet a store (new, or empty) is left for the writer to create.
    """
    if conn.execute("PRAGMA application_id").fetchone()[0] != app_id:
        return
    have = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in schema_columns(schema).items():
        if table not in have:
            if table in LATER_TABLES:
                continue
            raise StabilityError(
                f"results database {str(path)!r} is damaged: it is marked as a stability store "
                f"but has no table {table!r} (dropped, or not written by stability); nothing "
                f"was written to it: {recover_hint(path)}"
            )
        found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in columns if c not in found]
        if missing:
            raise StabilityError(
                f"results database {str(path)!r} is damaged: table {table!r} lacks column "
                f"{missing[0]!r}; nothing was written to it: {recover_hint(path)}"
            )


def _error_name(exc: BaseException) -> str:
    """SQLite's own error name (``SQLITE_FULL``...), looking through pandas' wrapper."""
    seen: BaseException | None = exc
    while seen is not None:
        name = getattr(seen, "sqlite_errorname", None)
        if isinstance(name, str):
            return name
        seen = seen.__cause__ or seen.__context__
    return ""


def explain(exc: BaseException, path: Path) -> str:
    """What went wrong with the store at ``path`` and what to do, in one line."""
    name = _error_name(exc)
    text = _one_line(str(exc)) or type(exc).__name__
    where = f"results database {str(path)!r}"
    lowered = text.lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in lowered:
        return (
            f"{where} is locked by another process ({text}; waited {lock_timeout():g} s): "
            f"wait for it to finish, raise {TIMEOUT_ENV} (seconds), or pass --db with another path"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in lowered:
        return (
            f"{where} is read-only ({text}) and this command writes to it: pass --db with a "
            "writable path (copy the file there to keep its results)"
        )
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or "disk is full" in lowered:
        return (
            f"cannot write {where} ({text}): the disk is full or a file-size limit was reached "
            "(or the device failed); the results committed before are kept: free space (or "
            "raise the limit) and rerun, or pass --db on another disk"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in lowered:
        return f"{where} is corrupt ({text}): {recover_hint(path)}"
    if name.startswith("SQLITE_CANTOPEN"):
        return (
            f"cannot open {where} ({text}): check that its folder exists and is writable, or "
            "pass --db with another path"
        )
    return f"{where} failed ({text}): pass --db with another path if it persists"


_DATABASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,)


def _pandas_database_error() -> tuple[type[BaseException], ...]:
    """pandas' wrapper of SQLite's errors (``read_sql_query``), once pandas is loaded: a
    command that never imports it (a quiet sweep) cannot meet it, and does not pay 0.3 s."""
    pandas = sys.modules.get("pandas")
    return (pandas.errors.DatabaseError,) if pandas is not None else ()


def guarded(method: Callable[P, R]) -> Callable[P, R]:
    """A ``Store`` method whose SQLite failures become one line naming the store's file."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except StabilityError:
            raise
        except _DATABASE_ERRORS + _pandas_database_error() as exc:
            path = Path(getattr(args[0], "path", "?"))
            raise StabilityError(explain(exc, path)) from None

    return wrapper
