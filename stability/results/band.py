"""Judging configs by the finite-width band: do their seeds fall where theory says?

The sweep rows carry, per layer, the predicted band of log10 variance at a stated coverage
(``pred_log10_*_lo/hi``, from ``core/finite_width.py``) and ``theory_caveat``, the reason
the band's assumptions fail ("" where they hold). Per config this module reads the seeds at
the deepest point of each direction (forward: the last layer's pre-activation variance;
backward: the first layer's gradient variance), as a z-score against the band, and names a
verdict. It never changes the stable/explodes/vanishes verdict, which judges growth.

- ``inside``: every seed within the band;
- ``edge``: a seed outside the band but within twice its half width (z <= 2 * 1.645, about
  1 in 1000 per seed for a correct band): expected now and then with three seeds;
- ``outside``: a seed further out: the band, or the theory, misses this config;
- ``no band``: rows without band columns (stored before the band existed) or NaN bands.

A band is never judged finer than the dtype's rounding (``rounding_decades``): orthogonal
identity layers predict no spread at all, and float32 alone moves their variance ~1e-5.
"""

import numpy as np
import pandas as pd

BAND_Z = 1.6448536269514722  # the band's half width in sd: 90 % two-sided
EDGE = 2.0  # beyond this many half widths a seed is "outside"
BAND_VERDICTS = ("inside", "edge", "outside", "no band")
COLUMNS = ("pred_log10_preact_var_lo", "pred_log10_preact_var_hi")


# Unit roundoff per dtype (float16/bfloat16 emulated on CPU round at every layer boundary).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def rounding_decades(rows: pd.DataFrame) -> np.ndarray:
    """Per row, how far rounding alone can move a measured log10 variance: each layer's
    matmul and the variance's own reduction sum ``width * batch`` terms (error up to
    ``log2(terms) * u`` pairwise), compounding over ``depth`` layers. A band narrower than
    this (orthogonal identity layers predict no spread at all) cannot be judged finer."""
    if not {"dtype", "depth", "width", "batch"} <= set(rows.columns):
        return np.zeros(len(rows))
    u = rows["dtype"].map(UNIT_ROUNDOFF).fillna(UNIT_ROUNDOFF["float32"]).to_numpy(float)
    terms = np.log2((rows["width"].astype(float) * rows["batch"].astype(float)).to_numpy())
    depth = rows["depth"].astype(float).to_numpy()
    out: np.ndarray = depth * terms * u / np.log(10.0)
    return out


def _z(values: pd.Series, lo: pd.Series, hi: pd.Series, floor: np.ndarray) -> np.ndarray:
    lo_, hi_ = lo.astype(float).to_numpy(), hi.astype(float).to_numpy()
    centre, half = (lo_ + hi_) / 2.0, np.maximum((hi_ - lo_) / 2.0, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log10(values.astype(float).to_numpy())  # a variance of 0 (underflow): -inf
        # A zero-width band (the top layer's fixed projection) judges by the value alone.
        return np.where(half > 0, (v - centre) / half * BAND_Z, np.where(v == centre, 0.0, np.inf))


def band_table(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per config (``keys``): the worst seed's z at the band's reference layers, the verdict,
    the fraction of seeds inside in each direction, and the theory's caveat if any."""
    if rows.empty or not all(c in rows.columns for c in COLUMNS):
        return pd.DataFrame(columns=[*keys, "band_verdict"])
    last = rows[rows["layer"] == rows["depth"]]
    first = rows[rows["layer"] == 1]
    fwd = last.assign(
        z=_z(last["preact_var"], last["pred_log10_preact_var_lo"],
             last["pred_log10_preact_var_hi"], rounding_decades(last))
    )  # fmt: skip
    bwd = first.assign(
        z=_z(first["grad_var"], first["pred_log10_grad_var_lo"],
             first["pred_log10_grad_var_hi"], rounding_decades(first))
    )  # fmt: skip
    out = pd.DataFrame(
        {
            "band_fwd_inside": fwd.groupby(keys)["z"].agg(
                lambda z: float((z.abs() <= BAND_Z).mean())
            ),
            "band_bwd_inside": bwd.groupby(keys)["z"].agg(
                lambda z: float((z.abs() <= BAND_Z).mean())
            ),
            "band_fwd_z": fwd.groupby(keys)["z"].agg(_worst),
            "band_bwd_z": bwd.groupby(keys)["z"].agg(_worst),
            "theory_caveat": rows.groupby(keys)["theory_caveat"].agg(_first_caveat),
        }
    ).reset_index()
    out["band_verdict"] = [
        band_verdict(f, b) for f, b in zip(out["band_fwd_z"], out["band_bwd_z"], strict=True)
    ]
    return out


def _worst(z: pd.Series) -> float:
    """The z of largest magnitude, sign kept (NaN if every seed's band is NaN)."""
    finite = z[~np.isnan(z.to_numpy(dtype=float))]
    return float(finite.iloc[int(np.argmax(np.abs(finite.to_numpy())))]) if len(finite) else np.nan


def _first_caveat(c: pd.Series) -> str:
    texts = [str(t) for t in c.dropna() if str(t)]
    return texts[0] if texts else ""


def band_verdict(fwd_z: float, bwd_z: float) -> str:
    """inside / edge / outside by the worst |z| of both directions; no band if both NaN."""
    zs = [abs(z) for z in (fwd_z, bwd_z) if not np.isnan(z)]
    if not zs:
        return "no band"
    worst = max(zs)
    if worst <= BAND_Z:
        return "inside"
    return "edge" if worst <= EDGE * BAND_Z else "outside"
