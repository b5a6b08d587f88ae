"""Numerical stability at finite width: the predicted band, and every predicted column.

The rows of a sweep carry, per layer, mean-field predictions (``theory_*``) and the
finite-width band (``pred_log10_*_lo/hi``, ``core/finite_width.py``): where 90 % of seeds'
log10 variances should fall. Here, over many seeds of one small network:

- the band's coverage, pooled: each pair runs on its own seeds, so the seeds of all pairs
  are independent and, if the band is right, the number inside is Binomial(N, 0.9) per
  direction (forward and backward share a seed, so they are tested apart); the accepted
  range is the binomial's own quantiles at ``POOLED_ALPHA`` (``coverage_range``);
- per pair, the same binomial test and the seeds' spread against the band's width
  (chi-square on the sample variance of log10 values, close to normal: a sum of many small
  per-layer log factors), both at ``ALPHA``, two-sided 5 sigma;
- the predicted output variance (``theory_act_var``) and weight-gradient variance
  (``theory_weight_grad_var``) against measurement, per layer, with the tolerance derived
  in ``check_mean_agreement``.

Witnesses: a band of half the width fails the pooled count; a band shrunk or widened
threefold fails the per-pair checks; a weight-gradient theory without its batch factor,
and an output-variance theory for the wrong init fail the same checks.
"""

import math
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from witness import assert_fails_on

from stability.core.config import MLPConfig
from stability.core.finite_width import COVERAGE, Z_COVERAGE
from stability.core.stacked import probe_stack
from stability.sweep.cells import Cell, cell_rows, run_cell

CHAPTER = "Numerical stability: exploding and vanishing gradients"

DEPTH, WIDTH, BATCH, SEEDS = 8, 64, 32, 60
ALPHA = 5.733e-7  # two-sided 5 sigma
Z_MEAN = 6.0  # 5 sigma plus one for the estimated sd (60 seeds: its error is ~9 %)
PAIRS = [
    ("relu", "kaiming_normal"),
    ("leaky_relu", "kaiming_normal"),
    ("tanh", "xavier_normal"),
    ("selu", "lecun_normal"),
]

pytestmark = pytest.mark.usefixtures("one_thread")


POOLED_ALPHA = 1e-4  # false-failure budget of the two pooled checks of a correct band, together


@lru_cache(maxsize=8)
def sample(activation: str, init: str) -> pd.DataFrame:
    """``SEEDS`` float64 probe networks' rows, band columns included: each pair of ``PAIRS``
    on its own fixed seeds (``SEEDS * index`` on), so pairs are independent draws; probed
    as one stacked network (``core/stacked.py``: the per-cell path's rows)."""
    first = SEEDS * [p for p, _ in PAIRS].index(activation) if (activation, init) in PAIRS else 0
    configs = [
        MLPConfig(DEPTH, WIDTH, activation, init, "float64", seed=seed)
        for seed in range(first, first + SEEDS)
    ]
    stats = probe_stack(configs, BATCH)
    return pd.DataFrame(
        [row for c, s in zip(configs, stats, strict=True) for row in cell_rows(Cell(c, BATCH), s)]
    )


def deepest(rows: pd.DataFrame, direction: str) -> tuple[np.ndarray, float, float]:
    """log10 values over seeds at the band's reference layer, and the band there."""
    layer, what = (DEPTH, "preact") if direction == "forward" else (1, "grad")
    at = rows[rows["layer"] == layer]
    lo = float(at[f"pred_log10_{what}_var_lo"].iloc[0])
    hi = float(at[f"pred_log10_{what}_var_hi"].iloc[0])
    return np.log10(at[f"{what}_var"].to_numpy(dtype=float)), lo, hi


