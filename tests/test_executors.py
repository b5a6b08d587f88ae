"""Sweep executors: each computes the same rows, and run_sweep uses the one it is given."""

import ast
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

from stability.core.config import MLPConfig
from stability.errors import StabilityError
from stability.measure.threads import threads
from stability.results.store import Store
from stability.sweep.cells import Cell, SweepGrid
from stability.sweep.executors import (
    Executor,
    InProcessExecutor,
    Outcome,
    PoolExecutor,
    local_executor,
    timed_cell,
)
from stability.sweep.run import run_sweep

# 2 activations x 2 dtypes x 2 seeds, depth 3: plumbing, not numerics.
TINY = SweepGrid(
    activations=("relu", "tanh"),
    inits=("kaiming_normal",),
    depths=(3,),
    widths=(8,),
    dtypes=("float32", "float64"),
    seeds=(0, 1),
    batches=(4,),
)
# A cell that raises on every machine: no build has a 100th CUDA device.
BROKEN = Cell(MLPConfig(depth=2, width=4, device="cuda:99"), 4)
SWEEP_DIR = Path(__file__).resolve().parents[1] / "stability" / "sweep"


def _rows(executor: Executor, cells: Sequence[Cell]) -> tuple[pd.DataFrame, dict[str, str]]:
    """All rows, sorted, and each failed cell's error type, from one executor."""
    rows: list[dict[str, object]] = []
    errors: dict[str, str] = {}
    for cell, outcome in executor.run(cells):
        if isinstance(outcome, BaseException):
            errors[cell.key] = type(outcome).__name__
        else:
            rows.extend(outcome[0])
    frame = pd.DataFrame(rows).sort_values(["cell_key", "layer"]).reset_index(drop=True)
    return frame, errors


def test_in_process_and_pool_give_identical_rows_and_errors() -> None:
    """Same cells, same rows to the last bit (one torch thread on both sides), same failures."""
    cells = [*TINY.cells(), BROKEN]
    with threads(1):  # what every pool worker runs with
        here, here_errors = _rows(InProcessExecutor(), cells)
    pooled, pool_errors = _rows(PoolExecutor(2), cells)
    assert len(here) == len(TINY.cells()) * 3
    pd.testing.assert_frame_equal(here, pooled, check_exact=True)
    assert here_errors == pool_errors == {BROKEN.key: "AssertionError"}


class RecordingExecutor:
    """Test double: records the cells it is given and returns made-up rows for each."""

    def __init__(self) -> None:
        self.ran: list[Cell] = []
        self.closed = False

    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        try:
            for cell in cells:
                self.ran.append(cell)
                yield cell, ([{"cell_key": cell.key, "layer": 1, "made_up": True}], 0.5)
        finally:
            self.closed = True


def test_run_sweep_uses_the_executor_it_is_given(tmp_path: Path) -> None:
    """Every cell goes to the caller's executor, and the store holds that executor's rows."""
    fake = RecordingExecutor()
    with Store.open(tmp_path / "s.db") as store:
        summary = run_sweep(TINY, store, executor=fake)
        stored = store.sweep_rows()
    assert fake.ran == TINY.cells()
    assert (summary.done, summary.failed) == (len(TINY.cells()), 0)
    assert stored["made_up"].all() and len(stored) == len(TINY.cells())


def test_resume_hands_the_executor_only_the_missing_cells(tmp_path: Path) -> None:
    first, second = RecordingExecutor(), RecordingExecutor()

    def stop_after_three(cell: Cell) -> None:
        if len(first.ran) == 3:
            raise KeyboardInterrupt

    with Store.open(tmp_path / "s.db") as store:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(TINY, store, executor=first, on_cell=stop_after_three)
        assert first.closed  # closed by run_sweep itself, not left to the garbage collector
        summary = run_sweep(TINY, store, executor=second, resume=True)
    assert second.ran == TINY.cells()[3:]
    assert (summary.skipped, summary.done) == (3, len(TINY.cells()) - 3)


def test_a_failed_outcome_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    class OneFails(RecordingExecutor):
        def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
            yield cells[0], ValueError("boom")
            yield from super().run(cells[1:])

    with Store.open(tmp_path / "s.db") as store:
        summary = run_sweep(TINY, store, executor=OneFails())
        failed = dict(store.conn.execute("SELECT cell_key, error FROM cells WHERE error NOT NULL"))
    assert (summary.done, summary.failed) == (len(TINY.cells()) - 1, 1)
    assert failed == {TINY.cells()[0].key: "ValueError: boom"}


def test_default_executor_runs_in_this_process(tmp_path: Path) -> None:
    """No executor given: the cells run here, exactly as timed_cell computes them."""
    with Store.open(tmp_path / "s.db") as store:
        run_sweep(TINY, store)
        stored = store.sweep_rows().sort_values(["cell_key", "layer"]).reset_index(drop=True)
    expected, _ = _rows(_Direct(), TINY.cells())
    pd.testing.assert_frame_equal(stored[expected.columns], expected, check_exact=True)


class _Direct:
    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        return ((c, timed_cell(c)) for c in cells)


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        pytest.param(1, InProcessExecutor, id="one-job-in-process"),
        pytest.param(3, PoolExecutor, id="more-jobs-pool"),
    ],
)
def test_local_executor_follows_jobs(jobs: int, expected: type) -> None:
    executor = local_executor(jobs)
    assert type(executor) is expected
    if isinstance(executor, PoolExecutor):
        assert executor.jobs == jobs


@pytest.mark.parametrize("make", [local_executor, PoolExecutor], ids=["local", "pool"])
def test_zero_jobs_is_refused(make: type) -> None:
    with pytest.raises(StabilityError, match="jobs must be >= 1, got 0"):
        make(0)


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from stability... import name`` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stability"):
            out += [(node.module or "", a.name) for a in node.names]
    return out


def test_sweep_modules_import_no_private_names_and_no_run_loop() -> None:
    """The executors stand below the run loop: none imports it, nor a private name."""
    for name in ("cells.py", "executors.py", "dask_executor.py"):
        imported = _imports(SWEEP_DIR / name)
        assert imported, name  # the parse found the imports: the checks below can fail
        assert not [n for _, n in imported if n.startswith("_")], name
        assert "stability.sweep.run" not in {m for m, _ in imported}, name
    run_imports = {m for m, _ in _imports(SWEEP_DIR / "run.py")}
    assert "stability.sweep.dask_executor" not in run_imports  # the caller picks Dask
