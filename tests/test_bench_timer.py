"""Our timing loop agrees with ``torch.utils.benchmark.Timer.blocked_autorange``.

Both time the same training step (depth 4 x width 512, batch 64, CPU float32, one thread;
about 10 ms a call, far above either loop's overhead), in alternation, ``ROUNDS`` times,
with blocks of the same number of calls; the verdict compares the medians of all
per-call samples pooled per side.

Both sides read the thread's CPU clock (``time.thread_time``; exact with one intra-op
thread): on this shared 2-core machine the neighbours' load moves wall-clock medians
measured a few seconds apart by 10-20 % (three runs of this comparison on
``perf_counter`` gave 0.98, 1.00 and 1.12), which would test the neighbours, not the
loops. On the CPU clock, with blocks of equal length, eight runs at load 6-9 on 2 cores
gave 0.968 to 1.042, and one run beside two busy test workers gave 0.929. The bar is
therefore 25 %: the defect this test exists for (a block reported as one call, or a wrong
divisor) moves the ratio by the block length, 3x in the witness, far outside it. Closer
agreement is a speed goal, measured by the benchmarks, not asserted by a timed test.
"""

import statistics
import time

from torch.utils.benchmark import Timer

from stability.core.config import MLPConfig
from stability.measure.steps import make_train_step
from stability.measure.threads import threads
from stability.measure.timer import Block, time_rounds

AGREEMENT = 0.25  # well inside the witness's 3x, well outside load noise (0.93-1.04 seen)
ROUNDS = 25
CONFIG = MLPConfig(depth=4, width=512, dtype="float32", device="cpu")
BATCH = 64
WITNESS_ITERATIONS = 3
RUN_S = 0.04  # Timer's min_run_time per round: a few blocks, so the sides alternate often


def pooled_ratio(per_block: bool = False) -> float:
    """Our median over Timer's; ``per_block`` reports whole blocks as calls (a wrong loop).

    Our blocks hold as many calls as Timer chose for its own, and each round times as many
    blocks as Timer did right after it: the two see the same mix of load.
    """
    with threads(1):
        step = make_train_step(CONFIG, BATCH)
        timer = Timer("step()", globals={"step": step}, num_threads=1, timer=time.thread_time)
        for _ in range(3):
            step()
        calls = timer.blocked_autorange(min_run_time=RUN_S).number_per_run
        n = WITNESS_ITERATIONS if per_block else calls
        scale = n if per_block else 1
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(ROUNDS):
            measured = timer.blocked_autorange(min_run_time=RUN_S).times
            theirs.extend(measured)
            step()  # untimed, as Timer's block-size estimate is before its blocks
            blocks = Block(step, n, "cpu")
            ours.extend(time_rounds(blocks, len(measured), clock=time.thread_time))
        return statistics.median(t * scale for t in ours) / statistics.median(theirs)


def test_timer_agrees_with_blocked_autorange() -> None:
    ratio = pooled_ratio()
    assert abs(ratio - 1) <= AGREEMENT, f"our median / Timer's = {ratio:.3f}"


def test_witness_timer_agrees_with_blocked_autorange() -> None:
    """Reporting a block of 3 calls as one call (forgetting to divide) fails the check."""
    ratio = pooled_ratio(per_block=True)
    assert abs(ratio - 1) > AGREEMENT, f"our median / Timer's = {ratio:.3f}"
