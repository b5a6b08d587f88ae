"""The timing wing: ``Measurement`` keeps its samples, ``threads()`` always restores, and
interleaving times the other block (the GEMM) in every round, in alternating order.

Interleaving is checked on a fake clock that only the timed functions advance, so every
sample is known exactly and the checks do not depend on this machine's load.
"""

import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stability.core.config import MLPConfig
from stability.measure import bench
from stability.measure.interleave import efficiency, interleave
from stability.measure.steps import make_train_step
from stability.measure.threads import threads
from stability.measure.timer import Block, Hook, Measurement, Timer
from stability.measure.worker import worker
from stability.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
TINY = MLPConfig(depth=2, width=8, dtype="float32", device="cpu")


# -- Measurement -------------------------------------------------------------------------------
def test_measurement_keeps_the_raw_samples_in_order() -> None:
    samples = [0.5, 0.1, 0.3, 0.2, 0.4]
    m = Measurement.of(samples, iterations=7)
    assert m.samples == tuple(samples)  # order kept: round i is samples[i]
    assert m.rounds == 5 and m.iterations == 7


def test_measurement_statistics_are_derived_from_the_samples() -> None:
    samples = [4.0, 1.0, 3.0, 2.0, 10.0]
    m = Measurement.of(samples, iterations=1)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    assert (m.median, m.min, m.max) == (3.0, 1.0, 10.0)
    assert (m.q1, m.q3) == (q1, q3) == (2.0, 4.0)
    assert m.iqr == 2.0 and m.rel_iqr == pytest.approx(2.0 / 3.0)
    assert m.mean == 4.0 and m.stddev == pytest.approx(statistics.stdev(samples))


def test_measurement_of_one_round_has_no_spread() -> None:
    m = Measurement.of([0.25], iterations=3)
    assert (m.median, m.q1, m.q3, m.iqr, m.stddev) == (0.25, 0.25, 0.25, 0.0, 0.0)


def test_measurement_without_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="no timing samples"):
        Measurement.of([], iterations=1)


def test_measurement_as_dict_lists_every_statistic_and_the_samples() -> None:
    m = Measurement.of([3.0, 1.0, 2.0], iterations=4)
    d = m.as_dict()
    assert set(d) == {*Measurement.STATS, "iterations", "samples"}
    assert d["samples"] == [3.0, 1.0, 2.0] and d["iterations"] == 4
    assert d["median"] == 2.0 and d["rounds"] == 3
    assert json.loads(json.dumps(d)) == d  # JSON-ready: goes into extra_info as is


# -- threads() ---------------------------------------------------------------------------------
def test_threads_sets_the_count_inside_and_restores_it() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with threads(wanted) as used:
        assert used == wanted == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_threads_restores_after_an_exception() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), threads(wanted):
        assert torch.get_num_threads() == wanted
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("n", [None, 0], ids=["none", "zero"])
def test_threads_none_keeps_the_current_count(n: int | None) -> None:
    before = torch.get_num_threads()
    with threads(n) as used:
        assert used == before == torch.get_num_threads()
    assert torch.get_num_threads() == before


# -- interleaving on a fake clock --------------------------------------------------------------
class FakeClock:
    """A clock that moves only when a timed function says it worked."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Work:
    """A callable that advances the clock by ``seconds[k]`` on its k-th call and logs itself."""

    def __init__(self, name: str, clock: FakeClock, log: list[str], seconds: list[float]) -> None:
        self.name, self.clock, self.log, self.seconds = name, clock, log, seconds
        self.calls = 0

    def __call__(self) -> None:
        self.clock.now += self.seconds[self.calls]
        self.calls += 1
        self.log.append(self.name)


def block_order(log: list[str], sizes: dict[str, int]) -> str:
    """The call log as one letter per block (``AABBB`` with sizes A 2, B 3 is ``AB``)."""
    out, i = [], 0
    while i < len(log):
        out.append(log[i])
        i += sizes[log[i]]
    return "".join(out)


@pytest.mark.parametrize("rounds", [1, 4, 5])
def test_interleave_times_one_b_block_every_round_in_alternating_order(rounds: int) -> None:
    clock, log = FakeClock(), []
    a_seconds = [float(1 + i // 2) for i in range(2 * rounds)]  # round i: 1 + i s per call
    b_seconds = [0.1 * (1 + i // 3) for i in range(3 * rounds)]  # round i: 0.1 (1 + i)
    a = Timer(Work("A", clock, log, a_seconds), warmup=0, iterations=2, clock=clock)
    b = Timer(Work("B", clock, log, b_seconds), warmup=0, iterations=3, clock=clock)
    ta, tb = interleave(a, b, rounds)
    expected = "".join("AB" if i % 2 == 0 else "BA" for i in range(rounds))
    assert block_order(log, {"A": 2, "B": 3}) == expected
    # Round i pairs A's i-th block with B's i-th: the samples are each round's own.
    assert list(ta.samples) == pytest.approx([1 + i for i in range(rounds)])
    assert list(tb.samples) == pytest.approx([0.1 * (1 + i) for i in range(rounds)])
    assert (ta.iterations, tb.iterations) == (2, 3)


def test_interleave_through_a_runner_times_b_in_its_hook() -> None:
    """pytest-benchmark drives A's rounds; B is timed in the untimed hook before them."""
    clock, log = FakeClock(), []
    a = Timer(Work("A", clock, log, [1.0] * 8), warmup=0, iterations=1, clock=clock)
    b = Timer(Work("B", clock, log, [0.5] * 8), warmup=0, iterations=1, clock=clock)
    hooks = []

    def runner(block: Block, rounds: int, before: Hook) -> list[float]:
        out = []
        for _ in range(rounds):
            hooks.append(len(log))
            before()
            start = clock()
            block()
            out.append(clock() - start)
        return out

    ta, tb = interleave(a, b, 4, runner)
    assert len(hooks) == 4 and "".join(log) == "ABBAABBA"
    assert list(ta.samples) == [1.0] * 4 and list(tb.samples) == [0.5] * 4


