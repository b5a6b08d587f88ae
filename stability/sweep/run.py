"""Sweeps: expand a grid into cells, run each cell's probe, stream rows into the store.

A cell is one (config, batch): one network, one seed, one probe pass, ``depth`` rows. Cells
are independent, so they run in any order, in worker processes, and are skipped on
``--resume`` by their key.
"""

import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import torch

from stability.core.config import MLPConfig, check_batch
from stability.core.model import build_mlp, input_batch
from stability.core.probe import probe
from stability.core.theory import predict
from stability.results.store import Store

if TYPE_CHECKING:
    from distributed import Client

DEFAULT_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "scaled_logistic", "selu")
DEFAULT_INITS = (
    "normal",
    "standard_normal",
    "torch_default",
    "xavier_normal",
    "kaiming_normal",
    "lecun_normal",
    "orthogonal",
)


@dataclass(frozen=True)
class Cell:
    """One unit of sweep work: a network config and a probe batch size."""

    config: MLPConfig
    batch: int

    @property
    def key(self) -> str:
        """Stable identity for resume: every field that changes the result."""
        return json.dumps({**self.config.as_dict(), "batch": self.batch}, sort_keys=True)


@dataclass(frozen=True)
class SweepGrid:
    """The cartesian product the sweep runs; defaults tell the notes' story."""

    activations: Sequence[str] = DEFAULT_ACTIVATIONS
    inits: Sequence[str] = DEFAULT_INITS
    depths: Sequence[int] = (50,)
    widths: Sequence[int] = (256,)
    dtypes: Sequence[str] = ("float32", "float16")
    seeds: Sequence[int] = (0, 1, 2)
    batches: Sequence[int] = (256,)
    device: str = "cpu"
    bias: bool = True

    def cells(self) -> list[Cell]:
        """Every cell, validated up front so a bad name fails before any work."""
        for b in self.batches:
            check_batch(b)
        product = itertools.product(
            self.activations,
            self.inits,
            self.dtypes,
            self.depths,
            self.widths,
            self.seeds,
            self.batches,
        )
        return [
            Cell(MLPConfig(d, w, a, i, dt, self.bias, s, self.device), b)
            for a, i, dt, d, w, s, b in product
        ]


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Probe one cell: one tidy row per layer, measured beside the mean-field prediction."""
    config = cell.config
    model = build_mlp(config)
    stats = probe(model, input_batch(config, cell.batch))
    theory = predict(config, cell.batch)
    mode = config.precision.mode
    base = {**config.as_dict(), "batch": cell.batch, "precision_mode": mode, "cell_key": cell.key}
    return [
        {
            **base,
            **s.as_dict(),
            "theory_preact_var": t.preact_var,
            "theory_act_var": t.act_var,
            "theory_grad_var": t.grad_var,
            "theory_weight_grad_var": t.weight_grad_var,
        }
        for s, t in zip(stats, theory, strict=True)
    ]


def _worker_init() -> None:
    # Each worker gets one thread: N processes x 1 thread beats oversubscribing 2 cores.
    torch.set_num_threads(1)


def _timed(cell: Cell) -> tuple[list[dict[str, Any]], float]:
    start = time.perf_counter()
    rows = run_cell(cell)
    return rows, time.perf_counter() - start


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
    """A one-line progress bar on a terminal; silent elsewhere (CI logs stay short)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None):
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()
        self.count = 0

    def advance(self, label: str = "") -> None:
        self.count += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else math.inf
        width = 30
        filled = int(width * self.count / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r[{bar}] {self.count}/{self.total} {rate:.1f}/s eta {eta:.0f}s {label[:40]:<40}"
        )
        if self.count >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def run_sweep(
    grid: SweepGrid,
    store: Store,
    command: Sequence[str] = ("python", "-m", "stability", "sweep"),
    jobs: int = 1,
    resume: bool = False,
    progress: Progress | None = None,
    on_cell: Callable[[Cell], None] | None = None,
    scheduler: "str | Client | None" = None,
) -> SweepSummary:
    """Run every cell of ``grid`` (skipping stored ones if ``resume``), writing as it goes.

    Each finished cell is committed before the next is awaited: an interruption loses only
    cells still in flight. A cell that raises is recorded as failed with its error.
    ``scheduler`` (an address, ``'local'`` or a ``distributed.Client``) runs the cells on
    Dask instead of local processes; see ``stability.sweep.dask_executor``.
    """
    cells = grid.cells()
    done = store.done_keys() if resume else set()
    todo = [c for c in cells if c.key not in done]
    run_id = store.start_run("sweep", command, grid.device)
    summary = SweepSummary(run_id=run_id, total=len(cells), skipped=len(cells) - len(todo))
    progress = progress or Progress(len(todo))
    start = time.perf_counter()
    try:
        for cell, outcome in _execute(todo, jobs, scheduler):
            if isinstance(outcome, BaseException):
                summary.failed += 1
                message = f"{type(outcome).__name__}: {outcome}"
                summary.failures.append(f"{cell.key}: {message}")
                store.write_failed_cell(run_id, cell.key, message)
            else:
                rows, seconds = outcome
                store.write_cell(run_id, cell.key, rows, seconds)
                summary.done += 1
            if on_cell is not None:
                on_cell(cell)
            progress.advance(f"{cell.config.activation}/{cell.config.init}/{cell.config.dtype}")
    finally:
        summary.seconds = time.perf_counter() - start
    return summary


Outcome = tuple[list[dict[str, Any]], float] | BaseException


def _execute(
    cells: list[Cell], jobs: int, scheduler: "str | Client | None" = None
) -> Iterator[tuple[Cell, Outcome]]:
    if scheduler is not None:  # imported here: Dask is an optional extra
        from stability.sweep.dask_executor import execute_on_dask

        yield from execute_on_dask(cells, scheduler, workers=jobs)
        return
    if jobs <= 1:
        for cell in cells:
            try:
                yield cell, _timed(cell)
            except Exception as exc:  # recorded per cell, the sweep goes on
                yield cell, exc
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init) as pool:
        futures: dict[Future[tuple[list[dict[str, Any]], float]], Cell] = {
            pool.submit(_timed, c): c for c in cells
        }
        try:
            for fut in as_completed(futures):
                error = fut.exception()
                yield futures[fut], (error if error is not None else fut.result())
        finally:
            for fut in futures:
                fut.cancel()


def default_jobs() -> int:
    """One process per core, at most 4: cells are small and memory is shared."""
    return max(1, min(4, os.cpu_count() or 1))
