"""Sweep cells: the unit of work, the grid that expands into them, and what one computes.

A cell is one (config, batch): one network, one seed, one probe pass, ``depth`` rows. Cells
are independent, so any executor may run them in any order, anywhere, and ``--resume``
skips them by their key.
"""

import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stability.core.config import MLPConfig, check_batch
from stability.core.finite_width import no_band, predict_band, predict_bands
from stability.core.model import build_mlp, input_batch
from stability.core.probe import LayerStats, probe
from stability.core.theory import LayerPrediction, predict

BIAS_CAVEAT = (
    "bias_var > 0: no finite-width band (it assumes sigma_b^2 = 0); the mean-field "
    "columns include sigma_b^2"
)
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
    bias_var: float = 0.0  # sigma_b^2; 0 leaves every cell key as it was

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
            Cell(MLPConfig(d, w, a, i, dt, self.bias, s, self.device, self.bias_var), b)
            for a, i, dt, d, w, s, b in product
        ]


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Probe one cell: one tidy row per layer, measured beside the mean-field prediction."""
    config = cell.config
    model = build_mlp(config)
    return cell_rows(cell, probe(model, input_batch(config, cell.batch)))


@functools.lru_cache(maxsize=256)
def theory(
    activation: str, init: str, depth: int, width: int, batch: int, bias_var: float = 0.0
) -> list[LayerPrediction]:
    """``predict`` once per shape and sigma_b^2: it depends on none of seed, dtype or device,
    and a sweep asks for it once per cell (quadrature at every layer, ~5 ms at depth 50).
    ``bias_var > 0`` implies biases; at 0 their presence changes nothing (they start at 0)."""
    return predict(MLPConfig(depth, width, activation, init, bias_var=bias_var), batch)


def warm_bands(cells: Sequence[Cell]) -> None:
    """The finite-width bands of several cells (a stack's inits) in one walk down the layers
    (``core/band_path.py``), before ``cell_rows`` asks for them one cell at a time."""
    banded = [c for c in cells if c.config.bias_var == 0]
    for batch in sorted({c.batch for c in banded}):
        predict_bands([c.config for c in banded if c.batch == batch], batch)


def cell_rows(cell: Cell, stats: Sequence[LayerStats]) -> list[dict[str, Any]]:
    """A cell's rows from its probe statistics, whichever path (per cell, stacked) measured
    them: the config, the statistics, the theory and its finite-width band, one per layer."""
    config = cell.config
    bias_var = config.bias_var  # > 0 only with biases (MLPConfig checks)
    predicted = theory(
        config.activation, config.init, config.depth, config.width, cell.batch, bias_var
    )
    if bias_var > 0:  # mean field includes sigma_b^2, the band does not: mark, not mislead
        band = [no_band(layer, BIAS_CAVEAT) for layer in range(1, config.depth + 1)]
    else:
        band = predict_band(config, cell.batch)  # cached per shape in core/finite_width.py
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
            # The finite-width band (core/finite_width.py), log10 at COVERAGE, and why not
            # to trust it where its assumptions fail ("" where they hold).
            "pred_log10_preact_var_lo": b.preact_lo,
            "pred_log10_preact_var_hi": b.preact_hi,
            "pred_log10_grad_var_lo": b.grad_lo,
            "pred_log10_grad_var_hi": b.grad_hi,
            "theory_caveat": b.caveat,
        }
        for s, t, b in zip(stats, predicted, band, strict=True)
    ]
