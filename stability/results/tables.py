"""Tidy summaries of sweep rows: what grew, what vanished, and how far from theory.

Growth is compared in log10 space and averaged over seeds, as finite-width fluctuations
are multiplicative (a single seed at width 256, depth 50 can sit tens of percent off).
"""

from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from stability.results.band import band_table
from stability.results.verdict_words import BAND

CONFIG_KEYS = ["activation", "init", "dtype", "precision_mode", "depth", "width", "batch"]


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


def verdict(fwd: float, bwd: float, nonfinite: float, band: float = BAND) -> str:
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


# -- verdicts with their reasons, the recommendation and the worst offenders ---------------

BORDERLINE = 0.1  # within 10 % of the band edge (0.2 decades at band 2): borderline
GROUP_KEYS = ["activation", "dtype", "precision_mode", "depth", "width", "batch"]


def judged_table(rows: pd.DataFrame, band: float = BAND, near: float = BORDERLINE) -> pd.DataFrame:
    """``growth_table`` plus each config's verdict, its distance to the band edge and why.

    ``margin`` is ``band - |worst growth|``: positive inside the band, negative beyond it. A
    config within ``near * band`` of the edge is ``borderline``: at band 2, -1.98 (stable)
    and -2.02 (vanishes) both are, as their verdicts differ by a hair. ``sigma_w2`` is
    ``fan_in * Var(W)`` read back from the stored layer-1 prediction (``q_1 = sigma_w^2`` for
    the unit-variance probe input), so results need no init registry; NaN for LSUV.
    ``band_verdict`` and its columns (``results/band.py``) say whether the seeds fall in the
    predicted finite-width band; the growth verdict ignores them.
    """
    table = growth_table(rows)
    if table.empty:
        return table
    layer1 = rows[rows["layer"] == 1].groupby(CONFIG_KEYS)["theory_preact_var"].first()
    table = table.merge(layer1.rename("sigma_w2").reset_index(), on=CONFIG_KEYS, how="left")
    broken = rows[rows["nonfinite"] > 0].groupby(CONFIG_KEYS)["layer"].nunique()
    table = table.merge(broken.rename("nonfinite_layers").reset_index(), on=CONFIG_KEYS, how="left")
    table["nonfinite_layers"] = table["nonfinite_layers"].fillna(0).astype(int)
    fwd = table["fwd_log10_growth"].to_numpy(dtype=float)
    bwd = table["bwd_log10_growth"].to_numpy(dtype=float)
    forward_worse = np.abs(fwd) >= np.abs(bwd)
    worst = np.where(forward_worse, fwd, bwd)
    with np.errstate(invalid="ignore"):
        margin = band - np.abs(worst)
    table["verdict"] = [
        verdict(f, b, n, band) for f, b, n in zip(fwd, bwd, table["nonfinite"], strict=True)
    ]
    table["worst_log10_growth"] = worst
    table["worst_direction"] = np.where(forward_worse, "forward", "backward")
    table["margin"] = margin
    table["borderline"] = np.isfinite(margin) & (np.abs(margin) <= near * band)
    for direction, values in (("fwd", fwd), ("bwd", bwd)):  # which cell of a heat map
        with np.errstate(invalid="ignore"):
            edge = np.abs(band - np.abs(values))
        table[f"{direction}_borderline"] = np.isfinite(edge) & (edge <= near * band)
    table["reason"] = [_reason(r, band) for r in table.itertuples(index=False)]
    # Beside the verdict, not in it: do the seeds fall in the predicted finite-width band?
    table = table.merge(band_table(rows, CONFIG_KEYS), on=CONFIG_KEYS, how="left")
    table["band_verdict"] = table["band_verdict"].fillna("no band")
    return table


def _decades(x: float) -> str:
    if np.isposinf(x):
        return "to inf (overflow)"
    if np.isneginf(x):
        return "to exactly 0 (underflow)"
    return f"by 10^{abs(x):.1f}"


