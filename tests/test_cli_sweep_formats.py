"""``stability sweep --dtype float8_e4m3fn,mxfp4_e2m1``: low-precision cells end to end.

The rows in the store and the CSV must be the ones ``probe_formats`` gives for the same MLP
(built here independently), the printed summary the one ``first_events`` and ``recommend``
give for those rows, and ordinary dtypes listed beside them must keep their rows exactly.
"""

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stability.cli import main
from stability.core.config import MLPConfig
from stability.core.lowp.formats import get_format
from stability.core.lowp.recipes import get_recipe
from stability.core.model import build_mlp, input_batch
from stability.core.probe import projection_loss
from stability.results.store import Store
from stability.usermodel.lowp_advice import recommend
from stability.usermodel.lowp_mlp import first_events
from stability.usermodel.lowp_probe import probe_formats

DEPTH, WIDTH, BATCH = 4, 32, 32
GRID = ["--activation", "relu", "--init", "kaiming_normal", "--depth", str(DEPTH),
        "--width", str(WIDTH), "--seeds", "0", "--batch", str(BATCH)]  # fmt: skip
FORMATS = "float8_e4m3fn,mxfp4_e2m1"
KEY = ["layer", "format", "recipe", "tensor"]


def sweep(db: Path, out: Path, dtype: str, *extra: str) -> int:
    return main(["sweep", *GRID, "--dtype", dtype, "--db", str(db), "--out", str(out), *extra])


def direct_rows() -> list[dict[str, Any]]:
    """``probe_formats`` on the cell's MLP, in float32, as a user would call it."""
    config = MLPConfig(DEPTH, WIDTH, "relu", "kaiming_normal", "float32", seed=0)
    model = build_mlp(config)
    x = input_batch(config, BATCH)
    fmts = [get_format("float8_e4m3fn"), get_format("mxfp4_e2m1")]
    return probe_formats(model, lambda: model(x), projection_loss, fmts, [get_recipe("tensor")])


def _same(frame: pd.DataFrame, rows: list[dict[str, Any]]) -> None:
    expected = pd.DataFrame(rows).assign(layer=lambda f: f["order"])
    got = frame.set_index(KEY).sort_index()
    want = expected.set_index(KEY).sort_index()
    assert list(got.index) == list(want.index)
    for column in want.columns:
        assert got[column].tolist() == want[column].tolist() or all(
            (a == b) or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
            for a, b in zip(got[column], want[column], strict=True)
        ), column


def _describe(event: dict[str, Any], key: str) -> str:
    """What the summary line should say for one first event."""
    found = event[key]
    if found is None:
        return "none"
    unit = "sqnr" if key == "below_target" else "frac"
    return str(found.describe(unit, tensor=not key.startswith("grad_")))


def test_rows_are_probe_formats_of_the_same_mlp(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sweep(db, out_csv, FORMATS) == 0
    printed = capsys.readouterr().out
    rows = direct_rows()
    with Store.open(db) as store:
        stored = store.records("sweep_formats")
        advice = store.records("sweep_formats_advice")
    assert set(stored["dtype"]) == {"float8_e4m3fn", "mxfp4_e2m1"}
    assert set(stored["carrier"]) == {"float32"} and stored["cell_key"].nunique() == 2
    _same(stored, rows)
    csv = pd.read_csv(out_csv.with_name("sweep-formats.csv"))
    _same(csv, rows)
    assert not out_csv.exists()  # no ordinary dtype: no ordinary rows, no CSV of them
    assert "runs in float32 (the carrier)" in printed
    for e in first_events(rows, 20.0):
        shown = {k: _describe(e, k) for k in
                 ("overflow", "grad_overflow", "flush", "grad_flush", "below_target")}  # fmt: skip
        line = [ln for ln in printed.splitlines() if ln.strip().startswith(e["format"])]
        assert (f"overflow: {shown['overflow']}, grad {shown['grad_overflow']}; flush: "
                f"{shown['flush']}, grad {shown['grad_flush']}; below 20 dB: "
                f"{shown['below_target']}") in line[0]  # fmt: skip
    expected = recommend(rows, 20.0)
    assert advice["recommendation"].tolist() == [a["recommendation"] for a in expected]
    first = expected[0]["recommendation"]
    assert f"advice: layers 1-{DEPTH} {first}" in printed or f"advice: layer 1 {first}" in printed


def test_ordinary_rows_unchanged_beside_low_precision(tmp_path: Path) -> None:
    alone, mixed = tmp_path / "a" / "sweep.csv", tmp_path / "b" / "sweep.csv"
    assert sweep(tmp_path / "a.db", alone, "float32", "--quiet") == 0
    assert sweep(tmp_path / "b.db", mixed, "float32,e4m3", "--quiet") == 0
    drop = ["cell_key"]  # the same string; run ids differ between stores
    a, b = pd.read_csv(alone), pd.read_csv(mixed)
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))
    assert mixed.with_name("sweep-formats.csv").exists()


def test_resume_skips_stored_networks(db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:  # fmt: skip
    assert sweep(db, out_csv, FORMATS, "--quiet") == 0
    capsys.readouterr()
    assert sweep(db, out_csv, FORMATS, "--quiet", "--resume") == 0
    assert "low-precision cells: 0 done, 2 skipped" in capsys.readouterr().out
    with Store.open(db) as store:
        assert len(store.records("sweep_formats")) == DEPTH * 2 * 4  # written once


def test_fail_on_keep_bf16_names_the_layers(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # MXFP4 alone keeps about 16 dB at a Linear's output: below 20 dB at every layer.
    assert sweep(db, out_csv, "mxfp4", "--quiet", "--fail-on", "keep-bf16", "--json") == 1
    captured = capsys.readouterr()
    kept = [ln for ln in captured.err.splitlines() if ln.startswith("fail-on: relu/")]
    assert len(kept) == DEPTH and "keep-bf16" in kept[0]
    doc = json.loads(captured.out)
    assert doc["exit_code"] == 1 and doc["low_precision"]["kept_bf16"] == DEPTH
    with Store.open(db) as store:
        assert len(store.records("sweep_formats")) == DEPTH * 4  # written before judging


@pytest.mark.parametrize(
    ("dtype", "extra", "message"),
    [
        ("float8", [], "unknown dtype 'float8'; expected one of ['bfloat16', 'e4m3'"),
        ("e4m3,float8_e4m3fn", [], "lists float8_e4m3fn twice (as 'e4m3' and 'float8_e4m3fn')"),
        ("e4m3", ["--recipe", "delayed"], "unknown scaling recipe 'delayed'"),
        ("e4m3", ["--fail-on", "explodes"], "--fail-on explodes judges the ordinary dtypes'"),
        ("float32", ["--fail-on", "keep-bf16"], "--fail-on keep-bf16 judges low-precision"),
    ],
    ids=["unknown-dtype", "alias-twice", "bad-recipe", "ordinary-verdict", "lowp-verdict"],
)
def test_bad_input_exits_2_before_any_write(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str], dtype: str, extra: list[str],
    message: str,
) -> None:  # fmt: skip
    assert sweep(db, out_csv, dtype, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not db.exists() and not out_csv.parent.exists()