def check_coverage(values: np.ndarray, lo: float, hi: float) -> None:
    """Seeds inside the band ~ Binomial(n, COVERAGE); their spread ~ the band's sd."""
    n = len(values)
    inside = int(((values >= lo) & (values <= hi)).sum())
    p_binom = stats.binomtest(inside, n, COVERAGE).pvalue
    assert p_binom >= ALPHA, f"{inside}/{n} seeds inside the {COVERAGE:.0%} band [{lo}, {hi}]"
    sd = (hi - lo) / (2 * Z_COVERAGE)
    statistic = (n - 1) * float(np.var(values, ddof=1)) / sd**2
    tail = stats.chi2.cdf(statistic, n - 1)
    p_spread = 2 * min(tail, 1 - tail)
    measured = float(np.std(values, ddof=1))
    assert p_spread >= ALPHA, f"seeds' sd {measured:.4f} against the band's {sd:.4f}"


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize(("activation", "init"), PAIRS)
def test_band_coverage(activation: str, init: str, direction: str) -> None:
    """The seeds fall inside the predicted 90 % band at the stated rate, with its spread."""
    check_coverage(*deepest(sample(activation, init), direction))


@pytest.mark.parametrize("factor", [1 / 3, 3.0])
def test_witness_band_coverage(factor: float) -> None:
    """A band three times too narrow or too wide around the same centre fails."""
    values, lo, hi = deepest(sample("relu", "kaiming_normal"), "forward")
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    band = (centre - factor * half, centre + factor * half)
    assert_fails_on(values, check_coverage, *band, variant_name=f"band x{factor:.2g}")


def coverage_range(seeds: int, alpha: float) -> tuple[int, int]:
    """The counts inside a correct band that a check at false-failure rate ``alpha`` accepts.

    Inside ~ Binomial(seeds, COVERAGE) for independent seeds; each of the two pooled checks
    (forward, backward) gets ``alpha / 2``, split over both tails: the range runs from the
    binomial's ``alpha / 4`` quantile to its ``1 - alpha / 4`` quantile.
    """
    lo = int(stats.binom.ppf(alpha / 4, seeds, COVERAGE))
    hi = int(stats.binom.isf(alpha / 4, seeds, COVERAGE))
    return lo, hi


def check_pooled_coverage(bands: list[tuple[np.ndarray, float, float]]) -> None:
    """All pairs' seeds together fall inside their bands at the stated rate."""
    inside = sum(int(((v >= lo) & (v <= hi)).sum()) for v, lo, hi in bands)
    seeds = sum(len(v) for v, _, _ in bands)
    lo, hi = coverage_range(seeds, POOLED_ALPHA)
    assert lo <= inside <= hi, (
        f"{inside}/{seeds} seeds inside the {COVERAGE:.0%} band, outside [{lo}, {hi}] "
        f"(binomial at false-failure rate {POOLED_ALPHA / 2:g})"
    )


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_band_coverage_pooled(direction: str) -> None:
    """Pooled over the pairs (240 independent seeds), the band holds its 90 %."""
    check_pooled_coverage([deepest(sample(a, i), direction) for a, i in PAIRS])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_witness_band_coverage_pooled(direction: str) -> None:
    """A band of half the width around the same centre (~59 % coverage) is rejected."""
    halved = []
    for activation, init in PAIRS:
        values, lo, hi = deepest(sample(activation, init), direction)
        centre, half = (lo + hi) / 2, (hi - lo) / 4
        halved.append((values, centre - half, centre + half))
    assert_fails_on(halved, check_pooled_coverage, variant_name="band x0.5")


def check_mean_agreement(rows: pd.DataFrame, measured: str, theory: str) -> None:
    """Per layer, the seeds' mean log10(measured / theory) is within its tolerance.

    ``D_s = log10(measured / theory)`` is a sum of per-layer log factors, so over seeds its
    mean has standard error ``sd(D) / sqrt(S)`` (``sd`` estimated from the 60 seeds, hence
    ``Z_MEAN``). The theory is a mean, the log of a mean sits above the mean of logs by
    about ``Var(ln)/2`` (Jensen), so ``|mean D|`` may also be off by ``Var(ln) / (2 ln 10)``,
    bounded with the band's own variances: the layer's forward, the next layer's forward
    (its input) and the layer's backward, summed as if fully correlated.
    """
    ln10 = math.log(10.0)
    for layer, g in rows.groupby("layer"):
        d = np.log10(g[measured].to_numpy(dtype=float) / g[theory].to_numpy(dtype=float))
        nxt = rows[rows["layer"] == min(int(layer) + 1, DEPTH)]
        sds = [
            (g[f"pred_log10_{w}_var_hi"].iloc[0] - g[f"pred_log10_{w}_var_lo"].iloc[0])
            / (2 * Z_COVERAGE)
            for w in ("preact", "grad")
        ]
        sds.append(
            (nxt["pred_log10_preact_var_hi"].iloc[0] - nxt["pred_log10_preact_var_lo"].iloc[0])
            / (2 * Z_COVERAGE)
        )
        jensen = (sum(sds) * ln10) ** 2 / (2 * ln10)
        tolerance = Z_MEAN * float(np.std(d, ddof=1)) / math.sqrt(len(d)) + jensen
        assert abs(float(np.mean(d))) <= tolerance, (
            f"layer {layer}: mean log10({measured}/{theory}) = {np.mean(d):+.4f}, "
            f"tolerance {tolerance:.4f}"
        )