def _reason(r: Any, band: float) -> str:
    """One line a reader can act on: what went wrong where, or how far inside the band."""
    what = "signal" if r.worst_direction == "forward" else "gradient"
    if r.verdict == "non-finite":
        if r.nonfinite == 0:
            which = "signal" if np.isnan(r.fwd_log10_growth) else "gradient"
            return (
                f"non-finite: the {which} variance is inf or NaN at the first or last layer, "
                "though no value in the tensors is"
            )
        seeds = f"{r.seeds} seeds" if r.seeds != 1 else "1 seed"
        return (
            f"non-finite: {int(r.nonfinite)} inf/NaN values (outputs and gradients) in "
            f"{r.nonfinite_layers} of {r.depth} layers, over {seeds}"
        )
    if r.verdict == "explodes":
        text = f"{what} variance grows {_decades(r.worst_log10_growth)} over {r.depth} layers"
    elif r.verdict == "vanishes":
        text = f"{what} variance falls {_decades(r.worst_log10_growth)} over {r.depth} layers"
    else:
        text = (
            f"within ±{band:g} decades: forward {r.fwd_log10_growth:+.2f}, "
            f"backward {r.bwd_log10_growth:+.2f}"
        )
    if r.borderline:
        side = "inside" if r.margin >= 0 else "beyond"
        text += f"; borderline: {abs(r.margin):.2f} decades {side} the band edge ±{band:g}"
    return text


def _sigma(value: float) -> str:
    return "σw² data-driven" if not np.isfinite(value) else f"σw² {value:.3g}"


def recommendations(judged: pd.DataFrame) -> pd.DataFrame:
    """Per activation, dtype and network shape: the inits whose forward and backward variance
    stay within the band to the swept depth, best (smallest |growth|) first, borderline last.

    ``sigma_w2`` is the weight scale each uses (gain^2 for a fan-in init). A group where no
    init is stable names the closest one and why it fails, so the row still says what to do.
    """
    if judged.empty:
        return pd.DataFrame()
    out = []
    for key, g in judged.groupby(GROUP_KEYS, sort=False):
        ranked = g.assign(size=g["worst_log10_growth"].abs()).sort_values(["borderline", "size"])
        stable = ranked[ranked["verdict"] == "stable"]
        names = [
            f"{init} ({_sigma(float(s2))}{', borderline' if edge else ''})"
            for init, s2, edge in zip(
                stable["init"].tolist(),
                stable["sigma_w2"].tolist(),
                stable["borderline"].tolist(),
                strict=True,
            )
        ]
        row: dict[str, object] = dict(zip(GROUP_KEYS, key, strict=True))
        row.update(tried=len(g), stable=len(stable), recommended="; ".join(names) or "none")
        if stable.empty:
            finite = ranked[ranked["verdict"] != "non-finite"]
            closest = (finite if not finite.empty else ranked).iloc[0]
            row.update(best_init=None, best_sigma_w2=np.nan, best_borderline=False, also="",
                       closest=f"{closest['init']}: {closest['reason']}")  # fmt: skip
        else:
            best = stable.iloc[0]
            row.update(
                best_init=best["init"],
                best_sigma_w2=best["sigma_w2"],
                best_borderline=bool(best["borderline"]),
                also=", ".join(str(i) for i in stable["init"].iloc[1:]),
                closest="",
            )
        out.append(row)
    return pd.DataFrame(out)


def offenders(judged: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    """The ``n`` worst configs, taken in turn from each failure (non-finite, explodes,
    vanishes), worst first within each: by inf/NaN count, else by |growth|. One row per
    activation, init and shape, naming every dtype where it fails, so the list is neither
    one init n times nor one kind of failure only."""
    bad = judged[judged["verdict"] != "stable"] if not judged.empty else judged
    if bad.empty:
        return pd.DataFrame()
    severity = np.where(
        bad["verdict"] == "non-finite", bad["nonfinite"], bad["worst_log10_growth"].abs()
    )
    kind = bad["verdict"].map({v: i for i, v in enumerate(("non-finite", "explodes", "vanishes"))})
    ranked = bad.assign(kind=kind, size=-severity).sort_values(["kind", "size"])
    shape = ["activation", "init", "depth", "width", "batch"]
    dtypes = ranked.groupby(shape, sort=False)["dtype"].agg(lambda d: ", ".join(dict.fromkeys(d)))
    firsts = ranked.drop_duplicates(shape)
    turn = firsts.groupby("kind").cumcount()
    worst = firsts.assign(turn=turn).sort_values(["turn", "kind"], kind="stable").head(n)
    keep = [*shape, "dtype", "verdict", "worst_log10_growth", "reason"]
    table = worst[keep].merge(dtypes.rename("fails_in").reset_index(), on=shape, how="left")
    return table.reset_index(drop=True)
