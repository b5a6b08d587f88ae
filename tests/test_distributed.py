"""Sweeps on Dask: the same rows as the local run, and nothing lost when a worker dies.

Needs the dask extra (``pip install -e '.[test,dask]'``); skipped cleanly without it. Every
cluster here is a LocalCluster of worker *processes*, so cells really cross a process
boundary (pickled cells out, pickled rows back) and a worker can really die.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (installed with distributed, needed only past the skip)
import dask  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from stability.cli import main  # noqa: E402
from stability.errors import StabilityError  # noqa: E402
from stability.measure.threads import threads  # noqa: E402
from stability.results.store import Store  # noqa: E402
from stability.sweep.cells import Cell, SweepGrid  # noqa: E402
from stability.sweep.dask_executor import DaskExecutor, import_distributed  # noqa: E402
from stability.sweep.executors import InProcessExecutor  # noqa: E402
from stability.sweep.run import run_sweep  # noqa: E402

# Tiny cells (depth 4, width 16, batch 8): the tests measure plumbing, not numerics.
DEPTH = 4
TINY = SweepGrid(
    activations=("relu", "tanh"),
    inits=("kaiming_normal", "xavier_normal"),
    depths=(DEPTH,),
    widths=(16,),
    dtypes=("float32", "float16"),
    seeds=(0, 1),
    batches=(8,),
)  # 16 cells
TINY_FLAGS = [
    *("--activation", "relu,tanh", "--init", "kaiming_normal,xavier_normal"),
    *("--depth", str(DEPTH), "--width", "16", "--dtype", "float32,float16"),
    *("--seeds", "0,1", "--batch", "8", "--quiet"),
]
ROW_ORDER = ["cell_key", "layer"]
KILL_WAIT_S = 120.0  # a guard against a hang only: the other worker commits cells within seconds
COMMITTED_BEFORE_KILL = 4

# The kill plugin below is defined here, and workers cannot import a test module: ship it
# by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(ROW_ORDER).reset_index(drop=True)


def _raw_row_counts(store: Store) -> dict[str, int]:
    """Rows stored per cell over all runs: a cell written twice would show 2 * DEPTH."""
    cur = store.conn.execute("SELECT cell_key, count(*) FROM sweep_rows GROUP BY cell_key")
    return dict(cur.fetchall())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The tiny grid run locally in this process (InProcessExecutor): the rows Dask must reproduce.

    One torch thread, as in every worker (the local pool's and Dask's): with torch's default
    thread count (2 here) one run in four differed from the workers' rows in the 8th digit
    of a float32 variance while the cluster's processes competed for the cores.
    """
    with threads(1), Store.open(tmp_path_factory.mktemp("ref") / "ref.db") as store:
        summary = run_sweep(TINY, store, executor=InProcessExecutor())
        assert summary.done == len(TINY.cells())
        return _sorted(store.sweep_rows())


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two single-thread worker processes; workers hold only the cell they run.

    worker-saturation 1.0 sends each one-thread worker one task at a time, so a worker
    death touches exactly the cell it was running; allowed-failures 1 lets a cell survive
    one death and fail on the second, which keeps the test to three worker restarts.
    """
    config = {
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.scheduler.allowed-failures": 1,
    }
    with dask.config.set(config):
        # No dashboard, and the scheduler's HTTP routes on a free port: the default 8787
        # may be held by someone else's cluster on a shared machine (a warning, an error here).
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
        )  # fmt: skip
    try:
        with distributed.Client(cluster) as c:
            yield c
    finally:
        cluster.close()


def test_cli_on_a_cluster_gives_the_same_rows_as_a_local_run(
    tmp_path: Path, client: Any, reference: pd.DataFrame
) -> None:
    """`--scheduler ADDRESS` (a LocalCluster of 2 processes) stores exactly the local rows."""
    db, csv = tmp_path / "dask.db", tmp_path / "dask.csv"
    address = client.scheduler.address
    dask_flags = ["--scheduler", address, "--db", str(db), "--out", str(csv)]
    code = main(["sweep", *TINY_FLAGS, *dask_flags])
    assert code == 0
    with Store.open(db) as store:
        pd.testing.assert_frame_equal(_sorted(store.sweep_rows()), reference, check_exact=True)
        assert set(_raw_row_counts(store).values()) == {DEPTH}
    from_csv = pd.read_csv(csv)
    assert len(from_csv) == len(reference)


def test_resume_after_client_crash_finishes_the_rest(
    tmp_path: Path, client: Any, reference: pd.DataFrame
) -> None:
    """A client that dies after 3 commits keeps them; --resume runs only the other 13."""
    committed = 3
    seen: list[Cell] = []

    def crash_after_three(cell: Cell) -> None:
        seen.append(cell)
        if len(seen) == committed:
            raise KeyboardInterrupt  # what Ctrl-C or a dying client looks like to run_sweep

    with Store.open(tmp_path / "resume.db") as store:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(TINY, store, on_cell=crash_after_three, executor=DaskExecutor(client))
        assert store.done_keys() == {c.key for c in seen}
        summary = run_sweep(TINY, store, resume=True, executor=DaskExecutor(client))
        assert (summary.skipped, summary.done, summary.failed) == (committed, 13, 0)
        pd.testing.assert_frame_equal(_sorted(store.sweep_rows()), reference, check_exact=True)
        assert set(_raw_row_counts(store).values()) == {DEPTH}  # nothing written twice


class KillCells(WorkerPlugin):
    """Test-only: make a worker process die (``os._exit``) while it runs certain cells.

    ``setup`` runs inside each worker process (restarted ones included) and wraps the cell
    function there; the wait happens in the task's thread, so the worker keeps serving the
    results it already holds. ``once``: die on the first attempt only, after the client has
    committed some cells (so the kill lands mid-sweep). ``always``: die on every attempt.
    """

    def __init__(self, once: str, always: str, folder: str) -> None:
        self.once, self.always, self.folder = once, always, Path(folder)

    def setup(self, worker: Any) -> None:
        import stability.sweep.dask_executor as module

        original = self.original = module.timed_cell
        once, always, folder = self.once, self.always, self.folder

        def doomed(cell: Cell) -> tuple[list[dict[str, Any]], float]:
            if cell.key == always:
                os._exit(1)
            if cell.key == once and not (folder / "died").exists():
                deadline = time.monotonic() + KILL_WAIT_S
                while not (folder / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                (folder / "died").touch()
                os._exit(1)
            return original(cell)

        module.timed_cell = doomed  # type: ignore[assignment]

    def teardown(self, worker: Any) -> None:
        import stability.sweep.dask_executor as module

        module.timed_cell = self.original


def test_worker_killed_mid_sweep_loses_no_completed_cell(
    tmp_path: Path, client: Any, reference: pd.DataFrame
) -> None:
    """Kill workers mid-sweep: committed cells stay, once-killed is retried, doomed fails."""
    cells = TINY.cells()
    once, always = cells[5], cells[10]
    client.register_plugin(KillCells(once.key, always.key, str(tmp_path)), name="kill")
    before_kill: list[str] = []

    def count(cell: Cell) -> None:
        if not (tmp_path / "died").exists():
            before_kill.append(cell.key)
        if len(before_kill) == COMMITTED_BEFORE_KILL:
            (tmp_path / "go").touch()

    try:
        with Store.open(tmp_path / "kill.db") as store:
            summary = run_sweep(TINY, store, on_cell=count, executor=DaskExecutor(client))
            rows = _sorted(store.sweep_rows())
            errors = dict(
                store.conn.execute("SELECT cell_key, error FROM cells WHERE status = 'failed'")
            )
            counts = _raw_row_counts(store)
    finally:
        client.unregister_worker_plugin("kill")

    assert (tmp_path / "died").exists()  # the once-victim's worker really died
    assert len(before_kill) >= COMMITTED_BEFORE_KILL  # ... after cells were committed
    assert (summary.done, summary.failed) == (len(cells) - 1, 1)
    assert list(errors) == [always.key] and "KilledWorker" in errors[always.key]
    # Every completed cell, the retried one included, is stored once with the local rows.
    expected = reference[reference.cell_key != always.key].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, expected, check_exact=True)
    assert counts == {c.key: DEPTH for c in cells if c is not always}
    assert set(before_kill) - {always.key} <= set(counts)


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without dask, --scheduler fails before any work, naming the extra to install."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(StabilityError, match=r"pip install 'stability\[dask\]'"):
        import_distributed()


def test_witness_missing_extra_names_the_extra() -> None:
    """With dask installed the same call succeeds: the check above is not vacuous."""
    assert import_distributed() is distributed


def test_local_cluster_needs_a_worker() -> None:
    """`--scheduler local --jobs 0` is refused before any cluster starts."""
    assert main(["sweep", *TINY_FLAGS, "--scheduler", "local", "--jobs", "0"]) == 2
    with pytest.raises(StabilityError, match="got 0"):
        DaskExecutor("local", workers=0)
    assert DaskExecutor("local", workers=1).workers == 1  # witness: making one starts nothing


def test_bad_scheduler_value_is_a_one_line_error() -> None:
    """A scheduler that is neither an address, 'local' nor a Client is refused when the
    executor is made, before any run is recorded."""
    with pytest.raises(StabilityError, match="got 42"):
        DaskExecutor(42)  # type: ignore[arg-type]


def test_sweep_without_scheduler_never_imports_dask(tmp_path: Path) -> None:
    """The default path stays Dask-free: a one-cell CLI sweep imports neither package."""
    script = (
        "import sys; from stability.cli import main; "
        f"code = main(['sweep', '--activation', 'relu', '--init', 'xavier_normal', '--depth', "
        f"'2', '--width', '8', '--dtype', 'float32', '--seeds', '0', '--batch', '4', "
        f"'--quiet', '--db', {str(tmp_path / 'a.db')!r}, '--out', {str(tmp_path / 'a.csv')!r}]); "
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; "
        "print(code, loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "0 []"
