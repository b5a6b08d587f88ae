"""The workshop of ``test_hostile_files.py``: a store to watch, hostile files to make.

``Lab`` copies a real store, mounts what root can mount (a tmpfs that fills up, a read-only
bind mount), protects files byte for byte and notes files that must not appear; ``snapshot``
counts the store's rows without writing to it; ``on_store`` prepares a store as corrupt,
read-only, full, size-limited or locked under any command.
"""

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOOD = ["--activation", "relu", "--init", "kaiming_normal", "--depth", "2", "--width", "4",
        "--dtype", "float32", "--seeds", "0", "--batch", "4", "--quiet"]  # fmt: skip
BIG = ["--activation", "relu,tanh", "--init", "kaiming_normal", "--depth", "20", "--width", "4",
       "--dtype", "float32", "--seeds", ",".join(map(str, range(30))), "--batch", "4",
       "--quiet"]  # fmt: skip  # 60 cells, about 1.2 MB of rows: fills any small disk
DOCTOR = ["doctor", "--depth", "2", "--width", "4", "--steps", "2", "--batch", "4"]
TABLES = ("runs", "cells", "sweep_rows", "bench_results", "doctor_rows")
Command = Callable[[Path, Path], list[str]]  # (store, tmp folder) -> command line
Snapshot = dict[str, int] | str | None  # row counts; a hash (or listing) when no store; absent


def bench_entry(name: str = "test_train_step[cpu-b4]", **extra: Any) -> dict[str, Any]:
    """One benchmark as pytest-benchmark writes it, with this project's extra_info."""
    stats = {"min": 0.01, "max": 0.03, "mean": 0.02, "stddev": 0.005, "rounds": 5,
             "median": 0.02, "iqr": 0.01, "q1": 0.015, "q3": 0.025, "iqr_outliers": 0,
             "stddev_outliers": 1, "outliers": "1;0", "ld15iqr": 0.01, "hd15iqr": 0.03,
             "ops": 50.0, "total": 0.1, "iterations": 1}  # fmt: skip
    info = {"kind": "train", "batch_size": 4, "samples_per_s": 200.0, "device": "cpu",
            "dtype": "float32", "median_s": 0.02, "iqr_s": 0.01, "efficiency": 0.4}  # fmt: skip
    info.update(extra)
    return {"name": name, "fullname": f"benchmarks/x.py::{name}", "group": None,
            "stats": stats, "extra_info": info}  # fmt: skip


def bench_doc(*entries: Any) -> dict[str, Any]:
    return {"machine_info": {}, "commit_info": {}, "benchmarks": list(entries)}


def with_stats(**stats: Any) -> dict[str, Any]:
    entry = bench_entry()
    entry["stats"].update(stats)
    return entry


def without(key: str, where: str = "extra_info") -> dict[str, Any]:
    entry = bench_entry()
    del (entry[where] if where else entry)[key]
    return entry


def snapshot(db: Path) -> Snapshot:
    """Row counts per table, read-only; the file's hash if SQLite cannot read it."""
    if not db.exists():
        return None
    if db.is_dir():
        return repr(sorted(p.name for p in db.iterdir()))
    try:
        uri = f"file:{db.resolve()}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=0) as conn:
            counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        conn.close()
        return counts
    except sqlite3.Error:
        return hashlib.sha256(db.read_bytes()).hexdigest()


