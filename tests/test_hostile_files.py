"""Hostile files, as one table: every case a user met (issue 13) and a few more.

Each row prepares real files (a corrupt store, a read-only bind mount, a full tmpfs, a
file-size limit, a lock held by another connection, a malformed benchmark JSON), runs one
subcommand and checks: the exit code, one stderr line naming the problem and no traceback,
the store's row counts before and after (nothing lost), protected files byte for byte, and
files that must not appear. Mounting needs root; without it those rows skip, saying why.
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hostile_lab import (
    DOCTOR,
    GOOD,
    ROOT,
    Lab,
    bench_doc,
    bench_entry,
    doctor,
    hold_lock,
    ingest,
    limited,
    odd_store,
    on_store,
    report_full,
    report_no_run,
    snapshot,
    sweep,
    sweep_big,
    sweep_resume,
    with_stats,
    without,
)
from hostile_victims import (
    empty_marked_store,
    ingest_node,
    out_is_imported_module,
    out_is_side_file,
    out_is_source,
    out_links_to_source,
    report_on_missing_store,
    resume_on_store,
    zero_rows_judged,
)

from stability.cli import main


# -- the cases: each prepares its files and returns the command line ---------------------------
def out_is_store(lab: Lab) -> list[str]:
    db = lab.store()
    return ["sweep", *GOOD, "--db", str(db), "--out", str(db)]


def out_is_new_store(lab: Lab) -> list[str]:
    lab.db = lab.tmp / "same.db"
    lab.absent.append(lab.db)
    return ["sweep", *GOOD, "--db", str(lab.db), "--out", str(lab.db)]


def out_links_to_store(link: Callable[[Path, Path], None]) -> Callable[[Lab], list[str]]:
    """``--out`` made as ``link(out, store)``: a symlink or a hard link to the store."""

    def setup(lab: Lab) -> list[str]:
        db = lab.store()
        out = lab.tmp / "rows.csv"
        link(out, db)
        return ["sweep", *GOOD, "--db", str(db), "--out", str(out)]

    return setup


def out_is_other_store(lab: Lab) -> list[str]:
    other = lab.keep(lab.store(lab.tmp / "other.db"))
    lab.db = lab.tmp / "new.db"
    return ["sweep", *GOOD, "--db", str(lab.db), "--out", str(other)]


def empty_grid(flag: str, value: str) -> Callable[[Lab], list[str]]:
    def setup(lab: Lab) -> list[str]:
        db = lab.store()
        keep = lab.keep(lab.tmp / "keep.csv", "a,b\n1,2\n")
        args = list(GOOD)
        args[args.index(flag) + 1] = value
        return ["sweep", *args, "--db", str(db), "--out", str(keep)]

    return setup


def doctor_out(out: str, *extra: str, db_name: str = "stability.db") -> Callable[[Lab], list[str]]:
    """A doctor run whose outputs (``out``, and ``extra`` flags) are named relative to tmp;
    ``{db}`` stands for the store. Refused before training: no CSV may appear."""

    def setup(lab: Lab) -> list[str]:
        db = lab.store(lab.tmp / db_name)
        named = [a.replace("{db}", str(db)).replace("{tmp}", str(lab.tmp)) for a in extra]
        target = out.replace("{db}", str(db)).replace("{tmp}", str(lab.tmp))
        if target != str(db):
            lab.absent.append(Path(target))
        return [*DOCTOR, "--db", str(db), "--out", target, *named]

    return setup


def report_out_is_store(lab: Lab) -> list[str]:
    db = lab.keep(lab.store(lab.tmp / "r" / "index.html"))
    return ["report", "--no-run", "--db", str(db), "--out", str(db)]


def report_store_among_csvs(lab: Lab) -> list[str]:
    db = lab.keep(lab.store(lab.tmp / "r" / "runs.csv"))
    lab.absent.append(lab.tmp / "r" / "index.html")
    return ["report", "--no-run", "--db", str(db), "--out", str(lab.tmp / "r" / "index.html")]


def report_out_is_other_store(lab: Lab) -> list[str]:
    other = lab.keep(lab.store(lab.tmp / "r" / "old.html"))
    db = lab.store()
    return ["report", "--no-run", "--db", str(db), "--out", str(other)]


def baseline_out_is_store(lab: Lab) -> list[str]:
    db = lab.keep(lab.store())
    return ["baseline", "--reason", "hostile test", "--out", str(db)]


def ingest_store_into_itself(lab: Lab) -> list[str]:
    db = lab.keep(lab.store())
    return ["bench-ingest", str(db), "--db", str(db)]


def csv_on_full_disk(lab: Lab) -> list[str]:
    disk = lab.tmpfs(64 * 1024)
    keep = lab.keep(disk / "rows.csv", "old,rows\n" * 50)
    lab.fill(disk)
    return ["sweep", *GOOD, "--db", str(lab.store()), "--out", str(keep)]


def doctor_csv_on_full_disk(lab: Lab) -> list[str]:
    disk = lab.tmpfs(64 * 1024)
    keep = lab.keep(disk / "doctor.csv", "old,table\n" * 50)
    lab.fill(disk)
    return [*DOCTOR, "--db", str(lab.store()), "--out", str(keep)]


def out_on_read_only_mount(command: list[str]) -> Callable[[Lab], list[str]]:
    def setup(lab: Lab) -> list[str]:
        folder = lab.tmp / "rw"
        lab.keep(folder / "old.csv", "a\n")
        out = lab.read_only(folder) / "new.csv"
        return [*command, "--db", str(lab.store()), "--out", str(out)]

    return setup


def baseline_on_read_only_mount(lab: Lab) -> list[str]:
    lab.store()  # watched, untouched
    folder = lab.tmp / "rw"
    folder.mkdir()
    return ["baseline", "--reason", "x", "--out", str(lab.read_only(folder) / "b.json")]


def bad_timeout(lab: Lab) -> list[str]:
    lab.mp.setenv("STABILITY_DB_TIMEOUT", "soon")
    return sweep(lab.store(), lab.tmp)


def ingest_doc(doc: Any) -> Callable[[Lab], list[str]]:
    def setup(lab: Lab) -> list[str]:
        return ["bench-ingest", str(lab.json(doc)), "--db", str(lab.store())]

    return setup


def ingest_bytes(data: bytes) -> Callable[[Lab], list[str]]:
    def setup(lab: Lab) -> list[str]:
        path = lab.keep(lab.tmp / "bench.json", data)
        return ["bench-ingest", str(path), "--db", str(lab.store())]

    return setup


def ingest_missing(lab: Lab) -> list[str]:
    return ["bench-ingest", str(lab.tmp / "nope.json"), "--db", str(lab.store())]


@dataclass(frozen=True)
class Case:
    """A hostile file, the command that meets it, and what must come of it."""

    id: str
    setup: Callable[[Lab], list[str]]
    code: int
    words: tuple[str, ...]  # all in the one stderr line (or in stdout and notes for exit 0)
    grows: bool = False  # the store gains rows: work finished before the failure is kept


CORRUPT = ("is corrupt", ".recover", "--db")
READ_ONLY = ("is read-only", "--db")
FULL = ("disk is full or a file-size limit", "kept", "--db")
LOCKED = ("is locked by another process", "STABILITY_DB_TIMEOUT")
INVALID = ("is invalid, nothing was stored",)
INF = float("inf")

# fmt: off
CASES = [
    # -- one rule for every output path ----------------------------------------------------
    Case("sweep-out-is-the-store", out_is_store, 2, ("is the results store",)),
    Case("sweep-out-is-the-store-not-yet-made", out_is_new_store, 2, ("is the results store",)),
    Case("sweep-out-symlinks-to-the-store", out_links_to_store(Path.symlink_to), 2,
         ("is the results store",)),
    Case("sweep-out-hard-links-to-the-store", out_links_to_store(Path.hardlink_to), 2,
         ("is the results store",)),
    Case("sweep-out-is-another-store", out_is_other_store, 2, ("is a stability results database",)),
    Case("sweep-empty-activation-keeps-the-csv", empty_grid("--activation", ""), 2,
         ("grid is empty", "untouched")),
    Case("sweep-commas-only-keeps-the-csv", empty_grid("--init", ",,,"), 2, ("grid is empty",)),
    Case("sweep-csv-on-a-full-disk-keeps-the-old-csv", csv_on_full_disk, 2,
         ("No space left on device", "nothing was changed"), grows=True),
    Case("sweep-out-on-a-read-only-mount", out_on_read_only_mount(["sweep", *GOOD]), 2,
         ("not writable", "Read-only file system")),
    Case("doctor-csv-on-a-full-disk-keeps-the-stored-run", doctor_csv_on_full_disk, 2,
         ("No space left on device", "nothing was changed"), grows=True),
    Case("baseline-out-on-a-read-only-mount", baseline_on_read_only_mount, 2,
         ("not writable", "Read-only file system")),
    Case("doctor-out-is-the-store", doctor_out("{db}"), 2, ("is the results store",)),
    Case("doctor-table-csv-is-the-store", doctor_out("{tmp}/d.csv", db_name="d-layers.csv"), 2,
         ("layers table", "is the results store")),
    Case("doctor-figure-is-the-store", doctor_out("{tmp}/d.csv", "--lr-map", "--figure", "{db}"),
         2, ("--figure", "is the results store")),
    Case("doctor-figure-is-the-csv", doctor_out("{tmp}/d.csv", "--lr-map", "--figure",
         "{tmp}/d.csv"), 2, ("same file as --out",)),
    Case("report-out-is-the-store", report_out_is_store, 2, ("is the results store",)),
    Case("report-store-among-the-table-csvs", report_store_among_csvs, 2,
         ("is a .csv file in the folder", "--out")),
    Case("report-out-is-another-store", report_out_is_other_store, 2,
         ("is a stability results database",)),
    Case("baseline-out-is-a-store", baseline_out_is_store, 2, ("is a stability results database",)),
    Case("bench-ingest-the-store-into-itself", ingest_store_into_itself, 2,
         ("also an input of this command",)),
    # -- one store layer: corrupt, read-only, full, locked -----------------------------------
    Case("corrupt-pages-sweep", on_store(sweep, "corrupt-pages"), 2, CORRUPT),
    Case("corrupt-pages-sweep-resume", on_store(sweep_resume, "corrupt-pages"), 2, CORRUPT),
    Case("corrupt-pages-doctor", on_store(doctor, "corrupt-pages"), 2, CORRUPT),
    Case("corrupt-pages-bench-ingest", on_store(ingest, "corrupt-pages"), 2, CORRUPT),
    Case("corrupt-pages-report-no-run", on_store(report_no_run, "corrupt-pages"), 2, CORRUPT),
    Case("corrupt-schema-page-sweep", on_store(sweep, "corrupt-schema"), 2, CORRUPT),
    Case("corrupt-schema-page-report-no-run", on_store(report_no_run, "corrupt-schema"), 2,
         CORRUPT),
    Case("read-only-report-no-run-reads-it", on_store(report_no_run, "read-only"), 0,
         ("report:",)),
    Case("read-only-sweep", on_store(sweep, "read-only"), 2, READ_ONLY),
    Case("read-only-sweep-resume", on_store(sweep_resume, "read-only"), 2, READ_ONLY),
    Case("read-only-doctor", on_store(doctor, "read-only"), 2, READ_ONLY),
    Case("read-only-bench-ingest", on_store(ingest, "read-only"), 2, READ_ONLY),
    Case("read-only-report-that-would-run", on_store(report_full, "read-only"), 2, READ_ONLY),
    Case("full-disk-sweep-keeps-finished-cells", on_store(sweep_big, "full"), 2, FULL, grows=True),
    Case("file-size-limit-sweep-keeps-finished-cells", on_store(sweep_big, "fsize"), 2, FULL,
         grows=True),
    Case("locked-sweep", on_store(sweep, "lock"), 2, LOCKED),
    Case("locked-for-writers-sweep", on_store(sweep, "lock-writer"), 2, LOCKED),
    Case("locked-bench-ingest", on_store(ingest, "lock"), 2, LOCKED),
    Case("locked-report-no-run", on_store(report_no_run, "lock"), 2, LOCKED),
    Case("store-is-a-folder", odd_store("folder", sweep), 2, ("is a directory",)),
    Case("store-is-a-text-file", odd_store("text", report_no_run), 2, ("not an SQLite file",)),
    Case("store-of-another-application", odd_store("sqlite", ingest), 2,
         ("belongs to another application",)),
    Case("lock-timeout-not-a-number", bad_timeout, 2, ("STABILITY_DB_TIMEOUT", "'soon'")),
    # -- bench-ingest: the whole file valid, or nothing stored -------------------------------
    Case("bench-benchmarks-is-a-number", ingest_doc({"benchmarks": 5}), 2,
         ("'benchmarks' must be a list",)),
    Case("bench-entries-are-not-objects", ingest_doc(bench_doc(1, "x")), 2,
         (*INVALID, "entry 0", "must be an object")),
    Case("bench-stats-is-a-string", ingest_doc(bench_doc({**bench_entry(), "stats": "fast"})),
         2, (*INVALID, "'stats' must be an object")),
    Case("bench-entry-without-batch-size", ingest_doc(bench_doc(without("batch_size"))), 2,
         (*INVALID, "lacks 'batch_size'")),
    Case("bench-entry-without-extra-info", ingest_doc(bench_doc(without("extra_info", ""))), 2,
         (*INVALID, "'extra_info' must be an object")),
    Case("bench-nan-stats", ingest_doc(bench_doc(with_stats(median=float("nan")))), 2,
         (*INVALID, "'median' is nan")),
    Case("bench-infinite-stats", ingest_doc(bench_doc(with_stats(max=INF))), 2,
         (*INVALID, "'max' is inf")),
    Case("bench-nan-samples-per-s", ingest_doc(bench_doc(bench_entry(samples_per_s=float("nan")))),
         2, (*INVALID, "'samples_per_s'")),
    Case("bench-batch-size-is-true", ingest_doc(bench_doc(bench_entry(batch_size=True))), 2,
         (*INVALID, "'batch_size' must be a whole number")),
    Case("bench-rounds-is-zero", ingest_doc(bench_doc(with_stats(rounds=0))), 2,
         (*INVALID, "'rounds' must be a whole number >= 1")),
    Case("bench-entry-without-name", ingest_doc(bench_doc(without("name", ""))), 2,
         (*INVALID, "'name'")),
    Case("bench-one-bad-entry-stores-nothing",
         ingest_doc(bench_doc(bench_entry("a"), bench_entry("b", dtype=""), bench_entry("c"))),
         2, (*INVALID, "entry 1 ('b')", "'dtype'")),
    Case("bench-empty-list", ingest_doc(bench_doc()), 2, ("holds no benchmarks",)),
    Case("bench-top-level-list", ingest_doc([bench_entry()]), 2,
         ("is not a pytest-benchmark JSON",)),
    Case("bench-binary-file", ingest_bytes(bytes(range(256)) * 4), 2, ("is not UTF-8 text",)),
    Case("bench-not-json", ingest_bytes(b"{benchmarks: oops"), 2, ("is not valid JSON",)),
    Case("bench-nested-too-deeply", ingest_bytes(b"[" * 200_000), 2, ("nested too deeply",)),
    Case("bench-missing-file", ingest_missing, 2, ("cannot read benchmark JSON",)),
    Case("bench-valid-file-is-stored", ingest_doc(bench_doc(bench_entry("a"), bench_entry("b"))),
         0, ("2 results",), grows=True),
    # -- issue 29: the user's source is never an output ------------------------------------
    *(Case(f"{cmd}-out-is-the-users-module", out_is_source(cmd), 2,
           ("--out 'mods/victim1.py' is Python source (.py file)", "never overwrites source"))
      for cmd in ("sweep", "doctor", "probe", "probe-input", "doctor-model", "baseline-model")),
    *(Case(f"sweep-out-is-source-{name}", out_is_source("sweep", name), 2,
           ("is Python source", f"(.{name.rsplit('.', 1)[-1].lower()} file)"))
      for name in ("VICTIM.PY", "gui.pyw", "stubs.pyi", "cached.pyc", "notebook.ipynb")),
    Case("sweep-out-links-to-the-users-module", out_links_to_source, 2,
         ("(a link to", "victim1.py", "is Python source")),
    Case("sweep-out-is-an-imported-module-without-py-name", out_is_imported_module, 2,
         ("is the file of the imported module 'hostile_plugin'",)),
    *(Case(f"sweep-out-is-the-store{suffix}", out_is_side_file(suffix), 2,
           (f"is the {suffix[1:]} file of the results database", "corrupt"))
      for suffix in ("-journal", "-wal", "-shm")),
    # -- issue 29: an empty judgement never passes; a store that lost a table is refused --
    *(Case(f"sweep-resume-fail-on-store-without-{table}",
           resume_on_store(f"DROP TABLE {table}"), 2, (f"has no table {table!r}", "damaged"))
      for table in ("sweep_rows", "cells", "runs", "bench_results")),
    Case("sweep-resume-store-without-a-column",
         resume_on_store("ALTER TABLE sweep_rows DROP COLUMN data"), 2,
         ("table 'sweep_rows' lacks column 'data'",)),
    Case("sweep-store-marked-but-empty", empty_marked_store, 2, ("has no table 'runs'",)),
    Case("sweep-resume-reruns-cells-done-without-rows", resume_on_store(
         "DELETE FROM sweep_rows", fail_on=False), 0,
         ("1 cells done, 0 skipped", "note: 1 cells marked done", "running them again"),
         grows=True),
    Case("sweep-fail-on-judged-zero-rows", zero_rows_judged(True), 2,
         ("--fail-on stable judged 0 rows", "rows.csv is untouched"), grows=True),
    Case("sweep-zero-rows-without-fail-on", zero_rows_judged(False), 2,
         ("0 rows: the store", "holds no rows", "is untouched"), grows=True),
    Case("report-no-run-on-a-store-that-does-not-exist", report_on_missing_store, 2,
         ("typo.db' does not exist", "--no-run")),
    # -- issue 29: inputs are bounded ---------------------------------------------------------
    Case("bench-ingest-dev-zero", ingest_node("dev-zero"), 2, ("'/dev/zero' is a device",)),
    Case("bench-ingest-a-fifo", ingest_node("fifo"), 2, ("is a FIFO (named pipe)",)),
    Case("bench-ingest-a-folder", ingest_node("folder"), 2, ("is a directory",)),
    Case("bench-ingest-over-the-size-cap", ingest_node("big"), 2,
         ("is over the input size limit of",)),
]
# fmt: on


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store: one sweep, one bench run, one doctor run."""
    folder = tmp_path_factory.mktemp("template")
    db = folder / "stability.db"
    assert main(["sweep", *GOOD, "--db", str(db), "--out", str(folder / "rows.csv")]) == 0
    bench = folder / "bench.json"
    bench.write_text(json.dumps(bench_doc(bench_entry())))
    assert main(["bench-ingest", str(bench), "--db", str(db)]) == 0
    assert main([*DOCTOR, "--db", str(db), "--out", str(folder / "doctor.csv")]) == 0
    counts = snapshot(db)
    assert isinstance(counts, dict) and all(counts.values()), counts
    return db


