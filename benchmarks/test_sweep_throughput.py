"""Sweep throughput: cells per second over a fixed sample of the default sweep grid.

Cells differ by orders of magnitude: a vanishing network (identity or tanh with the notes'
N(0, 0.01^2) init) runs into float32 subnormals, whose arithmetic is ~10x slower on CPU
(about 12 s for one depth-50 cell here, against about 1 s for a Kaiming cell). The full
run samples the whole grid; ``--quick`` samples only default-init (Kaiming) cells.

A round runs the whole sample once; it is timed like every other benchmark (one ``Timer``,
pytest-benchmark's rounds) in alternation with the same-run GEMM, one GEMM block a round.
"""

import time

import pytest
import torch

from stability.measure.calibration import Gemm
from stability.measure.interleave import RoundRunner, efficiency
from stability.measure.steps import train_flops
from stability.measure.timer import Timer
from stability.sweep.cells import SweepGrid, run_cell

QUICK_CELLS = 4
FULL_CELLS = 42


def test_sweep_cells(
    request: pytest.FixtureRequest, benchmark: object, threads: int, pedantic: RoundRunner
) -> None:
    """Cells per second of ``run_cell`` (build, probe, theory) on the default grid."""
    cells = SweepGrid().cells()
    quick = bool(request.config.getoption("quick"))
    if quick:
        cells = [c for c in cells if c.config.init == "kaiming_normal" and c.config.seed == 0]
    count = QUICK_CELLS if quick else FULL_CELLS
    stride = max(1, len(cells) // count)
    sample = cells[::stride][:count]  # spread over activations, inits and dtypes
    batch, width = sample[0].batch, sample[0].config.width

    def run_all() -> None:
        for cell in sample:
            run_cell(cell)

    start = time.perf_counter()
    run_cell(sample[0])  # warm-up: first-call dispatch, quadrature tables
    flops = sum(train_flops(c.config.depth, c.config.width, c.batch) for c in sample)
    rounds = 2 if quick else 3
    timed = Timer(run_all, "cpu", warmup=0, iterations=1)  # a round is seconds long already
    gemm = Gemm(batch, width, torch.float32, "cpu")
    eff = efficiency(timed, flops, Timer(gemm, "cpu"), gemm.flops, rounds, pedantic)
    per_round = eff.step.median
    # median_s/iqr_s mean "per step of batch_size samples" in the results; a round here is
    # ``cells`` such steps, so they are left out (the report derives them from samples_per_s).
    timing = {k: v for k, v in eff.as_dict().items() if k not in ("median_s", "iqr_s")}
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        {
            **timing,
            "batch_size": batch,
            "cells": len(sample),
            "cells_per_s": len(sample) / per_round,
            "samples_per_s": len(sample) * batch / per_round,
            "flops_per_step": flops,
            "device": "cpu",
            "dtype": "mixed",
            "precision_mode": "native+emulated",
            "threads": threads,
            "torch_version": torch.__version__,
            "wall_s": time.perf_counter() - start,
        }
    )
    assert per_round > 0
