"""Sweep throughput: cells per second over a fixed sample of the default sweep grid.

Cells differ by orders of magnitude: a vanishing network (identity or tanh with the notes'
N(0, 0.01^2) init) runs into float32 subnormals, whose arithmetic is ~10x slower on CPU
(about 12 s for one depth-50 cell here, against about 1 s for a Kaiming cell). The full
run samples the whole grid; ``--quick`` samples only default-init (Kaiming) cells.
"""

import time

import pytest
import torch

from stability.measure.bench import calibrate, train_flops
from stability.sweep.run import SweepGrid, run_cell

QUICK_CELLS = 4
FULL_CELLS = 42


def test_sweep_cells(request: pytest.FixtureRequest, benchmark: object, threads: int) -> None:
    """Cells per second of ``run_cell`` (build, probe, theory) on the default grid."""
    cells = SweepGrid().cells()
    quick = bool(request.config.getoption("quick"))
    if quick:
        cells = [c for c in cells if c.config.init == "kaiming_normal" and c.config.seed == 0]
    count = QUICK_CELLS if quick else FULL_CELLS
    stride = max(1, len(cells) // count)
    sample = cells[::stride][:count]  # spread over activations, inits and dtypes
    config = sample[0].config
    before = calibrate(sample[0].batch, config.width, torch.float32, "cpu")

    def run_all() -> None:
        for cell in sample:
            run_cell(cell)

    run_cell(sample[0])  # warm-up: first-call dispatch, quadrature tables
    start = time.perf_counter()
    rounds = 2 if quick else 3
    benchmark.pedantic(run_all, rounds=rounds, iterations=1)  # type: ignore[attr-defined]
    per_round = benchmark.stats.stats.median  # type: ignore[attr-defined]
    after = calibrate(sample[0].batch, config.width, torch.float32, "cpu")
    flops = sum(train_flops(c.config.depth, c.config.width, c.batch) for c in sample)
    gflops = flops / per_round / 1e9
    calib = (before + after) / 2
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {
            "batch_size": sample[0].batch,
            "cells": len(sample),
            "cells_per_s": len(sample) / per_round,
            "samples_per_s": len(sample) * sample[0].batch / per_round,
            "flops_per_step": flops,
            "gflops": gflops,
            "calib_gflops": calib,
            "efficiency": gflops / calib,
            "device": "cpu",
            "dtype": "mixed",
            "precision_mode": "native+emulated",
            "threads": threads,
            "torch_version": torch.__version__,
            "wall_s": time.perf_counter() - start,
        }
    )
    assert per_round > 0