@pytest.fixture
def lab(tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with ExitStack() as stack:
        yield Lab(tmp_path, template, stack, monkeypatch)


def _run(argv: list[str], lab: Lab, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    if lab.fsize is None:
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err
    done = subprocess.run(
        [sys.executable, "-m", "stability", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limited(lab.fsize),
        timeout=600,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file(case: Case, lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    argv = case.setup(lab)
    before = snapshot(lab.db)
    kept = {p: p.read_bytes() for p in lab.protected}
    lock = hold_lock(lab.db, lab.lock) if lab.lock else None
    try:
        code, out, err = _run(argv, lab, capsys)
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
    assert "Traceback" not in err + out, err
    assert code == case.code, err
    shown = err if code else out + err  # exit 0: the result on stdout, notes on stderr
    if code:  # one line; the report's progress lines ("report: ...") may come before it
        lines = [line for line in err.splitlines() if not line.startswith("report: ")]
        assert len(lines) == 1 and lines[0].startswith("stability: error: "), err
    for word in case.words:
        assert word in shown, shown
    after = snapshot(lab.db)
    if case.grows and isinstance(before, dict):
        assert isinstance(after, dict), after
        assert all(after[t] >= n for t, n in before.items()), (before, after)
        assert after != before, "the work finished before the failure was not kept"
    else:
        assert after == before, "the store changed"
    for path, data in kept.items():
        assert path.read_bytes() == data, f"{path} changed"
    for path in lab.absent:
        assert not path.exists(), f"{path} was written"
    leftovers = [*lab.tmp.rglob(".*.tmp"), *lab.tmp.rglob(".stability-probe-*")]
    assert not leftovers, "temporary files were left behind"
