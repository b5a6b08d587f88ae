"""The sweep's physical limit: its exact GEMMs alone, on one thread or on ``jobs`` workers.

``replay`` holds, per stack of ``VectorisedExecutor(jobs)``'s plan, preallocated weights and
layer tensors, and runs per layer the forward ``bmm`` and both backward ones (input and
weight gradients): no statistics, no activation, nothing allocated while timed.

``ConcurrentReplay`` runs the same GEMMs on ``jobs`` single-thread worker processes at once,
each holding its share of the stacks (every ``jobs``-th, as two workers draw equal stacks
from the pool). Timed alone and halved, the replay assumes the workers' cores share
nothing; run side by side, they share the caches and the memory bus as the sweep's
workers do, so this is the limit ``--jobs 2`` can reach, measured rather than assumed.
"""

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable, Sequence

import torch

from stability.core.allocator import keep_freed_memory
from stability.sweep.cells import Cell
from stability.sweep.vectorised import VectorisedExecutor

BUDGET = 2**30


def replay(cells: Sequence[Cell], jobs: int, share: tuple[int, int] = (0, 1)) -> Callable[[], None]:
    """The GEMMs of ``VectorisedExecutor(jobs)``'s plan (``share = (k, m)``: every m-th
    stack from the k-th), on this process's threads: per stack of S cells and layer,
    ``(S, B, W) @ (S, W, W)^T`` forward, then ``(S, B, W) @ (S, W, W)`` and
    ``(S, W, B) @ (S, B, W)`` backward."""
    work = []
    k, m = share
    for stack in VectorisedExecutor(jobs, BUDGET).stacks(cells)[k::m]:
        c, s = stack[0].config, len(stack)
        b, w, depth = stack[0].batch, c.width, c.depth
        gen = torch.Generator().manual_seed(0)
        weights = torch.randn(depth, s, w, w, generator=gen) / w**0.5
        acts = torch.randn(depth + 1, s, b, w, generator=gen)
        grad_in, grad_w = torch.empty(s, b, w), torch.empty(s, w, w)
        work.append((weights, acts, grad_in, grad_w))

    def run() -> None:
        for weights, acts, grad_in, grad_w in work:
            for i in range(weights.shape[0]):
                torch.bmm(acts[i], weights[i].transpose(1, 2), out=acts[i + 1])
            for i in reversed(range(weights.shape[0])):
                torch.bmm(acts[i + 1], weights[i], out=grad_in)
                torch.bmm(acts[i + 1].transpose(1, 2), acts[i], out=grad_w)

    return run


def _serve(
    conn: multiprocessing.connection.Connection, cells: list[Cell], share: tuple[int, int]
) -> None:
    """A worker: one thread, its share's tensors built and warmed, then one run per 'go'."""
    torch.set_num_threads(1)
    keep_freed_memory()
    run = replay(cells, share[1], share)
    run()  # first touch of every page, before any timed run
    conn.send("ready")
    while conn.recv() == "go":
        run()
        conn.send("done")


class ConcurrentReplay:
    """The replay's stacks split over ``jobs`` worker processes that run at once."""

    def __init__(self, cells: Sequence[Cell], jobs: int) -> None:
        context = multiprocessing.get_context()
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._workers: list[multiprocessing.process.BaseProcess] = []
        for k in range(jobs):
            ours, theirs = context.Pipe()
            worker = context.Process(
                target=_serve, args=(theirs, list(cells), (k, jobs)), daemon=True
            )
            worker.start()
            self._pipes.append(ours)
            self._workers.append(worker)
        for pipe in self._pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a replay worker did not start")

    def __call__(self) -> None:
        """One concurrent run, until the last worker is done (the caller times it)."""
        for pipe in self._pipes:
            pipe.send("go")
        for pipe in self._pipes:
            pipe.recv()

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.send("stop")
        for worker in self._workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()

    def __enter__(self) -> "ConcurrentReplay":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
