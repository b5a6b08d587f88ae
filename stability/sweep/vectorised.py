"""The vectorised executor: cells of one shape run as one stacked network (``--jobs`` as ever).

``VectorisedExecutor`` is an ``Executor`` like the others: it yields ``(cell, outcome)``
once per cell and never touches the store, so the run loop still commits one cell at a
time, ``--resume`` still skips cells by key, and progress still counts cells. The stacks
come from ``plan_stacks`` (shape and memory budget); each runs in this process
(``jobs == 1``) or on a pool worker of one thread (``jobs > 1``), whole.

A stack that fails is split back to cells, so one failure never costs its neighbours their
rows: out of memory, it is halved and each half tried again; any other error, each of its
cells runs on the per-cell path (``run_cell``) and is recorded done or failed on its own. A
stack of one cell takes the per-cell path directly (stacking it gains nothing), and so do
cells whose biases are drawn (``bias_var > 0``: the stacked layers add no biases).
"""

import concurrent.futures
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from types import TracebackType

import torch

from stability.core.allocator import keep_freed_memory
from stability.core.stacked import probe_stack, stackable
from stability.core.weight_cache import WeightCache
from stability.errors import StabilityError
from stability.sweep.cells import Cell, cell_rows, warm_bands
from stability.sweep.executors import Outcome, timed_cell, worker_pool
from stability.sweep.stacks import plan_stacks

Landed = list[tuple[Cell, Outcome]]
LOG = logging.getLogger(__name__)
CACHE_SHARE = 0.25  # of a worker's stack budget, for weights drawn by its earlier stacks


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _per_cell(cells: Sequence[Cell]) -> Landed:
    landed: Landed = []
    for cell in cells:
        try:
            landed.append((cell, timed_cell(cell)))
        except Exception as exc:  # recorded per cell, the sweep goes on
            landed.append((cell, exc))
    return landed


def process_weight_cache(capacity: int) -> WeightCache:
    """This process's cache of drawn weights (a pool worker has its own), ``capacity``
    bytes from now on."""
    _CACHE.capacity = capacity
    return _CACHE


_CACHE = WeightCache(0)


def run_stack(cells: Sequence[Cell], cache_bytes: int = 0) -> Landed:
    """Every cell of one stack with its outcome; a cell's seconds are its share of the stack.
    With ``cache_bytes``, weights drawn for this process's earlier stacks are reused.

    Failure is split back to cells (halves when out of memory, else the per-cell path)."""
    if len(cells) == 1 or not stackable(cells[0].config):
        return _per_cell(cells)
    cache = process_weight_cache(cache_bytes) if cache_bytes > 0 else None
    start = time.perf_counter()
    try:
        stats = probe_stack([c.config for c in cells], cells[0].batch, cache)
        warm_bands(cells)
        rows = [cell_rows(c, s) for c, s in zip(cells, stats, strict=True)]
    except Exception as exc:
        if not _out_of_memory(exc):
            _say_fell_back(cells, exc)
            return _per_cell(cells)
        if cache is not None:  # the room the cache holds may be what the stack lacked
            cache.clear()
        half = len(cells) // 2
        return run_stack(cells[:half], cache_bytes) + run_stack(cells[half:], cache_bytes)
    seconds = (time.perf_counter() - start) / len(cells)
    return [(c, (r, seconds)) for c, r in zip(cells, rows, strict=True)]


def _say_fell_back(cells: Sequence[Cell], exc: Exception) -> None:
    """A stack that raised is not hidden: its cells still land, one at a time, but the
    fast path is broken for this shape and whoever runs the sweep should know why (on
    stderr, from a pool worker too: logging's last-resort handler)."""
    c = cells[0].config
    LOG.warning(
        "stability: a stack of %d cells (%s, depth %d, width %d, %s, batch %d) raised "
        "%s: %s; its cells run one at a time instead (slower; rows equal to float rounding)",
        len(cells), c.activation, c.depth, c.width, c.dtype, cells[0].batch,
        type(exc).__name__, exc,
    )  # fmt: skip


@dataclass(frozen=True)
class VectorisedExecutor:
    """Stacks of cells on ``jobs`` workers (1: this process), each stack within
    ``budget`` bytes; the budget is shared by the workers. Each worker keeps the weights
    it drew, up to ``CACHE_SHARE`` of its budget, for later stacks with the same cells'
    weights (``core/weight_cache.py``).

    With ``keep_workers`` (``jobs`` > 1) the pool outlives a ``run``: a caller that runs
    several sweeps (the report, a benchmark's rounds) pays the workers' start, and their
    first stacks' page faults, once. ``close()`` (or ``with``) ends it; a broken pool (a
    worker killed) is replaced at the next run. Without it, each run has its own pool."""

    jobs: int
    budget: int
    keep_workers: bool = False
    _kept: list[concurrent.futures.ProcessPoolExecutor] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise StabilityError(f"jobs must be >= 1, got {self.jobs}")
        if self.budget <= 0:
            raise StabilityError(f"memory budget must be positive, got {self.budget} bytes")

    def __enter__(self) -> "VectorisedExecutor":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the kept pool, if any (its queued stacks cancelled, running ones awaited)."""
        while self._kept:
            self._kept.pop().shutdown(wait=True, cancel_futures=True)

    def stacks(self, cells: Sequence[Cell]) -> list[list[Cell]]:
        """The plan: each worker's stacks fit its share of the budget."""
        return plan_stacks(cells, max(1, self.budget // self.jobs), self.jobs)

    @property
    def cache_bytes(self) -> int:
        return int(max(1, self.budget // self.jobs) * CACHE_SHARE)

    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        stacks = self.stacks(cells)
        if not stacks:
            return
        keep_freed_memory()
        if self.jobs == 1:
            for stack in stacks:
                yield from run_stack(stack, self.cache_bytes)
        elif not self.keep_workers:
            with worker_pool(self.jobs, len(stacks)) as pool:
                yield from self._on(pool, stacks)
        else:
            if not self._kept:
                self._kept.append(worker_pool(self.jobs, self.jobs))
            yield from self._on(self._kept[0], stacks)

    def _on(
        self, pool: concurrent.futures.ProcessPoolExecutor, stacks: list[list[Cell]]
    ) -> Iterator[tuple[Cell, Outcome]]:
        futures = {pool.submit(run_stack, s, self.cache_bytes): s for s in stacks}
        try:
            for fut in concurrent.futures.as_completed(futures):
                error = fut.exception()
                if error is None:
                    yield from fut.result()
                else:  # the worker itself died: every cell of its stack failed with it
                    if isinstance(error, BrokenProcessPool) and pool in self._kept:
                        self._kept.remove(pool)  # the next run starts a new one
                        pool.shutdown(wait=False, cancel_futures=True)
                    yield from ((c, error) for c in futures[fut])
        finally:  # closed early (interrupted): queued stacks never start
            for fut in futures:
                fut.cancel()