def test_interleave_refuses_a_runner_that_skips_the_hook() -> None:
    clock = FakeClock()
    a = Timer(Work("A", clock, [], [1.0] * 4), warmup=0, iterations=1, clock=clock)
    b = Timer(Work("B", clock, [], [1.0] * 4), warmup=0, iterations=1, clock=clock)

    def no_hook(block: Block, rounds: int, before: Hook) -> list[float]:
        return [1.0] * rounds

    with pytest.raises(RuntimeError, match="lost its pairing"):
        interleave(a, b, 4, no_hook)


def test_efficiency_is_per_round_and_times_the_gemm_every_round() -> None:
    clock, log = FakeClock(), []
    # The step: 2 s a call, then 4 s (the neighbours got busy); the GEMM slows down alike.
    step = Timer(Work("S", clock, log, [2.0] * 6 + [4.0] * 6), warmup=0, iterations=2, clock=clock)
    gemm_work = Work("G", clock, log, [1.0] * 3 + [2.0] * 3)
    gemm = Timer(gemm_work, warmup=0, iterations=1, clock=clock)
    eff = efficiency(step, 400, gemm, 100, rounds=6)
    assert gemm_work.calls == 6  # one GEMM block every round
    assert block_order(log, {"S": 2, "G": 1}) == "SGGSSGGSSGGS"
    assert eff.gemm.rounds == eff.step.rounds == 6
    # Round by round: (400 / t_step) / (100 / t_gemm); the load cancels in every round.
    assert eff.rounds() == pytest.approx([2.0] * 6)
    assert eff.efficiency == pytest.approx(2.0)
    d = eff.as_dict()
    assert d["seconds"] == list(eff.step.samples) and len(d["calib_seconds"]) == 6
    assert d["efficiency_rounds"] == pytest.approx([2.0] * 6)


def test_bench_measure_times_the_gemm_in_every_round_and_restores_threads() -> None:
    step = make_train_step(TINY, 4)
    calls: list[str] = []

    def runner(block: Block, rounds: int, before: Hook) -> list[float]:
        out = []
        for _ in range(rounds):
            before()
            calls.append("step")
            start = time.perf_counter()
            block()
            out.append((time.perf_counter() - start) / block.iterations)
        return out

    before = torch.get_num_threads()
    result = bench.measure(step, rounds=5, warmup=1, threads=1, runner=runner)
    assert torch.get_num_threads() == before and result.threads == 1
    assert calls == ["step"] * 5
    assert len(result.seconds) == len(result.calib_seconds) == len(result.efficiency_rounds) == 5
    assert result.efficiency == pytest.approx(statistics.median(result.efficiency_rounds))
    assert result.median_s == statistics.median(result.seconds)
    assert result.nonfinite_losses == 0
    assert json.loads(json.dumps(result.as_dict())) == result.as_dict()


# -- the --against worker and the ingest -------------------------------------------------------
def test_worker_answers_every_request_with_that_many_rounds() -> None:
    req = {"config": TINY.as_dict(), "batch": 4, "rounds": 3, "threads": 1}
    out = io.StringIO()
    before = torch.get_num_threads()
    assert worker([json.dumps(req) + "\n", "\n", json.dumps({**req, "rounds": 2})], out) == 0
    assert torch.get_num_threads() == before
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert len(first["seconds"]) == 3 and len(second["seconds"]) == 2
    assert first["iterations"] == second["iterations"] >= 1  # sized once, by the first
    assert first["nonfinite"] == second["nonfinite"] == 0


@pytest.mark.parametrize("module", ["stability.measure.worker", "stability.measure.bench"])
def test_worker_module_runs_as_the_gate_starts_it(module: str) -> None:
    """``python -m <module> worker``, as ``gate --against`` runs it in each tree."""
    req = {"config": TINY.as_dict(), "batch": 4, "rounds": 2, "threads": 1}
    proc = subprocess.run(
        [sys.executable, "-m", module, "worker"],
        input=json.dumps(req) + "\n",
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["seconds"]) == 2


def test_bench_module_still_ingests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = {k: 1.0 for k in ("min", "max", "mean", "median", "q1", "q3")}
    stats.update(stddev=0.0, iqr=0.0, rounds=3, iterations=1)
    extra = {"x": 1, "batch_size": 4, "samples_per_s": 4.0, "device": "cpu", "dtype": "float32"}
    data = {"benchmarks": [{"name": "t", "stats": stats, "extra_info": extra}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    db = tmp_path / "s.db"
    assert bench.main(["ingest", str(path), str(db)]) == 0
    assert "as bench run" in capsys.readouterr().out
    with Store.open(db) as store:
        rows = store.bench_results()
    assert rows["x"].tolist() == [1] and rows["stats_median"].tolist() == [1.0]
    assert bench.main(["ingest"]) == 2


def test_meets_goal_needs_significance_to_miss() -> None:
    """Near the goal, noise does not flip the verdict; far over it, the goal is missed."""
    from stability.measure.stats import meets_goal

    rng = random.Random(3)
    plain = [1.0 + rng.gauss(0, 0.05) for _ in range(15)]
    near = [1.11 + rng.gauss(0, 0.05) for _ in range(15)]  # median just over 1.10x
    far = [1.4 + rng.gauss(0, 0.05) for _ in range(15)]
    assert meets_goal(near, plain, 1.10)[0]
    met, p = meets_goal(far, plain, 1.10)
    assert not met and p < 0.01  # the witness: a real 40 % overhead misses the goal
