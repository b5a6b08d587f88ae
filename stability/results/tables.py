"""Tidy summaries of sweep rows: what grew, what vanished, and how far from theory.

Growth is compared in log10 space and averaged over seeds, as finite-width fluctuations
are multiplicative (a single seed at width 256, depth 50 can sit tens of percent off).
"""

from collections.abc import Collection

import numpy as np
import pandas as pd

CONFIG_KEYS = ["activation", "init", "dtype", "precision_mode", "depth", "width", "batch"]
VERDICTS = ("stable", "explodes", "vanishes", "non-finite")  # every word ``verdict`` returns


def _log10(x: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.Series(np.log10(x.astype(float).to_numpy()), index=x.index)


def growth_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per config: log10(last/first) of forward and backward variance, measured and theory.

    Forward compares the last layer's pre-activation variance with the first's; backward the
    first layer's output-gradient variance with the last's (gradients flow downwards).
    """
    if rows.empty:
        return pd.DataFrame()
    first = rows[rows["layer"] == 1].set_index([*CONFIG_KEYS, "seed"])
    last = rows[rows["layer"] == rows["depth"]].set_index([*CONFIG_KEYS, "seed"])
    per_seed = pd.DataFrame(
        {
            "fwd_log10_growth": _log10(last["preact_var"]) - _log10(first["preact_var"]),
            "bwd_log10_growth": _log10(first["grad_var"]) - _log10(last["grad_var"]),
            "theory_fwd_log10_growth": _log10(last["theory_preact_var"])
            - _log10(first["theory_preact_var"]),
            "theory_bwd_log10_growth": _log10(first["theory_grad_var"])
            - _log10(last["theory_grad_var"]),
            "nonfinite": rows.groupby([*CONFIG_KEYS, "seed"])["nonfinite"].sum(),
        }
    )
    table = per_seed.groupby(level=CONFIG_KEYS).agg(
        fwd_log10_growth=("fwd_log10_growth", "mean"),
        theory_fwd=("theory_fwd_log10_growth", "first"),
        bwd_log10_growth=("bwd_log10_growth", "mean"),
        theory_bwd=("theory_bwd_log10_growth", "first"),
        seeds=("fwd_log10_growth", "size"),
        nonfinite=("nonfinite", "sum"),
    )
    return table.reset_index()


def verdict(fwd: float, bwd: float, nonfinite: float, band: float = 2.0) -> str:
    """One word per config: non-finite, explodes or vanishes (|log10 growth| > band), stable.

    A variance that reached exactly 0 (log10 = -inf) vanished; one that overflowed the
    reduction (+inf) with no inf/nan values in the tensors exploded.
    """
    if nonfinite > 0 or np.isnan(fwd) or np.isnan(bwd):
        return "non-finite"
    worst = fwd if abs(fwd) >= abs(bwd) else bwd
    if worst > band:
        return "explodes"
    if worst < -band:
        return "vanishes"
    return "stable"


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``growth_table`` plus a verdict column, rounded for printing."""
    table = growth_table(rows)
    if table.empty:
        return table
    table["verdict"] = [
        verdict(f, b, n)
        for f, b, n in zip(
            table["fwd_log10_growth"], table["bwd_log10_growth"], table["nonfinite"], strict=True
        )
    ]
    return table.round(2)


def with_verdicts(table: pd.DataFrame, verdicts: Collection[str]) -> pd.DataFrame:
    """The rows of a ``summary_table`` whose verdict is one of ``verdicts`` (``--fail-on``)."""
    if table.empty:
        return table
    return table[table["verdict"].isin(list(verdicts))]
