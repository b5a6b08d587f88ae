"""Timing primitives for the benchmarks and the gate: steps, timing loop, same-run GEMM.

Throughput on a shared machine moves by tens of percent between runs, so every number is
paired with a GEMM of the same shapes timed in the same process right before and after:
``efficiency = gflops / calib_gflops`` is what stays comparable across runs and machines.

FLOPs are counted from the shapes, matmuls only: a forward pass of a depth-``L``,
width-``W`` MLP on a batch of ``B`` is ``2 B W^2 L``; a training step adds a backward pass
of twice that (gradients of the input and of the weight), ``6 B W^2 L`` in all.

Timing: warm-up first, the garbage collector off, the thread count set and recorded,
``time.perf_counter`` around a block of iterations; on CUDA the device is synchronised once
before and once after each block, never inside it (a per-iteration sync distorts short
kernels many-fold).

``python -m stability.measure.bench ingest results/bench.json`` stores a pytest-benchmark JSON in
the results store; ``python -m stability.measure.bench worker`` is the measuring process that
``stability gate --against`` runs in each checkout.

The ``STABILITY_PLANT_SLOWDOWN`` environment variable (a fraction, e.g. ``0.25``) makes
every training step do that much extra matmul work. It exists only to prove that the gate
catches slowdowns (``scripts/prove_gate.py``) and is off unless explicitly set.
"""

import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from stability.core.config import MLPConfig
from stability.core.model import build_mlp, input_batch
from stability.core.probe import Probe, projection_loss
from stability.errors import StabilityError
from stability.results.store import Store

PLANT_SLOWDOWN_ENV = "STABILITY_PLANT_SLOWDOWN"
# The SGD update runs with lr 0: the arithmetic of a real step (one add per parameter)
# without moving the weights, so every timed step computes the same numbers. A real lr
# drives the projection loss (a sum over B*W outputs) to inf within a few steps, and
# timing NaN arithmetic is not what anyone wants to know.
LEARNING_RATE = 0.0
DEFAULT_ROUNDS = 15
DEFAULT_WARMUP = 3
MIN_BLOCK_S = 0.02  # a timed block long enough that perf_counter's resolution is noise
MAX_BLOCK_ITERATIONS = 1000


def forward_flops(depth: int, width: int, batch: int) -> int:
    """Matmul FLOPs of one forward pass: ``2 * B * W^2`` per layer."""
    return 2 * batch * width * width * depth


def train_flops(depth: int, width: int, batch: int) -> int:
    """Forward plus backward (twice the forward: input and weight gradients)."""
    return 3 * forward_flops(depth, width, batch)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (None or 0: leave it) and return the one in force."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class Block:
    """``iterations`` calls of ``fn`` then one device sync: the unit that is timed."""

    def __init__(self, fn: Callable[[], object], iterations: int, device: str) -> None:
        self.fn = fn
        self.iterations = iterations
        self.device = device

    def __call__(self) -> None:
        fn = self.fn
        for _ in range(self.iterations):
            fn()
        synchronize(self.device)


