"""Two things timed in alternating blocks, round by round, and the efficiency per round.

The neighbours' load on a shared machine moves on a scale of seconds: two medians timed
one after the other differ by tens of percent, and a GEMM timed only before and after a
run once let one A/A efficiency read 0.52x of another's. Alternating one block of A with
one block of B every round puts the same load on both sides, so their ratio per round is
steady. The order swaps every round (A B, B A, A B, ...) so that an effect of going
first or second (cache state, clock frequency) falls on both sides alike.

The rounds of A are driven by a ``RoundRunner`` (our ``time_rounds``, or pytest-benchmark's
``pedantic`` so its JSON holds A's rounds) that calls a hook, untimed, before each round:
B's blocks are timed in that hook.
"""

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stability.measure.timer import DEFAULT_ROUNDS, Block, Hook, Measurement, Timer

# Times ``rounds`` blocks of ``block``, calling the hook untimed before each; per-call seconds.
RoundRunner = Callable[[Block, int, Hook], Sequence[float]]


def interleave(
    a: Timer, b: Timer, rounds: int, runner: RoundRunner | None = None
) -> tuple[Measurement, Measurement]:
    """``rounds`` blocks each of A and B, alternating: A B, B A, A B, ... (round i pairs A's
    i-th sample with B's)."""
    tb: list[float] = []
    calls = 0

    def before() -> None:
        # Ahead of odd round i: B's block closing round i-1 (A went first), then the one
        # opening round i (B goes first); ahead of even rounds, nothing.
        nonlocal calls
        if calls % 2:
            tb.extend(b.samples(2))
        calls += 1

    ta = a.samples(rounds, before) if runner is None else list(runner(a.block, rounds, before))
    if rounds % 2:
        tb.extend(b.samples(1))  # the last round went A first: B closes it
    if len(ta) != rounds or len(tb) != rounds or calls != rounds:
        raise RuntimeError(
            f"interleaving lost its pairing: {len(ta)} A rounds, {len(tb)} B rounds, "
            f"{calls} hook calls for {rounds} rounds"
        )
    return Measurement.of(ta, a.iterations), Measurement.of(tb, b.iterations)


def interleaved_ratio(
    a: Callable[[], object], b: Callable[[], object], device: str, rounds: int
) -> tuple[float, Measurement, Measurement]:
    """``median(B) / median(A)`` per call, from alternating blocks, and both measurements."""
    ta, tb = interleave(Timer(a, device), Timer(b, device), rounds)
    return tb.median / ta.median, ta, tb


@dataclass(frozen=True)
class Efficiency:
    """A step and the same-run GEMM timed in alternation: GFLOP/s of each, per round."""

    step: Measurement
    gemm: Measurement
    step_flops: int
    gemm_flops: int

    def calib_gflops_rounds(self) -> list[float]:
        return [self.gemm_flops / t / 1e9 for t in self.gemm.samples]

    def rounds(self) -> list[float]:
        """Per round, the step's GFLOP/s over the GEMM's timed beside it."""
        return [
            (self.step_flops / ts) / (self.gemm_flops / tg)
            for ts, tg in zip(self.step.samples, self.gemm.samples, strict=True)
        ]

    @property
    def efficiency(self) -> float:
        """The median of the per-round efficiencies."""
        return statistics.median(self.rounds())

    @property
    def gflops(self) -> float:
        return self.step_flops / self.step.median / 1e9

    @property
    def calib_gflops(self) -> float:
        return self.gemm_flops / self.gemm.median / 1e9

    def as_dict(self) -> dict[str, Any]:
        """Summary and raw rounds, flat, in the column names the benchmark results use."""
        return {
            "gflops": self.gflops,
            "calib_gflops": self.calib_gflops,
            "efficiency": self.efficiency,
            "median_s": self.step.median,
            "iqr_s": self.step.iqr,
            "rel_iqr": self.step.rel_iqr,
            "rounds": self.step.rounds,
            "iterations": self.step.iterations,
            "calib_median_s": self.gemm.median,
            "calib_rel_iqr": self.gemm.rel_iqr,
            "calib_iterations": self.gemm.iterations,
            "seconds": list(self.step.samples),
            "calib_seconds": list(self.gemm.samples),
            "efficiency_rounds": self.rounds(),
        }


def efficiency(
    step: Timer,
    step_flops: int,
    gemm: Timer,
    gemm_flops: int,
    rounds: int = DEFAULT_ROUNDS,
    runner: RoundRunner | None = None,
) -> Efficiency:
    """Time ``step`` and the GEMM in alternating blocks: the GEMM is timed every round."""
    ts, tg = interleave(step, gemm, rounds, runner)
    return Efficiency(ts, tg, step_flops, gemm_flops)
