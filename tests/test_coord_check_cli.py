"""``stability coord-check``: verdicts, exit codes, --json, the store, baselines, bad input.

Tiny runs (widths 16-128, two steps, three seeds): the command's plumbing, not the
theory (properties/test_coord_check.py holds the claims)."""

import json
from pathlib import Path

import pytest

from stability.cli import main
from stability.results.store import Store

TINY = ["--widths", "16,32,64,128", "--steps", "1,2", "--seeds", "3", "--quiet"]


def run(tmp_path: Path, *extra: str) -> int:
    argv = ["coord-check", *TINY, "--db", str(tmp_path / "s.db"),
            "--out", str(tmp_path / "fits.csv"), *extra]  # fmt: skip
    return main(argv)


def test_mup_passes_and_stores_its_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "--fail-on", "drift") == 0
    out = capsys.readouterr().out
    assert "width-stable" in out and "scale-stable under --param mup" in out
    with Store.open(tmp_path / "s.db", readonly=True) as store:
        fits = store.records("coord_check_fit")
        assert {"readout", "readin"} <= set(fits["module"])
        assert len(store.records("coord_check")) > 0
    assert (tmp_path / "fits.csv").exists() and (tmp_path / "fits-rows.csv").exists()


def test_fail_on_drift_exits_1_and_names_the_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(tmp_path, "--param", "sp", "--fail-on", "drift", "--json")
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert code == 1 and doc["exit_code"] == 1 and doc["schema"] == "stability-coord-check/1"
    drifts = [v for v in doc["verdicts"] if v["verdict"] == "drift"]
    assert any(v["module"] == "readout" for v in drifts)
    assert "fail-on:" in captured.err


def test_baseline_round_trip_and_moved_exponent(tmp_path: Path) -> None:
    base = tmp_path / "coord.json"
    assert run(tmp_path, "--baseline-out", str(base)) == 0
    assert run(tmp_path, "--baseline", str(base)) == 0
    doc = json.loads(base.read_text())
    doc["exponents"][0]["slope"] += 5.0
    doc["exponents"][0]["se"] = 0.0
    base.write_text(json.dumps(doc))
    assert run(tmp_path, "--baseline", str(base)) == 1


BAD = [
    (["--param", "mupp"], "unknown parameterisation 'mupp'"),
    (["--optimizer", "adamx"], "unknown optimizer 'adamx'"),
    (["--widths", "0,16"], "--widths: sizes must be >= 1"),
    (["--widths", "16"], "a slope needs at least two --widths"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "1,500"], "--steps up to 500"),
    (["--seeds", "500"], "models to train"),
    (["--without", "magic"], "unknown rule 'magic'"),
    (["--fail-on", "boom"], "unknown verdict 'boom'"),
    (["--model", "examples.transformer_scaling:build"], "--model needs --input"),
    (["--model", "no_such_mod:build", "--input", "2x8"], "does not import"),
    (["--param", "depth-mup", "--model", "examples.transformer:build", "--input",
      "examples.transformer:make_batch", "--depths", "1,2"], "need the residual branches"),
    (["--baseline", "missing.json"], "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "says"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    extra = [str(tmp_path / e) if e.endswith(".json") else e for e in extra]
    assert run(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "s.db").exists()


def test_foreign_baseline_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "coord.json"
    assert run(tmp_path, "--baseline-out", str(base)) == 0
    capsys.readouterr()
    assert run(tmp_path, "--baseline", str(base), "--param", "sp") == 2
    assert "is of another check: param 'mup' there, 'sp' here" in capsys.readouterr().err
    base.write_text('{"schema": "stability-baseline/1"}')
    assert run(tmp_path, "--baseline", str(base)) == 2


def test_docs_state_the_code_s_exponent_table() -> None:
    from stability.scaling.exponents import markdown_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "scaling.md").read_text()
    missing = [line for line in markdown_table() if line not in docs]
    assert not missing, f"docs/scaling.md lacks: {missing[:2]}"


def test_too_few_sizes_is_inconclusive_not_stable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["coord-check", "--widths", "16,32", "--steps", "1", "--seeds", "2", "--quiet",
            "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "f.csv"), "--json"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "inconclusive" in {v["verdict"] for v in doc["verdicts"]}