def block_iterations(
    fn: Callable[[], object], device: str, min_block_s: float = MIN_BLOCK_S
) -> int:
    """How many calls make a block of at least ``min_block_s`` (fn is called once to find out)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    once = time.perf_counter() - start
    if once <= 0:
        return MAX_BLOCK_ITERATIONS
    return max(1, min(MAX_BLOCK_ITERATIONS, int(min_block_s / once) + 1))


@dataclass(frozen=True)
class TimingStats:
    """Seconds per call over timed rounds (each round one block); fields listed once."""

    rounds: int
    iterations: int  # calls per round
    median: float
    q1: float
    q3: float
    iqr: float
    rel_iqr: float  # iqr / median: the spread the goals and the gate talk about
    mean: float
    min: float
    max: float

    @classmethod
    def from_samples(cls, per_call: Sequence[float], iterations: int) -> "TimingStats":
        """Statistics of per-call times (round time divided by ``iterations``)."""
        if not per_call:
            raise ValueError("no timing samples")
        xs = sorted(per_call)
        if len(xs) >= 2:
            q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        else:
            q1 = q3 = xs[0]
        med = statistics.median(xs)
        return cls(
            rounds=len(xs),
            iterations=iterations,
            median=med,
            q1=q1,
            q3=q3,
            iqr=q3 - q1,
            rel_iqr=(q3 - q1) / med if med > 0 else float("nan"),
            mean=statistics.fmean(xs),
            min=xs[0],
            max=xs[-1],
        )

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Clock = Callable[[], float]


def time_rounds(block: Block, rounds: int, clock: Clock = time.perf_counter) -> list[float]:
    """Seconds per call of each of ``rounds`` timed blocks, garbage collector off.

    ``clock`` is wall time by default; ``time.thread_time`` (CPU time of this thread, blind
    to the neighbours' load) is only meaningful with one intra-op thread on CPU.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        out = []
        synchronize(block.device)
        for _ in range(rounds):
            start = clock()
            block()
            out.append((clock() - start) / block.iterations)
        return out
    finally:
        if enabled:
            gc.enable()


def time_fn(
    fn: Callable[[], object],
    device: str = "cpu",
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    iterations: int | None = None,
    clock: Clock = time.perf_counter,
) -> TimingStats:
    """Warm up, then time ``rounds`` blocks of ``fn``; per-call statistics."""
    for _ in range(warmup):
        fn()
    n = iterations or block_iterations(fn, device)
    return TimingStats.from_samples(time_rounds(Block(fn, n, device), rounds, clock), n)


# -- same-run GEMM calibration -----------------------------------------------------------------
class Gemm:
    """``(batch, width) @ (width, width)`` into a preallocated output: the step's matmul."""

    def __init__(self, batch: int, width: int, dtype: torch.dtype, device: str) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, width, generator=gen).to(device=device, dtype=dtype)
        self.w = torch.randn(width, width, generator=gen).to(device=device, dtype=dtype)
        self.out = torch.empty(batch, width, device=device, dtype=dtype)
        self.flops = 2 * batch * width * width

    def __call__(self) -> None:
        torch.mm(self.x, self.w, out=self.out)


def calibrate(
    batch: int, width: int, dtype: torch.dtype, device: str, rounds: int = DEFAULT_ROUNDS
) -> float:
    """GFLOP/s of the step's GEMM shape, timed now in this process."""
    gemm = Gemm(batch, width, dtype, device)
    stats = time_fn(gemm, device, rounds=rounds)
    return gemm.flops / stats.median / 1e9


# -- steps -------------------------------------------------------------------------------------
def _planted_slowdown() -> float:
    raw = os.environ.get(PLANT_SLOWDOWN_ENV, "")
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise StabilityError(f"{PLANT_SLOWDOWN_ENV}={raw!r} is not a number") from None
    if not 0.0 <= value <= 10.0:
        raise StabilityError(f"{PLANT_SLOWDOWN_ENV}={raw!r} must be in [0, 10]")
    return value