@pytest.mark.parametrize("column", ["act_var", "weight_grad_var"])
@pytest.mark.parametrize(("activation", "init"), PAIRS)
def test_predicted_columns_match(activation: str, init: str, column: str) -> None:
    """theory_act_var and theory_weight_grad_var follow the measured seeds, layer by layer."""
    check_mean_agreement(sample(activation, init), column, f"theory_{column}")


def test_witness_predicted_columns_match() -> None:
    """A weight-gradient theory without the batch factor, and the output variance predicted
    for Kaiming on lecun's data (a factor 2 per layer), are both rejected."""
    rows = sample("relu", "kaiming_normal")
    no_batch = rows.assign(theory_weight_grad_var=rows["theory_weight_grad_var"] / BATCH)
    assert_fails_on(no_batch, check_mean_agreement, "weight_grad_var", "theory_weight_grad_var")
    lecun = sample("selu", "lecun_normal")
    doubled = lecun.assign(theory_act_var=lecun["theory_act_var"] * 2.0 ** lecun["layer"])
    assert_fails_on(doubled, check_mean_agreement, "act_var", "theory_act_var")


# -- every mismatch is marked ------------------------------------------------------------------

MARK_DEPTH, MARK_SEEDS = 30, 3
MARKED = [
    ("softplus", "kaiming_normal"),  # backward: the forward signal's own direction
    ("gelu", "kaiming_normal"),  # forward: near its marginal point
    ("silu", "kaiming_normal"),  # backward: a moving non-zero mean (the signal caveat)
    ("relu", "kaiming_normal"),
    ("tanh", "xavier_normal"),
]


@lru_cache(maxsize=1)
def marked_sample() -> pd.DataFrame:
    """Three seeds of each ``MARKED`` pair at depth 30, width 64 (float64)."""
    return pd.DataFrame(
        [
            row
            for activation, init in MARKED
            for seed in range(MARK_SEEDS)
            for row in run_cell(
                Cell(MLPConfig(MARK_DEPTH, WIDTH, activation, init, "float64", seed=seed), BATCH)
            )
        ]
    )


def check_mismatch_marked(rows: pd.DataFrame) -> None:
    """A layer whose seeds sit further from the band's centre than twice its half width (the
    band's ``edge``: ~1 in 1000 per seed where the theory holds) carries a caveat. The
    centre is mean-field's plus the finite-width terms (at the top: the probe's fixed R,
    known exactly, so the band there has zero width; 1e-6 decades is float rounding)."""
    for what in ("preact", "grad"):
        lo, hi = rows[f"pred_log10_{what}_var_lo"], rows[f"pred_log10_{what}_var_hi"]
        miss = (np.log10(rows[f"{what}_var"]) - (lo + hi) / 2).abs()
        unmarked = rows[(miss > (hi - lo) + 1e-6) & (rows["theory_caveat"] == "")]
        assert unmarked.empty, (
            f"{what}: {len(unmarked)} rows miss mean-field beyond the band without a caveat, "
            f"e.g. {unmarked[['activation', 'init', 'layer', 'seed']].head(3).to_dict('records')}"
        )


def test_mismatch_marked() -> None:
    """Every row where measurement and mean-field part beyond the band says why."""
    check_mismatch_marked(marked_sample())


def test_witness_mismatch_marked() -> None:
    """The same rows with their caveats erased are rejected: softplus's backward and gelu's
    forward miss mean-field by decades at depth 30."""
    rows = marked_sample()
    assert_fails_on(rows.assign(theory_caveat=""), check_mismatch_marked)
