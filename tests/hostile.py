"""Commands and store counts shared by the hostile-input table and the process tests."""

import sqlite3
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("runs", "cells", "sweep_rows", "bench_results", "doctor_rows")
SWEEP = {"--activation": "relu", "--init": "kaiming_normal", "--depth": "2", "--width": "4",
         "--dtype": "float32", "--seeds": "0", "--batch": "4"}  # fmt: skip
DOCTOR = {"--steps": "2", "--depth": "2", "--width": "4"}


def sweep(**flags: str) -> list[str]:
    """A one-cell sweep, with ``flags`` (``seeds="0,0"``; ``yes=""`` for a bare flag) over it."""
    return [*_command("sweep", SWEEP, flags), "--quiet"]


def doctor(**flags: str) -> list[str]:
    """A two-step doctor run, with ``flags`` over it."""
    return _command("doctor", DOCTOR, flags)


def _command(name: str, base: dict[str, str], flags: dict[str, str]) -> list[str]:
    merged = {**base, **{"--" + k.replace("_", "-"): v for k, v in flags.items()}}
    return [name, *(x for k, v in merged.items() for x in ((k, v) if v else (k,)))]


def counts(db: Path) -> dict[str, int]:
    """Rows in each of the store's tables."""
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()
