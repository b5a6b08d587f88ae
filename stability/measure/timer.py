"""The one timing loop and its record: ``Timer`` times, ``Measurement`` keeps what it saw.

Timing: warm-up first, the garbage collector off, ``time.perf_counter`` around a block of
iterations; on CUDA the device is synchronised once before and once after each block, never
inside it (a per-iteration sync distorts short kernels many-fold). A round is one block; its
sample is the block's time divided by its calls.

A ``Measurement`` keeps every per-call sample and derives its statistics from them, so a
later reader (the gate, a significance test, a plot of the rounds) is never left with only
a median.
"""

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

DEFAULT_ROUNDS = 15
DEFAULT_WARMUP = 3
MIN_BLOCK_S = 0.02  # a timed block long enough that perf_counter's resolution is noise
MAX_BLOCK_ITERATIONS = 1000

Clock = Callable[[], float]
Hook = Callable[[], object]


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


def time_rounds(
    block: Block, rounds: int, clock: Clock = time.perf_counter, before: Hook | None = None
) -> list[float]:
    """Seconds per call of each of ``rounds`` timed blocks, garbage collector off.

    ``before`` runs untimed ahead of every round (interleaving puts another block there).
    ``clock`` is wall time by default; ``time.thread_time`` (CPU time of this thread, blind
    to the neighbours' load) is only meaningful with one intra-op thread on CPU.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        out = []
        synchronize(block.device)
        for _ in range(rounds):
            if before is not None:
                before()
            start = clock()
            block()
            out.append((clock() - start) / block.iterations)
        return out
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class Measurement:
    """Per-call seconds of every timed round, and the statistics derived from them."""

    samples: tuple[float, ...]  # one per round: the block's seconds over its calls
    iterations: int  # calls per round

    # The statistics, listed once (``as_dict`` follows this list).
    STATS: ClassVar[tuple[str, ...]] = (
        "rounds",
        "median",
        "q1",
        "q3",
        "iqr",
        "rel_iqr",
        "mean",
        "stddev",
        "min",
        "max",
    )

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("no timing samples")

    @classmethod
    def of(cls, samples: Sequence[float], iterations: int) -> "Measurement":
        return cls(tuple(float(s) for s in samples), iterations)

    @property
    def rounds(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def q1(self) -> float:
        return self._quartiles()[0]

    @property
    def q3(self) -> float:
        return self._quartiles()[1]

    def _quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def iqr(self) -> float:
        q1, q3 = self._quartiles()
        return q3 - q1

    @property
    def rel_iqr(self) -> float:
        """``iqr / median``: the spread the goals and the gate talk about."""
        med = self.median
        return self.iqr / med if med > 0 else float("nan")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def stddev(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) >= 2 else 0.0

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def as_dict(self) -> dict[str, Any]:
        """The statistics, ``iterations`` and the raw ``samples`` (a list: JSON-ready)."""
        return {
            **{name: getattr(self, name) for name in self.STATS},
            "iterations": self.iterations,
            "samples": list(self.samples),
        }


class Timer:
    """A callable made ready to time: warmed up and its block sized once, then timed in rounds.

    Sizing once keeps every round of a run the same length, so rounds (and the two sides of
    an interleaved pair) are comparable.
    """

    def __init__(
        self,
        fn: Callable[[], object],
        device: str = "cpu",
        warmup: int = DEFAULT_WARMUP,
        iterations: int | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        for _ in range(warmup):
            fn()
        self.block = Block(fn, iterations or block_iterations(fn, device), device)
        self.clock = clock

    @property
    def iterations(self) -> int:
        return self.block.iterations

    def samples(self, rounds: int, before: Hook | None = None) -> list[float]:
        """Per-call seconds of ``rounds`` timed blocks (``before`` untimed ahead of each)."""
        return time_rounds(self.block, rounds, self.clock, before)

    def measure(self, rounds: int = DEFAULT_ROUNDS) -> Measurement:
        return Measurement.of(self.samples(rounds), self.iterations)
