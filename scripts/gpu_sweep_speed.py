"""CUDA checks of the stacked sweep: its rows, and its speed against the per-cell path.

Run by ``scripts/gpu_checks.py`` (or alone: ``PYTHONPATH=$PWD python scripts/gpu_sweep_speed.py``)
on a machine with a CUDA build of torch. Each check returns ``(name, ok, line)``:

- the stacked rows equal the per-cell rows on CUDA (relative 1e-4 on the variances and
  means: both run the same kernels, only the reductions' order differs; counts exactly);
- speed: the benchmarks' grid (5 activations x 4 inits x 2 seeds, float32) at depth 50,
  width 256, batch 256, and at width 64 (launch-bound), stacked (``VectorisedExecutor``,
  one job) against the per-cell path (``run_stack`` of one cell: ``run_cell``), timed in
  alternating rounds after a warm-up (theory and band cached, kernels loaded); the goal is
  at least ``SPEEDUP_GOAL``x (issue 27). Both read their rows back to the host, so each
  round ends synchronised.
"""

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from stability.measure.timer import synchronize
from stability.sweep.cells import Cell, SweepGrid
from stability.sweep.vectorised import VectorisedExecutor, run_stack

ACTIVATIONS = ("identity", "relu", "tanh", "scaled_logistic", "selu")
INITS = ("torch_default", "xavier_normal", "kaiming_normal", "lecun_normal")
SHAPES = ((50, 256, 256), (50, 64, 64))  # depth, width, batch
REHEARSAL_SHAPES = ((6, 32, 16),)  # ``checks(..., rehearse=True)``: that it runs, on a CPU
SPEEDUP_GOAL = 20.0
ROUNDS = 3
RTOL = 1e-4
BUDGET = 2**32
EXACT = ("layer", "nonfinite", "cell_key", "batch")


def grid(
    device: str, depth: int, width: int, batch: int, seeds: Sequence[int] = (0, 1)
) -> list[Cell]:
    g = SweepGrid(ACTIVATIONS, INITS, (depth,), (width,), ("float32",), seeds, (batch,), device)
    return g.cells()


def stacked(cells: Sequence[Cell]) -> Callable[[], dict[str, list[dict[str, object]]]]:
    executor = VectorisedExecutor(1, BUDGET)

    def run() -> dict[str, list[dict[str, object]]]:
        out = {}
        for cell, outcome in executor.run(cells):
            assert not isinstance(outcome, BaseException), outcome
            out[cell.key] = outcome[0]
        return out

    return run


def per_cell(cells: Sequence[Cell]) -> Callable[[], dict[str, list[dict[str, object]]]]:
    def run() -> dict[str, list[dict[str, object]]]:
        out = {}
        for cell in cells:
            ((_, outcome),) = run_stack([cell])
            assert not isinstance(outcome, BaseException), outcome
            out[cell.key] = outcome[0]
        return out

    return run


def _worst(a: dict[str, list[dict[str, object]]], b: dict[str, list[dict[str, object]]]) -> float:
    """Largest relative difference over every float figure; inf where an exact one differs."""
    worst = 0.0
    for key, rows in a.items():
        for ra, rb in zip(rows, b[key], strict=True):
            for k, va in ra.items():
                vb = rb[k]
                if k in EXACT or not isinstance(va, float) or not isinstance(vb, float):
                    worst = worst if va == vb else math.inf
                elif math.isnan(va) or math.isnan(vb):
                    worst = worst if math.isnan(va) and math.isnan(vb) else math.inf
                elif va != vb:
                    worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-300))
    return worst


def _rounds(
    a: Callable[[], object], b: Callable[[], object], device: str
) -> tuple[list[float], list[float]]:
    ta: list[float] = []
    tb: list[float] = []
    for i in range(ROUNDS):  # alternating A B, B A, ...: the same load on both sides
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            out.append(time.perf_counter() - start)
    return ta, tb


def checks(device: str, rehearse: bool = False) -> list[tuple[str, bool, str]]:
    """Rows and speed on ``device``; ``rehearse``: the speed at ``REHEARSAL_SHAPES``."""
    out: list[tuple[str, bool, str]] = []
    small = grid(device, 6, 32, 64, seeds=(0,))
    worst = _worst(stacked(small)(), per_cell(small)())
    line = f"worst relative difference {worst:.2g} over {len(small)} cells (<= {RTOL})"
    out.append((f"sweep stacked rows = per-cell rows on {device}", worst <= RTOL, line))
    name_of = torch.cuda.get_device_name() if device.startswith("cuda") else device
    for depth, width, batch in REHEARSAL_SHAPES if rehearse else SHAPES:
        cells = grid(device, depth, width, batch)
        fast, slow = stacked(cells), per_cell(cells)
        fast()  # warm-up: kernels, theory and band caches, the allocator's pool
        slow()
        t_fast, t_slow = _rounds(fast, slow, device)
        speedup = statistics.median(s / f for s, f in zip(t_slow, t_fast, strict=True))
        line = (
            f"{speedup:.1f}x (goal {SPEEDUP_GOAL}x): stacked {statistics.median(t_fast):.3f} s, "
            f"per cell {statistics.median(t_slow):.3f} s for {len(cells)} cells, "
            f"median of {ROUNDS} alternating rounds on {name_of}"
        )
        name = f"sweep stacked vs per-cell d{depth} w{width} b{batch}"
        out.append((name, speedup >= SPEEDUP_GOAL, line))
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_sweep_speed: no CUDA device visible to torch", file=sys.stderr)
        return 2
    results = checks("cuda")
    for name, ok, line in results:
        print(f"{name}: {'ok' if ok else 'FAILED'} ({line})")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
