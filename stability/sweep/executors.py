"""Executors: where a sweep's cells are computed. The caller of ``run_sweep`` picks one.

An executor takes the cells to run and yields ``(cell, outcome)`` as each finishes, in
any order; the outcome is ``(rows, seconds)`` or the exception the cell raised. It never
touches the store: the run loop commits each cell before asking for the next, so an
executor that is interrupted (closed mid-iteration) loses only the cells in flight.

Workers run ``init_worker`` once, then ``timed_cell`` per cell. Both are public so that
every executor (this module's, the Dask one, a test's) runs a cell the same way. The local
pool's workers also die with the process that started them (``die_with_parent``): a parent
killed with ``kill -9`` runs no cleanup, and its idle workers would wait on its pipe forever.
"""

import concurrent.futures
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from stability.core.allocator import keep_freed_memory
from stability.errors import StabilityError
from stability.sweep.cells import Cell, run_cell

Rows = list[dict[str, Any]]
Outcome = tuple[Rows, float] | BaseException


class Executor(Protocol):
    """Computes cells and yields each with its outcome as it finishes."""

    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        """Yield ``(cell, (rows, seconds) | error)`` once per cell; a cell's error is yielded,
        not raised, so one bad cell does not stop the sweep."""
        ...


def init_worker() -> None:
    """Once per worker process: one torch thread, since N processes x 1 thread beats
    oversubscribing the cores; freed memory kept for reuse (``core/allocator.py``)."""
    torch.set_num_threads(1)
    keep_freed_memory()


PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_PERIOD_S = 0.5


def die_with_parent(parent: int | None) -> None:
    """In a worker: end this process when the process that forked it dies.

    On Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon
    thread polls ``os.getppid()``. ``parent`` is the pid the worker should find as its
    parent (None when a fork server stands between them): if the parent already died before
    this ran, the worker was re-parented and leaves at once.
    """
    ppid = os.getppid()
    if parent is not None and ppid != parent:
        os._exit(1)
    if sys.platform.startswith("linux") and _parent_death_signal(signal.SIGKILL):
        if os.getppid() != ppid:  # died between the two calls: no signal will come
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True, name="parent-watch").start()


def _parent_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(ppid: int) -> None:
    while os.getppid() == ppid:
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)


def init_pool_worker(parent: int | None) -> None:
    """Once per local pool worker: ``init_worker``, and die with the parent."""
    die_with_parent(parent)
    init_worker()


def timed_cell(cell: Cell) -> tuple[Rows, float]:
    """What a worker runs per cell: its rows and the wall time they took."""
    start = time.perf_counter()
    rows = run_cell(cell)
    return rows, time.perf_counter() - start


def worker_pool(jobs: int, tasks: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of at most ``jobs`` workers (no more than ``tasks``: no idle workers, see
    stability.cli.limits), each ignoring Ctrl-C and dying with this process."""
    context = multiprocessing.get_context()
    # Under a fork server the workers' parent is that server, not this process.
    parent = os.getpid() if context.get_start_method() in ("fork", "spawn") else None
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=min(jobs, tasks),
        mp_context=context,
        initializer=init_pool_worker,
        initargs=(parent,),
    )


class InProcessExecutor:
    """Cells one after another in this process, with torch's own thread count (``--jobs 1``)."""

    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        keep_freed_memory()
        for cell in cells:
            try:
                yield cell, timed_cell(cell)
            except Exception as exc:  # recorded per cell, the sweep goes on
                yield cell, exc


@dataclass(frozen=True)
class PoolExecutor:
    """Cells on ``jobs`` local worker processes of one thread each (``--jobs N``, N > 1)."""

    jobs: int

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise StabilityError(f"jobs must be >= 1, got {self.jobs}")

    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        if not cells:
            return
        with worker_pool(self.jobs, len(cells)) as pool:
            futures = {pool.submit(timed_cell, c): c for c in cells}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    error = fut.exception()
                    yield futures[fut], (error if error is not None else fut.result())
            finally:  # closed early (interrupted): queued cells never start
                for fut in futures:
                    fut.cancel()


def local_executor(jobs: int) -> InProcessExecutor | PoolExecutor:
    """``--jobs``'s meaning on this machine: 1 runs in this process, more in a process pool."""
    if jobs < 1:
        raise StabilityError(f"jobs must be >= 1, got {jobs}")
    return InProcessExecutor() if jobs == 1 else PoolExecutor(jobs)


def default_jobs() -> int:
    """One process per core, at most 4: cells are small and memory is shared."""
    return max(1, min(4, os.cpu_count() or 1))
