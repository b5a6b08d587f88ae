"""pytest-benchmark suites: the grid, ``--quick``, and the fixtures that time a step.

Every benchmark times its step with ``stability.measure`` (warm-up, garbage collector off,
thread count set, one device sync per timed block) through pytest-benchmark's ``pedantic``
so the JSON holds the raw rounds; the same-run GEMM is timed in ``pedantic``'s untimed
``setup`` between the rounds (interleaved, one GEMM block per round), and the efficiency per
round and every raw round of both go into ``extra_info``. A round is one block of
``iterations`` calls: pytest-benchmark's own stats are per block, ``extra_info`` is per call.
The calls per block are fixed by the step's work (``fixed_iterations``), never by a timing,
and recorded in ``extra_info["iterations"]``: two runs time the same blocks, so
``pytest-benchmark compare`` judges like with like (docs/benchmarks.md). A result whose
relative IQR is >= 5 % at batch >= 64 is marked ``extra_info["unstable"]``.

``--quick`` (CI and the report, < 3 minutes on 2 cores): the small shape, CPU float32.
"""

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from stability.core.config import MLPConfig
from stability.measure.bench import Throughput, fixed_iterations, measure, unstable
from stability.measure.bench_schema import extra_info_problems
from stability.measure.interleave import RoundRunner
from stability.measure.steps import Step
from stability.measure.threads import threads as intra_op_threads
from stability.measure.timer import DEFAULT_ROUNDS, DEFAULT_WARMUP, Block, Hook

FULL_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
QUICK_BATCHES = (1, 4, 16, 64, 256, 1024)
FULL_SHAPES = ((8, 512), (32, 1024))  # (depth, width)
QUICK_SHAPES = ((8, 512),)
SMOKE_BATCHES = (16, 256)  # --smoke (``report --quick``): two points of the throughput curve
SMOKE_ROUNDS = 5
CPU_DTYPES = ("float32", "float64")
CUDA_DTYPES = ("float32", "float16", "bfloat16")
# One thread by default: on a shared 2-core machine a second thread mostly waits for the
# neighbours' load, and one thread is comparable across machines. --bench-threads 0 keeps
# torch's default.
DEFAULT_THREADS = 1
SLOW_CALL_S = 1.0  # steps slower than this get fewer rounds so the full grid ends


@dataclass(frozen=True)
class Case:
    """One point of the grid: shape, batch, device, dtype."""

    depth: int
    width: int
    batch: int
    device: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.device}-{self.dtype}-d{self.depth}w{self.width}-b{self.batch}"

    def config(self) -> MLPConfig:
        return MLPConfig(
            depth=self.depth, width=self.width, dtype=self.dtype, device=self.device, seed=0
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stability benchmarks")
    group.addoption(
        "--quick",
        action="store_true",
        default=False,
        help="reduced grid: depth 8 x width 512, CPU float32, batch 1..1024 (< 3 minutes)",
    )
    group.addoption(
        "--smoke",
        action="store_true",
        default=False,
        help="with --quick, for 'stability report --quick': batches 16 and 256 only, "
        f"{SMOKE_ROUNDS} rounds each (about a minute with -k 'train_step or forward')",
    )
    group.addoption(
        "--bench-threads",
        type=int,
        default=DEFAULT_THREADS,
        help="torch intra-op threads on CPU (0: torch's default; default %(default)s)",
    )


def grid(quick: bool, smoke: bool = False) -> list[Case]:
    """The benchmark grid; CUDA points only where a GPU is present."""
    quick = quick or smoke
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    batches = SMOKE_BATCHES if smoke else QUICK_BATCHES if quick else FULL_BATCHES
    devices: list[tuple[str, Sequence[str]]] = [("cpu", ("float32",) if quick else CPU_DTYPES)]
    if torch.cuda.is_available():
        devices.append(("cuda", CUDA_DTYPES))
    return [
        Case(d, w, b, dev, dt)
        for dev, dtypes in devices
        for dt in dtypes
        for d, w in shapes
        for b in batches
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        option = metafunc.config.getoption
        cases = grid(bool(option("quick")), bool(option("smoke")))
        params = [
            pytest.param(c, id=c.id, marks=[pytest.mark.cuda] if c.device == "cuda" else [])
            for c in cases
        ]
        metafunc.parametrize("case", params)


@pytest.fixture(autouse=True)
def stored_fields(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a benchmark whose ``extra_info`` the store would refuse, at the benchmark itself.

    The report stores every benchmark row (``measure/bench_schema.py``); without this check a
    benchmark that forgets ``batch_size`` or ``device`` passes here and breaks the report later.
    """
    yield
    bench = request.node.funcargs.get("benchmark")
    if bench is None or getattr(bench, "disabled", False) or bench.stats is None:
        return
    problems = extra_info_problems(bench.extra_info)
    if problems:
        pytest.fail(f"{request.node.nodeid}: the store would refuse it: {'; '.join(problems)}")


@pytest.fixture
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Set the CPU thread count for this benchmark; restored afterwards."""
    with intra_op_threads(int(request.config.getoption("bench_threads"))) as used:
        yield used


@pytest.fixture
def pedantic(benchmark: Any) -> RoundRunner:
    """Our rounds timed by pytest-benchmark, so its JSON holds them; per-call seconds back.

    The hook (interleaving's other block) runs as ``pedantic``'s untimed ``setup``.
    """

    def runner(block: Block, rounds: int, before: Hook) -> list[float]:
        def setup() -> None:
            before()  # pedantic takes a non-None return for the target's arguments

        enabled = gc.isenabled()
        gc.disable()
        try:
            benchmark.pedantic(block, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
        finally:
            if enabled:
                gc.enable()
        return [t / block.iterations for t in benchmark.stats.stats.data]

    return runner


Measure = Callable[[Step], Throughput]


@pytest.fixture
def run_step(
    request: pytest.FixtureRequest, benchmark: Any, threads: int, pedantic: RoundRunner
) -> Measure:
    """Time a step through pytest-benchmark and attach the full record to ``extra_info``."""
    smoke = bool(request.config.getoption("smoke"))

    def run(step: Step) -> Throughput:
        rounds, warmup = DEFAULT_ROUNDS, DEFAULT_WARMUP
        if smoke:
            rounds, warmup = SMOKE_ROUNDS, 1
        elif _one_call_seconds(step) > SLOW_CALL_S:
            rounds, warmup = 5, 1
        iterations = fixed_iterations(step.flops)
        result = measure(step, rounds, warmup, threads, pedantic, iterations=iterations)
        benchmark.extra_info.update(result.as_dict())
        benchmark.extra_info["unstable"] = unstable(step.batch, result.rel_iqr)
        step.close()
        return result

    return run


def _one_call_seconds(step: Step) -> float:
    start = time.perf_counter()
    step()
    if step.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start
