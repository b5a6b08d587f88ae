"""One benchmark result: a step timed against the same-run GEMM, round by round.

``measure(step)`` sizes the step's block, then times it in alternation with a GEMM of the
step's own shapes (``stability.measure.interleave``): the GEMM is timed every round, so the
efficiency (the step's GFLOP/s over the GEMM's) is a per-round ratio under the same load,
and the result keeps every raw round of both.

``ingest``/``bench_rows`` (``stability.measure.ingest``) are re-exported here for the
report's runner; ``python -m stability.measure.bench ingest JSON [DB] | worker`` still runs
the ingest and the ``--against`` measuring process (``stability.measure.worker``).
"""

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from stability.measure import ingest as _ingest
from stability.measure import worker as _worker
from stability.measure.calibration import Gemm
from stability.measure.ingest import bench_rows, ingest
from stability.measure.interleave import Efficiency, RoundRunner, efficiency
from stability.measure.steps import Step, TrainStep, compute_dtype
from stability.measure.threads import threads as intra_op_threads
from stability.measure.timer import DEFAULT_ROUNDS, DEFAULT_WARMUP, Timer

__all__ = ["Throughput", "bench_rows", "ingest", "measure", "record"]


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
    calib_gflops: float  # the GEMM's GFLOP/s at its median round
    efficiency: float  # median over rounds of the step's GFLOP/s over the GEMM's
    median_s: float  # per call, the step
    iqr_s: float
    rel_iqr: float
    rounds: int
    iterations: int
    calib_median_s: float  # per call, the GEMM
    calib_rel_iqr: float
    calib_iterations: int
    nonfinite_losses: int
    seconds: list[float]  # per round: the step's per-call seconds
    calib_seconds: list[float]  # per round: the GEMM's, timed beside it
    efficiency_rounds: list[float]  # per round: the efficiency

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(step: Step, eff: Efficiency, threads: int) -> Throughput:
    """Assemble the result of a timed step: throughput, GFLOP/s, efficiency, spread, rounds."""
    config = step.config
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
        samples_per_s=step.batch / eff.step.median,
        nonfinite_losses=step.nonfinite(),
        **eff.as_dict(),
    )


BLOCK_FLOPS = 2 * 10**9  # a fixed block's work: ~20 ms at 100 GFLOP/s, a perf_counter-safe span
STABLE_REL_IQR = 0.05  # at batch >= STABLE_MIN_BATCH, a wider spread marks a result unstable
STABLE_MIN_BATCH = 64


def fixed_iterations(flops: int, block_flops: int = BLOCK_FLOPS) -> int:
    """Calls per timed block from the work alone, never from a timing: two runs of the same
    benchmark then time blocks of the same length, and pytest-benchmark's per-block stats
    compare like with like (a block sized by a timing was 2 calls in one run, 3 in the next,
    and read as a 75 % regression)."""
    return max(1, min(1000, -(-block_flops // max(1, flops))))


def unstable(batch: int, rel_iqr: float) -> bool:
    """A result too noisy to compare: relative IQR >= 5 % at batch >= 64 (small batches are
    dominated by per-call overhead and are not held to it)."""
    return batch >= STABLE_MIN_BATCH and not rel_iqr < STABLE_REL_IQR


def measure(
    step: Step,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    runner: RoundRunner | None = None,
    iterations: int | None = None,
) -> Throughput:
    """Time ``step`` and its GEMM in alternating blocks; ``runner`` may be pytest-benchmark's.

    ``threads`` (None or 0: keep the current count) holds only for this call. ``iterations``
    fixes the calls per block of the step (the GEMM's follow from its work); None sizes
    both blocks by a first timed call.
    """
    with intra_op_threads(threads) as used:
        timed = Timer(step, step.device, warmup=warmup, iterations=iterations)
        gemm = Gemm(step.batch, step.config.width, compute_dtype(step), step.device)
        gemm_iterations = None if iterations is None else fixed_iterations(gemm.flops)
        gemm_timer = Timer(gemm, step.device, iterations=gemm_iterations)
        eff = efficiency(timed, step.flops, gemm_timer, gemm.flops, rounds, runner)
    return record(step, eff, used)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    module = "stability.measure.bench"
    if args[:1] == ["worker"]:
        return _worker.main(args, module)
    if args[:1] == ["ingest"]:
        return _ingest.main(args[1:], module + " ingest")
    print(f"usage: python -m {module} ingest JSON [DB] | worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