class Lab:
    """The files of one case: a store to watch, files to protect, mounts, locks, limits."""

    def __init__(self, tmp: Path, template: Path, stack: ExitStack, mp: pytest.MonkeyPatch):
        self.tmp, self.template, self.stack, self.mp = tmp, template, stack, mp
        self.db = tmp / "store" / "stability.db"
        self.protected: list[Path] = []
        self.absent: list[Path] = []
        self.fsize: int | None = None  # RLIMIT_FSIZE in bytes: run in a subprocess
        self.lock: str | None = None  # "EXCLUSIVE" or "IMMEDIATE", held while the case runs

    def store(self, path: Path | None = None) -> Path:
        """A copy of a store holding a sweep, a bench run and a doctor run: the one watched."""
        self.db = path or self.tmp / "store" / "stability.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.template, self.db)
        return self.db

    def keep(self, path: Path, data: bytes | str = b"") -> Path:
        """A file that must come out byte for byte as it went in."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if data or not path.exists():
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.protected.append(path)
        return path

    def json(self, doc: Any) -> Path:
        return self.keep(self.tmp / "bench.json", json.dumps(doc))

    def corrupt(self, offset: int) -> Path:
        """The store with random bytes from ``offset`` to the end: the header stays valid."""
        db = self.store()
        size = db.stat().st_size
        with db.open("r+b") as f:
            f.seek(offset)
            f.write(os.urandom(size - offset))
        return self.keep(db)

    def _mount(self, *commands: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", str(target)], capture_output=True, check=False)
                pytest.skip(f"cannot mount here ({' '.join(command[:3])}: {done.stderr.strip()})")
        self.stack.callback(_unmount, target)

    def tmpfs(self, size: int) -> Path:
        """A fresh tmpfs of ``size`` bytes: a disk that fills up."""
        target = self.tmp / f"tmpfs-{uuid.uuid4().hex[:6]}"
        self._mount(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                    target=target)  # fmt: skip
        return target

    def read_only(self, folder: Path) -> Path:
        """``folder`` seen through a read-only bind mount: root cannot write there either."""
        target = self.tmp / "ro"
        self._mount(["mount", "--bind", str(folder), str(target)],
                    ["mount", "-o", "remount,bind,ro", str(target)], target=target)  # fmt: skip
        return target

    def readonly_store(self) -> Path:
        self.store(self.tmp / "rw" / "stability.db")
        self.db = self.read_only(self.db.parent) / "stability.db"
        return self.db

    def fill(self, folder: Path) -> None:
        """Write a filler file until the disk is full."""
        fd = os.open(folder / "filler", os.O_CREAT | os.O_WRONLY)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(fd)


def _unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def odd_store(kind: str, command: Command) -> Callable[[Lab], list[str]]:
    """A ``--db`` that is no store: a folder, a text file, another application's SQLite."""

    def setup(lab: Lab) -> list[str]:
        lab.db = lab.tmp / "odd.db"
        if kind == "folder":
            lab.db.mkdir()
        elif kind == "text":
            lab.keep(lab.db, "name,value\n" * 100)
        else:
            with sqlite3.connect(lab.db) as conn:
                conn.execute("CREATE TABLE customers (id INTEGER)")
            conn.close()
            lab.keep(lab.db)
        return command(lab.db, lab.tmp)

    return setup


def on_store(command: Command, prepare: str) -> Callable[[Lab], list[str]]:
    """``command(db, tmp)`` on a store prepared as: corrupt pages, a damaged schema page,
    a read-only mount, a full disk, a file-size limit, a lock held elsewhere, a plain one."""

    def setup(lab: Lab) -> list[str]:
        if prepare == "corrupt-pages":
            db = lab.corrupt(4096)  # page 1 (header, schema) intact, every table page garbage
        elif prepare == "corrupt-schema":
            db = lab.corrupt(100)  # the 100-byte header intact, the schema page garbage
        elif prepare == "read-only":
            db = lab.readonly_store()
        elif prepare == "full":
            db = lab.store(lab.tmpfs(192 * 1024) / "stability.db")
        elif prepare.startswith("fsize"):
            db = lab.store()
            lab.fsize = db.stat().st_size + 64 * 1024
        elif prepare.startswith("lock"):
            db = lab.store()
            lab.lock = "IMMEDIATE" if prepare == "lock-writer" else "EXCLUSIVE"
            lab.mp.setenv("STABILITY_DB_TIMEOUT", "0.2")
        else:
            db = lab.store()
        return command(db, lab.tmp)

    return setup


def sweep(db: Path, tmp: Path) -> list[str]:
    return ["sweep", *GOOD, "--db", str(db), "--out", str(tmp / "rows.csv")]


def sweep_resume(db: Path, tmp: Path) -> list[str]:
    return [*sweep(db, tmp), "--resume"]


def sweep_big(db: Path, tmp: Path) -> list[str]:
    return ["sweep", *BIG, "--db", str(db), "--out", str(tmp / "rows.csv")]


def doctor(db: Path, tmp: Path) -> list[str]:
    return [*DOCTOR, "--db", str(db), "--out", str(tmp / "doctor.csv")]


def ingest(db: Path, tmp: Path) -> list[str]:
    path = tmp / "bench.json"
    path.write_text(json.dumps(bench_doc(bench_entry())))
    return ["bench-ingest", str(path), "--db", str(db)]


def report_no_run(db: Path, tmp: Path) -> list[str]:
    return ["report", "--no-run", "--db", str(db), "--out", str(tmp / "page" / "index.html")]


def report_full(db: Path, tmp: Path) -> list[str]:
    return ["report", "--quick", "--db", str(db), "--out", str(tmp / "page" / "index.html")]


def hold_lock(db: Path, how: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"BEGIN {how}")
    if how == "IMMEDIATE":  # readers may read, no one else may write
        conn.execute("INSERT INTO runs (kind, started_at, torch_version, device, host, command)"
                     " VALUES ('x', 'now', 'x', 'cpu', 'x', 'x')")  # fmt: skip
    return conn


def limited(fsize: int) -> Callable[[], None]:
    def limit() -> None:  # in the child: EFBIG from write(), not death by SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return limit
