"""What a results store is, checked on open; and a new store, created whole or not at all.

One rule: a path that does not exist becomes a new store; anything else must already be a
stability store, whole. An existing file is refused (one line, ``StabilityError``) when it
is empty (0 bytes), not SQLite, another program's (its ``application_id``), at another
schema version, missing a table or a column, or corrupt (``PRAGMA quick_check``).

A new store is built in a temporary file beside the target and linked into place
(``os.link`` never replaces), so a second process never sees a half-made store: two sweeps
started at once on one new ``--db`` both open the same complete file.
"""

import contextlib
import os
import re
import sqlite3
import uuid
from pathlib import Path

from stability.errors import StabilityError
from stability.results import store_file
from stability.results.files import APPLICATION_ID, SQLITE_HEADER


def _where(path: Path) -> str:
    return f"results database {str(path)!r}"


def check_file(path: Path) -> bool:
    """Whether ``path`` exists (as a file that could be a store); refuse what cannot be."""
    if path.is_dir():
        raise StabilityError(f"{_where(path)} is a directory; pass a file path")
    if path.is_symlink() and not path.exists():
        raise StabilityError(
            f"{_where(path)} is a symlink to nothing ({os.readlink(path)!r}); "
            "pass --db with a real path"
        )
    if not path.exists():
        return False
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StabilityError(
            f"cannot read {_where(path)} ({exc.strerror}); pass --db with another path"
        ) from None
    if not header:
        raise StabilityError(
            f"{_where(path)} is an empty file (0 bytes), not a stability store; only a path "
            "that does not exist is created: remove it, or pass --db with another path"
        )
    if header != SQLITE_HEADER:
        raise StabilityError(
            f"{_where(path)} is not an SQLite file (corrupt or foreign); "
            "move it away or pass --db with another path"
        )
    return True


def check_owner(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse another application's database (also an empty one), and ours at another
    schema version."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if not app_id and not objects:
            raise StabilityError(
                f"{_where(path)} is an empty SQLite file, not a stability store; only a path "
                "that does not exist is created: remove it, or pass --db with another path"
            )
        raise StabilityError(
            f"{_where(path)} belongs to another application (application_id {app_id}, "
            f"{objects} schema objects), not a stability store; nothing was written to it: "
            "pass --db with another path"
        )
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found != version:
        raise StabilityError(
            f"{_where(path)} has schema version {found}, expected {version}; "
            "move it away to start a new one"
        )


def temp_tables(conn: sqlite3.Connection, schema: str) -> None:
    """On a read-only connection: empty TEMP stand-ins for tables an older file lacks
    (a writer would add them on open), so every query reads as "no rows" instead of failing."""
    have = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for statement in schema.split(";"):
        match = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if match and match.group(1) not in have:
            conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))


def _stamp(conn: sqlite3.Connection, schema: str, version: int) -> None:
    """The schema, id and version in one transaction (also the write probe of a writer)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {version}")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def create(path: Path, schema: str, version: int) -> None:
    """A new, complete store at ``path``; nothing if another process made one first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        conn = sqlite3.connect(tmp)
        try:
            _stamp(conn, schema, version)
        finally:
            conn.close()
        try:
            os.link(tmp, path)  # atomic, and never replaces a store made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: rename, checked just before
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def connect(path: Path, readonly: bool, schema: str, version: int) -> sqlite3.Connection:
    """A checked connection to the store at ``path``, created first if it does not exist."""
    existed = check_file(path)
    if readonly and not existed:
        raise StabilityError(f"{_where(path)} does not exist; pass --db with a store")
    conn = None
    try:
        if not existed:
            create(path, schema, version)
        conn = store_file.connect(path, readonly)
        check_owner(conn, path, version)
        store_file.check_integrity(conn, path)
        store_file.check_tables(conn, path, schema, APPLICATION_ID)
        if readonly:
            temp_tables(conn, schema)
        else:  # tables added after version 1; and a read-only file fails here, not mid-run
            _stamp(conn, schema, version)
    except (OSError, sqlite3.Error, StabilityError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StabilityError):
            raise
        if isinstance(exc, OSError):
            raise StabilityError(
                f"cannot open {_where(path)} ({exc.strerror}); pass --db with another path"
            ) from None
        raise StabilityError(store_file.explain(exc, path)) from None
    return conn
