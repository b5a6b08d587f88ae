"""The sweep run loop: expand a grid, hand the cells to an executor, commit each as it lands.

Which executor computes the cells (this process, a process pool, Dask) is the caller's
choice; this loop only skips stored cells on ``resume``, commits every finished cell in its
own transaction, records failures, and reports progress and a summary.
"""

import math
import statistics
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from stability.errors import StabilityError
from stability.results.store import Store
from stability.sweep.cells import DEFAULT_ACTIVATIONS, DEFAULT_INITS, Cell, SweepGrid, run_cell
from stability.sweep.executors import Executor, InProcessExecutor, Outcome, default_jobs

# Re-exported: these names were imported from here before the executors moved out.
__all__ = [
    "DEFAULT_ACTIVATIONS",
    "DEFAULT_INITS",
    "Cell",
    "Outcome",
    "Progress",
    "SweepGrid",
    "SweepSummary",
    "default_jobs",
    "run_cell",
    "run_sweep",
]


@dataclass
class SweepSummary:
    """What a sweep did: counts and wall time."""

    run_id: int
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else math.nan
        return (
            f"sweep run {self.run_id}: {self.done} cells done, {self.skipped} skipped (resume), "
            f"{self.failed} failed, of {self.total}, in {self.seconds:.1f} s ({rate:.2f} cells/s)"
        )


class Progress:
    """Progress on stderr: a one-line bar on a terminal; in a log (CI, a pipe) a plain line
    every ``every`` seconds and at the end, so long runs are never silent. ``enabled=False``
    is silent (``--quiet``); ``True`` forces the bar.

    The ETA is the remaining cells times the median of recent per-cell times: the first cell
    pays for warm-up (imports, allocator, thread pools), and a mean over it once promised
    1172 s for a run that took 303 s. Cells that land together (a stacked network's cells,
    within ``BURST_S`` of each other) are one arrival whose time is shared among them, so
    the 20 cells of a stack do not read as 19 cells of no time at all.
    """

    RECENT = 20  # per-cell times the ETA looks at
    BURST_S = 0.005  # cells landing closer than this together came from one stack

    def __init__(
        self,
        total: int,
        stream: TextIO = sys.stderr,
        enabled: bool | None = None,
        every: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
        unit: str = "cells",
    ):
        self.total = total
        self.unit = unit  # what is counted: cells, or the low-precision pass's networks
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.plain = enabled is None and not self.enabled
        self.every = every
        self.clock = clock
        self.start = self.last = self.last_line = clock()
        self.count = 0
        self.cell_seconds: list[float] = []  # per arrival: its time over its cells
        self._arrival = (0.0, 0)  # the latest arrival: (seconds, cells)

    def eta(self) -> float:
        """Seconds left, from the median of recent cell times (warm-up excluded)."""
        times = self.cell_seconds[1:] if len(self.cell_seconds) > 1 else self.cell_seconds
        if not times:
            return math.inf
        return (self.total - self.count) * statistics.median(times[-self.RECENT :])

    def advance(self, label: str = "") -> None:
        now = self.clock()
        gap = now - self.last
        seconds, cells = self._arrival
        if cells and gap < self.BURST_S:  # one more cell of the same arrival
            self._arrival = (seconds, cells + 1)
            self.cell_seconds[-1] = seconds / (cells + 1)
        else:
            self._arrival = (gap, 1)
            self.cell_seconds.append(gap)
        self.last = now
        self.count += 1
        if self.enabled:
            self._bar(label)
        elif self.plain and (now - self.last_line >= self.every or self.count >= self.total):
            self.last_line = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """``sweep: 12/252 cells (5%), 31 s, eta 3 min 36 s``: one plain log line."""
        share = self.count / max(self.total, 1)
        elapsed = self.clock() - self.start
        eta = self.eta()
        left = "done" if self.count >= self.total else f"eta {_duration(eta)}"
        done = f"{self.count}/{self.total} {self.unit} ({share:.0%})"
        return f"sweep: {done}, {_duration(elapsed)}, {left}"

    def _bar(self, label: str) -> None:
        width = 30
        filled = int(width * self.count / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        eta = self.eta()
        self.stream.write(
            f"\r[{bar}] {self.count}/{self.total} eta {_duration(eta)} {label[:40]:<40}"
        )
        if self.count >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def run_sweep(
    grid: SweepGrid,
    store: Store,
    command: Sequence[str] = ("python", "-m", "stability", "sweep"),
    executor: Executor | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    on_cell: Callable[[Cell], None] | None = None,
) -> SweepSummary:
    """Run every cell of ``grid`` (skipping stored ones if ``resume``), writing as it goes.

    ``executor`` computes the cells (default: this process, one after another; see
    ``stability.sweep.executors`` and ``stability.sweep.dask_executor``). Each finished cell
    is committed before the next is awaited: an interruption loses only cells still in
    flight. A cell that raises is recorded as failed with its error.
    """
    executor = InProcessExecutor() if executor is None else executor
    cells = grid.cells()
    if not cells:
        raise StabilityError("the grid has no cells: every list needs at least one value")
    done = store.done_keys() if resume else set()
    todo = [c for c in cells if c.key not in done]
    start = time.perf_counter()
    # Asked first: an executor that cannot run (a Dask scheduler out of reach) fails here,
    # before a run is recorded for work that never started.
    outcomes = executor.run(todo)
    try:
        run_id = store.start_run("sweep", command, grid.device)
    except BaseException:
        if isinstance(outcomes, Generator):
            outcomes.close()
        raise
    summary = SweepSummary(run_id=run_id, total=len(cells), skipped=len(cells) - len(todo))
    progress = progress or Progress(len(todo))
    try:
        for cell, outcome in outcomes:
            _record(store, summary, cell, outcome)
            if on_cell is not None:
                on_cell(cell)
            progress.advance(f"{cell.config.activation}/{cell.config.init}/{cell.config.dtype}")
    finally:
        if isinstance(outcomes, Generator):  # cancel what is queued now, not at garbage time
            outcomes.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _record(store: Store, summary: SweepSummary, cell: Cell, outcome: Outcome) -> None:
    """Commit one cell's rows, or its failure, and count it."""
    if isinstance(outcome, BaseException):
        summary.failed += 1
        message = f"{type(outcome).__name__}: {outcome}"
        summary.failures.append(f"{cell.key}: {message}")
        store.write_failed_cell(summary.run_id, cell.key, message)
    else:
        rows, seconds = outcome
        store.write_cell(summary.run_id, cell.key, rows, seconds)
        summary.done += 1
