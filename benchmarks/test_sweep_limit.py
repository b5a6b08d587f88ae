"""The sweep against its physical limit, the peer command and the per-cell path (issue 27).

One process times, round after round in a rotating order (the neighbours' load falls on
every side alike), on the benchmarks' grid (5 activations x 4 inits x 2 seeds, float32;
depth 50, width 256, batch 256, ``--quick`` depth 10, width 128, batch 128):

- **the limit**: a GEMM-only replay of the sweep's exact matmuls, stack by stack as
  ``VectorisedExecutor`` plans them: per layer the forward ``bmm`` and both backward ones
  (input and weight gradients), into preallocated outputs, no statistics, no activation
  (``gemm_replay.py``); for ``jobs`` 1 on one thread, for ``jobs`` > 1 on ``jobs``
  single-thread workers at once, each with its share of the stacks (the cores share caches
  and memory as the sweep's workers do); the one-thread replay's time divided by ``jobs``,
  which assumes they share nothing, is recorded beside it (``limit_ratio_ideal_j2``);
- **the sweep's compute**, without start-up: ``VectorisedExecutor(jobs)`` over every cell
  (draws, stacked probe, statistics, theory, band and rows; not the store's writes); for
  ``jobs`` > 1 on a kept pool (``keep_workers``: its workers' start, first page faults
  and weight draws paid in the warm-up, as for a caller running several sweeps), and on
  a fresh pool per run as well (``sweep_fresh_j2``: what one command's pool costs);
- **the peer's compute**: ``sweep_peer.peer_cell`` over every cell;
- **the commands**, start-up included: ``python -m stability sweep --jobs J`` (a fresh store
  each time) against ``python benchmarks/sweep_peer.py``, both at torch's default threads;
- **stacking at small widths** (32 and 64, depth 50, batch 64, where per-op overhead
  dominates): the stacked executor against the per-cell path, one job.

The goals (issue 27), recorded with every round's ratio, not asserted (a shared machine's
ratio is data for the report): compute >= 0.8 of the limit; the command >= 1.5x the peer
command; both for ``--jobs 1`` and ``--jobs 2``; stacking >= 5x per cell at width 32-64.
The replay's inputs are normal floats: the sweep's own values run into float32 subnormals
in its vanishing configs (torch_default), whose GEMMs are then slower than the replay's.
"""

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from gemm_replay import BUDGET, ConcurrentReplay, replay
from sweep_peer import ACTIVATIONS, INITS, SEEDS, peer_cell

from stability.measure.interleave import RoundRunner
from stability.measure.timer import Timer
from stability.sweep.cells import Cell, SweepGrid
from stability.sweep.vectorised import VectorisedExecutor, run_stack

ROOT = Path(__file__).resolve().parents[1]
FULL = (50, 256, 256)  # depth, width, batch
QUICK = (10, 128, 128)
SMALL = ((50, 32, 64), (50, 64, 64))  # depth, width, batch: per-op overhead dominates
LIMIT_GOAL = 0.8
COMMAND_GOAL = 1.5
STACKING_GOAL = 5.0
JOBS = (1, 2)


def grid(depth: int, width: int, batch: int) -> list[Cell]:
    cells = SweepGrid(ACTIVATIONS, INITS, (depth,), (width,), ("float32",), SEEDS, (batch,))
    return cells.cells()


def sweep(executor: VectorisedExecutor, cells: Sequence[Cell]) -> Callable[[], object]:
    return lambda: list(executor.run(cells))


def per_cell(cells: Sequence[Cell]) -> Callable[[], object]:
    return lambda: [run_stack([c]) for c in cells]


def peer(cells: Sequence[Cell]) -> Callable[[], object]:
    return lambda: [peer_cell(c.config, c.batch) for c in cells]


def command(argv: list[str]) -> Callable[[], object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:  # a fresh store: nothing to resume
            args = [a.replace("{tmp}", tmp) for a in argv]
            subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)

    return run


