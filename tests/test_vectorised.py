"""The vectorised sweep's plumbing: stack plans, the budget flag, failures split back to
cells, the CLI's default and ``--per-cell``. That stacked rows equal per-cell rows is a
property: ``properties/test_stacked_rows.py``."""

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import pytest

from stability.cli import main
from stability.cli.sweep import _executor
from stability.core.config import MLPConfig
from stability.core.probe import LayerStats
from stability.core.weight_cache import WeightCache
from stability.errors import StabilityError
from stability.results.store import Store
from stability.sweep import vectorised
from stability.sweep.cells import Cell, SweepGrid, run_cell
from stability.sweep.executors import InProcessExecutor
from stability.sweep.run import run_sweep
from stability.sweep.stacks import parse_budget, plan_stacks, stacked_cell_bytes
from stability.sweep.vectorised import VectorisedExecutor, run_stack

# 2 activations x 3 inits x 2 seeds x 2 dtypes, depth 2: 4 shapes of 6 cells each.
GRID = SweepGrid(
    activations=("relu", "tanh"),
    inits=("kaiming_normal", "xavier_normal", "orthogonal"),
    depths=(2,),
    widths=(8,),
    dtypes=("float32", "float16"),
    seeds=(0, 1),
    batches=(4,),
)
CELLS = GRID.cells()
ONE = stacked_cell_bytes(CELLS[0])


def test_plan_groups_cells_by_shape_and_keeps_every_cell_once() -> None:
    stacks = plan_stacks(CELLS, budget=100 * ONE)
    assert [len(s) for s in stacks] == [6, 6, 6, 6]
    for stack in stacks:
        keys = {(c.config.activation, c.config.dtype) for c in stack}
        assert len(keys) == 1
    assert sorted(c.key for s in stacks for c in s) == sorted(c.key for c in CELLS)


def test_plan_cuts_a_shape_into_equal_stacks_that_fit_the_budget() -> None:
    stacks = plan_stacks(CELLS, budget=4 * ONE)  # 6 cells by at most 4: 3 and 3, not 4 and 2
    assert [len(s) for s in stacks] == [3] * 8
    assert all(len(s) * ONE <= 4 * ONE for s in stacks)
    assert [len(s) for s in plan_stacks(CELLS, budget=ONE // 2)] == [1] * 24  # alone


def test_plan_gives_every_worker_several_stacks() -> None:
    stacks = plan_stacks(CELLS, budget=100 * ONE, jobs=2)  # 24 cells, >= 8 stacks
    assert len(stacks) >= 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", 3 * 2**29), ("100", 100 * 2**20)],
)
def test_memory_budget_sizes(text: str, expected: int) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "2X"])
def test_bad_memory_budget_is_refused_with_the_forms(text: str) -> None:
    with pytest.raises(StabilityError, match=r"512M, 2G or 1\.5GiB"):
        parse_budget(text)


def _failing(message: str, calls: list[int]):  # type: ignore[no-untyped-def]
    real = vectorised.probe_stack

    def probe_stack(
        configs: Sequence[MLPConfig], batch: int, cache: WeightCache | None = None
    ) -> list[list[LayerStats]]:
        calls.append(len(configs))
        if len(configs) > 1:
            raise RuntimeError(message)
        return real(configs, batch, cache)

    return probe_stack


def test_a_stack_out_of_memory_is_halved_down_to_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(vectorised, "probe_stack", _failing("CUDA out of memory", calls))
    landed = run_stack(CELLS[:4])
    assert calls == [4, 2, 2]  # halves tried, then each cell on the per-cell path
    assert [c.key for c, _ in landed] == [c.key for c in CELLS[:4]]
    assert all(not isinstance(o, BaseException) for _, o in landed)


def test_a_stack_that_raises_runs_its_cells_one_by_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(vectorised, "probe_stack", _failing("a bug", calls))
    with caplog.at_level(logging.WARNING, logger=vectorised.__name__):
        landed = run_stack(CELLS[:4])
    assert calls == [4]  # no halving: the per-cell path records each cell on its own
    assert all(not isinstance(o, BaseException) for _, o in landed)
    # ... and said so, naming the shape and the error (a silent fallback hid a crash once)
    (record,) = caplog.records
    c = CELLS[0].config
    assert f"a stack of 4 cells ({c.activation}, depth {c.depth}" in record.getMessage()
    assert "RuntimeError: a bug" in record.getMessage()


