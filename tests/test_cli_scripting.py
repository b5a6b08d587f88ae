"""The CLI in scripts: ``--json`` documents, a findings summary instead of a table dump,
``--help`` defaults as typed, and one naming scheme for output files.

Under ``--json`` stdout must parse as exactly one JSON document (a script pipes it to
``json.load``), with the lines for a person on stderr.
"""

import json
from pathlib import Path

import pytest

from stability.cli import COMMAND_MODULES, build_parser, main
from stability.cli.json_output import document
from stability.train.doctor.tables import doctor_csv_path

TINY = [
    "--activation", "relu,sigmoid", "--init", "kaiming_normal,standard_normal",
    "--depth", "12", "--width", "16", "--dtype", "float32", "--seeds", "0", "--batch", "8",
]  # fmt: skip


def _sweep(tmp_path: Path, *extra: str) -> list[str]:
    return ["sweep", *TINY, "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "s.csv"),
            *extra]  # fmt: skip


def test_sweep_json_is_one_document_with_verdicts_and_recommendations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_sweep(tmp_path, "--json")) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # nothing else on stdout
    assert doc["schema"] == "stability-sweep/1"
    assert doc["cells"] == {"total": 4, "done": 4, "skipped": 0, "failed": 0}
    assert sum(doc["verdicts"].values()) == len(doc["configs"]) == 4
    relu = next(r for r in doc["recommendations"] if r["activation"] == "relu")
    assert relu["best_init"] == "kaiming_normal"  # N(0,1) at width 16 explodes 8x per layer
    assert "recommended init" in captured.err  # the person's lines moved to stderr


def test_sweep_prints_findings_not_a_table_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_sweep(tmp_path)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("4 configs (seeds averaged): ")
    assert "  relu float32 depth 12 width 16: kaiming_normal (σw² 2)" in lines
    assert "worst offenders:" in lines
    assert max(len(line) for line in lines) < 200  # no 165-column frame
    assert "fwd_log10_growth" not in out


def test_json_output_turns_non_finite_numbers_into_null() -> None:
    import numpy as np

    doc = document("x", {"a": float("inf"), "b": np.float64("nan"), "c": [np.int64(3)]})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {
        "schema": "stability-x/1", "a": None, "b": None, "c": [3]
    }  # fmt: skip


def test_doctor_json_names_the_divergence_and_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r" / "doctor.csv"
    args = ["doctor", "--init", "standard_normal", "--depth", "8", "--width", "16",
            "--steps", "5", "--batch", "8", "--db", str(tmp_path / "d.db"), "--out", str(out),
            "--json"]  # fmt: skip
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "stability-doctor/1"
    assert doc["diagnosis"]["status"] in ("stable", "diverged")
    assert doc["files"] == [str(out), str(tmp_path / "r" / "doctor-layers.csv")]


def test_report_json_gives_the_state_and_each_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_sweep(tmp_path, "--quiet")) == 0
    capsys.readouterr()
    page = tmp_path / "page" / "index.html"
    args = ["report", "--no-run", "--db", str(tmp_path / "s.db"), "--out", str(page), "--json"]
    code = main(args)
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "stability-report/1"
    assert doc["exit_code"] == code
    assert doc["state"] in ("healthy", "warnings", "failures", "nothing run")
    assert {s["health"] for s in doc["sections"]} <= {"pass", "warn", "fail", "not run"}
    assert Path(doc["path"]) == page and page.exists()


def _noisy(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``target`` prints to stdout while it works, as a library or a user's code may."""
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)

    def loud(*args: object, **kwargs: object) -> object:
        print("noise from inside the work")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, loud)


@pytest.mark.parametrize(
    ("command", "target"),
    [("sweep", "stability.cli.sweep.run_sweep"), ("report", "stability.report.build")],
)
def test_json_stdout_stays_one_document_when_the_work_prints(
    command: str,
    target: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_sweep(tmp_path, "--quiet")) == 0
    capsys.readouterr()
    _noisy(target, monkeypatch)
    page = str(tmp_path / "page" / "index.html")
    report = ["report", "--no-run", "--db", str(tmp_path / "s.db"), "--out", page, "--json"]
    main(_sweep(tmp_path, "--json") if command == "sweep" else report)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["schema"] == f"stability-{command}/1"
    assert "noise from inside the work" in captured.err  # moved, not lost


def _subparsers() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_help_shows_defaults_as_typed(command: str) -> None:
    text = _subparsers()[command].format_help()  # type: ignore[attr-defined]
    assert "['" not in text and "[0," not in text, text


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_one_command_parser_is_the_full_parsers(command: str) -> None:
    """Running one command builds only its parser (``COMMAND_MODULES``): the same help,
    and every command of the full parser is in the table."""
    assert set(COMMAND_MODULES) == set(_subparsers())
    parser = build_parser([command])
    action = next(a for a in parser._actions if a.dest == "command")
    assert list(action.choices) == [command]  # type: ignore[arg-type]
    lazy = action.choices[command].format_help()  # type: ignore[index]
    assert lazy == _subparsers()[command].format_help()  # type: ignore[attr-defined]


def test_output_files_are_lowercase_words_joined_by_hyphens() -> None:
    out = Path("results") / "doctor.csv"
    names = [doctor_csv_path(out, kind).name for kind in ("layers", "lr_map", "loss_scaling")]
    assert names == ["doctor-layers.csv", "doctor-lr-map.csv", "doctor-loss-scaling.csv"]


def test_gate_json_is_format_json() -> None:
    args = build_parser().parse_args(["gate", "--json"])
    assert args.format == "json"
    assert build_parser().parse_args(["gate"]).format == "text"
