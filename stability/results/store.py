"""The embedded results store: one SQLite file holding runs, sweep rows and benchmarks.

Every completed cell is written in its own transaction, so an interrupted run keeps all
it finished and ``--resume`` can skip it. A file that is not a stability database
(corrupt, or some other application's SQLite file) is refused, never overwritten.
"""

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stability.results import store_file, store_open
from stability.results.environment import environment
from stability.results.files import APPLICATION_ID, writable_path

if TYPE_CHECKING:  # imported where a frame is made: a quiet sweep never needs pandas
    import pandas as pd

__all__ = ["APPLICATION_ID", "DEFAULT_DB", "SCHEMA_VERSION", "Store", "writable_path"]

DEFAULT_DB = Path("results") / "stability.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    git_commit TEXT,
    torch_version TEXT NOT NULL,
    device TEXT NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cell_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    seconds REAL,
    PRIMARY KEY (run_id, cell_key)
);
CREATE TABLE IF NOT EXISTS sweep_rows (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cell_key TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sweep_rows_cell ON sweep_rows (cell_key);
CREATE TABLE IF NOT EXISTS bench_results (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    data TEXT NOT NULL
);
-- Added without a version bump: IF NOT EXISTS gives version-1 files the table on open.
CREATE TABLE IF NOT EXISTS doctor_rows (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
-- Named tables of any other command (probe, experiments, spectra...): one JSON row each.
CREATE TABLE IF NOT EXISTS records (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_name ON records (name);
"""


class Store:
    """A connection to the results database; create with ``Store.open(path)``.

    Every method turns SQLite's failures (locked, read-only, full, corrupt) into one line
    naming the file (``store_file.guarded``).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path | str = DEFAULT_DB, readonly: bool = False) -> "Store":
        """Open a stability database; refuse anything else, and a damaged one.

        A writer creates the file only where none exists, and proves it can write before any work;
        ``readonly`` opens with ``mode=ro`` (a read-only mount is fine) and never writes.
        """
        path = Path(path)
        return cls(store_open.connect(path, readonly, _SCHEMA, SCHEMA_VERSION), path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------
    @store_file.guarded
    def start_run(self, kind: str, command: Sequence[str], device: str = "cpu") -> int:
        """Record who/what/where for a run and return its id."""
        with self.conn:
            return self._insert_run(kind, command, device)

    def _insert_run(self, kind: str, command: Sequence[str], device: str) -> int:
        """Insert a ``runs`` row in the open transaction; its id."""
        env = environment(("git_commit", "torch", "host"))
        cur = self.conn.execute(
            "INSERT INTO runs (kind, started_at, git_commit, torch_version, device, host,"
            " command) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                env["git_commit"],
                env["torch"],
                device,
                env["host"],
                " ".join(command),
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    @store_file.guarded
    def runs(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM runs ORDER BY id", self.conn)

    @store_file.guarded
    def has_run(self, run_id: int) -> bool:
        """Whether run ``run_id`` is recorded: a cache entry naming a run of another
        (or a deleted) database must not be reused."""
        row = self.conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None

    # -- sweep cells ---------------------------------------------------------------------
    @store_file.guarded
    def write_cell(
        self, run_id: int, key: str, rows: Iterable[Mapping[str, Any]], seconds: float
    ) -> None:
        """Store one completed cell and its rows atomically."""
        with self.conn:
            self.conn.executemany(
                "INSERT INTO sweep_rows (run_id, cell_key, data) VALUES (?, ?, ?)",
                [(run_id, key, json.dumps(dict(r))) for r in rows],
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO cells (run_id, cell_key, status, error, seconds)"
                " VALUES (?, ?, 'done', NULL, ?)",
                (run_id, key, seconds),
            )

    @store_file.guarded
    def write_failed_cell(self, run_id: int, key: str, error: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO cells (run_id, cell_key, status, error, seconds)"
                " VALUES (?, ?, 'failed', ?, NULL)",
                (run_id, key, error),
            )

    @store_file.guarded
    def done_keys(self) -> set[str]:
        """Cells completed by any run in this database whose rows are stored: a cell marked
        done by its newest run but without rows there is run again by ``--resume``."""
        cur = self.conn.execute(
            "SELECT c.cell_key FROM (SELECT cell_key, max(run_id) AS run_id FROM cells"
            " WHERE status = 'done' GROUP BY cell_key) c WHERE EXISTS (SELECT 1 FROM"
            " sweep_rows r WHERE r.cell_key = c.cell_key AND r.run_id = c.run_id)"
        )
        return {k for (k,) in cur}

    @store_file.guarded
    def sweep_rows(self, keys: Iterable[str] | None = None) -> "pd.DataFrame":
        """Tidy rows, one per (config, seed, layer); the newest run wins for a repeated cell."""
        import pandas as pd

        return pd.DataFrame.from_records(self.sweep_records(keys))

    @store_file.guarded
    def sweep_records(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """``sweep_rows`` as plain records, in the same order: what a CSV needs, no pandas."""
        latest = (
            "SELECT r.rowid, r.data FROM sweep_rows r JOIN (SELECT cell_key, max(run_id) AS run_id"
            " FROM cells WHERE status = 'done' GROUP BY cell_key) c"
            " ON r.cell_key = c.cell_key AND r.run_id = c.run_id"
        )
        wanted = None if keys is None else set(keys)
        records: list[dict[str, Any]] = []
        for rowid, data in self.conn.execute(latest):
            row = store_file.decode_row(data, "sweep_rows", rowid, self.path)
            if wanted is None or row.get("cell_key") in wanted:
                records.append(row)
        return records

    @store_file.guarded
    def run_cells(self) -> "pd.DataFrame":
        """Every run's cells (``run_id, cell_key, status``): which grid each run covered, so
        history compares only runs of the same grid."""
        import pandas as pd

        return pd.read_sql_query(
            "SELECT run_id, cell_key, status FROM cells ORDER BY run_id, cell_key", self.conn
        )

    @store_file.guarded
    def run_sweep_rows(self, run_id: int) -> "pd.DataFrame":
        """The sweep rows one run wrote (``stability diff``), with their ``run_id``."""
        return self._json_frame("sweep_rows", "WHERE run_id = ?", (run_id,))

    @store_file.guarded
    def run_bench_results(self, run_id: int) -> "pd.DataFrame":
        """The benchmark results one run stored (``stability diff``), with their ``run_id``."""
        return self._json_frame("bench_results", "WHERE run_id = ?", (run_id,))

    @store_file.guarded
    def sweep_history(self) -> "pd.DataFrame":
        """Every run's sweep rows with their ``run_id``, oldest run first: unlike
        ``sweep_rows`` a repeated cell appears once per run, so runs can be compared."""
        return self._json_frame("sweep_rows", "ORDER BY run_id")

    # -- benchmarks ----------------------------------------------------------------------
    @store_file.guarded
    def write_bench(self, run_id: int, results: Iterable[Mapping[str, Any]]) -> int:
        """Store benchmark results (pytest-benchmark entries flattened to dicts)."""
        rows = [(run_id, str(r.get("name", "")), json.dumps(dict(r))) for r in results]
        with self.conn:
            self.conn.executemany(
                "INSERT INTO bench_results (run_id, name, data) VALUES (?, ?, ?)", rows
            )
        return len(rows)

    @store_file.guarded
    def write_bench_run(
        self, command: Sequence[str], device: str, results: Iterable[Mapping[str, Any]]
    ) -> int:
        """A new ``bench`` run and all its results in one transaction: all, or nothing."""
        with self.conn:
            run_id = self._insert_run("bench", command, device)
            self.conn.executemany(
                "INSERT INTO bench_results (run_id, name, data) VALUES (?, ?, ?)",
                [(run_id, str(r.get("name", "")), json.dumps(dict(r))) for r in results],
            )
        return run_id

    @store_file.guarded
    def bench_results(self) -> "pd.DataFrame":
        return self._json_frame("bench_results", "ORDER BY run_id")

    # -- divergence doctor ---------------------------------------------------------------
    @store_file.guarded
    def write_doctor(self, run_id: int, kind: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Store doctor tables: kind is diagnosis, layers, cost, lr_search, lr_map, loss_scaling."""
        data = [(run_id, kind, json.dumps(dict(r), default=str)) for r in rows]
        with self.conn:
            self.conn.executemany(
                "INSERT INTO doctor_rows (run_id, kind, data) VALUES (?, ?, ?)", data
            )
        return len(data)

    @store_file.guarded
    def write_doctor_run(
        self, command: Sequence[str], device: str, tables: Mapping[str, Iterable[Mapping[str, Any]]]
    ) -> int:
        """A new ``doctor`` run and every table's rows in one transaction: all, or nothing."""
        data = [
            (kind, json.dumps(dict(r), default=str)) for kind, rows in tables.items() for r in rows
        ]
        with self.conn:
            run_id = self._insert_run("doctor", command, device)
            self.conn.executemany(
                "INSERT INTO doctor_rows (run_id, kind, data) VALUES (?, ?, ?)",
                [(run_id, kind, d) for kind, d in data],
            )
        return run_id

    @store_file.guarded
    def doctor_rows(self, kind: str) -> "pd.DataFrame":
        """All rows of one doctor table, oldest run first, with their run id."""
        return self._json_frame("doctor_rows", "WHERE kind = ? ORDER BY run_id", (kind,))

    # -- named records of any other command ---------------------------------------------
    @store_file.guarded
    def write_records_run(
        self,
        kind: str,
        command: Sequence[str],
        device: str,
        tables: Mapping[str, Iterable[Mapping[str, Any]]],
    ) -> int:
        """A new run of ``kind`` and its named tables in one transaction: all, or nothing.

        New commands store here instead of adding a table each, so the schema stays put."""
        with self.conn:
            run_id = self._insert_run(kind, command, device)
            self._insert_records(run_id, tables)
        return run_id

    @store_file.guarded
    def write_records(self, run_id: int, tables: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        """More named tables for a run already started, in one transaction: a long command
        commits each piece as it lands, so an interruption keeps what it finished."""
        with self.conn:
            self._insert_records(run_id, tables)

    def _insert_records(
        self, run_id: int, tables: Mapping[str, Iterable[Mapping[str, Any]]]
    ) -> None:
        data = [
            (name, json.dumps(dict(r), default=str)) for name, rows in tables.items() for r in rows
        ]
        self.conn.executemany(
            "INSERT INTO records (run_id, name, data) VALUES (?, ?, ?)",
            [(run_id, name, d) for name, d in data],
        )

    @store_file.guarded
    def records(self, name: str) -> "pd.DataFrame":
        """Every row stored under ``name``, oldest run first, with its ``run_id``."""
        return self._json_frame("records", "WHERE name = ? ORDER BY run_id, rowid", (name,))

    @store_file.guarded
    def record_names(self) -> list[str]:
        """The names that hold at least one row."""
        return [n for (n,) in self.conn.execute("SELECT DISTINCT name FROM records ORDER BY name")]

    def _json_frame(self, table: str, where: str, params: tuple[Any, ...] = ()) -> "pd.DataFrame":
        """``table``'s rows (``where``) as one DataFrame: the JSON fields plus ``run_id``; a
        row whose ``data`` is no JSON object is one line naming the table and the row."""
        import pandas as pd

        cur = self.conn.execute(f"SELECT rowid, run_id, data FROM {table} {where}", params)
        return pd.DataFrame.from_records(
            [
                {"run_id": rid, **store_file.decode_row(d, table, rowid, self.path)}
                for rowid, rid, d in cur
            ]
        )
