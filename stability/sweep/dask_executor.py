"""Run sweep cells on a Dask cluster: workers compute rows, only the client writes the store.

``DaskExecutor`` implements ``stability.sweep.executors.Executor``: the caller of
``run_sweep`` passes one to run the cells on Dask. Dask (``dask.distributed``) is an optional
extra, imported only when such an executor is made. Each cell is one Dask task; its rows
travel back to the client, which commits the cell in its own transaction before awaiting the
next, exactly as with the local process pool. So a worker that dies loses at most the cells
it was running: the scheduler reruns them elsewhere (at most
``distributed.scheduler.allowed-failures`` deaths per cell, then the cell is recorded as
failed with ``KilledWorker``), and a cell that raises is retried ``retries`` times, then
recorded as failed with its error. If the client itself dies, every committed cell stays in
the store and ``--resume`` finishes the rest.
"""

import hashlib
import importlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import torch

from stability.errors import StabilityError
from stability.results.environment import environment
from stability.sweep.cells import Cell
from stability.sweep.executors import Outcome, Rows, init_worker, timed_cell

if TYPE_CHECKING:
    from distributed import Client

INSTALL_HINT = "pip install 'stability[dask]'"
LOCAL = "local"
DEFAULT_RETRIES = 2  # retries of a cell that raised; worker deaths are counted by the scheduler
CONNECT_TIMEOUT_S = 10.0
WORKER_TIMEOUT_S = 120.0  # an empty or autoscaling cluster gets this long to offer a worker


def import_distributed() -> ModuleType:
    """``distributed``, or a StabilityError naming the extra that provides it."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise StabilityError(
            f"--scheduler needs dask.distributed, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None


def task_prefix(cell: Cell) -> str:
    """The start of a cell's Dask key: deterministic, so logs and plugins can name the cell."""
    digest = hashlib.sha1(cell.key.encode(), usedforsecurity=False).hexdigest()[:20]
    return f"stability-cell-{digest}"


def run_cell_on_worker(cell: Cell) -> tuple[Rows, float]:
    """The task: one torch thread per Dask thread, like the local pool, then probe the cell."""
    init_worker()
    return timed_cell(cell)


def worker_versions() -> dict[str, str]:
    """What a worker has installed; rows are only comparable when these match the client's."""
    return dict(environment(("stability", "torch")))


def worker_has_cuda() -> bool:
    """Whether a worker can run ``device='cuda'`` cells (the client itself may have no GPU)."""
    return torch.cuda.is_available()


def check_scheduler(scheduler: "str | Client", workers: int) -> None:
    """Refuse, before any work, a scheduler that is not an address, ``'local'`` or a Client,
    and a local cluster without workers."""
    if isinstance(scheduler, import_distributed().Client):
        return
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise StabilityError(
            f"scheduler must be an address like 'tcp://host:8786', {LOCAL!r}, or a "
            f"distributed.Client; got {scheduler!r}"
        )
    if scheduler == LOCAL and workers < 1:
        raise StabilityError(f"a local Dask cluster needs >= 1 worker, got {workers}")


