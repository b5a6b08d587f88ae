"""The sweep command end to end: rows, store, CSV, resume, interruption."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stability.cli import main
from stability.probe import LayerStats
from stability.store import Store
from stability.sweep import SweepGrid, run_sweep

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
        "from stability.store import Store\n"
        "from stability.sweep import SweepGrid, run_sweep\n"
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
