"""``stability probe --formats``: rows beside --out and in the store, a recommendation per
matmul module on stdout, --fail-on keep-bf16, and one-line errors (exit 2) for bad names."""

import json
from pathlib import Path

import pandas as pd
import pytest

from stability.cli import main
from stability.results.store import Store

MODEL = ["--model", "examples.transformer:build", "--input", "examples.transformer:make_batch",
         "--loss", "cross_entropy"]  # fmt: skip


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["probe", *MODEL, "--out", str(tmp_path / "p.csv"), "--db",
                 str(tmp_path / "s.db"), *extra])  # fmt: skip


def test_formats_rows_advice_and_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--formats", "e4m3,mxfp4", "--recipe", "tensor,row") == 0
    rows = pd.read_csv(tmp_path / "p-formats.csv")
    # e4m3 under two recipes, mxfp4 once (its block scale): 3 cases x 4 tensors per module
    assert set(rows["tensor"]) == {"input", "weight", "output", "grad"}
    assert len(rows) == 3 * 4 * rows["module"].nunique()
    fp8 = rows[(rows["format"] == "float8_e4m3fn") & (rows["tensor"] == "output")]
    assert (abs(fp8["sqnr_db"] - fp8["theory_db"]) < 4).all()  # the bias and real data move it
    advice = json.loads((tmp_path / "p-formats.json").read_text())["advice"]
    assert all(a["recommendation"].startswith("float8_e4m3fn") for a in advice)
    with Store.open(tmp_path / "s.db") as store:
        assert len(store.records("probe_formats")) == len(rows)
    assert "low precision (target 20 dB)" in capsys.readouterr().out


def test_fail_on_keep_bf16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(tmp_path, "--formats", "mxfp4", "--sqnr-target", "25", "--fail-on", "keep-bf16")
    assert code == 1
    assert "keep-bf16: best mxfp4_e2m1 block32" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--formats", "fp9", "unknown low-precision format 'fp9'"),
        ("--recipe", "rows", "unknown scaling recipe 'rows'"),
        ("--fail-on", "bf16", "unknown verdict 'bf16'"),
    ],
    ids=["format", "recipe", "verdict"],
)
def test_bad_names_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
                          value: str, says: str) -> None:  # fmt: skip
    extra = [flag, value] if flag == "--formats" else ["--formats", "e4m3", flag, value]
    assert _run(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "s.db").exists()