def sweep_command(depth: int, width: int, batch: int, jobs: int) -> Callable[[], object]:
    return command(
        [sys.executable, "-m", "stability", "sweep", "--activation", ",".join(ACTIVATIONS),
         "--init", ",".join(INITS), "--seeds", ",".join(map(str, SEEDS)),
         "--depth", str(depth), "--width", str(width), "--batch", str(batch),
         "--dtype", "float32", "--jobs", str(jobs), "--quiet",
         "--db", "{tmp}/s.db", "--out", "{tmp}/s.csv"]
    )  # fmt: skip


def peer_command(depth: int, width: int, batch: int) -> Callable[[], object]:
    script = str(ROOT / "benchmarks" / "sweep_peer.py")
    return command([sys.executable, script, str(depth), str(width), str(batch)])


Blocks = dict[str, Callable[[], object]]


def rotated(blocks: Blocks, rounds: int, first: str, runner: RoundRunner) -> dict[str, list[float]]:
    """Seconds per round of each block; ``first``'s rounds through ``runner`` (pytest-
    benchmark's JSON), the others in its untimed hook, in an order that rotates per round."""
    others = [k for k in blocks if k != first]
    out: dict[str, list[float]] = {k: [] for k in blocks}
    done = [0]

    def before() -> None:
        shift = done[0] % len(others)
        for name in others[shift:] + others[:shift]:
            start = time.perf_counter()
            blocks[name]()
            out[name].append(time.perf_counter() - start)
        done[0] += 1

    out[first] = list(
        runner(Timer(blocks[first], "cpu", warmup=0, iterations=1).block, rounds, before)
    )
    return out


def ratio(num: list[float], den: list[float]) -> tuple[float, list[float]]:
    """Median of the per-round ratios ``num / den`` (time ratios: a speed ratio inverted)."""
    per_round = [n / d for n, d in zip(num, den, strict=True)]
    return statistics.median(per_round), per_round


def test_sweep_against_its_limit(
    request: pytest.FixtureRequest, benchmark: object, threads: int, pedantic: RoundRunner
) -> None:
    with contextlib.ExitStack() as pools:
        measure(request, benchmark, threads, pedantic, pools)


