"""Hostile inputs and hostile processes: one line on stderr, the right exit code, no traceback,
and the store exactly as it was, whatever the user types or does to the process.

The table runs each command in process against a store seeded with one sweep cell and
compares every table's row count before and after. ``test_hostile_processes.py`` does the
same to real processes: interrupted, killed, or with their stdout closed.
"""

import importlib.util
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import counts, doctor, sweep

from stability.cli import main
from stability.cli.limits import (
    MAX_DEPTH,
    MAX_SEEDS,
    MAX_STEPS,
    check_bound,
    check_seeds,
    human_bytes,
)
from stability.cli.streams import PipeGuard
from stability.errors import StabilityError
from stability.interrupts import deferred_interrupt
from stability.results.store import Store
from stability.sweep.cells import SweepGrid
from stability.sweep.run import run_sweep

HAS_DASK = importlib.util.find_spec("distributed") is not None


def case(name: str, argv: list[str], code: int, words: list[str], runs: int = 0, **kw: Any) -> Any:
    """One row: the command, its exit code, words its one stderr line must contain, and the
    runs it adds to the store (0: the store must be left exactly as it was)."""
    return pytest.param(argv, code, words, runs, id=name, **kw)


needs_dask = pytest.mark.skipif(not HAS_DASK, reason="needs stability[dask]")
CASES = [
    # duplicates in comma lists: refused, one rule for every list
    case("dup-activation", sweep(activation="relu,relu"), 2, ["'relu' is listed twice"]),
    case("dup-seeds", sweep(seeds="0,0,0"), 2, ["--seeds", "'0' is listed twice"]),
    case("dup-depth-spelled-apart", sweep(depth="2,02"), 2, ["(as '2' and '02')"]),
    case("dup-init", sweep(init="xavier_normal,xavier_normal"), 2, ["--init", "twice"]),
    case("dup-dtype", sweep(dtype="float32,float32"), 2, ["--dtype", "twice"]),
    case("dup-width", sweep(width="4,4"), 2, ["--width", "twice"]),
    case("dup-batch", sweep(batch="4,4"), 2, ["--batch", "twice"]),
    case("dup-fail-on", sweep(fail_on="explodes,explodes"), 2, ["--fail-on", "twice"]),
    case("dup-lrs", doctor(lr_map="", lrs="0.1,1e-1"), 2, ["--lrs", "(as '0.1' and '1e-1')"]),
    case("dup-map-inits", doctor(lr_map="", map_inits="orthogonal,orthogonal"), 2, ["twice"]),
    case("dup-map-activations", doctor(lr_map="", map_activations="tanh,tanh"), 2, ["twice"]),
    # empty comma lists: refused (an empty grid ran 0 cells and recorded a run)
    case("empty-activation", sweep(activation=","), 2, ["grid is empty (--activation: no value)"]),
    case("empty-seeds", sweep(seeds=",,,"), 2, ["grid is empty (--seeds", "is untouched"]),
    case("empty-depth-and-width", sweep(depth=" ", width=","), 2, ["(--depth, --width: no"]),
    case("doctor-empty-lrs", doctor(lr_map="", lrs=","), 2, ["--lrs needs at least one"]),
    case(
        "doctor-empty-map-activations",
        doctor(lr_map="", map_activations=","),
        2,
        ["--map-activations needs at least one activation"],
    ),
    case("doctor-empty-map-inits", doctor(map_inits=","), 2, ["--map-inits needs at least one"]),
    # seeds beyond what the generator and the store hold
    case("seed-20-digits", sweep(seeds="99999999999999999999"), 2, ["seed must be <= ", "2**63"]),
    case("seed-2-pow-63", sweep(seeds=str(2**63)), 2, ["seed must be <= 9223372036854775807"]),
    case("doctor-seed-2-pow-64", doctor(seed=str(2**64)), 2, ["seed must be <="]),
    # sizes that cannot fit in memory: refused with the estimate
    case("width-1e9", sweep(width="1000000000"), 2, ["width 1000000000", "needs ~", "available"]),
    case(
        "batch-1e9",
        sweep(batch="1000000000", width="256", depth="50"),
        2,
        ["batch 1000000000", "TiB", "available"],
    ),
    case("doctor-width-1e6", doctor(width="1000000"), 2, ["training depth 2, width 1000000"]),
    case("doctor-batch-1e10", doctor(batch="10000000000"), 2, ["batch 10000000000", "needs ~"]),
    # unbounded runs: a documented limit, --yes to pass it
    case("depth-1e9", sweep(depth="1000000000"), 2, ["depth 1000000000"]),
    case(
        "depth-over-limit",
        sweep(depth=str(MAX_DEPTH + 1)),
        2,
        [f"--depth {MAX_DEPTH + 1} is over the limit of {MAX_DEPTH}", "at least ~", "--yes"],
    ),
    case(
        "doctor-steps-1e9",
        doctor(steps="1000000000"),
        2,
        [f"--steps 1000000000 is over the limit of {MAX_STEPS}", "days", "--yes"],
    ),
    case("doctor-trial-steps", doctor(trial_steps=str(MAX_STEPS + 1)), 2, ["--trial-steps"]),
    case("doctor-depth-over-limit", doctor(depth=str(MAX_DEPTH + 1)), 2, ["--depth", "--yes"]),
    case(
        "seeds-over-limit",
        sweep(seeds=",".join(map(str, range(MAX_SEEDS + 1)))),
        2,
        [f"--seeds: {MAX_SEEDS + 1} seeds is over the limit of {MAX_SEEDS}", "--yes"],
    ),
    case(
        "experiments-seeds-1e8",
        ["experiments", "--seeds", "100000000"],
        2,
        [f"--seeds 100000000 is over the limit of {MAX_SEEDS}", "pass --yes"],
    ),
    # devices: cpu, cuda or cuda:N
    case("device-cpu-1", sweep(device="cpu:1"), 2, ["unknown device 'cpu:1'", "cuda:N"]),
    case("device-cpu-0", sweep(device="cpu:0"), 2, ["unknown device 'cpu:0'"]),
    case("device-cuda-word", sweep(device="cuda:first"), 2, ["unknown device 'cuda:first'"]),
    case("doctor-device-cpu-1", doctor(device="cpu:1"), 2, ["unknown device 'cpu:1'"]),
    # doctor edge cases, all before any training
    case("doctor-lr-1e308", doctor(lr="1e308"), 2, ["learning rate 1e+308", "float32"]),
    case("doctor-lrs-beyond-float32", doctor(lr_map="", lrs="0.1,1e39"), 2, ["1e+39"]),
    case("doctor-lr-nan", doctor(lr="nan"), 2, ["learning rate must be finite"]),
    case("doctor-lr-inf", doctor(lr="inf"), 2, ["learning rate must be finite"]),
    case("doctor-steps-zero", doctor(steps="0"), 2, ["steps must be an integer >= 1"]),
    case("doctor-figure-xyz", doctor(lr_map="", figure="fig.xyz"), 2, ["format 'xyz'", "png"]),
    case("doctor-figure-no-extension", doctor(lr_map="", figure="fig"), 2, ["no extension"]),
    case("doctor-figure-without-map", doctor(figure="fig.png"), 2, ["needs --lr-map"]),
    # --jobs beyond the cells: capped with a note, and the run goes on in this process
    case("jobs-1000-one-cell", sweep(jobs="1000"), 0, ["note: --jobs 1000 capped at 1"], runs=1),
    case("jobs-zero", sweep(jobs="0"), 2, ["jobs must be >= 1"]),
    # a Dask scheduler out of reach records no run
    case(
        "dask-unreachable",
        sweep(scheduler="tcp://127.0.0.1:9"),
        2,
        ["cannot reach Dask scheduler"],
        marks=needs_dask,
    ),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one sweep run of one cell, copied by each test."""
    db = tmp_path_factory.mktemp("seed") / "seed.db"
    out = db.with_suffix(".csv")
    assert main([*sweep(seeds="7"), "--db", str(db), "--out", str(out)]) == 0
    return db


@pytest.mark.parametrize(("argv", "code", "words", "runs"), CASES)
def test_hostile_input(
    argv: list[str], code: int, words: list[str], runs: int,
    seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    db, out = tmp_path / "s.db", tmp_path / "out.csv"
    shutil.copy(seeded, db)
    monkeypatch.chdir(tmp_path)  # a relative --figure lands here, if anything is written
    monkeypatch.setattr("stability.sweep.dask_executor.CONNECT_TIMEOUT_S", 0.5)
    before = counts(db)
    capsys.readouterr()
    assert main([*argv, "--db", str(db), "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    if code == 2:
        assert err.startswith("stability: error: "), err
    for word in words:
        assert word in err, err
    after = counts(db)
    assert after["runs"] == before["runs"] + runs
    if runs == 0:
        assert after == before, "a refused command must leave the store as it was"
        assert not out.exists() and not list(tmp_path.glob("fig*"))


def test_the_table_covers_every_rule() -> None:
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES), "every case needs its own id"
    prefixes = ("dup-", "empty-", "seed-", "width-", "depth-", "device-", "doctor-", "jobs-",
                "seeds-", "experiments-")  # fmt: skip
    for prefix in prefixes:
        assert any(i.startswith(prefix) for i in ids), prefix


# -- limits, as functions ---------------------------------------------------------------------
def test_yes_passes_a_bound_and_nothing_else_does() -> None:
    check_bound("--depth", MAX_DEPTH + 1, MAX_DEPTH, "long", yes=True)
    check_bound("--depth", MAX_DEPTH, MAX_DEPTH, "long", yes=False)
    with pytest.raises(StabilityError, match="over the limit"):
        check_bound("--depth", MAX_DEPTH + 1, MAX_DEPTH, "long", yes=False)


def test_yes_lifts_the_seed_caps() -> None:
    check_seeds(MAX_SEEDS + 1, yes=True)
    check_seeds(MAX_SEEDS + 1, yes=True, listed=True)
    with pytest.raises(StabilityError, match="--seeds: 1001 seeds is over"):
        check_seeds(MAX_SEEDS + 1, yes=False, listed=True)


def test_memory_is_refused_even_with_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*sweep(width="1000000000", yes=""), "--db", str(tmp_path / "s.db")]
    assert main([*argv, "--out", str(tmp_path / "o.csv")]) == 2
    assert "needs ~" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(23 * 2**30) == "23.0 GiB"
    assert human_bytes(8 * 2**50) == "8.0 PiB"


def test_an_empty_grid_records_no_run(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        with pytest.raises(StabilityError, match="no cells"):
            run_sweep(SweepGrid(activations=()), store)
        assert store.runs().empty


def test_an_executor_that_cannot_start_records_no_run(tmp_path: Path) -> None:
    class Unreachable:
        def run(self, cells: Any) -> Iterator[Any]:
            raise StabilityError("cannot reach the cluster")

    grid = SweepGrid(activations=("relu",), inits=("kaiming_normal",), depths=(2,),
                     widths=(4,), dtypes=("float32",), seeds=(0,), batches=(4,))  # fmt: skip
    with Store.open(tmp_path / "s.db") as store:
        with pytest.raises(StabilityError, match="cannot reach"):
            run_sweep(grid, store, executor=Unreachable())
        assert store.runs().empty


# -- signals and pipes, in process -------------------------------------------------------------
@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, the one these tests test, whatever the runner left
    (started under nohup, SIGINT is ignored and Python never installs it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_deferred_interrupt_finishes_the_block_then_raises() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append(True)
    assert finished == [True]


@pytest.mark.usefixtures("python_sigint")
def test_witness_without_deferral_the_block_is_cut_short() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**6):  # the handler runs between bytecodes, long before this ends
            pass
        finished.append(True)
    assert finished == []


class ClosedPipe:
    """A stdout whose reader has gone: every write and flush raises BrokenPipeError."""

    def __init__(self) -> None:
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise BrokenPipeError

    def flush(self) -> None:
        raise BrokenPipeError


def test_pipe_guard_drops_output_after_the_reader_goes() -> None:
    pipe = ClosedPipe()
    guard = PipeGuard(pipe)  # type: ignore[arg-type]
    assert guard.write("a") == 1 and guard.broken
    guard.write("b")
    guard.flush()
    assert pipe.attempts == 1


def test_a_closed_stdout_mid_run_still_writes_every_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    db, out = tmp_path / "s.db", tmp_path / "o.csv"
    loud = [a for a in sweep(seeds="0,1") if a != "--quiet"]  # the summary table too
    code = main([*loud, "--db", str(db), "--out", str(out)])
    assert code == 0
    assert out.exists() and counts(db)["cells"] == 2
