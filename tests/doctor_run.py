"""Running ``stability doctor`` in process from the repository root, for the doctor tests:
the examples import as a user's package does from theirs, and ``--json`` is parsed."""

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stability.cli import main
from stability.results.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def doctor(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    """Exit code and JSON document of ``doctor ARGS``, its store and CSV under ``tmp_path``."""
    capsys.readouterr()
    out = ["--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "doctor.csv"), "--json"]
    code = main(["doctor", *args, *out])
    return code, json.loads(capsys.readouterr().out)


def assert_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """``doctor ARGS`` exits 2 with one stderr line holding ``message``, and the store it was
    given (one run already in it) keeps exactly the records it had."""
    db = tmp_path / "s.db"
    with Store.open(db) as store:
        store.write_records_run("probe", ["x"], "cpu", {"probe": [{"a": 1}]})
    before = sqlite3.connect(db).execute("SELECT count(*) FROM records").fetchone()
    capsys.readouterr()
    code = main(["doctor", *args, "--db", str(db), "--out", str(tmp_path / "d.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err
    assert sqlite3.connect(db).execute("SELECT count(*) FROM records").fetchone() == before