@contextmanager
def connect(scheduler: "str | Client", workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler``: an address, ``'local'`` or a Client.

    ``'local'`` starts ``workers`` worker processes with one thread each and tears them down
    on exit; a Client passed in is used as is and left open (its owner closes it).
    """
    distributed = import_distributed()
    check_scheduler(scheduler, workers)
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler == LOCAL:
        # Each worker holds only the cell it runs, so a dying worker takes no queued cells.
        saturation = {"distributed.scheduler.worker-saturation": 1.0}
        with importlib.import_module("dask").config.set(saturation):
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # the scheduler's HTTP routes on a free port, not 8787 (another cluster's)
                scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
            )
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, ValueError, TypeError) as exc:
        raise StabilityError(f"cannot reach Dask scheduler {scheduler!r}: {exc}") from None
    with client:
        yield client


def check_workers(client: Any, needs_cuda: bool = False, timeout: float = WORKER_TIMEOUT_S) -> None:
    """Fail before any work if there are no workers, they run another stability/torch, or
    the grid wants CUDA and a worker has none.

    ``client`` is a ``distributed.Client``, typed loosely so mypy gives the same verdict
    with and without the dask extra installed.
    """
    address = str(client.scheduler_info().get("address", "?"))
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise StabilityError(
            f"no Dask worker joined scheduler {address!r} within "
            f"{timeout:.0f} s; start one with: dask worker {address}"
        ) from None
    try:
        found: dict[str, dict[str, str]] = client.run(worker_versions)
    except Exception as exc:  # a worker without stability cannot even unpickle the probe
        raise StabilityError(
            f"Dask workers cannot run stability ({type(exc).__name__}: {exc}); install the "
            "same stability and torch on every worker"
        ) from None
    here = worker_versions()
    for address, theirs in sorted(found.items()):
        if theirs != here:
            raise StabilityError(
                f"Dask worker {address} has {theirs}, the client has {here}; install the same "
                "stability and torch on every worker"
            )
    if needs_cuda:
        without = sorted(a for a, ok in client.run(worker_has_cuda).items() if not ok)
        if without:
            raise StabilityError(
                f"the grid asks for device 'cuda' but Dask workers {without} have no CUDA "
                "device; start those workers on GPU hosts or sweep with --device cpu"
            )


def execute_on_dask(
    cells: Sequence[Cell],
    scheduler: "str | Client",
    workers: int = 2,
    retries: int = DEFAULT_RETRIES,
) -> Iterator[tuple[Cell, Outcome]]:
    """Yield ``(cell, (rows, seconds) | error)`` as cells finish on the cluster.

    Connecting, checking the workers and submitting happen before this returns, so a
    cluster that cannot run the cells fails here, before the caller records a run. The
    caller commits each cell before asking for the next; a future is released right after,
    so finished rows do not pile up in the workers' memory.
    """
    stream = _stream(cells, scheduler, workers, retries)
    next(stream)  # up to the first yield: connected, checked, submitted (or raised)
    return cast(Iterator[tuple[Cell, Outcome]], stream)


def _stream(
    cells: Sequence[Cell], scheduler: "str | Client", workers: int, retries: int
) -> Iterator[tuple[Cell, Outcome] | None]:
    """``execute_on_dask``'s generator: yields None once when ready, then the outcomes."""
    distributed = import_distributed()
    # A fresh token per sweep: a resumed sweep must never meet the cancelled keys of the
    # run it replaces, which the scheduler may still be forgetting.
    token = uuid.uuid4().hex[:8]
    by_key: dict[str, list[Cell]] = {}
    for cell in cells:  # a grid may list a cell twice: run it once, report it as often
        by_key.setdefault(f"{task_prefix(cell)}-{token}", []).append(cell)
    if not by_key:
        yield None
        return
    with connect(scheduler, workers) as client:
        check_workers(client, needs_cuda=any(c.config.device.startswith("cuda") for c in cells))
        keys = list(by_key)
        futures = client.map(
            run_cell_on_worker,
            [by_key[k][0] for k in keys],
            key=keys,
            retries=retries,
            pure=False,
        )
        pending = {f.key: f for f in futures}
        cancelled = distributed.client.FutureCancelledError
        try:
            yield None
            for fut in distributed.as_completed(futures):
                outcome: Outcome
                try:  # blocks while a result lost with its worker is recomputed
                    outcome = fut.result()
                except cancelled:  # the scheduler or our connection is gone, not the cell
                    raise StabilityError(
                        f"Dask cancelled cell task {fut.key}; completed cells are kept in the "
                        "store, rerun with --resume"
                    ) from None
                except Exception as exc:  # the cell's own error, after its retries
                    outcome = exc
                for cell in by_key[fut.key]:
                    yield cell, outcome
                pending.pop(fut.key).release()
        finally:
            for fut in pending.values():
                fut.cancel()


@dataclass(frozen=True)
class DaskExecutor:
    """Cells on a Dask cluster: ``scheduler`` is an address, ``'local'`` (a LocalCluster of
    ``workers`` one-thread processes) or a ``distributed.Client`` (used as is, left open).

    Made before any work: a missing extra or a bad scheduler fails here, not mid-run.
    """

    scheduler: "str | Client"
    workers: int = 2
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        check_scheduler(self.scheduler, self.workers)

    def run(self, cells: Sequence[Cell]) -> Iterator[tuple[Cell, Outcome]]:
        return execute_on_dask(cells, self.scheduler, self.workers, self.retries)
