"""Every bad input gets one line naming the value (and the choices), exit code 2, no traceback."""

import sqlite3
from pathlib import Path

import pytest

from stability.cli import main
from stability.results.store import Store

GOOD = ["--activation", "relu", "--init", "kaiming_normal", "--depth", "2", "--width", "4",
        "--dtype", "float32", "--seeds", "0", "--batch", "4"]  # fmt: skip


def with_flag(flag: str, value: str) -> list[str]:
    args = list(GOOD)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


# (id, flag, value, words the message must contain)
CASES = [
    ("unknown-activation", "--activation", "relux", ["activation", "'relux'", "relu", "tanh"]),
    ("unknown-init", "--init", "kaiming", ["init", "'kaiming'", "kaiming_normal"]),
    ("unknown-dtype", "--dtype", "float8", ["dtype", "'float8'", "float16", "bfloat16"]),
    ("unknown-device", "--device", "tpu", ["device", "'tpu'", "cpu", "cuda"]),
    ("depth-zero", "--depth", "0", ["depth", ">= 1", "0"]),
    ("width-negative", "--width", "-3", ["width", ">= 1", "-3"]),
    ("batch-one", "--batch", "1", ["batch", ">= 2", "1"]),
    ("seed-negative", "--seeds", "-1", ["seed", ">= 0", "-1"]),
    ("depth-not-int", "--depth", "ten", ["'ten'", "integer"]),
    ("jobs-zero", "--jobs", "0", ["jobs", ">= 1"]),
]


@pytest.mark.parametrize(
    ("flag", "value", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_sweep_argument(
    flag: str, value: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    code = main(
        ["sweep", *with_flag(flag, value), "--db", str(db), "--out", str(tmp_path / "o.csv")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("stability: error: ")
    for word in words:
        assert word in err
    assert "Traceback" not in err
    assert not db.exists(), "validation must happen before any work"


def test_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["sweep", *GOOD, "--db", str(tmp_path / "s.db"), "--out", str(blocker / "x.csv")])
    assert code == 2
    assert "not writable" in capsys.readouterr().err


def test_out_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", *GOOD, "--db", str(tmp_path / "s.db"), "--out", str(tmp_path)])
    assert code == 2
    assert "is a directory" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweeep"]) == 2
    err = capsys.readouterr().err
    assert "'sweeep'" in err and "sweep" in err


def _stored_cells(db: Path) -> int:
    with Store.open(db) as store:
        return len(store.done_keys())


def test_corrupt_database_is_refused_and_left_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not sqlite" * 100)
    before = db.read_bytes()
    assert main(["sweep", *GOOD, "--db", str(db), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "not an SQLite file" in err and str(db) in err
    assert db.read_bytes() == before


def test_foreign_database_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    assert main(["sweep", *GOOD, "--db", str(db), "--out", str(tmp_path / "o.csv")]) == 2
    assert "another application" in capsys.readouterr().err
    tables = sqlite3.connect(db).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("customers",)]


def test_bad_input_after_a_run_loses_nothing(tmp_path: Path) -> None:
    db, out = tmp_path / "s.db", tmp_path / "o.csv"
    assert main(["sweep", *GOOD, "--db", str(db), "--out", str(out), "--quiet"]) == 0
    csv_before = out.read_bytes()
    assert main(["sweep", *with_flag("--init", "nope"), "--db", str(db), "--out", str(out)]) == 2
    assert _stored_cells(db) == 1
    assert out.read_bytes() == csv_before


def test_version_names_stability_and_torch(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("stability 0.") and "torch 2." in out