def _best_time(fn: Callable[[], object], calls: int) -> float:
    best = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class TrainStep:
    """Forward, projection loss, backward, SGD step; counts non-finite losses on device.

    The count stays a device tensor (no host sync per step); read it with ``nonfinite()``.
    """

    def __init__(
        self,
        config: MLPConfig,
        batch: int,
        probe_every: int | None = None,
        lr: float = LEARNING_RATE,
    ) -> None:
        self.config = config
        self.batch = batch
        self.device = config.device
        self.model = build_mlp(config)
        self.x = input_batch(config, batch)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.probe = Probe(self.model, every=probe_every).attach() if probe_every else None
        self.probe_every = probe_every
        self.flops = train_flops(config.depth, config.width, batch)
        self._bad = torch.zeros((), dtype=torch.int64, device=self.device)
        self._extra: Callable[[], None] | None = None
        self._extra = self._planted_work(_planted_slowdown())

    def _planted_work(self, fraction: float) -> Callable[[], None] | None:
        """Extra matmuls taking ``fraction`` of the step's time (proof of the gate only).

        Sized by time, not FLOPs (a small step is not GEMM-bound): the step and one small
        GEMM are each timed here (best of several calls) and the GEMM is repeated
        ``fraction * t_step / t_gemm`` times after every step.
        """
        if fraction <= 0:
            return None
        unit = Gemm(max(1, self.batch // 8), self.config.width, self.x.dtype, self.device)
        t_step = _best_time(self, 5)
        t_unit = _best_time(unit, 20)
        repeats = max(1, round(fraction * t_step / t_unit))

        def extra() -> None:
            for _ in range(repeats):
                unit()

        return extra

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = projection_loss(self.model(self.x))
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self._bad += (~torch.isfinite(loss.detach())).to(torch.int64)
        if self._extra is not None:
            self._extra()

    def nonfinite(self) -> int:
        """Steps so far whose loss was NaN or inf (recorded, never hidden)."""
        return int(self._bad)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.detach()


class ForwardStep:
    """Inference: eval mode, ``torch.no_grad``, one forward pass."""

    def __init__(self, config: MLPConfig, batch: int) -> None:
        self.config = config
        self.batch = batch
        self.device = config.device
        self.model = build_mlp(config).eval()
        self.x = input_batch(config, batch)
        self.flops = forward_flops(config.depth, config.width, batch)
        self.probe_every: int | None = None
        self._bad = torch.zeros((), dtype=torch.int64, device=self.device)

    def __call__(self) -> None:
        with torch.no_grad():
            out = self.model(self.x)
            self._bad += (~torch.isfinite(out)).any().to(torch.int64)

    def nonfinite(self) -> int:
        """Passes so far whose output held a NaN or inf."""
        return int(self._bad)

    def close(self) -> None:
        pass


Step = TrainStep | ForwardStep


def make_train_step(
    config: MLPConfig, batch: int, probe_every: int | None = None, lr: float = LEARNING_RATE
) -> TrainStep:
    """The timed training step; ``probe_every=N`` attaches ``Probe(model, every=N)``."""
    return TrainStep(config, batch, probe_every, lr)


def make_forward_step(config: MLPConfig, batch: int) -> ForwardStep:
    return ForwardStep(config, batch)


# -- one result --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput:
    """One benchmark's result: what ran, how fast, against which same-run GEMM."""

    kind: str  # "train" or "forward"
    depth: int
    width: int
    batch_size: int
    device: str
    dtype: str
    precision_mode: str
    threads: int
    torch_version: str
    probe_every: int | None
    flops_per_step: int
    samples_per_s: float
    gflops: float
    calib_gflops: float
    calib_gflops_before: float
    calib_gflops_after: float
    efficiency: float
    median_s: float
    iqr_s: float
    rel_iqr: float
    rounds: int
    iterations: int
    nonfinite_losses: int

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_dtype(step: Step) -> torch.dtype:
    return step.config.precision.compute_dtype


def record(
    step: Step, stats: TimingStats, calib_before: float, calib_after: float, threads: int
) -> Throughput:
    """Assemble the result of a timed step: throughput, GFLOP/s, efficiency, spread."""
    config = step.config
    calib = (calib_before + calib_after) / 2
    gflops = step.flops / stats.median / 1e9
    return Throughput(
        kind="train" if isinstance(step, TrainStep) else "forward",
        depth=config.depth,
        width=config.width,
        batch_size=step.batch,
        device=step.device,
        dtype=config.dtype,
        precision_mode=config.precision.mode,
        threads=threads,
        torch_version=torch.__version__,
        probe_every=step.probe_every,
        flops_per_step=step.flops,
        samples_per_s=step.batch / stats.median,
        gflops=gflops,
        calib_gflops=calib,
        calib_gflops_before=calib_before,
        calib_gflops_after=calib_after,
        efficiency=gflops / calib,
        median_s=stats.median,
        iqr_s=stats.iqr,
        rel_iqr=stats.rel_iqr,
        rounds=stats.rounds,
        iterations=stats.iterations,
        nonfinite_losses=step.nonfinite(),
    )


def measure(
    step: Step,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    timer: Callable[[Block, int], Sequence[float]] = time_rounds,
) -> Throughput:
    """Calibrate, time ``step``, calibrate again; ``timer`` may be pytest-benchmark's."""
    used = set_threads(threads)
    dtype = compute_dtype(step)
    before = calibrate(step.batch, step.config.width, dtype, step.device)
    for _ in range(warmup):
        step()
    n = block_iterations(step, step.device)
    per_call = timer(Block(step, n, step.device), rounds)
    stats = TimingStats.from_samples(per_call, n)
    after = calibrate(step.batch, step.config.width, dtype, step.device)
    return record(step, stats, before, after, used)


def interleaved_ratio(
    a: Callable[[], object], b: Callable[[], object], device: str, rounds: int
) -> tuple[float, TimingStats, TimingStats]:
    """Time A and B in alternating blocks; ``median(B) / median(A)`` and both statistics.

    Alternating puts the neighbours' load on both sides alike, so the ratio is far steadier
    than two separately measured medians.
    """
    for _ in range(DEFAULT_WARMUP):
        a()
        b()
    na, nb = block_iterations(a, device), block_iterations(b, device)
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(rounds):
        ta.extend(time_rounds(Block(a, na, device), 1))
        tb.extend(time_rounds(Block(b, nb, device), 1))
    sa, sb = TimingStats.from_samples(ta, na), TimingStats.from_samples(tb, nb)
    return sb.median / sa.median, sa, sb


# -- storing pytest-benchmark results ----------------------------------------------------------
_STATS_KEYS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds", "iterations")


def bench_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten pytest-benchmark JSON: one dict per benchmark with its stats and extra_info."""
    rows = []
    for b in data.get("benchmarks", []):
        stats = b.get("stats", {})
        rows.append(
            {
                "name": b.get("name", ""),
                "fullname": b.get("fullname", ""),
                "group": b.get("group"),
                **{f"stats_{k}": stats.get(k) for k in _STATS_KEYS},
                **b.get("extra_info", {}),
            }
        )
    return rows


def ingest(json_path: Path | str, store: Store, command: Sequence[str] | None = None) -> int:
    """Read a pytest-benchmark JSON and write every benchmark under a new ``bench`` run."""
    path = Path(json_path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise StabilityError(f"cannot read benchmark JSON {str(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise StabilityError(f"benchmark JSON {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise StabilityError(f"{str(path)!r} is not a pytest-benchmark JSON (no 'benchmarks')")
    rows = bench_rows(data)
    devices = {str(r.get("device", "cpu")) for r in rows} or {"cpu"}
    command = list(command or ["stability", "bench-ingest", str(path)])
    run_id = store.start_run("bench", command, ",".join(sorted(devices)))
    store.write_bench(run_id, rows)
    return run_id


# -- the measuring process of ``stability gate --against`` ------------------------------------
def worker(stdin: Iterable[str] = sys.stdin, stdout: Any = sys.stdout) -> int:
    """Line protocol: ``{"config": {...}, "batch": B, "rounds": R, "threads": T}`` in, per-call
    seconds of ``R`` timed blocks out (one JSON line each); the first request builds the step.
    """
    step: TrainStep | None = None
    n = 1
    for line in stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        set_threads(req.get("threads"))
        if step is None:
            step = make_train_step(MLPConfig(**req["config"]), int(req["batch"]))
            for _ in range(DEFAULT_WARMUP):
                step()
            n = block_iterations(step, step.device)
        times = time_rounds(Block(step, n, step.device), int(req["rounds"]))
        reply = {"seconds": times, "iterations": n, "nonfinite": step.nonfinite()}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker"]:
        return worker()
    if len(args) in (2, 3) and args[0] == "ingest":
        with Store.open(args[2] if len(args) == 3 else "results/stability.db") as store:
            run_id = ingest(args[1], store, ["python", "-m", "stability.measure.bench", *args])
        print(f"ingested {args[1]} as bench run {run_id}")
        return 0
    print("usage: python -m stability.measure.bench ingest JSON [DB] | worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StabilityError as exc:
        print(f"stability.measure.bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
