"""The sweep command end to end: rows, store, CSV, resume, interruption."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stability.cli import main
from stability.core.probe import LayerStats
from stability.results.store import Store
from stability.results.tables import summary_table
from stability.sweep.run import SweepGrid, run_sweep

REQUIRED_COLUMNS = [
    "activation", "init", "depth", "width", "dtype", "precision_mode", "seed", "layer",
    "preact_var", "act_mean", "act_var", "grad_var", "weight_grad_var", "theory_preact_var",
    "theory_grad_var", "nonfinite",
]  # fmt: skip


TINY_CELLS = 2 * 2 * 2  # the tiny grid: 2 activations x 2 inits x 2 seeds, depth 3
TINY_SWEEP = [
    "--activation", "relu,tanh", "--init", "kaiming_normal,xavier_normal",
    "--depth", "3", "--width", "8", "--dtype", "float32", "--seeds", "0,1", "--batch", "4",
]  # fmt: skip


def run_tiny(db: Path, out: Path, *extra: str) -> int:
    return main(["sweep", *TINY_SWEEP, "--db", str(db), "--out", str(out), "--quiet", *extra])


def test_sweep_writes_one_row_per_config_seed_layer(db: Path, out_csv: Path) -> None:
    assert run_tiny(db, out_csv) == 0
    rows = pd.read_csv(out_csv)
    assert set(REQUIRED_COLUMNS) <= set(rows.columns)
    assert len(rows) == TINY_CELLS * 3
    assert sorted(rows["layer"].unique()) == [1, 2, 3]
    assert set(rows["precision_mode"]) == {"native"}
    assert set(LayerStats.columns()) <= set(rows.columns)


def test_sweep_is_deterministic_for_fixed_seeds(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run_tiny(tmp_path / "a.db", a) == 0
    assert run_tiny(tmp_path / "b.db", b) == 0
    cols = ["preact_var", "grad_var", "weight_grad_var"]
    pd.testing.assert_frame_equal(pd.read_csv(a)[cols], pd.read_csv(b)[cols])


def test_emulated_float16_rows_say_so(db: Path, out_csv: Path) -> None:
    args = ["sweep", "--activation", "relu", "--init", "standard_normal", "--depth", "12",
            "--width", "16", "--dtype", "float16", "--seeds", "0", "--batch", "8",
            "--db", str(db), "--out", str(out_csv), "--quiet"]  # fmt: skip
    assert main(args) == 0
    rows = pd.read_csv(out_csv)
    assert set(rows["precision_mode"]) == {"emulated"}
    # N(0,1) weights at width 16 grow ~8x in variance per layer: float16 overflows by layer 12.
    assert rows["overflow_frac"].max() > 0
    assert rows["nonfinite"].max() > 0


def test_resume_skips_stored_cells(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_tiny(db, out_csv) == 0
    assert run_tiny(db, out_csv, "--resume") == 0
    assert f"0 cells done, {TINY_CELLS} skipped" in capsys.readouterr().out
    with Store.open(db) as store:
        assert len(store.done_keys()) == TINY_CELLS
        assert len(store.sweep_rows()) == TINY_CELLS * 3


def test_interrupted_sweep_keeps_completed_cells(db: Path) -> None:
    grid = SweepGrid(activations=["relu"], inits=["kaiming_normal"], depths=[2], widths=[4],
                     dtypes=["float32"], seeds=[0, 1, 2, 3], batches=[4])  # fmt: skip
    seen: list[str] = []

    def interrupt_after_two(cell: object) -> None:
        seen.append(str(cell))
        if len(seen) == 2:
            raise KeyboardInterrupt

    with Store.open(db) as store, pytest.raises(KeyboardInterrupt):
        run_sweep(grid, store, on_cell=interrupt_after_two)
    with Store.open(db) as store:
        assert len(store.done_keys()) == 2
        summary = run_sweep(grid, store, resume=True)
    assert (summary.skipped, summary.done) == (2, 2)


def test_killed_sweep_keeps_completed_cells(tmp_path: Path) -> None:
    """A sweep killed with SIGKILL mid-run keeps every cell it had committed."""
    db = tmp_path / "k.db"
    script = (
        "import os, sys\n"
        "from stability.results.store import Store\n"
        "from stability.sweep.run import SweepGrid, run_sweep\n"
        "grid = SweepGrid(activations=['relu'], inits=['kaiming_normal'], depths=[2],"
        " widths=[4], dtypes=['float32'], seeds=list(range(6)), batches=[4])\n"
        "n = [0]\n"
        "def kill(cell):\n"
        "    n[0] += 1\n"
        "    if n[0] == 3: os.kill(os.getpid(), 9)\n"
        f"run_sweep(grid, Store.open({str(db)!r}), on_cell=kill)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    conn = sqlite3.connect(db)
    (done,) = conn.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()
    (rows,) = conn.execute("SELECT count(*) FROM sweep_rows").fetchone()
    conn.close()
    assert (done, rows) == (3, 3 * 2)


def test_parallel_jobs_give_the_same_rows(tmp_path: Path) -> None:
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert run_tiny(tmp_path / "1.db", one) == 0
    assert run_tiny(tmp_path / "2.db", two, "--jobs", "2") == 0
    key = ["activation", "init", "seed", "layer"]
    a = pd.read_csv(one).sort_values(key).reset_index(drop=True)
    b = pd.read_csv(two).sort_values(key).reset_index(drop=True)
    # Worker processes run one thread; float32 reductions may reorder: compare closely.
    pd.testing.assert_frame_equal(a[key], b[key])
    pd.testing.assert_series_equal(a["preact_var"], b["preact_var"], rtol=1e-5)


def test_module_entry_point_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stability", "sweep", *TINY_SWEEP, "--quiet",
         "--db", str(tmp_path / "m.db"), "--out", str(tmp_path / "m.csv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{TINY_CELLS} cells done" in proc.stdout


# --fail-on: one config per verdict at depth 6, width 16, float32, one seed. ReLU with
# Kaiming keeps the variance (stable); N(0, 1) multiplies it by ~16/2 per layer (explodes);
# the notes' N(0, 0.01^2) by ~16 * 1e-4 / 2 (vanishes).
VERDICT_GRID = [
    "--activation", "relu", "--init", "kaiming_normal,standard_normal,normal",
    "--depth", "6", "--width", "16", "--dtype", "float32", "--seeds", "0", "--batch", "8",
]  # fmt: skip


def run_grid(db: Path, out: Path, *extra: str, grid: list[str] = VERDICT_GRID) -> int:
    return main(["sweep", *grid, "--db", str(db), "--out", str(out), "--quiet", *extra])


def _flagged(err: str) -> dict[str, str]:
    """init -> verdict, from the per-config ``fail-on:`` lines on stderr."""
    lines = [ln for ln in err.splitlines() if ln.startswith("fail-on: relu/")]
    return {ln.split()[1].split("/")[1]: ln.split(": ")[2].split()[0] for ln in lines}


@pytest.mark.parametrize(
    ("fail_on", "flagged"),
    [
        pytest.param("explodes", {"standard_normal": "explodes"}, id="explodes"),
        pytest.param("vanishes", {"normal": "vanishes"}, id="vanishes"),
        pytest.param(
            "explodes,vanishes,non-finite",
            {"standard_normal": "explodes", "normal": "vanishes"},
            id="all-unstable",
        ),
    ],
)
def test_fail_on_names_each_offending_config_and_exits_1(
    db: Path,
    out_csv: Path,
    capsys: pytest.CaptureFixture[str],
    fail_on: str,
    flagged: dict[str, str],
) -> None:
    assert run_grid(db, out_csv, "--fail-on", fail_on) == 1
    err = capsys.readouterr().err
    assert _flagged(err) == flagged
    assert "depth 6 width 16 batch 8" in err
    assert f"fail-on: {len(flagged)} of 3 configs got a verdict in --fail-on {fail_on}" in err
    assert err.count("\n") == len(flagged) + 1
    # Nothing is lost: every cell is in the CSV and the store before the exit code says 1.
    assert len(pd.read_csv(out_csv)) == 3 * 6
    with Store.open(db) as store:
        assert len(store.done_keys()) == 3


def test_fail_on_stable_grid_exits_0(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stable = [*VERDICT_GRID]
    stable[stable.index("--init") + 1] = "kaiming_normal"
    assert run_grid(db, out_csv, "--fail-on", "explodes,vanishes,non-finite", grid=stable) == 0
    assert capsys.readouterr().err == ""


def test_without_fail_on_an_exploding_grid_exits_0(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_grid(db, out_csv) == 0
    assert capsys.readouterr().err == ""
    assert "explodes" in summary_table(pd.read_csv(out_csv))["verdict"].tolist()


def test_fail_on_non_finite_names_the_emulated_float16_config(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = ["--activation", "relu", "--init", "standard_normal", "--depth", "12",
            "--width", "16", "--dtype", "float16", "--seeds", "0", "--batch", "8"]  # fmt: skip
    assert run_grid(db, out_csv, "--fail-on", "non-finite", grid=grid) == 1
    err = capsys.readouterr().err
    assert "fail-on: relu/standard_normal float16 (emulated) depth 12" in err
    assert _flagged(err) == {"standard_normal": "non-finite"}


def test_fail_on_with_resume_judges_the_stored_cells(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_grid(db, out_csv) == 0
    capsys.readouterr()
    assert run_grid(db, out_csv, "--resume", "--fail-on", "explodes") == 1
    captured = capsys.readouterr()
    assert "0 cells done, 3 skipped" in captured.out
    assert _flagged(captured.err) == {"standard_normal": "explodes"}


@pytest.mark.parametrize(
    ("fail_on", "message"),
    [
        pytest.param(
            "explodes,explode",
            "unknown verdict 'explode'; expected one of "
            "['explodes', 'non-finite', 'stable', 'vanishes']",
            id="unknown",
        ),
        pytest.param("nan", "unknown verdict 'nan'", id="nan"),
        pytest.param(",", "--fail-on needs at least one verdict", id="empty"),
    ],
)
def test_fail_on_bad_name_exits_2_with_one_line_before_any_work(
    db: Path, out_csv: Path, capsys: pytest.CaptureFixture[str], fail_on: str, message: str
) -> None:
    assert run_grid(db, out_csv, "--fail-on", fail_on) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stability: error:")
    assert message in err
    assert not out_csv.exists() and not db.exists()