def measure(
    request: pytest.FixtureRequest,
    benchmark: object,
    threads: int,
    pedantic: RoundRunner,
    pools: contextlib.ExitStack,
) -> None:
    quick = bool(request.config.getoption("quick"))
    depth, width, batch = QUICK if quick else FULL
    rounds = 5  # the median of five per-round ratios stands two disturbed rounds
    cells = grid(depth, width, batch)
    blocks: Blocks = {}
    for jobs in JOBS:
        kept = pools.enter_context(VectorisedExecutor(jobs, BUDGET, keep_workers=True))
        blocks[f"sweep_j{jobs}"] = sweep(kept, cells)
        if jobs > 1:
            blocks[f"sweep_fresh_j{jobs}"] = sweep(VectorisedExecutor(jobs, BUDGET), cells)
        blocks[f"replay_j{jobs}"] = replay(cells, jobs)
        if jobs > 1:  # the same GEMMs on ``jobs`` workers at once: the limit as measured
            blocks[f"replay_concurrent_j{jobs}"] = pools.enter_context(
                ConcurrentReplay(cells, jobs)
            )
        blocks[f"sweep_command_j{jobs}"] = sweep_command(depth, width, batch, jobs)
    blocks["peer"] = peer(cells)
    blocks["peer_command"] = peer_command(depth, width, batch)
    small = {w: grid(d, w, b) for d, w, b in SMALL}
    for w, small_cells in small.items():
        blocks[f"stacked_w{w}"] = sweep(VectorisedExecutor(1, BUDGET), small_cells)
        blocks[f"per_cell_w{w}"] = per_cell(small_cells)
    for name in blocks:  # warm-up: caches (theory, band), first-touch pages, the pool's fork
        if "command" not in name:
            blocks[name]()
    s = rotated(blocks, rounds, "sweep_j1", pedantic)
    info: dict[str, object] = {"depth": depth, "width": width, "batch_size": batch,
                               "cells": len(cells), "rounds": rounds, "threads": threads,
                               "device": "cpu", "dtype": "float32", "precision_mode": "native",
                               "torch_version": torch.__version__, "iterations": 1}  # fmt: skip
    for jobs in JOBS:  # jobs single-thread workers: jobs cores at one core's GEMM speed
        s[f"replay_j{jobs}"] = [t / jobs for t in s[f"replay_j{jobs}"]]
        # jobs 1: the replay itself; jobs > 1: the workers' replay side by side (the
        # halved one-thread replay, which assumes the cores share nothing, is kept too)
        limit_key = "replay_j1" if jobs == 1 else f"replay_concurrent_j{jobs}"
        limit, limit_rounds = ratio(s[limit_key], s[f"sweep_j{jobs}"])
        if jobs > 1:
            ideal, ideal_rounds = ratio(s[f"replay_j{jobs}"], s[f"sweep_j{jobs}"])
            info |= {f"limit_ratio_ideal_j{jobs}": ideal,
                     f"limit_ratio_ideal_rounds_j{jobs}": ideal_rounds,
                     f"replay_scaling_j{jobs}": ratio(s[f"replay_j{jobs}"],
                                                      s[limit_key])[0]}  # fmt: skip
        cmd, cmd_rounds = ratio(s["peer_command"], s[f"sweep_command_j{jobs}"])
        compute, _ = ratio(s["peer"], s[f"sweep_j{jobs}"])
        if f"sweep_fresh_j{jobs}" in s:
            fresh, fresh_rounds = ratio(s[limit_key], s[f"sweep_fresh_j{jobs}"])
            info |= {f"limit_ratio_fresh_pool_j{jobs}": fresh,
                     f"limit_ratio_fresh_pool_rounds_j{jobs}": fresh_rounds}  # fmt: skip
        info |= {
            f"limit_ratio_j{jobs}": limit, f"limit_ratio_rounds_j{jobs}": limit_rounds,
            f"limit_goal_met_j{jobs}": limit >= LIMIT_GOAL,
            f"command_speedup_j{jobs}": cmd, f"command_speedup_rounds_j{jobs}": cmd_rounds,
            f"command_goal_met_j{jobs}": cmd >= COMMAND_GOAL,
            f"compute_speedup_over_peer_j{jobs}": compute,
        }  # fmt: skip
    for w in small:
        speedup, per_round = ratio(s[f"per_cell_w{w}"], s[f"stacked_w{w}"])
        info |= {f"stacking_speedup_w{w}": speedup, f"stacking_speedup_rounds_w{w}": per_round,
                 f"stacking_goal_met_w{w}": speedup >= STACKING_GOAL}  # fmt: skip
    info |= {"goals": {"limit": LIMIT_GOAL, "command": COMMAND_GOAL, "stacking": STACKING_GOAL}}
    info |= {f"seconds_{k}": v for k, v in s.items()}
    median = statistics.median(s["sweep_j1"])
    info |= {"median_s": median, "samples_per_s": len(cells) * batch / median,
             "efficiency": info["limit_ratio_j1"]}  # fmt: skip
    benchmark.extra_info.update(info)  # type: ignore[attr-defined]
    width_note = ", ".join(f"w{w} {info[f'stacking_speedup_w{w}']:.2f}x" for w in small)
    lines = [
        f"jobs {j}: compute/limit {info[f'limit_ratio_j{j}']:.2f} (goal {LIMIT_GOAL}"
        + (
            f"; fresh pool {info[f'limit_ratio_fresh_pool_j{j}']:.2f}; against the halved "
            f"one-thread replay {info[f'limit_ratio_ideal_j{j}']:.2f}"
            if j > 1
            else ""
        )
        + f"), command {info[f'command_speedup_j{j}']:.2f}x the peer's (goal {COMMAND_GOAL}x)"
        for j in JOBS
    ]
    print("", *lines, f"stacking over per-cell: {width_note} (goal {STACKING_GOAL}x)", sep="\n")
    assert all(min(v) > 0 for v in s.values())
