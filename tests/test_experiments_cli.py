"""``stability experiments``: bad input is one line and exit 2; a run writes a CSV and a
figure per experiment and stores its rows; the report's section and step read them."""

import io
import json
from pathlib import Path

import pytest

from stability.cli import main
from stability.experiments.registry import EXPERIMENTS
from stability.report import experiments_run
from stability.report.cache import Cache
from stability.report.inputs import gather
from stability.report.progress import Display
from stability.report.sections.experiments import experiments
from stability.results.store import Store


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--only", "polynomal"], "unknown experiment 'polynomal'; expected one of ["),
        (["--only", ","], "--only needs at least one experiment"),
        (["--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
        (["--format", "bmp"], "unknown figure format 'bmp'; expected one of ['png', 'svg']"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ],
    ids=["unknown-name", "empty-list", "zero-seeds", "bad-format", "bad-device"],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["experiments", *argv, "--out", str(tmp_path / "o"), "--db", str(tmp_path / "s.db")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "o").exists()


def test_out_may_not_hold_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "polynomial.csv"  # where the CSV would go
    code = main(["experiments", "--only", "polynomial", "--out", str(tmp_path), "--db", str(db)])
    assert code == 2 and "is the results store" in capsys.readouterr().err


@pytest.fixture(scope="module")
def polynomial_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One quick polynomial run (about a second) through the CLI, with --json."""
    tmp = tmp_path_factory.mktemp("exp")
    out, db = tmp / "out", tmp / "s.db"
    capture = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", capture)
        code = main(["experiments", "--quick", "--only", "polynomial", "--seeds", "3",
                     "--format", "svg", "--json", "--out", str(out), "--db", str(db)])  # fmt: skip
    assert code == 0
    return tmp, json.loads(capture.getvalue())


def test_run_writes_csv_figure_and_store(polynomial_run: tuple[Path, dict[str, object]]) -> None:
    tmp, doc = polynomial_run
    assert doc["ok"] is True and doc["quick"] is True
    (summary,) = doc["experiments"]  # type: ignore[misc]
    assert summary["name"] == "polynomial" and summary["seeds"] == 3
    assert [c["held"] for c in summary["claims"]] == [3, 3, 3]
    csv, svg = tmp / "out" / "polynomial.csv", tmp / "out" / "polynomial.svg"
    assert csv.read_text().startswith("model,features,seed,epoch,train_loss,test_loss")
    assert svg.read_text().lstrip().startswith("<?xml")
    with Store.open(tmp / "s.db", readonly=True) as store:
        rows = store.records("exp_polynomial")
        assert store.runs()["kind"].tolist() == ["experiments"]
    assert sorted(rows["seed"].unique()) == [0, 1, 2] and len(rows) == summary["rows"]


def test_section_judges_the_stored_rows(polynomial_run: tuple[Path, dict[str, object]]) -> None:
    tmp, _ = polynomial_run
    section = experiments(gather(tmp / "s.db", tmp, None))
    assert section.status == "partial" and section.health == "pass"  # four are missing
    assert len(section.figures) == 1 and "noise floor" in section.figures[0].caption
    assert section.tables[0].frame["held"].tolist() == [3, 3, 3]
    empty = experiments(gather(tmp / "absent.db", tmp, None))
    assert empty.status == "not run" and not empty.figures


def test_section_warns_when_a_claim_fails(
    polynomial_run: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    tmp, _ = polynomial_run
    with Store.open(tmp / "s.db", readonly=True) as store:
        rows = store.records("exp_polynomial").drop(columns=["run_id"])
    rows.loc[rows["features"] == 20, "test_loss"] = 0.0  # too many features now "generalise"
    with Store.open(tmp_path / "s.db") as store:
        store.write_records_run("experiments", ["test"], "cpu",
                                {"exp_polynomial": rows.to_dict("records")})  # fmt: skip
    section = experiments(gather(tmp_path / "s.db", tmp_path, None))
    assert section.health == "warn" and "1 of 3 claims fail: polynomial" in section.reason


def test_report_step_runs_once_per_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(experiments_run, "select", lambda names: [EXPERIMENTS["polynomial"]])
    cache, display = Cache(tmp_path / "cache"), Display(io.StringIO())
    with Store.open(tmp_path / "s.db") as store:
        first = experiments_run.experiments_step(store, cache, ("code-a", "a"), display)
        again = experiments_run.experiments_step(store, cache, ("code-a", "a"), display)
        changed = experiments_run.experiments_step(store, cache, ("code-b", "b"), display)
        runs = store.runs()
    assert [first.status, again.status, changed.status] == ["ran", "reused", "ran"]
    assert "3 of 3 claims hold" in first.detail
    assert runs["command"].str.contains("notes' experiments").sum() == 2