def test_a_stack_out_of_memory_is_halved_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Halving to fit the memory is the plan working, not a broken fast path."""
    monkeypatch.setattr(vectorised, "probe_stack", _failing("CUDA out of memory", []))
    with caplog.at_level(logging.WARNING, logger=vectorised.__name__):
        run_stack(CELLS[:4])
    assert caplog.records == []


def test_a_failed_stack_is_said_on_stderr_without_a_logging_setup() -> None:
    """As in a ``--jobs 2`` worker or a user's script, where no handler is set up: by
    logging's last resort, on stderr."""
    code = (
        "import sys\n"
        "from stability.sweep import vectorised\n"
        "from stability.sweep.cells import SweepGrid\n"
        "def broken(*a, **k):\n"
        "    raise RuntimeError('a bug')\n"
        "vectorised.probe_stack = broken\n"
        "cells = SweepGrid(('relu',), ('xavier_normal', 'kaiming_normal'), (3,), (8,),"
        " ('float32',), (0,), (4,)).cells()\n"
        "landed = vectorised.run_stack(cells)\n"
        "sys.exit(0 if all(not isinstance(o, BaseException) for _, o in landed) else 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "a stack of 2 cells (relu, depth 3, width 8, float32, batch 4) raised" in done.stderr


def test_a_cell_that_fails_alone_is_recorded_failed_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stack that raises goes back to cells; only the cell that fails on its own fails."""
    bad = CELLS[1]
    real = vectorised.timed_cell

    def timed_cell(cell: Cell) -> tuple[list[dict[str, object]], float]:
        if cell.key == bad.key:
            raise ValueError("this cell cannot run")
        return real(cell)

    monkeypatch.setattr(vectorised, "probe_stack", _failing("a bug", []))
    monkeypatch.setattr(vectorised, "timed_cell", timed_cell)
    outcomes = {c.key: o for c, o in VectorisedExecutor(1, 2**30).run(CELLS[:3])}
    assert isinstance(outcomes[bad.key], ValueError)
    assert all(not isinstance(outcomes[c.key], BaseException) for c in (CELLS[0], CELLS[2]))


def test_vectorised_sweep_stores_one_cell_at_a_time_and_resumes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        first = run_sweep(GRID, store, executor=VectorisedExecutor(1, 2**30))
        again = run_sweep(GRID, store, executor=VectorisedExecutor(1, 2**30), resume=True)
        cells = store.conn.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()
        rows = store.sweep_rows()
    assert (first.done, first.failed, again.done, again.skipped) == (24, 0, 0, 24)
    assert cells[0] == 24
    assert len(rows) == 24 * 2


def test_cli_stacks_by_default_and_per_cell_on_request() -> None:
    assert isinstance(_executor(1, None, False, None, "cpu"), VectorisedExecutor)
    assert isinstance(_executor(1, None, True, None, "cpu"), InProcessExecutor)
    assert _executor(2, None, False, 2**30, "cpu") == VectorisedExecutor(2, 2**30)


def test_cli_per_cell_and_stacked_write_the_same_rows(tmp_path: Path) -> None:
    grid = ["--activation", "tanh", "--init", "xavier_normal,orthogonal", "--depth", "2",
            "--width", "8", "--dtype", "float32", "--seeds", "0,1", "--batch", "4",
            "--quiet"]  # fmt: skip
    for name, extra in (("stacked", ["--memory-budget", "64M"]), ("percell", ["--per-cell"])):
        out = tmp_path / f"{name}.csv"
        assert (
            main(["sweep", *grid, "--db", str(tmp_path / f"{name}.db"), "--out", str(out), *extra])
            == 0
        )
    a, b = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("stacked", "percell"))
    key = ["cell_key", "layer"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)  # float32 reductions in another order


def test_cli_bad_memory_budget_exits_2_naming_the_forms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--memory-budget", "lots", "--db", str(tmp_path / "s.db")]) == 2
    err = capsys.readouterr().err
    assert "'lots'" in err and "512M, 2G or 1.5GiB" in err


def test_cells_with_drawn_biases_take_the_per_cell_path() -> None:
    """bias_var > 0: the stacked layers add no biases, so these cells run one by one and get
    exactly run_cell's rows."""
    grid = SweepGrid(("tanh",), ("xavier_normal",), (2,), (8,), ("float32",), (0, 1), (4,),
                     bias_var=0.05)  # fmt: skip
    cells = grid.cells()
    landed = dict((c.key, o) for c, o in VectorisedExecutor(1, 2**30).run(cells))
    for cell in cells:
        outcome = landed[cell.key]
        assert not isinstance(outcome, BaseException)
        assert pd.DataFrame(outcome[0]).equals(pd.DataFrame(run_cell(cell)))


def _workers() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def _rows(outcomes: Iterator[tuple[Cell, object]]) -> dict[str, object]:
    landed = {}
    for cell, outcome in outcomes:
        assert not isinstance(outcome, BaseException), outcome
        assert isinstance(outcome, tuple)
        landed[cell.key] = outcome[0]
    return landed


def test_kept_workers_serve_every_run_until_closed() -> None:
    """``keep_workers``: the same worker processes compute the next run (their start paid
    once), the rows equal a fresh pool's, and ``close()`` leaves no process behind."""
    before = _workers()
    with VectorisedExecutor(2, 2**30, keep_workers=True) as executor:
        first = _rows(executor.run(CELLS[:12]))
        kept = _workers() - before
        second = _rows(executor.run(CELLS[:12]))
        assert len(kept) == 2 and _workers() - before == kept
    assert _workers() - before == set()
    assert first == second == _rows(VectorisedExecutor(2, 2**30).run(CELLS[:12]))


def test_without_kept_workers_a_run_leaves_no_process() -> None:
    before = _workers()
    _rows(VectorisedExecutor(2, 2**30).run(CELLS[:12]))
    assert _workers() - before == set()


def test_a_kept_pool_whose_worker_died_is_replaced() -> None:
    """SIGKILL (which no disposition ignores) on the kept workers: the next run's cells fail
    with the broken pool, recorded, and the run after it has a new pool."""
    before = _workers()
    with VectorisedExecutor(2, 2**30, keep_workers=True) as executor:
        _rows(executor.run(CELLS[:12]))
        pool = executor._kept[0]
        for pid in _workers() - before:
            os.kill(pid, signal.SIGKILL)
        failed = [o for _, o in executor.run(CELLS[:12])]
        assert failed and all(isinstance(o, BrokenProcessPool) for o in failed)
        assert executor._kept == []
        assert len(_rows(executor.run(CELLS[:12]))) == 12  # a new pool
        assert executor._kept[0] is not pool
