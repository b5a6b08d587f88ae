"""``stability diff RUN_A RUN_B`` and the comparisons behind it: which figures moved between
two stored runs, largest first; like with like only (the same grid, by fingerprint).
"""

import json
from pathlib import Path

import pytest

from stability.cli import main
from stability.results.compare import figure_changes, grid_fingerprint, run_grids
from stability.results.store import Store


def _row(key: str, layer: int, grad_var: float, seed: int = 0) -> dict[str, object]:
    return {
        "cell_key": key, "activation": "relu", "init": "kaiming_normal", "dtype": "float32",
        "depth": 2, "width": 8, "batch": 4, "seed": seed, "layer": layer,
        "preact_var": 2.0, "act_var": 1.0, "grad_var": grad_var, "weight_grad_var": 0.5,
    }  # fmt: skip


def _key(seed: int) -> str:
    return json.dumps({"activation": "relu", "seed": seed})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two sweep runs of the same two cells (run 2 moves two gradients), a bench run and a
    sweep run of another grid."""
    path = tmp_path / "s.db"
    with Store.open(path) as store:
        for grads in ([1.0, 1.0], [1.0, 1.5]):
            run = store.start_run("sweep", ["stability", "sweep"])
            for seed in (0, 1):
                g = grads if seed == 0 else [1.0, 1.0 + 0.01 * (grads[1] > 1)]
                rows = [_row(_key(seed), layer + 1, g[layer], seed) for layer in range(2)]
                store.write_cell(run, _key(seed), rows, 0.1)
        bench = store.start_run("bench", ["pytest", "benchmarks"])
        store.write_bench(bench, [{"name": "test_step[8]", "samples_per_s": 100.0}])
        other = store.start_run("sweep", ["stability", "sweep", "--seeds", "5"])
        store.write_cell(other, _key(5), [_row(_key(5), 1, 1.0, 5)], 0.1)
    return path


def test_diff_prints_one_line_per_moved_figure_largest_first(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", "1", "2", "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines == [
        "relu/kaiming_normal float32 depth 2 width 8 batch 4 seed 0, layer 2: grad_var 1 -> 1.5 "
        "(+50.00%)",
        "relu/kaiming_normal float32 depth 2 width 8 batch 4 seed 1, layer 2: grad_var 1 -> 1.01 "
        "(+1.00%)",
    ]
    assert err.strip() == (
        "diff: 2 of 16 figures moved by more than 1e-05 (relative) from run 1 to run 2 (sweep)"
    )


def test_diff_of_a_run_with_itself_prints_nothing(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", "2", "2", "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "0 of 16 figures moved" in err


def test_rtol_hides_small_moves(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "1", "2", "--rtol", "0.1", "--db", str(db)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["1", "9"], "unknown run id 9; expected one of [1, 2, 3, 4]", id="unknown-id"),
        pytest.param(["1", "3"], "run 1 is a sweep run and run 3 a bench run", id="kinds-differ"),
        pytest.param(["1", "4"], "runs 1 and 4 share no sweep results", id="other-grid"),
        pytest.param(["1", "2", "--rtol", "-1"], "rtol must be >= 0", id="negative-rtol"),
        pytest.param(["1"], "the following arguments are required", id="one-id"),
    ],
)
def test_diff_cannot_compare_exits_2_with_one_line(
    db: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", *args, "--db", str(db)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_diff_without_a_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "1", "2", "--db", str(tmp_path / "none.db")]) == 2
    assert "no results store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_bench_runs_compare_per_benchmark() -> None:
    import pandas as pd

    a = pd.DataFrame([{"name": "x", "samples_per_s": 100.0, "efficiency": 0.5}])
    b = pd.DataFrame([{"name": "x", "samples_per_s": 80.0, "efficiency": 0.5}])
    changes, compared = figure_changes(a, b, "bench", 1e-5)
    assert compared == 2
    assert changes[["config", "figure"]].values.tolist() == [["x", "samples_per_s"]]
    assert changes["rel_change"].iloc[0] == pytest.approx(-0.2)


def test_grid_fingerprint_names_the_cells_not_their_order(db: Path) -> None:
    assert grid_fingerprint(["a", "b"]) == grid_fingerprint(["b", "a", "a"])
    assert grid_fingerprint(["a", "b"]) != grid_fingerprint(["a"])
    with Store.open(db) as store:
        grids = run_grids(store.run_cells()).set_index("run_id")
    assert grids.loc[1, "grid"] == grids.loc[2, "grid"]  # the same two cells
    assert grids.loc[4, "grid"] != grids.loc[1, "grid"]
    assert grids["cells"].to_dict() == {1: 2, 2: 2, 4: 1}


def test_store_reads_one_runs_rows(db: Path) -> None:
    with Store.open(db) as store:
        assert store.run_sweep_rows(2)["grad_var"].tolist() == [1.0, 1.5, 1.0, 1.01]
        assert store.run_sweep_rows(3).empty
        assert store.run_bench_results(3)["samples_per_s"].tolist() == [100.0]
        cells = store.run_cells()
    assert cells.columns.tolist() == ["run_id", "cell_key", "status"]
    assert len(cells) == 5
