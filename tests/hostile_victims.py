"""Setups for ``test_hostile_files.py``'s issue-29 rows: what a user must never lose.

The user's source named as an output (a module file, through a link, an imported module
that is no ``.py`` file), a store's own journal or WAL, a store that lost a table or its
rows, a judgement of zero rows, a report on a store that does not exist, and inputs that
are no regular file or too big to read. Each setup returns the command line and marks the
files to keep byte for byte (``lab.keep``) and those that must not appear (``lab.absent``).
"""

import importlib.machinery
import importlib.util
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from hostile_lab import DOCTOR, GOOD, Lab, bench_doc, bench_entry

from stability.results.files import APPLICATION_ID

Setup = Callable[[Lab], list[str]]
VICTIM = """import torch
from torch import nn


def build():
    return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))


def batch():
    return torch.randn(4, 4)
"""
MODEL = ["--model", "mods.victim1:build", "--input", "4x4"]


def victim(lab: Lab, name: str = "victim1.py") -> Path:
    """The user's module ``mods/<name>`` beside them (the working directory), kept."""
    lab.mp.chdir(lab.tmp)
    return lab.keep(lab.tmp / "mods" / name, VICTIM)


def out_is_source(command: str, name: str = "victim1.py") -> Setup:
    """``command`` with ``--out mods/<name>``: the user's own module file."""

    def setup(lab: Lab) -> list[str]:
        out = str(victim(lab, name).relative_to(lab.tmp))
        db = str(lab.store())
        given = "mods.victim1:batch"  # --input from the module: the same file, as an input
        return {
            "sweep": ["sweep", *GOOD, "--db", db, "--out", out],
            "doctor": [*DOCTOR, "--db", db, "--out", out],
            "probe": ["probe", *MODEL, "--db", db, "--out", out],
            "probe-input": ["probe", *MODEL[:2], "--input", given, "--db", db, "--out", out],
            "doctor-model": ["doctor", *MODEL, "--db", db, "--out", out],
            "baseline-model": ["baseline", *MODEL, "--reason", "x", "--out", out],
        }[command]

    return setup


def out_links_to_source(lab: Lab) -> list[str]:
    """``--out rows.csv``, a symlink to the user's module: the target is what would go."""
    target = victim(lab)
    (lab.tmp / "rows.csv").symlink_to(target)
    return ["sweep", *GOOD, "--db", str(lab.store()), "--out", "rows.csv"]


def out_is_imported_module(lab: Lab) -> list[str]:
    """``--out`` the file of an imported module that has no ``.py`` name (``plugin.dat``,
    loaded as source): refused because it is imported, whatever its name."""
    path = victim(lab, "plugin.dat")
    loader = importlib.machinery.SourceFileLoader("hostile_plugin", str(path))
    spec = importlib.util.spec_from_file_location("hostile_plugin", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    lab.mp.setitem(sys.modules, "hostile_plugin", module)
    return ["sweep", *GOOD, "--db", str(lab.store()), "--out", str(path)]


def out_is_side_file(suffix: str) -> Setup:
    """``--out`` the store's journal, WAL or shared-memory file (``stability.db-wal``)."""

    def setup(lab: Lab) -> list[str]:
        db = lab.store()
        side = db.with_name(db.name + suffix)
        lab.absent.append(side)
        return ["sweep", *GOOD, "--db", str(db), "--out", str(side)]

    return setup


def _sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def resume_on_store(*statements: str, fail_on: bool = True) -> Setup:
    """``sweep --resume --fail-on stable`` over an earlier CSV, on the store after
    ``statements`` (a table dropped, a column dropped, rows deleted)."""

    def setup(lab: Lab) -> list[str]:
        db = lab.store()
        _sql(db, *statements)
        csv = lab.keep(lab.tmp / "rows.csv", "earlier,rows\n1,2\n") if fail_on else None
        out = csv or lab.tmp / "new.csv"
        judge = ["--fail-on", "stable"] if fail_on else []
        return ["sweep", *GOOD, "--db", str(db), "--out", str(out), "--resume", *judge]

    return setup


def empty_marked_store(lab: Lab) -> list[str]:
    """A file marked as a stability store (application_id, schema version) with no tables."""
    lab.db = lab.tmp / "marked.db"
    _sql(lab.db, f"PRAGMA application_id = {APPLICATION_ID}", "PRAGMA user_version = 1")
    lab.keep(lab.db)
    return ["sweep", *GOOD, "--db", str(lab.db), "--out", str(lab.keep(lab.tmp / "r.csv", "a\n"))]


def zero_rows_judged(fail_on: bool) -> Setup:
    """A store that hands back no rows for cells it just ran (lost between the write and
    the read): nothing was judged, so it is no pass, and the earlier CSV stays."""

    def setup(lab: Lab) -> list[str]:
        lab.mp.setattr("stability.results.store.Store.sweep_records", lambda *a: [])
        csv = lab.keep(lab.tmp / "rows.csv", "earlier,rows\n1,2\n")
        judge = ["--fail-on", "stable"] if fail_on else []
        return ["sweep", *GOOD, "--db", str(lab.store()), "--out", str(csv), *judge]

    return setup


def report_on_missing_store(lab: Lab) -> list[str]:
    """``report --no-run --db typo.db``: no store there, and none may be made."""
    lab.db = lab.tmp / "typo.db"
    page = lab.tmp / "page" / "index.html"
    lab.absent += [lab.db, page, page.parent]
    return ["report", "--no-run", "--db", str(lab.db), "--out", str(page)]


def ingest_node(kind: str) -> Setup:
    """``bench-ingest`` of what is no regular file (``/dev/zero``, a FIFO, a folder) or is
    over the size cap: refused before a byte is read, and no store is created."""

    def setup(lab: Lab) -> list[str]:
        if kind == "dev-zero":
            source = Path("/dev/zero")
        elif kind == "fifo":
            source = lab.tmp / "bench.fifo"
            os.mkfifo(source)
        elif kind == "folder":
            source = lab.tmp / "bench.d"
            source.mkdir()
        else:  # a valid file over a cap lowered for the test
            import json

            lab.mp.setattr("stability.results.files.MAX_INPUT_BYTES", 1000)
            source = lab.keep(lab.tmp / "big.json", json.dumps(bench_doc(*[bench_entry()] * 5)))
        lab.db = lab.tmp / "new.db"
        lab.absent.append(lab.db)
        return ["bench-ingest", str(source), "--db", str(lab.db)]

    return setup
